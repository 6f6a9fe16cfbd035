//! The host-independent rules, compiled to `wasm32-unknown-unknown` and run under Node.js
//! with `wasm-bindgen-test` (and natively as ordinary tests), so nothing in `edge-policy`
//! silently depends on a host: no clock, no threads, no file system.
//!
//! ```text
//! CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER=wasm-bindgen-test-runner \
//!   cargo test -p edge-policy --target wasm32-unknown-unknown --test wasm
//! ```

#![allow(clippy::unwrap_used, clippy::panic, clippy::type_complexity)] // test helpers, not the request path

use std::sync::Arc;

use edge_contract::request_id;
use edge_policy::idempotency::{self, Begin, Records};
use edge_policy::jwt::Alg;
use edge_policy::ratelimit::{self, Bucket, Limiter};
use edge_policy::slots::{SlotKey, Table};
use edge_policy::store::MemoryStore;
use edge_policy::testkit::{self, Keys};
use edge_policy::{Host, Pending, Policy, RequestHead, Step, Worker};
use serde_json::json;
#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test;

const NOW: i64 = 1_800_000_000;

fn worker(keys: &Keys) -> Worker {
    let cfg = json!({
        "issuers": [{"issuer": "iss", "audiences": ["api"], "algorithms": ["EdDSA", "ES256", "RS256", "HS256"], "jwks": keys.jwks()}],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "roles": {"owner": ["workspace:create"]},
        "routes": [{"name": "create", "method": "POST", "path": "/api/workspaces", "permission": "workspace:create",
                    "org": {"body_field": "orgId"}, "rate_limit": {"requests": 2, "per": "60s"}}]
    });
    let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
    Worker::new(
        Arc::new(policy),
        b"0123456789abcdef0123456789abcdef".to_vec(),
    )
}

