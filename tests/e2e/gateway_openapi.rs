//! `openapi.yaml` against the real gateway (Envoy, the filter, the backend under the runner,
//! the shipped configuration), as a table: each row is a request, the status and problem type
//! it must get, and every response must be documented for its operation and match it
//! (required headers present and valid, media type declared, body valid under JSON Schema
//! 2020-12 with formats on). `gateway_schemathesis` explores the same document with generated
//! requests; this table pins the answers generation rarely reaches (replays, 413, 415, 422,
//! 429, every 400 kind).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use e2e::{dev_token, send, Response, Stack, StackOptions, SEED_004_REQUEST, SEED_ORG};
use serde_json::{json, Value};

const OTHER_ORG: &str = "0d8e1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b";
const PROBLEM: &str = "urn:workspace-api:problem:";

/// The published document.
pub fn document() -> Value {
    let text = std::fs::read_to_string(xtask::paths::root().join("openapi.yaml")).unwrap();
    serde_yaml::from_str(&text).unwrap()
}

/// The errors of `instance` against `schema`, whose `$ref`s point into the document's components.
fn errors(doc: &Value, schema: &Value, instance: &Value) -> Vec<String> {
    let root = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "components": doc["components"],
        "allOf": [schema],
    });
    let validator = jsonschema::draft202012::options()
        .should_validate_formats(true)
        .build(&root)
        .unwrap();
    validator
        .iter_errors(instance)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect()
}

fn validate(doc: &Value, schema: &Value, instance: &Value, what: &str) {
    let errors = errors(doc, schema, instance);
    assert!(errors.is_empty(), "{what}: {errors:#?}\n{instance:#}");
}

fn resolve<'a>(doc: &'a Value, node: &'a Value) -> &'a Value {
    match node.get("$ref").and_then(Value::as_str) {
        Some(r) => doc
            .pointer(r.trim_start_matches('#'))
            .unwrap_or_else(|| panic!("dangling {r}")),
        None => node,
    }
}

/// The documented path template `path` (query ignored) falls under, if any.
fn template<'a>(doc: &'a Value, path: &str) -> Option<&'a str> {
    let path = path.split('?').next().unwrap();
    let segments: Vec<&str> = path.split('/').collect();
    doc["paths"]
        .as_object()
        .unwrap()
        .keys()
        .find(|t| {
            let parts: Vec<&str> = t.split('/').collect();
            parts.len() == segments.len()
                && parts
                    .iter()
                    .zip(&segments)
                    .all(|(p, s)| p == s || (p.starts_with('{') && !s.is_empty()))
        })
        .map(String::as_str)
}

/// Checks a real response against the operation `method template` (for a method the path
/// does not serve, against the path's first operation: every operation declares its 405; for
/// a path no operation serves, against the gateway's 404).
fn conforms(doc: &Value, method: &str, path: &str, r: &Response) {
    let what = format!("{method} {path} -> {}", r.status);
    let documented = match template(doc, path) {
        Some(template) => {
            let item = &doc["paths"][template];
            let op = item
                .get(method.to_ascii_lowercase())
                .or_else(|| ["get", "post", "put"].iter().find_map(|m| item.get(*m)))
                .unwrap();
            op["responses"]
                .get(r.status.to_string())
                .unwrap_or_else(|| panic!("{what}: status not documented ({})", r.text()))
        }
        None => {
            assert_eq!(r.status, 404, "{what}: no documented path");
            &doc["components"]["responses"]["NotFound"]
        }
    };
    let documented = resolve(doc, documented);
    for (name, header) in documented["headers"].as_object().into_iter().flatten() {
        let header = resolve(doc, header);
        match r.header(name) {
            Some(value) => validate(
                doc,
                &header["schema"],
                &json!(value),
                &format!("{what}: {name}"),
            ),
            None => assert!(header["required"] != true, "{what}: no {name}"),
        }
    }
    let content_type = r.header("content-type").unwrap_or("");
    let media = content_type.split(';').next().unwrap().trim();
    let schema = &documented["content"][media]["schema"];
    assert!(schema.is_object(), "{what}: {media:?} not documented");
    validate(doc, schema, &r.json(), &what);
}

/// Who sends a row: a dev token of the seed organization with a role, someone of another
/// organization, or nobody.
#[derive(Clone, Copy)]
enum Caller {
    Owner,
    Admin,
    Member,
    Outsider,
    Anonymous,
}

