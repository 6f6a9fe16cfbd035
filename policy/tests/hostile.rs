//! Property tests: any bytes a client can put in a request (method, path, every header, the
//! token, the body) get a decision, never a panic; every refusal is a problem document with
//! a request ID and a status the contract documents.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

use std::sync::Arc;

use edge_policy::headers;
use edge_policy::jwt::Alg;
use edge_policy::store::MemoryStore;
use edge_policy::testkit::{self, Keys};
use edge_policy::{Host, Pending, Policy, RequestHead, Step, Worker};
use proptest::prelude::*;
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;

fn worker(keys: &Keys) -> (Worker, MemoryStore) {
    let cfg = json!({
        "issuers": [{
            "issuer": "test-iss", "audiences": ["workspace-api"],
            "algorithms": ["HS256", "RS256", "ES256", "EdDSA"], "jwks": keys.jwks(),
            "clock_skew": "60s", "max_lifetime": "24h"
        }],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "roles": {"owner": ["workspace:create"]},
        "routes": [
            {"name": "create", "method": "POST", "path": "/api/workspaces", "permission": "workspace:create",
             "org": {"body_field": "orgId"}, "rate_limit": {"requests": 1000, "per": "60s"}, "idempotency": "optional"},
            {"name": "create-v3", "method": "POST", "path": "/api/v3/workspaces", "permission": "workspace:create",
             "org": {"claim": "company"}, "conditions": [{"claim": "email_verified", "equals": true}]},
            {"name": "get", "method": "GET", "path": "/api/workspaces/{id}"}
        ],
        "unmatched": "reject",
        "limits": {"unauthenticated": {"requests": 100000, "per": "60s"}, "max_body_bytes": 4096}
    });
    let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
    let store = MemoryStore::new();
    let mut w = Worker::new(
        Arc::new(policy),
        b"0123456789abcdef0123456789abcdef".to_vec(),
    );
    w.init_shared(&store, [7u8; 16]).unwrap();
    (w, store)
}

fn valid_token(keys: &Keys) -> String {
    let mut claims = testkit::claims("test-iss", "workspace-api", "u-alice", NOW);
    claims["orgs"] = json!({"org-1": ["owner"]});
    claims["company"] = json!("org-1");
    keys.sign(Alg::EdDSA, Some("ed"), &claims)
}

/// Bytes that are mostly what a client sends, sometimes anything at all.
fn bytes_like(samples: &'static [&'static str]) -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        3 => proptest::sample::select(samples).prop_map(|s| s.as_bytes().to_vec()),
        2 => proptest::collection::vec(any::<u8>(), 0..48),
        1 => (proptest::sample::select(samples), any::<u8>(), any::<prop::sample::Index>())
            .prop_map(|(s, b, at)| {
                let mut v = s.as_bytes().to_vec();
                if !v.is_empty() {
                    let i = at.index(v.len());
                    v[i] = b;
                }
                v
            }),
    ]
}

const NAMES: &[&str] = &[
    "authorization",
    "x-request-id",
    "idempotency-key",
    "content-type",
    "accept-language",
    "x-note",
    "x-edge-identity",
    "x-edge-signature",
    "cookie",
];
const VALUES: &[&str] = &[
    "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e",
    "\"k-1\"",
    "application/json",
    "fr-FR,fr;q=0.9",
    "Bearer x.y.z",
    "",
];

/// What a hostile client controls, and how the token is mangled.
#[derive(Debug, Clone)]
struct Input {
    method: Vec<u8>,
    path: Vec<u8>,
    headers: Vec<(Vec<u8>, Vec<u8>)>,
    token: TokenShape,
    body: Vec<u8>,
}

#[derive(Debug, Clone)]
enum TokenShape {
    None,
    Valid,
    /// The valid token with one byte replaced.
    Flipped(prop::sample::Index, u8),
    /// The valid token cut short.
    Truncated(prop::sample::Index),
    Raw(Vec<u8>),
}