fn decide(w: &mut Worker, store: &MemoryStore, token: &str, body: &[u8]) -> u16 {
    let auth = format!("Bearer {token}");
    let headers: Vec<(&[u8], &[u8])> = vec![(b"authorization", auth.as_bytes())];
    let req = RequestHead {
        method: b"POST",
        path: b"/api/workspaces",
        headers: &headers,
        client_addr: Some("10.0.0.1"),
        has_body: true,
    };
    let mut random = || [3u8; 16];
    let mut host = Host {
        store,
        now_ms: NOW as u64 * 1000,
        random: &mut random,
    };
    let mut p = Pending::default();
    let mut step = w.on_headers(&req, &mut host, true, &mut p);
    if matches!(step, Step::Forward) {
        step = w.on_body(body, &mut host, &mut p);
    }
    match step {
        Step::Forward => 200,
        Step::Reject(r) => r.status,
        Step::WaitForKeys { .. } => 0,
        Step::AskRateLimit(_) => 1,
    }
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn jwt_algorithms_attacks_permissions_and_rate_limits() {
    let keys = Keys::new(5);
    let mut w = worker(&keys);
    let store = MemoryStore::new();
    w.init_shared(&store, [9; 16]).unwrap();
    let claims = testkit::claims("iss", "api", "u-1", NOW);
    let body = br#"{"orgId":"org-1"}"#;
    assert_eq!(
        decide(
            &mut w,
            &store,
            &keys.sign(Alg::EdDSA, Some("ed"), &claims),
            body
        ),
        200
    );
    assert_eq!(
        decide(
            &mut w,
            &store,
            &keys.sign(Alg::ES256, Some("p256"), &claims),
            body
        ),
        200
    );
    assert_eq!(
        decide(
            &mut w,
            &store,
            &keys.sign(Alg::RS256, Some("rsa"), &claims),
            body
        ),
        429,
        "2 per minute per user"
    );
    let other = testkit::claims("iss", "api", "u-2", NOW);
    assert_eq!(
        decide(
            &mut w,
            &store,
            &keys.sign(Alg::RS256, Some("rsa"), &other),
            br#"{"orgId":"org-2"}"#
        ),
        403
    );
    assert_eq!(
        decide(&mut w, &store, &testkit::forge_none(&other), body),
        401
    );
    assert_eq!(
        decide(
            &mut w,
            &store,
            &testkit::forge_hs256(&keys.public_bytes("ed"), Some("ed"), &other),
            body
        ),
        401
    );
    let expired = testkit::claims("iss", "api", "u-2", NOW - 3600);
    assert_eq!(
        decide(
            &mut w,
            &store,
            &keys.sign(Alg::EdDSA, Some("ed"), &expired),
            body
        ),
        401
    );
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn request_ids() {
    assert_eq!(
        request_id::normalize("6F1C2A7E-1C7E-4D1A-9A55-0D3D0F1C2A7E").unwrap(),
        "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e"
    );
    assert!(request_id::normalize("x").is_err());
    assert_eq!(request_id::generate([0xab; 16]).len(), 36);
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn token_buckets_and_idempotency_records() {
    let store = MemoryStore::new();
    let key = SlotKey::new([9; 16]);
    let l = Limiter {
        table: Table {
            store: &store,
            namespace: "w",
            name: ratelimit::USERS,
            slots: 4,
            key: &key,
        },
    };
    let b = Bucket {
        capacity: 1,
        window_ms: 1000,
    };
    assert!(l.check(b, &[b"u"], 0, true).unwrap().allowed);
    assert!(!l.check(b, &[b"u"], 500, true).unwrap().allowed);
    assert!(l.check(b, &[b"u"], 1000, true).unwrap().allowed);

    let settings = edge_policy::config::IdempotencySettings {
        ttl_ms: 10_000,
        in_flight_ms: 1_000,
        max_response_bytes: 64,
        slots: 2,
    };
    let r = Records {
        store: &store,
        namespace: "w",
        settings: &settings,
        key: &key,
    };
    // The contract's fingerprint (JSON decoding included) runs here too.
    let p = edge_contract::idempotency::fingerprint("POST", "/x", Some("application/json"), b"{}")
        .prefix();
    let Begin::Proceed(claim) = r.begin("u", "k", p, 0, 1).unwrap() else {
        panic!("first")
    };
    assert_eq!(r.begin("u", "k", p, 1, 2).unwrap(), Begin::InFlight);
    let stored = idempotency::StoredResponse {
        status: 201,
        headers: vec![],
        body: b"ok".to_vec(),
    };
    r.complete(claim, &stored, 2).unwrap();
    assert_eq!(r.begin("u", "k", p, 3, 3).unwrap(), Begin::Replay(stored));
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn bad_configs_name_their_field() {
    let err = Policy::from_json(br#"{"issuers": [], "identity": {}, "routes": [], "extra": true}"#)
        .unwrap_err();
    assert_eq!(err.field, "extra");
}

#[cfg_attr(target_arch = "wasm32", wasm_bindgen_test)]
#[cfg_attr(not(target_arch = "wasm32"), test)]
fn key_fetch_schedule() {
    use edge_policy::keyfetch::{Command, Fetch, Hold, KeyFetcher, KeyServer};
    struct Server(u32);
    impl KeyServer for Server {
        fn start(&mut self, _fetch: &Fetch<'_>) -> Option<u32> {
            self.0 += 1;
            Some(self.0)
        }
    }
    let keys = Keys::new(1);
    let cfg = json!({
        "issuers": [{"issuer": "idp", "audiences": ["api"], "algorithms": ["EdDSA"],
                     "remote_jwks": {"cluster": "c", "authority": "a", "path": "/jwks", "refresh_interval": "60s"}}],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "routes": []
    });
    let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
    let mut f = KeyFetcher::new(&policy);
    let mut server = Server(0);
    assert_eq!(f.hold(7, 0, false, "r", 0, &mut server), Hold::Wait);
    let set = json!({"keys": [keys.jwk("ed")]}).to_string();
    let got = f.fetched(1, b"200", set.as_bytes(), 10, &mut server);
    assert!(
        matches!(got.as_slice(), [Command::Install { .. }, Command::Resume(w)] if w.request == "r")
    );
    f.tick(60_009, &mut server);
    assert_eq!(server.0, 1, "not due yet");
    f.tick(60_010, &mut server);
    assert_eq!(server.0, 2, "refreshed");
}
