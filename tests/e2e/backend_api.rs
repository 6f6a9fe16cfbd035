//! The backend component under the real runner, called directly as the gateway would call
//! it: every status code of the API, the seeds' own examples, the three v3 encodings, and the
//! trust boundary.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use crate::support::*;
use e2e::{send, SEED_004_REQUEST};
use serde_json::json;

#[test]
fn seed_004_example_is_created_read_and_listed() {
    let stack = backend();
    let r = post_json(&stack, &owner(), "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let body = r.json();
    assert_eq!(body["message"], "Workspace created successfully");
    let data = &body["data"];
    let id = data["workspaceId"].as_str().unwrap();
    assert!(id.starts_with("w-") && uuid::Uuid::parse_str(&id[2..]).is_ok());
    assert_eq!(data["createdBy"], "u-owner");
    assert_eq!(data["settings"]["dlpEnabled"], true);
    assert_eq!(data["featureFlags"]["meetingEnergyDashboard"], false);
    assert_eq!(data["subscriptionId"], serde_json::Value::Null);
    assert_eq!(data["memberCount"], 1);
    assert_eq!(
        r.header("location").unwrap(),
        format!("/api/workspaces/{id}")
    );

    let member = user("u-member", &[(ORG, "member")]);
    let read = get(&stack, &member, &format!("/api/workspaces/{id}"));
    assert_eq!(read.status, 200);
    assert_eq!(&read.json()["data"], data);
    let list = get(&stack, &member, &format!("/api/workspaces?orgId={ORG}"));
    assert_eq!(list.status, 200);
    assert_eq!(list.json()["data"][0]["workspaceId"], id);
    assert_eq!(list.json()["nextCursor"], serde_json::Value::Null);
}

#[test]
fn seed_000_example_in_all_three_encodings() {
    let stack = backend();
    let admin = edge_contract::Identity {
        company: Some(ORG.into()),
        ..user("u-admin", &[(ORG, "admin")])
    };
    let multipart = "--XyZ\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nEngineering Team Workspace\r\n--XyZ\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nWorkspace for the engineering team\r\n--XyZ--\r\n";
    let cases = [
        ("application/json", r#"{"name":"Engineering Team Workspace","description":"Workspace for the engineering team"}"#),
        ("application/x-www-form-urlencoded", "name=Engineering+Team+Workspace&description=Workspace%20for%20the%20engineering%20team"),
        ("multipart/form-data; boundary=XyZ", multipart),
    ];
    let mut ids = Vec::new();
    for (ct, body) in cases {
        let r = call(
            &stack,
            Some(&admin),
            "POST",
            "/api/v3/workspaces",
            &[("content-type", ct)],
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 201, "{ct}: {}", r.text());
        let b = r.json();
        assert_eq!(b["name"], "Engineering Team Workspace");
        assert_eq!(b["description"], "Workspace for the engineering team");
        assert_eq!(b["user_role"], "OWNER");
        assert_eq!(
            (b["used_storage"].as_f64(), b["files_count"].as_i64()),
            (Some(0.0), Some(0))
        );
        assert_eq!(b["summaries"], json!([]));
        ids.push(b["id"].as_i64().unwrap());
        let read = get(&stack, &admin, &format!("/api/v3/workspaces/{}", b["id"]));
        assert_eq!(read.json(), b);
    }
    assert_eq!(ids, vec![1, 2, 3]);
}

#[test]
fn every_client_error_status_through_the_runner() {
    let stack = backend();
    let member = user("u-member", &[(ORG, "member")]);
    let ws = |body: &str| post_json(&stack, &owner(), "/api/workspaces", body, &[]);

    let r = ws(r#"{"orgId":"x","name":""}"#);
    assert_eq!((r.status, problem(&r)), (400, "validation-failed".into()));
    let pointers: Vec<_> = r.json()["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["pointer"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(pointers, ["#/orgId", "#/name"]);
    assert_eq!(problem(&ws("{")), "malformed-body");
    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", "has space")],
    );
    assert_eq!(
        (r.status, problem(&r)),
        (400, "invalid-idempotency-key".into())
    );
    let r = get(&stack, &member, "/api/workspaces?orgId=nope");
    assert_eq!((r.status, problem(&r)), (400, "invalid-query".into()));
    let two = user("u-two", &[(ORG, "member"), (OTHER_ORG, "member")]);
    let r = post_json(&stack, &two, "/api/v3/workspaces", r#"{"name":"x"}"#, &[]);
    assert_eq!((r.status, problem(&r)), (400, "company-required".into()));

    let r = call(
        &stack,
        None,
        "POST",
        "/api/workspaces",
        &[("content-type", "application/json")],
        Some(SEED_004_REQUEST.as_bytes()),
    );
    assert_eq!((r.status, problem(&r)), (401, "unauthenticated".into()));

    let r = post_json(&stack, &member, "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!((r.status, problem(&r)), (403, "forbidden".into()));
    let r = post_json(
        &stack,
        &member,
        "/api/v3/workspaces",
        r#"{"name":"x"}"#,
        &[],
    );
    assert_eq!(
        (r.status, problem(&r)),
        (403, "workspace-creation-disabled".into())
    );

    let r = get(
        &stack,
        &member,
        "/api/workspaces/w-00000000-0000-4000-8000-000000000000",
    );
    assert_eq!((r.status, problem(&r)), (404, "not-found".into()));
    let r = call(
        &stack,
        Some(&owner()),
        "PATCH",
        "/api/workspaces",
        &[],
        None,
    );
    assert_eq!(
        (r.status, problem(&r), r.header("allow")),
        (405, "method-not-allowed".into(), Some("GET, POST"))
    );

    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", "k-reused")],
    );
    assert_eq!(r.status, 201);
    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        &SEED_004_REQUEST.replace("CS101", "CS102"),
        &[("idempotency-key", "k-reused")],
    );
    assert_eq!(
        (r.status, problem(&r)),
        (422, "idempotency-key-reused".into())
    );

    let big = format!(
        r#"{{"orgId":"{ORG}","name":"big","description":"{}"}}"#,
        "x".repeat(70 * 1024)
    );
    let r = ws(&big);
    assert_eq!((r.status, problem(&r)), (413, "payload-too-large".into()));
    let r = call(
        &stack,
        Some(&owner()),
        "POST",
        "/api/workspaces",
        &[("content-type", "text/plain")],
        Some(b"hello"),
    );
    assert_eq!(
        (r.status, problem(&r)),
        (415, "unsupported-media-type".into())
    );
}

#[test]
fn a_request_in_flight_gets_409() {
    // A claim left pending (as by a create still running on another instance) is written
    // here directly in the runner's store, in the record format the component uses (the
    // key's `#claims` counter, which elected the first request, stays as it is).
    let stack = backend();
    let key = "k-in-flight";
    let first = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", key)],
    );
    assert_eq!(first.status, 201);
    let db = rusqlite::Connection::open(stack.state_dir().join("sqlite_key_value.db")).unwrap();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let changed = db
        .execute(
            "UPDATE spin_key_value SET value = CAST(json_object('fingerprint', json_extract(value, '$.fingerprint'), 'createdAt', ?1) AS BLOB) WHERE store = 'default' AND key LIKE 'idem/%' AND key NOT LIKE '%#claims'",
            [now as i64],
        )
        .unwrap();
    assert_eq!(changed, 1);
    let r = post_json(
        &stack,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[("idempotency-key", key)],
    );
    assert_eq!(
        (r.status, problem(&r), r.header("retry-after")),
        (409, "idempotency-key-in-use".into(), Some("1"))
    );
}

#[test]
fn problems_are_localized() {
    let stack = backend();
    let member = user("u-member", &[(ORG, "member")]);
    for (accept, lang, title) in [
        ("es-ES,es;q=0.9", "es", "Prohibido"),
        ("fr", "fr", "Interdit"),
        ("de", "en", "Forbidden"),
    ] {
        let r = post_json(
            &stack,
            &member,
            "/api/workspaces",
            SEED_004_REQUEST,
            &[("accept-language", accept)],
        );
        assert_eq!(r.status, 403);
        assert_eq!(r.header("content-language"), Some(lang));
        assert_eq!(r.json()["title"], title);
    }
}

#[test]
fn forged_or_replayed_identity_headers_get_401() {
    let stack = backend();
    let url = format!("{}/api/workspaces", stack.backend_url());
    let forged_identity = "eyJzdWIiOiJ1LW1hbGxvcnkiLCJvcmdzIjp7ImExYjJjM2Q0LTU2NzgtOTBlZi0xMjM0LTU2Nzg5MGFiY2RlZiI6WyJvd25lciJdfX0";
    let cases: Vec<Vec<(&str, &str)>> = vec![
        vec![],
        vec![("x-edge-identity", forged_identity)],
        vec![
            ("x-edge-identity", forged_identity),
            ("x-edge-signature", "t=1,v1=AAAA"),
        ],
        vec![
            ("x-edge-identity", forged_identity),
            ("x-edge-signature", "garbage"),
        ],
    ];
    for extra in cases {
        let mut headers = vec![("content-type", "application/json")];
        headers.extend(extra);
        let r = send("POST", &url, &headers, Some(SEED_004_REQUEST.as_bytes()));
        assert_eq!((r.status, problem(&r)), (401, "unauthenticated".into()));
    }
    // Valid headers captured from one request do not authorize another.
    let rid = uuid::Uuid::new_v4().to_string();
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let signed = edge_contract::Signer::new(e2e::dev_hmac_key().into_bytes()).sign(
        &owner(),
        &edge_contract::Request {
            request_id: &rid,
            method: "GET",
            path: "/api/workspaces/w-1",
            body: b"",
        },
        now,
        *uuid::Uuid::new_v4().as_bytes(),
    );
    let headers = [
        ("content-type", "application/json"),
        ("x-request-id", rid.as_str()),
        ("x-edge-identity", &signed.identity),
        ("x-edge-signature", &signed.signature),
    ];
    assert_eq!(
        send("POST", &url, &headers, Some(SEED_004_REQUEST.as_bytes())).status,
        401
    );
    // On the request they were made for they authenticate (404: no such workspace), once.
    let get = || {
        send(
            "GET",
            &format!("{}/api/workspaces/w-1", stack.backend_url()),
            &headers,
            None,
        )
    };
    assert_eq!(get().status, 404);
    let again = get();
    assert_eq!(
        (again.status, problem(&again)),
        (401, "unauthenticated".into())
    );
}

fn backend_with_keys(keys: &str) -> e2e::Stack {
    e2e::Stack::start(e2e::StackOptions {
        envoy: false,
        backend_env: vec![("SPIN_VARIABLE_GATEWAY_HMAC_KEYS".into(), keys.into())],
        ..Default::default()
    })
}

#[test]
fn keys_rotate_through_the_spin_variable_and_a_missing_key_fails_closed() {
    // During a rotation both the next key and the current (dev) key are accepted.
    let rotating = backend_with_keys(&format!(
        "next-gateway-key-0123456789abcdef0123, {}",
        e2e::dev_hmac_key()
    ));
    let r = post_json(
        &rotating,
        &owner(),
        "/api/workspaces",
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    drop(rotating);
    // Once the dev key is retired, what it signs is refused.
    let rotated = backend_with_keys("next-gateway-key-0123456789abcdef0123");
    let r = post_json(&rotated, &owner(), "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!((r.status, problem(&r)), (401, "unauthenticated".into()));
    drop(rotated);
    // No usable key (too short to be one): every request fails closed, and says nothing of why.
    let broken = backend_with_keys("short");
    let r = post_json(&broken, &owner(), "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!((r.status, problem(&r)), (500, "internal-error".into()));
    assert!(!r.text().contains("gateway_hmac_keys"));
}