/// One request and what it must get.
struct Row {
    method: &'static str,
    path: String,
    caller: Caller,
    headers: Vec<(&'static str, String)>,
    body: Option<(&'static str, String)>,
    status: u16,
    slug: Option<&'static str>,
}

fn row(method: &'static str, path: impl Into<String>, caller: Caller) -> Row {
    Row {
        method,
        path: path.into(),
        caller,
        headers: Vec::new(),
        body: None,
        status: 0,
        slug: None,
    }
}

impl Row {
    fn header(mut self, name: &'static str, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }

    fn body(mut self, content_type: &'static str, body: impl Into<String>) -> Self {
        self.body = Some((content_type, body.into()));
        self
    }

    fn json(self, body: impl Into<String>) -> Self {
        self.body("application/json", body)
    }

    /// Expects `status`, and for a problem the type `urn:workspace-api:problem:<slug>`.
    fn gets(mut self, status: u16, slug: &'static str) -> Self {
        self.status = status;
        self.slug = Some(slug);
        self
    }

    fn ok(mut self, status: u16) -> Self {
        self.status = status;
        self
    }
}

struct Gateway {
    doc: Value,
    stack: Stack,
    tokens: [String; 4],
}

impl Gateway {
    fn token(&self, caller: Caller) -> Option<&str> {
        let i = match caller {
            Caller::Owner => 0,
            Caller::Admin => 1,
            Caller::Member => 2,
            Caller::Outsider => 3,
            Caller::Anonymous => return None,
        };
        Some(&self.tokens[i])
    }

    /// Sends `row` through the gateway, checks its status and type, and that the response
    /// conforms to the document.
    fn run(&self, row: &Row) -> Response {
        let auth = self.token(row.caller).map(|t| format!("Bearer {t}"));
        let mut headers: Vec<(&str, &str)> =
            row.headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        if let Some(auth) = &auth {
            headers.push(("authorization", auth));
        }
        if let Some((content_type, _)) = &row.body {
            headers.push(("content-type", content_type));
        }
        let url = format!("{}{}", self.stack.gateway_url(), row.path);
        let body = row.body.as_ref().map(|(_, b)| b.as_bytes());
        let r = send(row.method, &url, &headers, body);
        let what = format!("{} {}", row.method, row.path);
        assert_eq!(r.status, row.status, "{what}: {}", r.text());
        if let Some(slug) = row.slug {
            assert_eq!(r.json()["type"], format!("{PROBLEM}{slug}"), "{what}");
        }
        conforms(&self.doc, row.method, &row.path, &r);
        r
    }
}

#[test]
fn the_document_is_openapi_3_1_and_its_examples_fit_its_schemas() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let seed: Value = serde_json::from_str(SEED_004_REQUEST).unwrap();
    let create =
        &doc["paths"]["/api/workspaces"]["post"]["requestBody"]["content"]["application/json"];
    validate(&doc, &create["schema"], &seed, "seed 004 request");
    assert_eq!(create["examples"]["Seed004"]["value"], seed);
    let example = &doc["paths"]["/api/v3/workspaces"]["post"]["requestBody"]["content"]
        ["application/json"]["examples"]["CreateWorkspace"]["value"];
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/StandardWorkspaceCreateV3Request"}),
        example,
        "seed 000 example",
    );
    // Every $ref resolves.
    let text = serde_json::to_string(&doc).unwrap();
    for r in text
        .split("\"$ref\":\"")
        .skip(1)
        .map(|s| s.split('"').next().unwrap())
    {
        assert!(
            doc.pointer(r.trim_start_matches('#')).is_some(),
            "dangling {r}"
        );
    }
    // The checks bite: a wrong date, an extra field, a missing request ID all fail.
    let created = |data: Value| json!({"message": "Workspace created successfully", "data": data});
    let schema = json!({"$ref": "#/components/schemas/WorkspaceCreated"});
    assert!(!errors(&doc, &schema, &created(json!({"createdAt": "yesterday"}))).is_empty());
    let problem = json!({"$ref": "#/components/schemas/Problem"});
    let p = json!({"type": "urn:workspace-api:problem:not-found", "title": "t", "status": 404, "detail": "d", "instance": "/"});
    assert!(!errors(&doc, &problem, &p).is_empty());
    let mut p = p;
    p["requestId"] = json!("6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e");
    assert!(errors(&doc, &problem, &p).is_empty());
    p["extra"] = json!(1);
    assert!(!errors(&doc, &problem, &p).is_empty());
}

#[test]
fn header_and_query_constraints_are_what_the_gateway_and_backend_accept() {
    let doc = document();
    let param = |name: &str| json!({"$ref": format!("#/components/parameters/{name}/schema")});
    let accepts = |schema: &Value, value: &str| errors(&doc, schema, &json!(value)).is_empty();
    let id = "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e";
    let request_id = param("RequestId");
    for good in [
        id,
        "6F1C2A7E-1C7E-4D1A-9A55-0D3D0F1C2A7E",
        "6f1c2a7e1c7e4d1a9a550d3d0f1c2a7e",
        "{6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e}",
        "URN:uuid:6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e",
    ] {
        assert!(accepts(&request_id, good), "{good}");
        assert!(edge_contract::request_id::normalize(good).is_ok(), "{good}");
    }
    for bad in [
        "",
        "abc",
        "00000000-0000-0000-0000-000000000000",
        "ffffffff-ffff-ffff-ffff-ffffffffffff",
        "{00000000000000000000000000000000}",
        "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7g",
        "{6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e",
    ] {
        assert!(!accepts(&request_id, bad), "{bad}");
        assert!(edge_contract::request_id::normalize(bad).is_err(), "{bad}");
    }
    let key = param("IdempotencyKey");
    let long = "k".repeat(255);
    let too_long = "k".repeat(256);
    for (value, good) in [
        ("8e03978e-40d5-43e8-bc93-6894a57f9324", true),
        ("\"quoted\"", true),
        ("a~!#$%&'()*+-./:;<=>?@[]^_`{|}", true),
        (long.as_str(), true),
        (too_long.as_str(), false),
        ("", false),
        ("\"\"", false),
        ("a b", false),
        ("a,b", false),
        ("a\\b", false),
        ("\"a", false),
        ("é", false),
    ] {
        assert_eq!(accepts(&key, value), good, "{value:?}");
        let edge = edge_contract::idempotency::parse_key(value);
        assert_eq!(edge.is_ok(), good, "{value:?}: {edge:?}");
    }
    let cursor = json!({"$ref": "#/components/schemas/Cursor"});
    for (value, good) in [
        ("c1.1", true),
        ("c1.123456789012345678", true),
        ("", false),
        ("c1.", false),
        ("c1.0", false),
        ("c1.01", false),
        ("c1.+1", false),
        ("c1.1234567890123456789", false),
    ] {
        assert_eq!(accepts(&cursor, value), good, "{value:?}");
    }
}

#[test]
fn real_responses_through_the_gateway_conform_to_the_document() {
    let tokens = [
        dev_token("u-owner", &[(SEED_ORG, &["owner"])]),
        dev_token("u-admin", &[(SEED_ORG, &["admin"])]),
        dev_token("u-member", &[(SEED_ORG, &["member"])]),
        dev_token("u-outsider", &[(OTHER_ORG, &["owner"])]),
    ];
    let gw = Gateway {
        doc: document(),
        stack: Stack::start(StackOptions::default()),
        tokens,
    };
    use Caller::*;
    let ws = "/api/workspaces";
    let v3 = "/api/v3/workspaces";
    let settings = format!("/api/orgs/{SEED_ORG}/settings");
    let seed = || row("POST", ws, Owner).json(SEED_004_REQUEST);

    // Two workspaces for the reads and the listing; the first with a key, then replayed.
    let created = gw.run(&seed().header("idempotency-key", "oa-1").ok(201));
    let id = created.json()["data"]["workspaceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let replay = gw.run(&seed().header("idempotency-key", "oa-1").ok(201));
    assert_eq!(replay.header("idempotent-replayed"), Some("true"));
    assert_eq!(replay.json()["data"]["workspaceId"], id.as_str());
    gw.run(&seed().ok(201));
    let first_page = gw.run(&row("GET", format!("{ws}?orgId={SEED_ORG}&limit=1"), Member).ok(200));
    let cursor = first_page.json()["nextCursor"].as_str().unwrap().to_owned();
    let v3_first = gw.run(
        &row("POST", v3, Admin)
            .json(r#"{"name":"Engineering Team Workspace","description":"Workspace for the engineering team"}"#)
            .ok(201),
    );
    let v3_id = v3_first.json()["id"].as_i64().unwrap();

    let rows = [
        // POST /api/workspaces
        seed()
            .header("idempotency-key", "oa-1")
            .json(SEED_004_REQUEST.replace("CS101", "X"))
            .gets(422, "idempotency-key-reused"),
        seed()
            .header("idempotency-key", "a b")
            .gets(400, "invalid-idempotency-key"),
        seed()
            .header("idempotency-key", "a,b")
            .gets(400, "invalid-idempotency-key"),
        seed().header("x-request-id", "abc").gets(400, "invalid-request-id"),
        row("POST", ws, Owner)
            .header("accept-language", "es")
            .json(format!(r#"{{"orgId":"{SEED_ORG}","settings":{{"timezone":"Nowhere"}},"extra":true}}"#))
            .gets(400, "validation-failed"),
        row("POST", ws, Owner).json(r#"{"name":"no org"}"#).gets(400, "validation-failed"),
        row("POST", ws, Owner).json("{").gets(400, "invalid-body"),
        row("POST", ws, Anonymous).json(SEED_004_REQUEST).gets(401, "unauthenticated"),
        row("POST", ws, Anonymous)
            .header("authorization", "Bearer not.a.token")
            .json(SEED_004_REQUEST)
            .gets(401, "invalid-token"),
        row("POST", ws, Member)
            .header("accept-language", "fr")
            .json(SEED_004_REQUEST)
            .gets(403, "forbidden"),
        row("POST", ws, Owner)
            .json(format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000)))
            .gets(413, "payload-too-large"),
        row("POST", ws, Owner)
            .body("text/plain", SEED_004_REQUEST)
            .gets(415, "unsupported-media-type"),
        row("DELETE", ws, Owner).gets(405, "method-not-allowed"),
        row("PATCH", ws, Anonymous).gets(405, "method-not-allowed"),
        row("QUERY", ws, Owner).gets(405, "method-not-allowed"),
        row("QUERY", ws, Owner).json("{}").gets(405, "method-not-allowed"),
        // GET /api/workspaces
        row("GET", format!("{ws}?orgId={SEED_ORG}&cursor={cursor}"), Member).ok(200),
        row("GET", format!("{ws}?orgId={SEED_ORG}&limit=500"), Member).gets(400, "invalid-query"),
        row("GET", format!("{ws}?orgId={SEED_ORG}&cursor="), Member).gets(400, "invalid-query"),
        row("GET", format!("{ws}?orgId={SEED_ORG}&cursor=c1.+1"), Member).gets(400, "invalid-query"),
        row("GET", format!("{ws}?orgId={SEED_ORG}&limit=%2B5"), Member).gets(400, "invalid-query"),
        row("GET", format!("{ws}?orgId={SEED_ORG}&sort=name"), Member).gets(400, "invalid-query"),
        row("GET", ws, Member).gets(400, "invalid-query"),
        row("GET", format!("{ws}?orgId={OTHER_ORG}"), Member).gets(403, "forbidden"),
        row("GET", format!("{ws}?orgId={SEED_ORG}"), Member)
            .header("x-request-id", "not-a-uuid")
            .gets(400, "invalid-request-id"),
        row("GET", format!("{ws}?orgId={SEED_ORG}"), Anonymous).gets(401, "unauthenticated"),
        // GET /api/workspaces/{workspaceId}
        row("GET", format!("{ws}/{id}"), Member).ok(200),
        row("GET", format!("{ws}/{id}"), Member)
            .header("x-request-id", "{6F1C2A7E-1C7E-4D1A-9A55-0D3D0F1C2A7E}")
            .ok(200),
        row("GET", format!("{ws}/{id}"), Outsider).gets(404, "not-found"),
        row("GET", format!("{ws}/w-none"), Member).gets(404, "not-found"),
        row("GET", format!("{ws}/{id}/members"), Member).gets(404, "not-found"),
        row("PUT", format!("{ws}/{id}"), Member).gets(405, "method-not-allowed"),
        row("GET", format!("{ws}/{id}"), Member)
            .header("x-request-id", "00000000-0000-0000-0000-000000000000")
            .gets(400, "invalid-request-id"),
        // Organization settings
        row("GET", settings.clone(), Member).ok(200),
        row("PUT", settings.clone(), Owner)
            .json(r#"{"allowUserWorkspaceCreation":false,"subscriptionId":"sub-abc123def456"}"#)
            .ok(200),
        row("PUT", settings.clone(), Owner)
            .json(r#"{"subscriptionId":7}"#)
            .gets(400, "validation-failed"),
        row("PUT", settings.clone(), Owner).json("[").gets(400, "malformed-body"),
        row("PUT", settings.clone(), Member)
            .json(r#"{"allowUserWorkspaceCreation":true}"#)
            .gets(403, "forbidden"),
        row("PUT", settings.clone(), Owner)
            .body("text/plain", "on")
            .gets(415, "unsupported-media-type"),
        // The edge decides the organization from the path: a caller who is no member of it
        // gets 403, which does not tell whether it exists.
        row("GET", "/api/orgs/nope/settings", Member).gets(403, "forbidden"),
        row("GET", settings.clone(), Outsider).gets(403, "forbidden"),
        row("DELETE", settings.clone(), Owner).gets(405, "method-not-allowed"),
        // POST /api/v3/workspaces
        row("POST", v3, Admin)
            .body("application/x-www-form-urlencoded", "name=Form")
            .ok(201),
        row("POST", v3, Admin)
            .body(
                "multipart/form-data; boundary=q",
                "--q\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nMultipart\r\n--q--\r\n",
            )
            .ok(201),
        row("POST", v3, Admin)
            .json(r#"{"name":"","color":"red"}"#)
            .gets(400, "validation-failed"),
        row("POST", v3, Member)
            .json(r#"{"name":"Mine"}"#)
            .gets(403, "workspace-creation-disabled"),
        row("POST", v3, Admin)
            .body("application/xml", "<name/>")
            .gets(415, "unsupported-media-type"),
        row("GET", v3, Admin).gets(405, "method-not-allowed"),
        // GET /api/v3/workspaces/{id}
        row("GET", format!("{v3}/{v3_id}"), Member).ok(200),
        row("GET", format!("{v3}/999999"), Member).gets(404, "not-found"),
        row("GET", format!("{v3}/abc"), Member).gets(404, "not-found"),
        // Unserved paths
        row("GET", "/api/nothing", Owner).gets(404, "not-found"),
    ];
    for r in &rows {
        gw.run(r);
    }

    // The 21st create in a minute is refused with the rate-limit headers: the bucket is
    // spent before the body is read, so refused creates count too (the member's first was
    // the 403 row above).
    let burst = row("POST", ws, Member).json(SEED_004_REQUEST);
    for _ in 1..20 {
        gw.run(&burst.clone_as(403, "forbidden"));
    }
    let limited = gw.run(&burst.clone_as(429, "rate-limited"));
    assert!(limited.header("retry-after").is_some());
    assert!(limited.header("ratelimit").is_some());
}

impl Row {
    fn clone_as(&self, status: u16, slug: &'static str) -> Row {
        Row {
            method: self.method,
            path: self.path.clone(),
            caller: self.caller,
            headers: self.headers.clone(),
            body: self.body.clone(),
            status,
            slug: Some(slug),
        }
    }
}

/// A QUERY without Content-Type never reaches the filter (Envoy 1.40 fails it first, RFC
/// 10008): `local_reply_config` in envoy/envoy.yaml answers it as the filter's route table
/// would answer any method it does not serve there, path by path. A method the HTTP codec
/// cannot parse gets a 400 problem, not an empty body.
#[test]
fn envoy_own_refusals_are_the_filters_answers() {
    let doc = document();
    let stack = Stack::start(StackOptions::default());
    let mut paths: Vec<String> = e2e::shipped_filter_config()["routes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pattern = r["path"].as_str().unwrap();
            let segments: Vec<&str> = pattern
                .split('/')
                .map(|s| if s.starts_with('{') { "x-1" } else { s })
                .collect();
            segments.join("/")
        })
        .collect();
    paths.dedup();
    paths.push("/api/unserved".into());
    for path in &paths {
        let url = format!("{}{path}?q=1", stack.gateway_url());
        let by_filter = send("PATCH", &url, &[], None);
        let by_envoy = send("QUERY", &url, &[], None);
        assert_eq!(by_envoy.status, by_filter.status, "{path}");
        assert_eq!(
            by_envoy.header("allow"),
            by_filter.header("allow"),
            "{path}"
        );
        let (envoy, filter) = (by_envoy.json(), by_filter.json());
        for field in ["type", "title", "status", "detail", "instance"] {
            assert_eq!(envoy[field], filter[field], "{path}: {field}");
        }
        assert_eq!(envoy["requestId"].as_str(), by_envoy.header("x-request-id"));
        conforms(&doc, "QUERY", path, &by_envoy);
    }
    // With a Content-Type, QUERY reaches the filter like any other method.
    let url = format!("{}/api/workspaces", stack.gateway_url());
    let r = send(
        "QUERY",
        &url,
        &[("content-type", "application/json")],
        Some(b"{}"),
    );
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));

    let mut raw =
        std::net::TcpStream::connect(stack.gateway_url().trim_start_matches("http://")).unwrap();
    use std::io::{Read, Write};
    raw.write_all(b"FO@O /api/workspaces HTTP/1.1\r\nHost: x\r\n\r\n")
        .unwrap();
    let mut text = String::new();
    raw.read_to_string(&mut text).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    assert!(head.starts_with("HTTP/1.1 400"), "{text}");
    assert!(
        head.contains("content-type: application/problem+json"),
        "{text}"
    );
    let body: Value = serde_json::from_str(body).unwrap();
    assert_eq!(body["type"], format!("{PROBLEM}invalid-request"));
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/Problem"}),
        &body,
        "codec error",
    );
}
