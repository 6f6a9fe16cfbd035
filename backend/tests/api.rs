//! The whole API on the native target: the real pipeline against an in-memory store, with
//! identities signed as the gateway signs them.

// Helpers outside `#[test]` functions are test code too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::cell::Cell;
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};

use chrono::{TimeZone, Utc};
use edge_contract::permission::{
    RoleMap, ORG_SETTINGS_READ, ORG_SETTINGS_WRITE, WORKSPACE_CREATE,
    WORKSPACE_CREATE_SELF_SERVICE, WORKSPACE_READ,
};
use edge_contract::{Identity, Signer, Verifier, IDENTITY_HEADER, SIGNATURE_HEADER};
use serde_json::{json, Value};
use workspace_backend::app::{handle, Env};
use workspace_backend::http::{ApiRequest, ApiResponse, MAX_BODY_BYTES};
use workspace_backend::store::MemoryKv;

const KEY: &[u8] = b"test-gateway-key-0123456789abcdef";
const ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";
const OTHER_ORG: &str = "b1b2c3d4-5678-90ef-1234-567890abcdef";
const NOW: i64 = 1_795_000_000;
const ISSUER: &str = "https://idp.example";

fn seed_body() -> Value {
    json!({
        "orgId": ORG,
        "name": "CS101: Introduction to AI",
        "description": "Fall 2025 lecture series for undergraduate students",
        "visibility": "org",
        "settings": {"timezone": "America/Los_Angeles", "defaultLanguage": "en-US", "educationMode": true,
                     "lmsIntegration": "canvas", "examGenerationEnabled": true, "beginnerModeDefault": true},
        "allowedDomains": ["university.edu"],
        "featureFlags": {"realTimeTranslation": true, "roleAwareSummaries": true, "examGeneration": true,
                         "breakoutRooms": true, "aiAttendee": false},
        "supportedLanguages": ["en-US", "es-ES", "fr-FR"]
    })
}

/// The role map `envoy/envoy.yaml` ships: the edge applies it to the token and forwards
/// the permissions; the backend never sees a role.
fn shipped_roles() -> RoleMap {
    let admin = [
        WORKSPACE_CREATE,
        WORKSPACE_CREATE_SELF_SERVICE,
        WORKSPACE_READ,
        ORG_SETTINGS_READ,
        ORG_SETTINGS_WRITE,
    ];
    let member = [
        WORKSPACE_CREATE_SELF_SERVICE,
        WORKSPACE_READ,
        ORG_SETTINGS_READ,
    ];
    let perms = |p: &[&str]| p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>();
    RoleMap::new([
        ("owner".to_owned(), perms(&admin)),
        ("admin".to_owned(), perms(&admin)),
        ("member".to_owned(), perms(&member)),
    ])
}

/// The identity the edge forwards for a token with one role in each of `orgs` and the
/// explicit `grants`.
fn granted(sub: &str, orgs: &[(&str, &str)], grants: &[&str]) -> Identity {
    let mut map = BTreeMap::new();
    for (org, role) in orgs {
        map.insert((*org).to_owned(), vec![(*role).to_owned()]);
    }
    let grants: Vec<String> = grants.iter().map(|g| (*g).to_owned()).collect();
    Identity {
        iss: ISSUER.into(),
        sub: sub.into(),
        permissions: shipped_roles().effective(&map, &grants),
        ..Identity::default()
    }
}

fn user(sub: &str, orgs: &[(&str, &str)]) -> Identity {
    granted(sub, orgs, &[])
}

fn owner() -> Identity {
    user("u-owner", &[(ORG, "owner")])
}

struct Api {
    kv: MemoryKv,
    verifier: Verifier,
    uuids: Cell<u128>,
}

impl Api {
    fn new() -> Self {
        Self {
            kv: MemoryKv::new(),
            verifier: Verifier::new(vec![KEY.to_vec()]),
            uuids: Cell::new(1),
        }
    }

    fn run(&self, req: ApiRequest) -> ApiResponse {
        let next = || {
            let n = self.uuids.get();
            self.uuids.set(n + 1);
            uuid::Builder::from_random_bytes((n * 7_919).to_be_bytes()).into_uuid()
        };
        let env = Env {
            kv: &self.kv,
            verifier: Some(&self.verifier),
            now: Utc.timestamp_opt(NOW, 0).unwrap(),
            new_uuid: &next,
        };
        handle(&req, &env)
    }

    /// `req` as the gateway forwards it for `who`.
    fn as_user(&self, who: &Identity, req: ApiRequest) -> ApiResponse {
        self.run(sign(who, req))
    }

    fn post(&self, who: &Identity, path: &str, body: &Value) -> ApiResponse {
        let req = ApiRequest::new("POST", path)
            .with_header("content-type", "application/json")
            .with_body(body.to_string());
        self.as_user(who, req)
    }

    fn get(&self, who: &Identity, path: &str) -> ApiResponse {
        self.as_user(who, ApiRequest::new("GET", path))
    }
}

/// `req` with the headers the gateway adds for `who`: a fresh nonce each time, as the
/// gateway draws one per request (a client's retry is a new request to it).
fn sign(who: &Identity, req: ApiRequest) -> ApiRequest {
    let path = req.path_and_query();
    sign_as(who, req, &path)
}

