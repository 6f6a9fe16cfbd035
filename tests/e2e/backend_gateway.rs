//! The backend behind the real Envoy and filter, with dev tokens: both seeds end to end,
//! identity forwarded (and client-forged identity headers ignored), localized problems;
//! and the trust boundary itself: a captured header set replayed at the backend, a path
//! spelled differently on each side of it.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use crate::support;
use e2e::{dev_token, post_json, send, Stack, StackOptions, TokenSpec, SEED_004_REQUEST, SEED_ORG};

#[test]
fn both_seeds_through_the_gateway() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let token = dev_token("u-gw-owner", &[(SEED_ORG, &["owner"])]);
    let key = uuid::Uuid::new_v4().to_string();
    let r = post_json(
        &format!("{gw}/api/workspaces"),
        &token,
        SEED_004_REQUEST,
        &[("idempotency-key", &key)],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["data"]["createdBy"], "u-gw-owner");
    let id = r.json()["data"]["workspaceId"].as_str().unwrap().to_owned();

    let auth = format!("Bearer {token}");
    let list = send(
        "GET",
        &format!("{gw}/api/workspaces?orgId={SEED_ORG}"),
        &[("authorization", &auth)],
        None,
    );
    assert_eq!(list.status, 200, "{}", list.text());
    assert_eq!(list.json()["data"][0]["workspaceId"], id.as_str());

    let mut spec = TokenSpec::new("u-gw-admin", &[(SEED_ORG, &["admin"])]);
    spec.company = Some(SEED_ORG.into());
    let admin = format!("Bearer {}", spec.mint().unwrap());
    let multipart = "--b0undary\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nEngineering Team Workspace\r\n--b0undary--\r\n";
    for (ct, body) in [
        (
            "application/json",
            r#"{"name":"Engineering Team Workspace","description":"Workspace for the engineering team"}"#,
        ),
        (
            "application/x-www-form-urlencoded",
            "name=Engineering+Team+Workspace",
        ),
        ("multipart/form-data; boundary=b0undary", multipart),
    ] {
        let key = uuid::Uuid::new_v4().to_string();
        let headers = [
            ("authorization", admin.as_str()),
            ("content-type", ct),
            ("idempotency-key", key.as_str()),
        ];
        let r = send(
            "POST",
            &format!("{gw}/api/v3/workspaces"),
            &headers,
            Some(body.as_bytes()),
        );
        assert_eq!(r.status, 201, "{ct}: {}", r.text());
        assert_eq!(r.json()["user_role"], "OWNER");
        assert_eq!(r.json()["name"], "Engineering Team Workspace");
    }
}

#[test]
fn client_sent_identity_headers_are_replaced_by_the_gateway() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let token = dev_token("u-honest", &[(SEED_ORG, &["owner"])]);
    // An identity claiming to be someone else, with a garbage signature: the filter drops
    // both headers and forwards its own, so the workspace is created by the token's subject.
    let forged = "eyJzdWIiOiJ1LW1hbGxvcnkiLCJvcmdzIjp7fX0";
    let key = uuid::Uuid::new_v4().to_string();
    let r = post_json(
        &format!("{gw}/api/workspaces"),
        &token,
        SEED_004_REQUEST,
        &[
            ("x-edge-identity", forged),
            ("x-edge-signature", "t=1,v1=AAAA"),
            ("idempotency-key", &key),
        ],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["data"]["createdBy"], "u-honest");
}

