//! Attacks found in review, each replayed through the real Envoy (`--concurrency 2`) with
//! the shipped filter in front of the real backend: what used to get through now gets the
//! documented answer.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::time::Duration;

use e2e::h2c::{self, H2Request};
use e2e::raw::RawResponse;
use e2e::{send, Stack, StackOptions, TokenSpec, SEED_004_REQUEST, SEED_ORG};
use edge_policy::testkit;
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(10);

fn owner(sub: &str) -> String {
    TokenSpec::new(sub, &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap()
}

fn problem_type(r: &RawResponse) -> String {
    r.json()
        .and_then(|b| b["type"].as_str().map(str::to_owned))
        .unwrap_or_default()
}

fn counter(stack: &Stack, name: &str) -> u64 {
    stack
        .stat(&format!("wasmcustom.edge_filter.{name}"))
        .unwrap_or(0)
}

/// HTTP/2 request trailers end the stream in the trailers callback, not in a body callback:
/// the body decision (JSON, organization and permission from the body, the edge's
/// idempotency claim) and the body-bound signature must still happen.
#[test]
fn request_trailers_do_not_skip_the_body_stage() {
    let stack = Stack::start(StackOptions::default());
    let gateway = stack.gateway_addr().unwrap();
    let create = |token: &str, body: &[u8], key: Option<&str>| {
        let mut req = H2Request::new("POST", "/api/workspaces")
            .header("authorization", format!("Bearer {token}"))
            .header("content-type", "application/json")
            .body(body)
            .trailer("x-checksum", "abc");
        if let Some(k) = key {
            req = req.header("idempotency-key", k);
        }
        h2c::exchange(gateway, &req, TIMEOUT).unwrap()
    };

    // Not JSON: the edge's body check answers, the backend never sees it.
    let before = counter(&stack, "denied.invalid_json");
    let r = create(&owner("u-trailer-1"), b"{not json", None);
    assert_eq!(r.status, 400, "{}", r.summary());
    assert_eq!(problem_type(&r), "urn:workspace-api:problem:invalid-body");
    assert_eq!(counter(&stack, "denied.invalid_json"), before + 1);

    // A member of another organization only: the permission read from the body refuses it.
    let stranger = TokenSpec::new("u-trailer-2", &[("another-org", &["owner"])])
        .mint()
        .unwrap();
    let r = create(&stranger, SEED_004_REQUEST.as_bytes(), None);
    assert_eq!(r.status, 403, "{}", r.summary());
    assert!(counter(&stack, "denied.not_member") >= 1);

    // Allowed: signed over the body, so the backend accepts it; a retry with the same key is
    // the edge's replay.
    let token = owner("u-trailer-3");
    let first = create(&token, SEED_004_REQUEST.as_bytes(), Some("trailer-key-1"));
    assert_eq!(first.status, 201, "{}", first.summary());
    let again = create(&token, SEED_004_REQUEST.as_bytes(), Some("trailer-key-1"));
    assert_eq!(again.status, 201, "{}", again.summary());
    assert_eq!(again.header("idempotent-replayed").as_deref(), Some("true"));
    assert_eq!(again.body, first.body);
}

/// Only the API the backend serves passes the edge; the rest is answered there.
#[test]
fn unmatched_requests_are_answered_at_the_edge() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let token = owner("u-unmatched");
    let auth = format!("Bearer {token}");
    let cases: [(&str, &str, u16, Option<&str>); 4] = [
        ("GET", "/api/nowhere", 404, None),
        ("DELETE", "/api/workspaces/w-1", 405, Some("GET")),
        ("PATCH", "/api/orgs/o-1/settings", 405, Some("GET, PUT")),
        ("PUT", "/api/workspaces", 405, Some("GET, POST")),
    ];
    for (method, path, status, allow) in cases {
        let r = send(
            method,
            &format!("{gw}{path}"),
            &[("authorization", &auth)],
            None,
        );
        assert_eq!(r.status, status, "{method} {path}: {}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r.header("x-request-id").is_some());
        assert_eq!(r.header("allow"), allow, "{method} {path}");
    }
    // Methods are case-sensitive: an HTTP/2 `post` is not a create.
    let gateway = stack.gateway_addr().unwrap();
    let lower = H2Request::new("post", "/api/workspaces")
        .header("authorization", &auth)
        .header("content-type", "application/json")
        .body(SEED_004_REQUEST);
    match h2c::exchange(gateway, &lower, TIMEOUT) {
        Ok(r) => assert!(
            r.status == 405 || r.status == 400,
            "lowercase post: {}",
            r.summary()
        ),
        // Envoy itself may refuse a method that is not a token of upper-case letters.
        Err(e) => eprintln!("lowercase post refused by Envoy: {e}"),
    }
}

/// Tokens carrying critical header extensions are refused (RFC 7515 §4.1.11), even with a
/// valid signature.
#[test]
fn critical_extensions_are_refused() {
    let keys = testkit::Keys::new(11);
    let mut config = e2e::shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": "hs-test", "audiences": ["workspace-api"],
        "jwks": {"keys": [keys.jwk("hmac")]}, "algorithms": ["HS256"]
    }));
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let claims = testkit::claims("hs-test", "workspace-api", "u-crit", now);
    let url = format!("{}/api/workspaces/w-1", stack.gateway_url());
    let plain = testkit::forge_hs256_with_header(
        keys.hmac_secret(),
        &json!({"alg": "HS256", "kid": "hmac"}),
        &claims,
    );
    let r = send(
        "GET",
        &url,
        &[("authorization", &format!("Bearer {plain}"))],
        None,
    );
    assert_ne!(r.status, 401, "the plain token is valid: {}", r.text());
    let crit = testkit::forge_hs256_with_header(
        keys.hmac_secret(),
        &json!({"alg": "HS256", "kid": "hmac", "crit": ["x-ext"], "x-ext": true}),
        &claims,
    );
    let r = send(
        "GET",
        &url,
        &[("authorization", &format!("Bearer {crit}"))],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("crit"), "{}", r.text());
    assert!(!r.text().contains(&crit));
}
