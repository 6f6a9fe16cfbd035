//! `backend/openapi.yaml` against the real component: every response these requests get
//! (each status the backend produces, on each operation) must be documented for its
//! operation and validate against the documented schema (JSON Schema 2020-12, formats on).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use e2e::{Response, Stack, SEED_004_REQUEST};
use edge_contract::Identity;
use serde_json::{json, Value};

fn document() -> Value {
    let text = std::fs::read_to_string(xtask::paths::root().join("backend/openapi.yaml")).unwrap();
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

/// Checks one real response against the operation `method template`.
fn conforms(doc: &Value, method: &str, template: &str, r: &Response) {
    let what = format!("{method} {template} -> {}", r.status);
    let op = &doc["paths"][template][method.to_ascii_lowercase()];
    assert!(op.is_object(), "{what}: operation not documented");
    let documented = op["responses"]
        .get(r.status.to_string())
        .unwrap_or_else(|| panic!("{what}: status not documented ({})", r.text()));
    let documented = resolve(doc, documented);
    assert!(
        r.header("x-request-id").is_some(),
        "{what}: no x-request-id"
    );
    if let Some(headers) = documented.get("headers").and_then(Value::as_object) {
        for name in headers
            .keys()
            .filter(|n| ["Allow", "Location", "Retry-After"].contains(&n.as_str()))
        {
            assert!(
                r.header(&name.to_ascii_lowercase()).is_some(),
                "{what}: missing {name}"
            );
        }
    }
    let content_type = r
        .header("content-type")
        .unwrap_or("")
        .split(';')
        .next()
        .unwrap()
        .trim()
        .to_owned();
    let schema = &documented["content"][&content_type]["schema"];
    assert!(schema.is_object(), "{what}: {content_type} not documented");
    validate(doc, schema, &r.json(), &what);
}

fn v3_post(stack: &Stack, who: &Identity, content_type: &str, body: &str) -> Response {
    call(
        stack,
        Some(who),
        "POST",
        "/api/v3/workspaces",
        &[("content-type", content_type)],
        Some(body.as_bytes()),
    )
}

#[test]
fn the_document_is_openapi_3_1_and_its_examples_fit_its_schemas() {
    let doc = document();
    assert_eq!(doc["openapi"], "3.1.0");
    let request = &doc["components"]["schemas"];
    let seed: Value = serde_json::from_str(SEED_004_REQUEST).unwrap();
    validate(
        &doc,
        &json!({"$ref": "#/components/schemas/WorkspaceCreateRequest"}),
        &seed,
        "seed 004 request",
    );
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
    assert!(request.get("Problem").is_some());
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
fn real_responses_conform_to_the_document() {
    let doc = document();
    let stack = backend();
    let member = user("u-member", &[(ORG, "member")]);
    let admin = Identity {
        company: Some(ORG.into()),
        ..user("u-admin", &[(ORG, "admin")])
    };
    let ws = "/api/workspaces";

    // POST /api/workspaces: 201, replay, 400 (each kind), 401, 403, 413, 415, 422.
    let created = post_json(
        &stack,
        &owner(),
        ws,
        SEED_004_REQUEST,
        &[("idempotency-key", "oa-1")],
    );
    conforms(&doc, "POST", ws, &created);
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &owner(),
            ws,
            SEED_004_REQUEST,
            &[("idempotency-key", "oa-1")],
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &owner(),
            ws,
            &SEED_004_REQUEST.replace("CS101", "X"),
            &[("idempotency-key", "oa-1")],
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &owner(),
            ws,
            r#"{"orgId":1,"settings":{"timezone":"Nowhere"},"extra":true}"#,
            &[("accept-language", "es")],
        ),
    );
    conforms(&doc, "POST", ws, &post_json(&stack, &owner(), ws, "{", &[]));
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &owner(),
            ws,
            SEED_004_REQUEST,
            &[("idempotency-key", "a b")],
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &call(
            &stack,
            None,
            "POST",
            ws,
            &[("content-type", "application/json")],
            Some(SEED_004_REQUEST.as_bytes()),
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &member,
            ws,
            SEED_004_REQUEST,
            &[("accept-language", "fr")],
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &post_json(
            &stack,
            &owner(),
            ws,
            &format!(r#"{{"name":"{}"}}"#, "x".repeat(70_000)),
            &[],
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &call(
            &stack,
            Some(&owner()),
            "POST",
            ws,
            &[("content-type", "text/csv")],
            Some(b"a,b"),
        ),
    );
    conforms(
        &doc,
        "POST",
        ws,
        &call(&stack, Some(&owner()), "DELETE", ws, &[], None).with_status_check(405),
    );

    // GET /api/workspaces (list): 200 with and without a next page, 400, 403.
    post_json(&stack, &owner(), ws, SEED_004_REQUEST, &[]);
    let page = get(&stack, &member, &format!("{ws}?orgId={ORG}&limit=1"));
    conforms(&doc, "GET", ws, &page);
    assert!(page.json()["nextCursor"].is_string());
    conforms(
        &doc,
        "GET",
        ws,
        &get(&stack, &member, &format!("{ws}?orgId={ORG}")),
    );
    conforms(
        &doc,
        "GET",
        ws,
        &get(&stack, &member, &format!("{ws}?orgId={ORG}&limit=500")),
    );
    conforms(
        &doc,
        "GET",
        ws,
        &get(&stack, &member, &format!("{ws}?orgId={OTHER_ORG}")),
    );

    // GET /api/workspaces/{workspaceId}: 200, 404, 405.
    let id = created.json()["data"]["workspaceId"]
        .as_str()
        .unwrap()
        .to_owned();
    let one = "/api/workspaces/{workspaceId}";
    conforms(
        &doc,
        "GET",
        one,
        &get(&stack, &member, &format!("{ws}/{id}")),
    );
    conforms(
        &doc,
        "GET",
        one,
        &get(&stack, &member, &format!("{ws}/w-none")),
    );
    conforms(
        &doc,
        "GET",
        one,
        &call(
            &stack,
            Some(&member),
            "PUT",
            &format!("{ws}/{id}"),
            &[],
            None,
        )
        .with_status_check(405),
    );

    // Organization settings: 200 (GET, PUT), 400, 403, 404, 415.
    let settings = "/api/orgs/{orgId}/settings";
    let path = format!("/api/orgs/{ORG}/settings");
    let put = |who: &Identity, ct: &str, body: &str| {
        call(
            &stack,
            Some(who),
            "PUT",
            &path,
            &[("content-type", ct)],
            Some(body.as_bytes()),
        )
    };
    conforms(&doc, "GET", settings, &get(&stack, &member, &path));
    conforms(
        &doc,
        "PUT",
        settings,
        &put(
            &owner(),
            "application/json",
            r#"{"allowUserWorkspaceCreation":false,"subscriptionId":"sub-abc123def456"}"#,
        ),
    );
    conforms(&doc, "GET", settings, &get(&stack, &member, &path));
    conforms(
        &doc,
        "PUT",
        settings,
        &put(&owner(), "application/json", r#"{"subscriptionId":7}"#),
    );
    conforms(
        &doc,
        "PUT",
        settings,
        &put(
            &member,
            "application/json",
            r#"{"allowUserWorkspaceCreation":true}"#,
        ),
    );
    conforms(&doc, "PUT", settings, &put(&owner(), "text/plain", "on"));
    conforms(
        &doc,
        "GET",
        settings,
        &get(&stack, &member, "/api/orgs/nope/settings"),
    );
    conforms(
        &doc,
        "GET",
        settings,
        &get(&stack, &user("u-x", &[(OTHER_ORG, "owner")]), &path),
    );

    // POST /api/v3/workspaces: 201 in three encodings, 400, 403, 415.
    let v3 = "/api/v3/workspaces";
    let first = v3_post(
        &stack,
        &admin,
        "application/json",
        r#"{"name":"Engineering Team Workspace","description":"Workspace for the engineering team"}"#,
    );
    conforms(&doc, "POST", v3, &first);
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(
            &stack,
            &admin,
            "application/x-www-form-urlencoded",
            "name=Form",
        ),
    );
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(
            &stack,
            &admin,
            "multipart/form-data; boundary=q",
            "--q\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nMultipart\r\n--q--\r\n",
        ),
    );
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(
            &stack,
            &admin,
            "application/json",
            r#"{"name":"","color":"red"}"#,
        ),
    );
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(&stack, &member, "application/json", r#"{"name":"Mine"}"#),
    );
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(&stack, &admin, "application/xml", "<name/>"),
    );
    conforms(
        &doc,
        "POST",
        v3,
        &v3_post(
            &stack,
            &user("u-2", &[(ORG, "member"), (OTHER_ORG, "member")]),
            "application/json",
            r#"{"name":"x"}"#,
        ),
    );

    // GET /api/v3/workspaces/{id}: 200, 404.
    let v3_one = "/api/v3/workspaces/{id}";
    conforms(
        &doc,
        "GET",
        v3_one,
        &get(&stack, &member, &format!("{v3}/{}", first.json()["id"])),
    );
    conforms(
        &doc,
        "GET",
        v3_one,
        &get(&stack, &member, &format!("{v3}/999")),
    );
}

trait StatusCheck {
    fn with_status_check(self, status: u16) -> Self;
}

impl StatusCheck for Response {
    fn with_status_check(self, status: u16) -> Self {
        assert_eq!(self.status, status, "{}", self.text());
        self
    }
}
