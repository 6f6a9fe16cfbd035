//! OAuth access tokens through the real Envoy, filter and runner: an issuer whose tokens'
//! permissions are narrowed to their `scope` and which requires `typ: at+jwt` (what the
//! scopes delegate is created by the backend; a scope the token lacks is a 403 that names
//! it; an ID token is refused), and tokens sent in a cookie.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{
    post_json, send, shipped_filter_config, Stack, StackOptions, SEED_004_REQUEST, SEED_ORG,
};
use edge_policy::testkit::{self, Keys};
use serde_json::{json, Value};

const ISSUER: &str = "https://as.example";

fn access_token(keys: &Keys, typ: &str, scope: Value) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let mut claims = testkit::claims(
        ISSUER,
        "workspace-api",
        "u-scoped",
        i64::try_from(now).unwrap(),
    );
    claims["orgs"] = json!({ SEED_ORG: ["owner"] });
    if !scope.is_null() {
        claims["scope"] = scope;
    }
    let header = json!({"alg": "HS256", "kid": "hmac", "typ": typ});
    testkit::forge_hs256_with_header(keys.hmac_secret(), &header, &claims)
}

#[test]
fn scopes_narrow_permissions_and_access_tokens_are_required() {
    let keys = Keys::new(40);
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": ISSUER, "audiences": ["workspace-api"], "algorithms": ["HS256"],
        "jwks": {"keys": [keys.jwk("hmac")]}, "scope_claim": "scope", "typ": "at+jwt"
    }));
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let url = format!("{}/api/workspaces", stack.gateway_url());

    // The scope delegates the create: the backend, which checks the forwarded
    // permissions, creates it.
    let token = access_token(&keys, "at+jwt", json!("openid workspace:create"));
    let created = post_json(&url, &token, SEED_004_REQUEST, &[]);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["data"]["createdBy"], "u-scoped");

    // The owner's role allows it, the token's scope does not: 403 naming the scope.
    for scope in [json!("workspace:read"), Value::Null] {
        let token = access_token(&keys, "application/at+jwt", scope);
        let r = post_json(&url, &token, SEED_004_REQUEST, &[]);
        assert_eq!(r.status, 403, "{}", r.text());
        assert_eq!(r.json()["type"], "urn:workspace-api:problem:forbidden");
        assert_eq!(
            r.header("www-authenticate"),
            Some(
                r#"Bearer realm="workspace-api", error="insufficient_scope", scope="workspace:create""#
            )
        );
    }

    // An ID token (typ JWT) is not an access token.
    let token = access_token(&keys, "JWT", json!("workspace:create"));
    let r = post_json(&url, &token, SEED_004_REQUEST, &[]);
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .header("www-authenticate")
        .is_some_and(|c| c.contains("error=\"invalid_token\"")));
}

/// A browser-style client sends its token in a cookie: accepted for the issuer that names
/// the cookie, refused for one that does not.
#[test]
fn tokens_may_come_in_a_configured_cookie() {
    let keys = Keys::new(41);
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": ISSUER, "audiences": ["workspace-api"], "algorithms": ["HS256"],
        "jwks": {"keys": [keys.jwk("hmac")]},
        "token_sources": [{"cookie": "access_token"}]
    }));
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let url = format!("{}/api/workspaces", stack.gateway_url());
    let token = access_token(&keys, "JWT", Value::Null);
    let cookie = format!("theme=dark; access_token={token}");
    let created = send(
        "POST",
        &url,
        &[("cookie", &cookie), ("content-type", "application/json")],
        Some(SEED_004_REQUEST.as_bytes()),
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["data"]["createdBy"], "u-scoped");
    // The shipped development issuer takes `Authorization: Bearer` only.
    let dev = e2e::dev_token("u-alice", &[(SEED_ORG, &["owner"])]);
    let r = send(
        "POST",
        &url,
        &[
            ("cookie", &format!("access_token={dev}")),
            ("content-type", "application/json"),
        ],
        Some(SEED_004_REQUEST.as_bytes()),
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r.text().contains("where this one was sent"), "{}", r.text());
}

/// A route that accepts one issuer's tokens only: the others' valid tokens get 401 there
/// and pass elsewhere.
#[test]
fn a_route_accepts_the_issuers_it_names() {
    let keys = Keys::new(42);
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": ISSUER, "audiences": ["workspace-api"], "algorithms": ["HS256"],
        "jwks": {"keys": [keys.jwk("hmac")]}
    }));
    for route in config["routes"].as_array_mut().unwrap() {
        if route["method"] == "GET" && route["path"] == "/api/workspaces/{workspaceId}" {
            route["issuers"] = json!([ISSUER]);
        }
    }
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let read = format!("{}/api/workspaces/w-missing", stack.gateway_url());
    let token = access_token(&keys, "JWT", Value::Null);
    let r = send(
        "GET",
        &read,
        &[("authorization", &format!("Bearer {token}"))],
        None,
    );
    assert_eq!(r.status, 404, "{}", r.text());
    let dev = e2e::dev_token("u-alice", &[(SEED_ORG, &["owner"])]);
    let r = send(
        "GET",
        &read,
        &[("authorization", &format!("Bearer {dev}"))],
        None,
    );
    assert_eq!(r.status, 401, "{}", r.text());
    assert!(r
        .text()
        .contains("does not accept tokens of the token's issuer"));
    let created = post_json(
        &format!("{}/api/workspaces", stack.gateway_url()),
        &dev,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.text());
}
