//! Shared by the `backend_*` end-to-end tests: calling the backend directly, as the gateway
//! would, with identities signed by the dev gateway key.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use e2e::{send, Response, Stack, StackOptions};
use edge_contract::permission::RoleMap;
use edge_contract::{Identity, Signer, IDENTITY_HEADER, SIGNATURE_HEADER};

/// The seed's organization.
pub const ORG: &str = e2e::SEED_ORG;
/// Another organization.
pub const OTHER_ORG: &str = "0d8e1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b";

/// The backend alone, under the local runner.
pub fn backend() -> Stack {
    Stack::start(StackOptions {
        envoy: false,
        ..Default::default()
    })
}

/// The role map of the filter configuration `envoy/envoy.yaml` ships.
pub fn shipped_roles() -> RoleMap {
    let roles: BTreeMap<String, Vec<String>> =
        serde_json::from_value(e2e::shipped_filter_config()["roles"].clone()).unwrap();
    RoleMap::new(roles)
}

/// The identity the gateway forwards for a dev token of `sub` with one role in each of
/// `orgs`: the shipped role map applied, as the edge applies it.
pub fn user(sub: &str, orgs: &[(&str, &str)]) -> Identity {
    let mut map = BTreeMap::new();
    for (org, role) in orgs {
        map.insert((*org).to_owned(), vec![(*role).to_owned()]);
    }
    Identity {
        iss: e2e::DEV_ISSUER.into(),
        sub: sub.into(),
        permissions: shipped_roles().effective(&map, &[]),
        ..Identity::default()
    }
}

/// The seed org's owner.
pub fn owner() -> Identity {
    user("u-owner", &[(ORG, "owner")])
}

/// The headers the gateway adds to `method path` with `body` for `who`: a fresh request
/// ID, the current time and a fresh nonce.
pub fn gateway_headers(
    who: &Identity,
    method: &str,
    path: &str,
    body: &[u8],
) -> Vec<(String, String)> {
    let request_id = uuid::Uuid::new_v4().to_string();
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let req = edge_contract::Request {
        request_id: &request_id,
        method,
        path,
        body,
    };
    let nonce = *uuid::Uuid::new_v4().as_bytes();
    let signed = Signer::new(e2e::dev_hmac_key().into_bytes()).sign(who, &req, now, nonce);
    vec![
        ("x-request-id".into(), request_id),
        (IDENTITY_HEADER.into(), signed.identity),
        (SIGNATURE_HEADER.into(), signed.signature),
    ]
}

/// Sends `method path` straight to the backend, signed for `who` as the gateway signs
/// ([`gateway_headers`]), with `headers` and `body`.
pub fn call(
    stack: &Stack,
    who: Option<&Identity>,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Response {
    let mut all: Vec<(String, String)> = match who {
        Some(who) => gateway_headers(who, method, path, body.unwrap_or_default()),
        None => vec![("x-request-id".into(), uuid::Uuid::new_v4().to_string())],
    };
    all.extend(
        headers
            .iter()
            .map(|(n, v)| ((*n).to_owned(), (*v).to_owned())),
    );
    let refs: Vec<(&str, &str)> = all.iter().map(|(n, v)| (n.as_str(), v.as_str())).collect();
    send(
        method,
        &format!("{}{path}", stack.backend_url()),
        &refs,
        body,
    )
}

/// `POST path` with a JSON body.
pub fn post_json(
    stack: &Stack,
    who: &Identity,
    path: &str,
    body: &str,
    extra: &[(&str, &str)],
) -> Response {
    let mut headers = vec![("content-type", "application/json")];
    headers.extend_from_slice(extra);
    call(
        stack,
        Some(who),
        "POST",
        path,
        &headers,
        Some(body.as_bytes()),
    )
}

/// `GET path`.
pub fn get(stack: &Stack, who: &Identity, path: &str) -> Response {
    call(stack, Some(who), "GET", path, &[], None)
}

/// The problem type's slug, after checking the response is a problem with a request ID.
pub fn problem(r: &Response) -> String {
    assert_eq!(
        r.header("content-type"),
        Some("application/problem+json"),
        "{} {}",
        r.status,
        r.text()
    );
    let body = r.json();
    assert_eq!(body["status"], r.status);
    assert_eq!(body["requestId"].as_str(), r.header("x-request-id"));
    body["type"]
        .as_str()
        .unwrap()
        .trim_start_matches("urn:workspace-api:problem:")
        .to_owned()
}

/// Makes the seed org let standard users create v3 workspaces (and gives it a subscription).
pub fn allow_user_creation(stack: &Stack) {
    let r = call(
        stack,
        Some(&owner()),
        "PUT",
        &format!("/api/orgs/{ORG}/settings"),
        &[("content-type", "application/json")],
        Some(br#"{"allowUserWorkspaceCreation":true,"subscriptionId":"sub-abc123def456"}"#),
    );
    assert_eq!(r.status, 200, "{}", r.text());
}