/// `req` signed as the gateway signs a request whose `:path` was `path`.
fn sign_as(who: &Identity, req: ApiRequest, path: &str) -> ApiRequest {
    static NONCES: AtomicU64 = AtomicU64::new(1);
    let rid = "0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a";
    let req = if req.header("x-request-id").is_some() {
        req
    } else {
        req.with_header("x-request-id", rid)
    };
    let r = edge_contract::Request {
        request_id: req.header("x-request-id").unwrap_or(""),
        method: &req.method,
        path,
        body: &req.body,
    };
    let mut nonce = [0; 16];
    nonce[..8].copy_from_slice(&NONCES.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    let signed = Signer::new(KEY.to_vec()).sign(who, &r, NOW as u64, nonce);
    req.with_header(IDENTITY_HEADER, &signed.identity)
        .with_header(SIGNATURE_HEADER, &signed.signature)
}

fn problem_type(r: &ApiResponse) -> String {
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{}",
        String::from_utf8_lossy(&r.body)
    );
    r.json_body()["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:workspace-api:problem:")
        .to_owned()
}

fn pointers(r: &ApiResponse) -> Vec<String> {
    r.json_body()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn the_seed_example_creates_the_seed_response() {
    let api = Api::new();
    let r = api.post(&owner(), "/api/workspaces", &seed_body());
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    assert_eq!(
        r.header("x-request-id"),
        Some("0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a")
    );
    let body = r.json_body();
    assert_eq!(body["message"], "Workspace created successfully");
    let data = &body["data"];
    let id = data["workspaceId"].as_str().unwrap();
    assert!(
        id.starts_with("w-") && uuid::Uuid::parse_str(&id[2..]).is_ok(),
        "{id}"
    );
    assert_eq!(
        r.header("location"),
        Some(format!("/api/workspaces/{id}").as_str())
    );
    let mut expected = seed_body();
    for (k, v) in [
        ("workspaceId", json!(id)),
        ("createdBy", json!("u-owner")),
        ("createdAt", json!("2026-11-18T11:06:40Z")),
        ("updatedAt", json!("2026-11-18T11:06:40Z")),
        ("subscriptionId", Value::Null),
        ("memberCount", json!(1)),
    ] {
        expected[k] = v;
    }
    for (k, v) in [
        ("dlpEnabled", true),
        ("realTimeSummaries", true),
        ("retentionAlerts", true),
    ] {
        expected["settings"][k] = json!(v);
    }
    expected["featureFlags"]["meetingEnergyDashboard"] = json!(false);
    assert_eq!(data, &expected);

    let got = api.get(
        &user("u-member", &[(ORG, "member")]),
        &format!("/api/workspaces/{id}"),
    );
    assert_eq!(got.status, 200);
    assert_eq!(&got.json_body()["data"], data);
    // Not visible outside the organization, nor under an unknown ID.
    assert_eq!(
        api.get(
            &user("u-x", &[(OTHER_ORG, "owner")]),
            &format!("/api/workspaces/{id}")
        )
        .status,
        404
    );
    assert_eq!(api.get(&owner(), "/api/workspaces/w-unknown").status, 404);
}

#[test]
fn defaults_and_normalization() {
    let api = Api::new();
    let body = json!({"orgId": ORG.to_uppercase(), "name": "  Lab  ", "allowedDomains": ["Université.EDU.", "xn--universit-j4a.edu", "b.org"],
                      "supportedLanguages": ["fr-fr", "FR-FR", "es"]});
    let r = api.post(&owner(), "/api/workspaces", &body);
    assert_eq!(r.status, 201, "{}", String::from_utf8_lossy(&r.body));
    let d = &r.json_body()["data"];
    assert_eq!(d["orgId"], ORG);
    assert_eq!(d["name"], "Lab");
    assert_eq!(d["description"], "");
    assert_eq!(d["visibility"], "org");
    assert_eq!(
        d["allowedDomains"],
        json!(["xn--universit-j4a.edu", "b.org"])
    );
    assert_eq!(d["supportedLanguages"], json!(["fr-FR", "es"]));
    assert_eq!(d["settings"]["defaultLanguage"], "fr-FR");
    assert_eq!(d["settings"]["timezone"], "UTC");
    assert_eq!(d["settings"]["lmsIntegration"], "none");
}

#[test]
fn every_invalid_field_is_reported_with_its_pointer() {
    let api = Api::new();
    let body = json!({"orgId": "not-a-uuid", "name": "   ", "visibility": "secret", "extra": 1,
                      "settings": {"timezone": "Mars/Olympus", "defaultLanguage": "de-DE", "lmsIntegration": "x", "educationMode": "yes", "theme": "dark"},
                      "allowedDomains": ["not a domain", "-bad-.com", "localhost", 7],
                      "featureFlags": {"aiAttendee": 1, "teleport": true},
                      "supportedLanguages": ["en-US", "xx-invalid-tag-!!", "en-AB"]});
    let r = api.post(&owner(), "/api/workspaces", &body);
    assert_eq!(r.status, 400);
    assert_eq!(problem_type(&r), "validation-failed");
    let mut got = pointers(&r);
    got.sort();
    let mut want = vec![
        "#/orgId",
        "#/name",
        "#/visibility",
        "#/extra",
        "#/settings/timezone",
        "#/settings/defaultLanguage",
        "#/settings/lmsIntegration",
        "#/settings/educationMode",
        "#/settings/theme",
        "#/allowedDomains/0",
        "#/allowedDomains/1",
        "#/allowedDomains/2",
        "#/allowedDomains/3",
        "#/featureFlags/aiAttendee",
        "#/featureFlags/teleport",
        "#/supportedLanguages/1",
        "#/supportedLanguages/2",
    ];
    want.sort();
    assert_eq!(got, want);
    // Required fields, a too-long name, and a body that is not an object.
    let r = api.post(&owner(), "/api/workspaces", &json!({}));
    assert_eq!(pointers(&r), vec!["#/orgId", "#/name"]);
    let r = api.post(
        &owner(),
        "/api/workspaces",
        &json!({"orgId": ORG, "name": "x".repeat(101)}),
    );
    assert_eq!(pointers(&r), vec!["#/name"]);
    assert_eq!(
        api.post(
            &owner(),
            "/api/workspaces",
            &json!({"orgId": ORG, "name": "é".repeat(100)})
        )
        .status,
        201
    );
    assert_eq!(
        api.post(&owner(), "/api/workspaces", &json!([1])).status,
        400
    );
}

#[test]
fn identity_must_come_signed_from_the_gateway() {
    let api = Api::new();
    let plain = ApiRequest::new("POST", "/api/workspaces")
        .with_header("content-type", "application/json")
        .with_body(seed_body().to_string());
    let r = api.run(plain.clone());
    assert_eq!(r.status, 401);
    assert_eq!(problem_type(&r), "unauthenticated");
    assert!(r.header("x-request-id").is_some());
    // Forged identity, a valid signature for another path, another key: all 401.
    let forged = plain
        .clone()
        .with_header(IDENTITY_HEADER, "eyJzdWIiOiJ1LW1hbGxvcnkifQ")
        .with_header(SIGNATURE_HEADER, "t=1795000000,v1=AAAA");
    assert_eq!(api.run(forged).status, 401);
    let mut moved = sign(&owner(), ApiRequest::new("POST", "/api/orgs/x/settings"));
    moved.path = "/api/workspaces".into();
    assert_eq!(api.run(moved).status, 401);
    let mut other_key = Api::new();
    other_key.verifier = Verifier::new(vec![b"another-key-0123456789abcdef-xxxxxx".to_vec()]);
    assert_eq!(
        other_key
            .post(&owner(), "/api/workspaces", &seed_body())
            .status,
        401
    );
    // No key configured: fail closed.
    let env = Env {
        kv: &api.kv,
        verifier: None,
        now: Utc::now(),
        new_uuid: &uuid::Uuid::new_v4,
    };
    assert_eq!(handle(&sign(&owner(), plain), &env).status, 500);
}

#[test]
fn creating_needs_workspace_create_in_the_target_org() {
    let api = Api::new();
    for (who, status) in [
        (user("u-admin", &[(ORG, "admin")]), 201),
        (user("u-member", &[(ORG, "member")]), 403),
        (user("u-outsider", &[(OTHER_ORG, "owner")]), 403),
        (
            granted("u-rbac", &[(ORG, "member")], &[WORKSPACE_CREATE]),
            201,
        ),
        (
            granted("u-rbac-out", &[(OTHER_ORG, "member")], &[WORKSPACE_CREATE]),
            403,
        ),
    ] {
        let r = api.post(&who, "/api/workspaces", &seed_body());
        assert_eq!(r.status, status, "{}", who.sub);
        if status == 403 {
            assert_eq!(problem_type(&r), "forbidden");
            assert!(
                r.json_body()["detail"]
                    .as_str()
                    .unwrap()
                    .contains(WORKSPACE_CREATE),
                "the 403 names the missing permission"
            );
        }
    }
    // The backend decides on the permissions the identity carries, whatever the roles were:
    // a role map that lets members create is followed, one that takes it from admins too.
    let mut member = user("u-member-creator", &[(ORG, "member")]);
    member
        .permissions
        .get_mut(ORG)
        .unwrap()
        .insert(WORKSPACE_CREATE.into());
    assert_eq!(
        api.post(&member, "/api/workspaces", &seed_body()).status,
        201
    );
    let mut admin = user("u-admin-reader", &[(ORG, "admin")]);
    admin
        .permissions
        .insert(ORG.into(), [WORKSPACE_READ.to_owned()].into());
    assert_eq!(
        api.post(&admin, "/api/workspaces", &seed_body()).status,
        403
    );
}

#[test]
fn http_level_rejections() {
    let api = Api::new();
    let r = api.as_user(&owner(), ApiRequest::new("DELETE", "/api/workspaces"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET, POST")));
    assert_eq!(problem_type(&r), "method-not-allowed");
    let r = api.as_user(&owner(), ApiRequest::new("POST", "/api/v3/workspaces/1"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(
        problem_type(&api.get(&owner(), "/api/nothing")),
        "not-found"
    );
    let xml = ApiRequest::new("POST", "/api/workspaces")
        .with_header("content-type", "text/xml")
        .with_body("<a/>");
    assert_eq!(
        problem_type(&api.as_user(&owner(), xml)),
        "unsupported-media-type"
    );
    let broken = ApiRequest::new("POST", "/api/workspaces")
        .with_header("content-type", "application/json")
        .with_body("{\"orgId\":");
    assert_eq!(
        problem_type(&api.as_user(&owner(), broken)),
        "malformed-body"
    );
    let mut big =
        ApiRequest::new("POST", "/api/workspaces").with_header("content-type", "application/json");
    big.body_too_large = true;
    let r = api.as_user(&owner(), big);
    assert_eq!(r.status, 413);
    assert!(r.json_body()["detail"]
        .as_str()
        .unwrap()
        .contains(&MAX_BODY_BYTES.to_string()));
}

#[test]
fn problems_speak_the_callers_language() {
    let api = Api::new();
    for (accept, lang, title) in [
        (None, "en", "Forbidden"),
        (Some("es-MX,es;q=0.9"), "es", "Prohibido"),
        (Some("de, fr;q=0.5"), "fr", "Interdit"),
    ] {
        let mut req = ApiRequest::new("POST", "/api/workspaces")
            .with_header("content-type", "application/json")
            .with_body(seed_body().to_string());
        if let Some(a) = accept {
            req = req.with_header("accept-language", a);
        }
        let r = api.as_user(&user("u-member", &[(ORG, "member")]), req);
        assert_eq!(r.header("content-language"), Some(lang));
        assert_eq!(r.json_body()["title"], title);
        assert_eq!(r.json_body()["instance"], "/api/workspaces");
        assert_eq!(
            r.json_body()["requestId"],
            "0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a"
        );
    }
}

fn with_key(body: &Value, key: &str) -> ApiRequest {
    ApiRequest::new("POST", "/api/workspaces")
        .with_header("content-type", "application/json")
        .with_header("idempotency-key", key)
        .with_body(body.to_string())
}

#[test]
fn idempotent_retries_replay_and_reuse_is_refused() {
    let api = Api::new();
    let first = api.as_user(&owner(), with_key(&seed_body(), "k-1"));
    assert_eq!(first.status, 201);
    assert_eq!(first.header("idempotent-replayed"), None);
    let again = api.as_user(&owner(), with_key(&seed_body(), "k-1"));
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(again.json_body(), first.json_body());
    let mut other = seed_body();
    other["name"] = json!("Another");
    let r = api.as_user(&owner(), with_key(&other, "k-1"));
    assert_eq!(
        (r.status, problem_type(&r)),
        (422, "idempotency-key-reused".to_owned())
    );
    // Keys are per user: another admin's "k-1" is a new request.
    let r = api.as_user(
        &user("u-admin", &[(ORG, "admin")]),
        with_key(&seed_body(), "k-1"),
    );
    assert_eq!((r.status, r.header("idempotent-replayed")), (201, None));
    assert_eq!(
        problem_type(&api.as_user(&owner(), with_key(&seed_body(), "bad key"))),
        "invalid-idempotency-key"
    );
    // An invalid body does not consume the key.
    assert_eq!(
        api.as_user(&owner(), with_key(&json!({}), "k-2")).status,
        400
    );
    assert_eq!(
        api.as_user(&owner(), with_key(&seed_body(), "k-2")).status,
        201
    );
    let listed = api
        .get(&owner(), &format!("/api/workspaces?orgId={ORG}&limit=100"))
        .json_body();
    assert_eq!(listed["data"].as_array().unwrap().len(), 3);
}

#[test]
fn listing_pages_through_every_workspace_once() {
    let api = Api::new();
    let mut created = Vec::new();
    for i in 0..45 {
        let mut body = seed_body();
        body["name"] = json!(format!("ws {i}"));
        created.push(
            api.post(&owner(), "/api/workspaces", &body).json_body()["data"]["workspaceId"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    api.post(
        &user("u-o", &[(OTHER_ORG, "owner")]),
        "/api/workspaces",
        &json!({"orgId": OTHER_ORG, "name": "elsewhere"}),
    );
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    let member = user("u-member", &[(ORG, "member")]);
    loop {
        let path = match &cursor {
            None => format!("/api/workspaces?orgId={ORG}"),
            Some(c) => format!("/api/workspaces?orgId={ORG}&cursor={c}"),
        };
        let page = api.get(&member, &path);
        assert_eq!(page.status, 200);
        let body = page.json_body();
        seen.extend(
            body["data"]
                .as_array()
                .unwrap()
                .iter()
                .map(|w| w["workspaceId"].as_str().unwrap().to_owned()),
        );
        match body["nextCursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created);
    for (query, status) in [
        ("", 400),
        ("?orgId=x", 400),
        (&format!("?orgId={ORG}&limit=0") as &str, 400),
        (&format!("?orgId={ORG}&cursor=zz"), 400),
        // Only what `Cursor` and `limit` in openapi.yaml accept: no sign, no leading zero.
        (&format!("?orgId={ORG}&cursor="), 400),
        (&format!("?orgId={ORG}&cursor=c1.%2B1"), 400),
        (&format!("?orgId={ORG}&cursor=c1.01"), 400),
        (&format!("?orgId={ORG}&cursor=c1.0"), 400),
        (&format!("?orgId={ORG}&cursor=c1.1234567890123456789"), 400),
        (&format!("?orgId={ORG}&cursor=c1.999"), 200),
        (&format!("?orgId={ORG}&limit=%2B5"), 400),
        (&format!("?orgId={ORG}&limit=100"), 200),
        (&format!("?orgId={ORG}&sort=asc"), 400),
        (&format!("?orgId={OTHER_ORG}"), 403),
    ] {
        let r = api.get(&member, &format!("/api/workspaces{query}"));
        assert_eq!(r.status, status, "{query}");
    }
}

#[test]
fn store_failures_are_503_and_acknowledge_nothing() {
    let api = Api::new();
    api.kv.set_failing(Some("disk on fire"));
    let r = api.post(&owner(), "/api/workspaces", &seed_body());
    assert_eq!(
        (r.status, problem_type(&r)),
        (503, "store-unavailable".to_owned())
    );
    assert_eq!(r.header("retry-after"), Some("1"));
    assert!(!String::from_utf8_lossy(&r.body).contains("disk on fire"));
    api.kv.set_failing(None);
    assert!(api.kv.keys().is_empty());
    assert_eq!(
        api.post(&owner(), "/api/workspaces", &seed_body()).status,
        201
    );
}

#[test]
fn org_settings_are_for_admins_and_feed_new_workspaces() {
    let api = Api::new();
    let path = format!("/api/orgs/{ORG}/settings");
    let put = |who: &Identity, body: Value| {
        api.as_user(
            who,
            ApiRequest::new("PUT", &path)
                .with_header("content-type", "application/json")
                .with_body(body.to_string()),
        )
    };
    let member = user("u-member", &[(ORG, "member")]);
    assert_eq!(
        api.get(&member, &path).json_body()["data"]["allowUserWorkspaceCreation"],
        false
    );
    assert_eq!(
        put(&member, json!({"allowUserWorkspaceCreation": true})).status,
        403
    );
    let r = put(
        &owner(),
        json!({"allowUserWorkspaceCreation": "yes", "plan": 1}),
    );
    let mut got = pointers(&r);
    got.sort();
    assert_eq!(got, vec!["#/allowUserWorkspaceCreation", "#/plan"]);
    let r = put(
        &owner(),
        json!({"allowUserWorkspaceCreation": true, "subscriptionId": "sub-abc123def456"}),
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body()["data"]["updatedBy"], "u-owner");
    assert_eq!(
        api.get(&member, &path).json_body()["data"]["subscriptionId"],
        "sub-abc123def456"
    );
    assert_eq!(
        api.get(&user("u-x", &[(OTHER_ORG, "owner")]), &path).status,
        403
    );
    assert_eq!(
        api.get(&owner(), "/api/orgs/not-a-uuid/settings").status,
        404
    );
    let ws = api
        .post(&owner(), "/api/workspaces", &seed_body())
        .json_body();
    assert_eq!(ws["data"]["subscriptionId"], "sub-abc123def456");
}

fn v3(api: &Api, who: &Identity, content_type: &str, body: &str) -> ApiResponse {
    api.as_user(
        who,
        ApiRequest::new("POST", "/api/v3/workspaces")
            .with_header("content-type", content_type)
            .with_body(body),
    )
}

#[test]
fn v3_accepts_three_encodings_and_admins_always_create() {
    let api = Api::new();
    let admin = Identity {
        company: Some(ORG.into()),
        ..user("u-admin", &[(ORG, "admin")])
    };
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nEngineering Team Workspace\r\n--XyZ\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nWorkspace for the engineering team\r\n--XyZ--\r\n";
    let cases = [
        ("application/json", r#"{"name":"Engineering Team Workspace","description":"Workspace for the engineering team"}"#.to_owned()),
        ("application/x-www-form-urlencoded", "name=Engineering+Team+Workspace&description=Workspace%20for%20the%20engineering%20team".to_owned()),
        ("multipart/form-data; boundary=XyZ", multipart.to_owned()),
    ];
    for (i, (ct, body)) in cases.iter().enumerate() {
        let r = v3(&api, &admin, ct, body);
        assert_eq!(r.status, 201, "{ct}: {}", String::from_utf8_lossy(&r.body));
        assert_eq!(
            r.json_body(),
            json!({
            "id": i + 1, "name": "Engineering Team Workspace", "workspace_type": "custom", "document_upload_method": "manual",
            "description": "Workspace for the engineering team", "created_at": "2026-11-18T11:06:40Z", "updated_at": "2026-11-18T11:06:40Z",
            "user_role": "OWNER", "used_storage": 0.0, "files_count": 0, "summaries": []})
        );
    }
    let r = v3(
        &api,
        &admin,
        "application/json",
        r#"{"name":"No description"}"#,
    );
    assert_eq!(r.json_body()["description"], "");
    let got = api.get(
        &user("u-member", &[(ORG, "member")]),
        "/api/v3/workspaces/4",
    );
    assert_eq!(
        (got.status, got.json_body()["user_role"].clone()),
        (200, json!("MEMBER"))
    );
    assert_eq!(
        api.get(&admin, "/api/v3/workspaces/4").json_body()["user_role"],
        "OWNER"
    );
    assert_eq!(
        api.get(
            &user("u-x", &[(OTHER_ORG, "owner")]),
            "/api/v3/workspaces/4"
        )
        .status,
        404
    );
    assert_eq!(api.get(&admin, "/api/v3/workspaces/99").status, 404);
}

#[test]
fn v3_standard_users_need_the_company_to_allow_it() {
    let api = Api::new();
    let standard = user("u-std", &[(ORG, "member")]);
    let r = v3(&api, &standard, "application/json", r#"{"name":"Mine"}"#);
    assert_eq!(
        (r.status, problem_type(&r)),
        (403, "workspace-creation-disabled".to_owned())
    );
    let settings = ApiRequest::new("PUT", &format!("/api/orgs/{ORG}/settings"))
        .with_header("content-type", "application/json")
        .with_body(r#"{"allowUserWorkspaceCreation":true}"#);
    assert_eq!(api.as_user(&owner(), settings).status, 200);
    assert_eq!(
        v3(&api, &standard, "application/json", r#"{"name":"Mine"}"#).status,
        201
    );
    // Several organizations and no company claim: ambiguous. None at all: 403.
    let two = user("u-two", &[(ORG, "member"), (OTHER_ORG, "member")]);
    assert_eq!(
        problem_type(&v3(&api, &two, "application/json", r#"{"name":"x"}"#)),
        "company-required"
    );
    assert_eq!(
        v3(
            &api,
            &user("u-none", &[]),
            "application/json",
            r#"{"name":"x"}"#
        )
        .status,
        403
    );
}

/// The identity `who` with exactly `perms` in `org`, whatever its roles were.
fn with_perms(who: &Identity, org: &str, perms: &[&str]) -> Identity {
    let mut who = who.clone();
    who.permissions
        .insert(org.into(), perms.iter().map(|p| (*p).to_owned()).collect());
    who
}

#[test]
fn v3_and_settings_follow_the_permissions_not_the_roles() {
    let api = Api::new();
    let body = r#"{"name":"Mine"}"#;
    let member = user("u-member", &[(ORG, "member")]);
    // The company does not allow user creation (no settings record): a member with
    // `workspace:create` bypasses it, one with self-service only is refused, one with
    // neither is told which permission is missing.
    let creator = with_perms(
        &member,
        ORG,
        &[WORKSPACE_CREATE, WORKSPACE_CREATE_SELF_SERVICE],
    );
    assert_eq!(v3(&api, &creator, "application/json", body).status, 201);
    let r = v3(&api, &member, "application/json", body);
    assert_eq!(
        (r.status, problem_type(&r)),
        (403, "workspace-creation-disabled".to_owned())
    );
    let reader = with_perms(&member, ORG, &[WORKSPACE_READ]);
    let r = v3(&api, &reader, "application/json", body);
    assert_eq!((r.status, problem_type(&r)), (403, "forbidden".to_owned()));
    assert!(r.json_body()["detail"]
        .as_str()
        .unwrap()
        .contains(WORKSPACE_CREATE_SELF_SERVICE));
    // An admin whose role no longer carries `workspace:create` is a standard user here.
    let admin = user("u-admin", &[(ORG, "admin")]);
    let demoted = with_perms(
        &admin,
        ORG,
        &[WORKSPACE_CREATE_SELF_SERVICE, WORKSPACE_READ],
    );
    assert_eq!(v3(&api, &demoted, "application/json", body).status, 403);

    // Settings: read with `org:settings:read`, written with `org:settings:write`.
    let path = format!("/api/orgs/{ORG}/settings");
    let put = |who: &Identity| {
        api.as_user(
            who,
            ApiRequest::new("PUT", &path)
                .with_header("content-type", "application/json")
                .with_body(r#"{"allowUserWorkspaceCreation":true}"#),
        )
    };
    let writer = with_perms(&member, ORG, &[ORG_SETTINGS_WRITE]);
    assert_eq!(put(&writer).status, 200);
    let r = put(&with_perms(&admin, ORG, &[ORG_SETTINGS_READ]));
    assert_eq!(r.status, 403);
    assert!(r.json_body()["detail"]
        .as_str()
        .unwrap()
        .contains(ORG_SETTINGS_WRITE));
    assert_eq!(
        api.get(&writer, &path).status,
        403,
        "writing is not reading"
    );
    assert_eq!(api.get(&member, &path).status, 200);
    // Now the company allows it: self-service suffices.
    assert_eq!(v3(&api, &member, "application/json", body).status, 201);
    // Reading workspaces needs `workspace:read`, in the list and by ID.
    let ws = api
        .post(&owner(), "/api/workspaces", &seed_body())
        .json_body();
    let id = ws["data"]["workspaceId"].as_str().unwrap();
    let no_read = with_perms(&member, ORG, &[WORKSPACE_CREATE_SELF_SERVICE]);
    assert_eq!(
        api.get(&no_read, &format!("/api/workspaces/{id}")).status,
        404
    );
    assert_eq!(
        api.get(&no_read, &format!("/api/workspaces?orgId={ORG}"))
            .status,
        403
    );
    assert_eq!(api.get(&no_read, "/api/v3/workspaces/1").status, 404);
    assert_eq!(api.get(&member, "/api/v3/workspaces/1").status, 200);
}

#[test]
fn a_v3_retry_may_switch_encoding_or_json_spelling_and_is_replayed() {
    let api = Api::new();
    let admin = Identity {
        company: Some(ORG.into()),
        ..user("u-admin", &[(ORG, "admin")])
    };
    let send = |ct: &str, body: &str, key: &str| {
        api.as_user(
            &admin,
            ApiRequest::new("POST", "/api/v3/workspaces")
                .with_header("content-type", ct)
                .with_header("idempotency-key", key)
                .with_body(body),
        )
    };
    let first = send(
        "application/json",
        r#"{"name":"Team","description":"d"}"#,
        "k-enc",
    );
    assert_eq!(
        (first.status, first.header("idempotent-replayed")),
        (201, None)
    );
    for (ct, body) in [
        ("application/x-www-form-urlencoded", "name=Team&description=d"),
        ("multipart/form-data; boundary=b", "--b\r\nContent-Disposition: form-data; name=description\r\n\r\nd\r\n--b\r\nContent-Disposition: form-data; name=name\r\n\r\nTeam\r\n--b--\r\n"),
        ("application/json", "{ \"description\": \"d\",\n  \"name\": \"Team\" }"),
    ] {
        let again = send(ct, body, "k-enc");
        assert_eq!(
            (again.status, again.header("idempotent-replayed")),
            (201, Some("true")),
            "{ct}"
        );
        assert_eq!(again.json_body(), first.json_body(), "{ct}");
    }
    let other = send(
        "application/x-www-form-urlencoded",
        "name=Team&description=e",
        "k-enc",
    );
    assert_eq!(
        (other.status, problem_type(&other)),
        (422, "idempotency-key-reused".to_owned())
    );
    // The key syntax is the edge's: `\` and `,` are refused, as is a repeated header.
    for bad in ["a\\b", "a,b", "\"a\\b\""] {
        let r = send("application/json", r#"{"name":"x"}"#, bad);
        assert_eq!(
            (r.status, problem_type(&r)),
            (400, "invalid-idempotency-key".to_owned()),
            "{bad}"
        );
    }
    let twice = api.as_user(
        &admin,
        ApiRequest::new("POST", "/api/v3/workspaces")
            .with_header("content-type", "application/json")
            .with_header("idempotency-key", "k-2")
            .with_header("idempotency-key", "k-2")
            .with_body(r#"{"name":"x"}"#),
    );
    assert_eq!(problem_type(&twice), "invalid-idempotency-key");
}

#[test]
fn v3_validation() {
    let api = Api::new();
    let cases: &[(&str, &str, &[&str])] = &[
        ("application/json", r#"{"description":"x"}"#, &["#/name"]),
        ("application/json", r#"{"name":""}"#, &["#/name"]),
        (
            "application/json",
            r#"{"name":5,"description":[]}"#,
            &["#/description", "#/name"],
        ),
        (
            "application/json",
            r#"{"name":"ok","owner":"me"}"#,
            &["#/owner"],
        ),
        (
            "application/x-www-form-urlencoded",
            "name=a&name=b",
            &["#/name"],
        ),
        (
            "application/x-www-form-urlencoded",
            &format!("name={}", "n".repeat(101)),
            &["#/name"],
        ),
        (
            "application/x-www-form-urlencoded",
            "name=ok&color=red",
            &["#/color"],
        ),
    ];
    for (ct, body, want) in cases {
        let r = v3(&api, &owner(), ct, body);
        assert_eq!(r.status, 400, "{body}");
        let mut got = pointers(&r);
        got.sort();
        assert_eq!(got, *want, "{body}");
    }
    assert_eq!(
        problem_type(&v3(&api, &owner(), "text/plain", "name=x")),
        "unsupported-media-type"
    );
    assert_eq!(
        problem_type(&v3(
            &api,
            &owner(),
            "multipart/form-data; boundary=b",
            "garbage"
        )),
        "malformed-body"
    );
}

#[test]
fn v3_idempotency_spans_encodings() {
    let api = Api::new();
    let json_req = ApiRequest::new("POST", "/api/v3/workspaces")
        .with_header("content-type", "application/json")
        .with_header("idempotency-key", "v3-k")
        .with_body(r#"{"name":"Same"}"#);
    let form_req = ApiRequest::new("POST", "/api/v3/workspaces")
        .with_header("content-type", "application/x-www-form-urlencoded")
        .with_header("idempotency-key", "v3-k")
        .with_body("name=Same");
    let a = api.as_user(&owner(), json_req);
    let b = api.as_user(&owner(), form_req);
    assert_eq!(
        (a.status, b.status, b.header("idempotent-replayed")),
        (201, 201, Some("true"))
    );
    assert_eq!(a.json_body()["id"], b.json_body()["id"]);
}

/// The number of workspaces the seed organization lists.
fn listed(api: &Api) -> usize {
    api.get(&owner(), &format!("/api/workspaces?orgId={ORG}&limit=100"))
        .json_body()["data"]
        .as_array()
        .map_or(0, Vec::len)
}

#[test]
fn a_signed_header_set_is_accepted_once_and_only_with_its_body() {
    let api = Api::new();
    let create = |body: &str| {
        ApiRequest::new("POST", "/api/workspaces")
            .with_header("content-type", "application/json")
            .with_body(body.to_owned())
    };
    let body = seed_body().to_string();
    let mut other = seed_body();
    other["orgId"] = json!(OTHER_ORG);
    let other = other.to_string();
    // Captured off the wire: the gateway's headers for one create.
    let captured = sign(&owner(), create(&body));
    let with_body = |b: &str| ApiRequest {
        body: b.as_bytes().to_vec(),
        ..captured.clone()
    };
    let cases = [
        (
            "the headers on another body (before the original)",
            with_body(&other),
            401,
        ),
        ("the original request", with_body(&body), 201),
        ("the same request again", with_body(&body), 401),
        (
            "the headers on another body (after)",
            with_body(&other),
            401,
        ),
        ("the headers on an empty body", with_body(""), 401),
        (
            "a new signature for the same request",
            sign(&owner(), create(&body)),
            201,
        ),
    ];
    for (name, req, status) in cases {
        let r = api.run(req);
        assert_eq!(
            r.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if status == 401 {
            assert_eq!(problem_type(&r), "unauthenticated", "{name}");
            assert_eq!(r.header("www-authenticate"), Some("Bearer"), "{name}");
        }
    }
    assert_eq!(listed(&api), 2);
}

#[test]
fn an_empty_query_or_a_fragment_is_signed_and_verified_alike() {
    let api = Api::new();
    // (what the gateway saw as :path, what the backend's host handed it)
    let cases = [
        ("/api/workspaces?", "/api/workspaces?"),
        ("/api/workspaces?", "/api/workspaces"),
        ("/api/workspaces", "/api/workspaces?"),
        ("/api/workspaces?#top", "/api/workspaces"),
        ("/api/workspaces#top", "/api/workspaces"),
    ];
    for (signed, received) in cases {
        let req = ApiRequest::new("POST", received)
            .with_header("content-type", "application/json")
            .with_body(seed_body().to_string());
        let r = api.run(sign_as(&owner(), req, signed));
        assert_eq!(r.status, 201, "{signed} -> {received}");
    }
    // A query is not dropped: signed without it, received with it, refused.
    let req = ApiRequest::new("GET", &format!("/api/workspaces?orgId={ORG}"));
    let r = api.run(sign_as(&owner(), req, "/api/workspaces"));
    assert_eq!(r.status, 401);
}

#[test]
fn headers_the_service_reads_must_be_text_and_others_are_ignored() {
    let api = Api::new();
    let cases: [(&str, &[u8], u16, &str); 9] = [
        (
            "x-request-id",
            b"0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3\xe9",
            400,
            "invalid-header",
        ),
        ("idempotency-key", b"k-\xff", 400, "invalid-idempotency-key"),
        (
            "content-type",
            b"application/json; charset=\xff",
            400,
            "invalid-header",
        ),
        ("accept-language", b"fr-\xc3", 400, "invalid-header"),
        ("content-length", b"1\xa02", 400, "invalid-header"),
        ("content-length", b"+5", 400, "invalid-header"),
        ("x-edge-identity", b"\xff", 401, "unauthenticated"),
        ("x-edge-signature", b"t=1,\xff", 401, "unauthenticated"),
        ("x-note", b"caf\xe9 \xff", 201, ""),
    ];
    for (name, value, status, slug) in cases {
        // The hostile value comes first: it is the one a first-value reader would use.
        let req = ApiRequest::new("POST", "/api/workspaces")
            .with_header_bytes(name, value)
            .with_header("content-type", "application/json")
            .with_body(seed_body().to_string());
        let r = api.run(sign(&owner(), req));
        assert_eq!(
            r.status,
            status,
            "{name}: {}",
            String::from_utf8_lossy(&r.body)
        );
        if status == 400 {
            assert_eq!(problem_type(&r), slug, "{name}");
            assert_eq!(r.header("content-language"), Some("en"), "{name}");
            let request_id = r.header("x-request-id").unwrap_or("");
            assert_eq!(r.json_body()["requestId"], request_id, "{name}");
            assert_eq!(
                uuid::Uuid::parse_str(request_id).map(|u| u.get_version_num()),
                Ok(4),
                "{name}"
            );
            if slug == "invalid-header" {
                assert!(
                    r.json_body()["detail"]
                        .as_str()
                        .unwrap_or("")
                        .contains(name),
                    "{name}"
                );
            }
        } else if status == 401 {
            assert_eq!(problem_type(&r), slug, "{name}");
        }
    }
    // Only the request with the uninterpreted header created anything.
    assert_eq!(listed(&api), 1);
}

#[test]
fn the_same_subject_from_two_issuers_is_two_users() {
    let api = Api::new();
    let from = |iss: &str| Identity {
        iss: iss.into(),
        company: Some(ORG.into()),
        ..user("u-shared", &[(ORG, "admin")])
    };
    let (a, b) = (from("https://idp-a.example"), from("https://idp-b.example"));
    // Idempotency keys are per user: B's "k" is not A's.
    let first = api.as_user(&a, with_key(&seed_body(), "k"));
    assert_eq!(first.status, 201);
    let mut other = seed_body();
    other["name"] = json!("B's workspace");
    let r = api.as_user(&b, with_key(&other, "k"));
    assert_eq!((r.status, r.header("idempotent-replayed")), (201, None));
    assert_eq!(r.json_body()["data"]["name"], "B's workspace");
    let r = api.as_user(&b, with_key(&seed_body(), "k"));
    assert_eq!(
        (r.status, problem_type(&r)),
        (422, "idempotency-key-reused".to_owned())
    );
    // Ownership is per user: A owns the v3 workspace, B is only a member of the company.
    let created = v3(&api, &a, "application/json", r#"{"name":"A's"}"#);
    assert_eq!(created.status, 201);
    let path = format!("/api/v3/workspaces/{}", created.json_body()["id"]);
    assert_eq!(api.get(&a, &path).json_body()["user_role"], "OWNER");
    assert_eq!(api.get(&b, &path).json_body()["user_role"], "MEMBER");
}

#[test]
fn an_oversized_body_is_413_before_its_signature_is_checked() {
    // The body was not read to its end, so no signature over it can be checked: the size
    // answer comes first, signed or not.
    let api = Api::new();
    let mut big = ApiRequest::new("POST", "/api/workspaces")
        .with_header("content-type", "application/json")
        .with_body(vec![b'x'; MAX_BODY_BYTES]);
    big.body_too_large = true;
    assert_eq!(api.run(big.clone()).status, 413);
    assert_eq!(api.run(sign(&owner(), big)).status, 413);
}

#[test]
fn health_needs_no_identity_and_fails_with_the_store() {
    let api = Api::new();
    let r = api.run(ApiRequest::new("GET", "/healthz"));
    assert_eq!(r.status, 200);
    assert_eq!(r.json_body(), json!({"status": "ok"}));
    assert_eq!(r.header("cache-control"), Some("no-store"));
    assert!(r.header("x-request-id").is_some());
    let r = api.run(ApiRequest::new("POST", "/healthz"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    api.kv.set_failing(Some("disk on fire"));
    let r = api.run(ApiRequest::new("GET", "/healthz"));
    assert_eq!(
        (r.status, problem_type(&r)),
        (503, "store-unavailable".to_owned())
    );
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert!(!String::from_utf8_lossy(&r.body).contains("disk on fire"));
    api.kv.set_failing(None);
    // The probe only reads.
    assert!(api.kv.keys().is_empty());
    // A component without a gateway key refuses every request: not healthy either.
    let env = Env {
        kv: &api.kv,
        verifier: None,
        now: Utc::now(),
        new_uuid: &uuid::Uuid::new_v4,
    };
    assert_eq!(
        handle(&ApiRequest::new("GET", "/healthz"), &env).status,
        500
    );
}
