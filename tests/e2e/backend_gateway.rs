//! The backend behind the real Envoy and filter, with dev tokens: both seeds end to end,
//! identity forwarded (and client-forged identity headers ignored), localized problems.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

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