fn input() -> impl Strategy<Value = Input> {
    let token = prop_oneof![
        Just(TokenShape::None),
        Just(TokenShape::Valid),
        (any::<prop::sample::Index>(), any::<u8>()).prop_map(|(i, b)| TokenShape::Flipped(i, b)),
        any::<prop::sample::Index>().prop_map(TokenShape::Truncated),
        proptest::collection::vec(any::<u8>(), 0..200).prop_map(TokenShape::Raw),
    ];
    let body = prop_oneof![
        Just(br#"{"orgId":"org-1","name":"a"}"#.to_vec()),
        Just(Vec::new()),
        proptest::collection::vec(any::<u8>(), 0..300),
        (1usize..300).prop_map(|depth| "[".repeat(depth).into_bytes()),
        Just(vec![b'a'; 5000]),
    ];
    (
        bytes_like(&["GET", "POST", "PUT", "post", "QUERY", ""]),
        bytes_like(&[
            "/api/workspaces",
            "/api/v3/workspaces",
            "/api/workspaces/w-1",
            "/api/workspaces?",
            "/api/workspaces/../x",
            "/",
        ]),
        proptest::collection::vec((bytes_like(NAMES), bytes_like(VALUES)), 0..6),
        token,
        body,
    )
        .prop_map(|(method, path, headers, token, body)| Input {
            method,
            path,
            headers,
            token,
            body,
        })
}

fn authorization(shape: &TokenShape, valid: &str) -> Option<Vec<u8>> {
    let mut t = valid.as_bytes().to_vec();
    match shape {
        TokenShape::None => return None,
        TokenShape::Valid => {}
        TokenShape::Flipped(at, b) => {
            let i = at.index(t.len());
            t[i] = *b;
        }
        TokenShape::Truncated(at) => t.truncate(at.index(t.len())),
        TokenShape::Raw(raw) => t = raw.clone(),
    }
    let mut v = b"Bearer ".to_vec();
    v.extend(t);
    Some(v)
}

/// A refusal the contract documents: a problem document (or a replay) with a request ID.
fn assert_documented(step: &Step) -> Result<(), TestCaseError> {
    if let Step::Reject(r) = step {
        prop_assert!(
            matches!(
                r.status,
                400 | 401 | 403 | 404 | 405 | 409 | 413 | 422 | 429 | 503
            ),
            "undocumented status {}",
            r.status
        );
        prop_assert!(r.headers.iter().any(|(n, _)| n == "x-request-id"));
        let body: Value = serde_json::from_slice(&r.body).expect("problem body is JSON");
        prop_assert!(body["type"].is_string() && body["requestId"].is_string());
    }
    Ok(())
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn any_request_gets_a_decision(input in input()) {
        let keys = Keys::new(3);
        let (mut w, store) = worker(&keys);
        let valid = valid_token(&keys);
        let auth = authorization(&input.token, &valid);
        let mut pairs: Vec<(&[u8], &[u8])> = input
            .headers
            .iter()
            .map(|(n, v)| (n.as_slice(), v.as_slice()))
            .collect();
        if let Some(a) = &auth {
            pairs.push((b"authorization", a));
        }
        let req = RequestHead {
            method: &input.method,
            path: &input.path,
            headers: &pairs,
            client_addr: Some("192.0.2.1"),
            has_body: !input.body.is_empty(),
        };
        let mut n = 0u8;
        let mut random = move || { n = n.wrapping_add(1); [n; 16] };
        let mut host = Host { store: &store, now_ms: NOW as u64 * 1000, random: &mut random };
        let mut pending = Pending::default();
        let step = w.on_headers(&req, &mut host, true, &mut pending);
        assert_documented(&step)?;
        if matches!(step, Step::Forward) {
            prop_assert!(!pending.request_id.is_empty());
            if pending.needs_body {
                let step = w.on_body(&input.body, &mut host, &mut pending);
                assert_documented(&step)?;
                if matches!(step, Step::Forward) {
                    prop_assert!(pending
                        .forward_state
                        .iter()
                        .any(|(n, _)| *n == edge_policy::gate::SIGNATURE_STATE));
                }
            }
        }
    }

    #[test]
    fn any_header_map_bytes_decode_or_refuse(buf in proptest::collection::vec(any::<u8>(), 0..256)) {
        // Never a panic; what decodes re-encodes to a prefix-equal form.
        if let Some(pairs) = headers::decode(&buf) {
            let again = headers::encode(&pairs);
            prop_assert_eq!(headers::decode(&again), Some(pairs));
        }
    }

    #[test]
    fn header_maps_round_trip(pairs in proptest::collection::vec(
        (proptest::collection::vec(any::<u8>(), 0..20), proptest::collection::vec(any::<u8>(), 0..40)), 0..10)) {
        let wire = headers::encode(&pairs);
        let back: Vec<(Vec<u8>, Vec<u8>)> = headers::decode(&wire)
            .unwrap()
            .into_iter()
            .map(|(n, v)| (n.to_vec(), v.to_vec()))
            .collect();
        prop_assert_eq!(back, pairs);
    }
}