#[test]
fn backend_problems_reach_the_client_localized_with_the_request_id() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let token = dev_token("u-gw-v", &[(SEED_ORG, &["owner"])]);
    let body =
        format!(r#"{{"orgId":"{SEED_ORG}","name":"x","settings":{{"timezone":"Mars/Olympus"}}}}"#);
    let key = uuid::Uuid::new_v4().to_string();
    let r = post_json(
        &format!("{gw}/api/workspaces"),
        &token,
        &body,
        &[("accept-language", "fr"), ("idempotency-key", &key)],
    );
    assert_eq!(r.status, 400, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(r.header("content-language"), Some("fr"));
    let p = r.json();
    assert_eq!(p["type"], "urn:workspace-api:problem:validation-failed");
    assert_eq!(p["errors"][0]["pointer"], "#/settings/timezone");
    assert_eq!(p["requestId"].as_str(), r.header("x-request-id"));
}

#[test]
fn concurrent_retries_through_the_gateway_create_one_workspace() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let token = dev_token("u-gw-retry", &[(SEED_ORG, &["owner"])]);
    let key = uuid::Uuid::new_v4().to_string();
    let statuses: Vec<u16> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..8)
            .map(|_| {
                let (gw, token, key) = (&gw, &token, &key);
                s.spawn(move || {
                    post_json(
                        &format!("{gw}/api/workspaces"),
                        token,
                        SEED_004_REQUEST,
                        &[("idempotency-key", key)],
                    )
                    .status
                })
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(
        statuses.iter().all(|s| *s == 201 || *s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&201), "{statuses:?}");
    let auth = format!("Bearer {token}");
    let list = send(
        "GET",
        &format!("{gw}/api/workspaces?orgId={SEED_ORG}"),
        &[("authorization", &auth)],
        None,
    );
    assert_eq!(
        list.json()["data"].as_array().unwrap().len(),
        1,
        "{}",
        list.text()
    );
}

#[test]
fn a_captured_header_set_replayed_straight_at_the_runner_gets_401() {
    let stack = support::backend();
    let url = format!("{}/api/workspaces", stack.backend_url());
    let owner = support::user("u-replayed", &[(SEED_ORG, "owner")]);
    let body = SEED_004_REQUEST.replace("CS101", "Replayed");
    let other = SEED_004_REQUEST.replace("CS101", "Tampered");
    // What an attacker captures between the gateway and the backend: the gateway's headers
    // for one create (made by the same signer, with the gateway's key).
    let captured = support::gateway_headers(&owner, "POST", "/api/workspaces", body.as_bytes());
    let mut headers: Vec<(&str, &str)> = vec![("content-type", "application/json")];
    headers.extend(captured.iter().map(|(n, v)| (n.as_str(), v.as_str())));
    let cases = [
        ("the original request", body.as_str(), 201, ""),
        (
            "the same headers and body again",
            body.as_str(),
            401,
            "unauthenticated",
        ),
        (
            "the same headers, another body",
            other.as_str(),
            401,
            "unauthenticated",
        ),
    ];
    for (name, body, status, slug) in cases {
        let r = send("POST", &url, &headers, Some(body.as_bytes()));
        assert_eq!(r.status, status, "{name}: {}", r.text());
        if !slug.is_empty() {
            assert_eq!(support::problem(&r), slug, "{name}");
        }
    }
    let listed = support::get(&stack, &owner, &format!("/api/workspaces?orgId={SEED_ORG}"));
    let names: Vec<String> = listed.json()["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["name"].as_str().unwrap_or("").to_owned())
        .collect();
    assert_eq!(names.len(), 1, "{names:?}");
    assert!(names[0].contains("Replayed"), "{names:?}");
}

/// Sends `head` (request line and headers, without the final blank line) and `body` over
/// one HTTP/1.1 connection, byte for byte: the request target reaches Envoy exactly as
/// written, a bare `?` included. Returns the status and the body.
fn raw(gateway: &str, head: &str, body: &str) -> (u16, String) {
    let addr = gateway.trim_start_matches("http://");
    let mut stream = TcpStream::connect(addr).unwrap();
    stream
        .set_read_timeout(Some(Duration::from_secs(20)))
        .unwrap();
    let request = format!(
        "{head}\r\nhost: {addr}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).unwrap();
    let status = response
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {response:?}"));
    let body = response.split_once("\r\n\r\n").map_or("", |(_, b)| b);
    (status, body.to_owned())
}

#[test]
fn a_read_with_a_bare_question_mark_through_the_gateway_is_200() {
    let stack = Stack::start(StackOptions::default());
    let owner = support::user("u-question", &[(SEED_ORG, "owner")]);
    let created = support::post_json(&stack, &owner, "/api/workspaces", SEED_004_REQUEST, &[]);
    assert_eq!(created.status, 201, "{}", created.text());
    let id = created.json()["data"]["workspaceId"]
        .as_str()
        .unwrap()
        .to_owned();
    // Envoy forwards `:path` with its bare `?`, which the backend does not see: the filter
    // and the backend must sign and verify the same canonical path. (A `#fragment` Envoy
    // refuses with its own 400 before the filter runs.)
    let auth = format!(
        "authorization: Bearer {}",
        dev_token("u-question", &[(SEED_ORG, &["owner"])])
    );
    let target = format!("/api/workspaces/{id}?");
    let r = raw(
        &stack.gateway_url(),
        &format!("GET {target} HTTP/1.1\r\n{auth}"),
        "",
    );
    assert_eq!(r.0, 200, "{target}: {}", r.1);
    assert!(r.1.contains(&id), "{target}: {}", r.1);
}

#[test]
fn a_create_with_a_bare_question_mark_through_the_gateway_is_201() {
    let stack = Stack::start(StackOptions::default());
    let token = dev_token("u-question", &[(SEED_ORG, &["owner"])]);
    let head = format!(
        "POST /api/workspaces? HTTP/1.1\r\nauthorization: Bearer {token}\r\ncontent-type: application/json"
    );
    let (status, body) = raw(&stack.gateway_url(), &head, SEED_004_REQUEST);
    assert_eq!(status, 201, "{body}");
    assert!(body.contains("\"createdBy\":\"u-question\""), "{body}");
}
