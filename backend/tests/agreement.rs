//! The edge and the backend decide alike on `Idempotency-Key`, on arbitrary input: the real
//! edge pipeline (`edge-policy`'s `Worker`, as the filter runs it) forwards to the real
//! backend pipeline (`app::handle`) the request it signed, as Envoy would.
//!
//! - A key: refused with 400 `invalid-idempotency-key` by both tiers, or by neither.
//! - A retry with the same key, whatever its encoding or JSON spelling: the edge that saw
//!   the first request and the backend reached through another gateway replica (which has
//!   no record of it) both replay it, or both refuse it with 422; and they replay exactly
//!   when the decoded payload is the same.

// Helpers outside `#[test]` functions are test code too (clippy.toml only covers the latter).
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use chrono::{TimeZone, Utc};
use edge_contract::testkit::{spell, BOUNDARY};
use edge_contract::{Verifier, IDENTITY_HEADER, SIGNATURE_HEADER};
use edge_policy::gate::{IDENTITY_STATE, SIGNATURE_STATE};
use edge_policy::jwt::Alg;
use edge_policy::store::MemoryStore;
use edge_policy::testkit::{self, Keys};
use edge_policy::{Host, Pending, Policy, RequestHead, Step, Worker};
use proptest::prelude::*;
use serde_json::json;
use workspace_backend::app::{handle, Env};
use workspace_backend::http::{ApiRequest, ApiResponse};
use workspace_backend::store::MemoryKv;

const NOW: i64 = 1_800_000_000;
const HMAC: &[u8] = b"agreement-test-gateway-key-0123456789";
const V3: &str = "/api/v3/workspaces";

/// Fresh randomness for every draw (request IDs, nonces, claim generations).
fn random() -> [u8; 16] {
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let mut out = [0xa5; 16];
    out[..8].copy_from_slice(&NEXT.fetch_add(1, Ordering::Relaxed).to_be_bytes());
    out
}

/// What a tier answered, as far as idempotency goes.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Said {
    /// Went on to do the work (the edge forwarded, the backend created).
    Proceeded,
    /// Replayed a stored answer.
    Replayed,
    /// A problem, by slug.
    Refused(String),
}

fn said(status: u16, headers: &[(String, String)], body: &[u8]) -> Said {
    if headers
        .iter()
        .any(|(n, v)| n == "idempotent-replayed" && v == "true")
    {
        return Said::Replayed;
    }
    if status < 300 {
        return Said::Proceeded;
    }
    let body: serde_json::Value = serde_json::from_slice(body).unwrap();
    let slug = body["type"].as_str().unwrap();
    Said::Refused(
        slug.trim_start_matches("urn:workspace-api:problem:")
            .to_owned(),
    )
}

/// One gateway replica: a filter worker with its own shared memory.
struct Gateway {
    worker: Worker,
    store: MemoryStore,
    token: String,
}

impl Gateway {
    fn new() -> Self {
        let keys = Keys::new(1);
        let cfg = json!({
            "issuers": [{"issuer": "iss", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
                         "jwks": {"keys": [keys.jwk("ed")]}}],
            "identity": {"hmac_key": String::from_utf8_lossy(HMAC)},
            "roles": {"owner": ["workspace:create", "workspace:read"]},
            "routes": [{"name": "v3", "method": "POST", "path": V3, "permission": "workspace:create:self-service",
                        "org": {"claim": "company"}, "idempotency": "optional"}]
        });
        let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
        let store = MemoryStore::new();
        let mut worker = Worker::new(Arc::new(policy), HMAC.to_vec());
        worker.init_shared(&store, random()).unwrap();
        let claims = testkit::claims("iss", "workspace-api", "u-agree", NOW);
        let token = format!("Bearer {}", keys.sign(Alg::EdDSA, Some("ed"), &claims));
        Self {
            worker,
            store,
            token,
        }
    }

    /// Runs `POST /api/v3/workspaces` through the edge: its answer, or the request it
    /// forwards (headers set, identity signed) and the state to finish it with.
    fn post(
        &mut self,
        content_type: &str,
        key: Option<&[u8]>,
        body: &[u8],
    ) -> Result<(ApiRequest, Pending), Said> {
        let mut headers: Vec<(&[u8], &[u8])> = vec![
            (b"authorization", self.token.as_bytes()),
            (b"content-type", content_type.as_bytes()),
        ];
        headers.extend(key.map(|k| (b"idempotency-key".as_slice(), k)));
        let req = RequestHead {
            method: b"POST",
            path: V3.as_bytes(),
            headers: &headers,
            client_addr: Some("192.0.2.1"),
            has_body: !body.is_empty(),
        };
        let mut draw = random;
        let mut host = Host {
            store: &self.store,
            now_ms: NOW as u64 * 1000,
            random: &mut draw,
        };
        let mut pending = Pending::default();
        let mut step = self.worker.on_headers(&req, &mut host, true, &mut pending);
        if matches!(step, Step::Forward) && pending.needs_body {
            step = self.worker.on_body(body, &mut host, &mut pending);
        }
        match step {
            Step::Forward => {}
            Step::Reject(r) => return Err(said(r.status, &r.headers, &r.body)),
            Step::WaitForKeys { .. } => panic!("inline keys never wait"),
            Step::AskRateLimit(_) => panic!("the shipped routes' limits are local"),
        }
        let mut forwarded = ApiRequest::new("POST", V3).with_body(body.to_vec());
        for (name, value) in headers.iter().skip(1) {
            forwarded = forwarded.with_header_bytes(&String::from_utf8_lossy(name), value);
        }
        for (name, value) in &pending.set_headers {
            forwarded = forwarded.with_header(name, value);
        }
        for (state, value) in &pending.forward_state {
            let header = match *state {
                IDENTITY_STATE => IDENTITY_HEADER,
                SIGNATURE_STATE => SIGNATURE_HEADER,
                other => panic!("unknown filter state {other}"),
            };
            forwarded = forwarded.with_header(header, value);
        }
        Ok((forwarded, pending))
    }

    /// Completes the edge's claim with the backend's answer, as the filter does.
    fn finish(&mut self, mut pending: Pending, response: &ApiResponse) {
        let mut draw = random;
        let host = Host {
            store: &self.store,
            now_ms: NOW as u64 * 1000,
            random: &mut draw,
        };
        self.worker
            .finish(
                &mut pending,
                response.status,
                &response.headers,
                Some(&response.body),
                &host,
            )
            .unwrap();
    }
}

struct Backend {
    kv: MemoryKv,
    verifier: Verifier,
}

impl Backend {
    fn new() -> Self {
        Self {
            kv: MemoryKv::new(),
            verifier: Verifier::new(vec![HMAC.to_vec()]),
        }
    }

    fn run(&self, req: &ApiRequest) -> ApiResponse {
        let env = Env {
            kv: &self.kv,
            verifier: Some(&self.verifier),
            now: Utc.timestamp_opt(NOW, 0).unwrap(),
            new_uuid: &|| uuid::Builder::from_random_bytes(random()).into_uuid(),
        };
        handle(req, &env)
    }
}

fn fields(name: &str, description: &str) -> BTreeMap<String, String> {
    [("name", name), ("description", description)]
        .into_iter()
        .map(|(k, v)| (k.to_owned(), v.to_owned()))
        .collect()
}

/// A key header value: mostly near the rule's edges (quotes, `\`, `,`, spaces, tabs,
/// lengths around 255), sometimes any bytes at all.
fn key_value() -> impl Strategy<Value = Vec<u8>> {
    prop_oneof![
        "[ \t]?\"?[ -~\t]{0,6}\"?[ \t]?".prop_map(String::into_bytes),
        "[!-~]{250,260}".prop_map(String::into_bytes),
        proptest::collection::vec(any::<u8>(), 0..8),
    ]
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(128))]

    #[test]
    fn a_key_is_refused_by_both_tiers_or_by_neither(key in key_value()) {
        let body = br#"{"name":"Keys"}"#;
        let edge = Gateway::new().post("application/json", Some(&key), body);
        let edge_refused = edge.err() == Some(Said::Refused("invalid-idempotency-key".into()));
        // The backend called directly: a request the gateway signed (the signature does
        // not cover Idempotency-Key), carrying the key.
        let (signed, _) = Gateway::new().post("application/json", None, body).unwrap();
        let answer = Backend::new().run(&signed.with_header_bytes("idempotency-key", &key));
        let backend = said(answer.status, &answer.headers, &answer.body);
        let backend_refused = backend == Said::Refused("invalid-idempotency-key".into());
        prop_assert_eq!(edge_refused, backend_refused, "key {:?}: backend {:?}", String::from_utf8_lossy(&key), backend);
        prop_assert!(backend_refused || answer.status == 201, "{:?}", backend);
    }

    #[test]
    fn a_retry_is_replayed_or_refused_alike_at_both_tiers(
        name in "[a-zA-Z0-9][ -~\u{e9}\u{65e5}]{0,30}",
        description in "[ -~\t\r\n\u{e9}\u{65e5}]{0,40}",
        other in "[ -~\t\r\n\u{e9}\u{65e5}]{0,40}",
        same in any::<bool>(),
        first_spelling in 0u8..4,
        retry_spelling in 0u8..4,
    ) {
        prop_assume!(!description.contains(BOUNDARY) && !other.contains(BOUNDARY));
        let first = fields(&name, &description);
        let retry = if same { first.clone() } else { fields(&name, &other) };
        let key = Some(b"agreement-key".as_slice());
        let backend = Backend::new();
        // The first request, through replica A, created by the backend.
        let mut a = Gateway::new();
        let (ct, body) = spell(&first, first_spelling);
        let (forwarded, pending) = a.post(ct, key, &body).unwrap();
        let created = backend.run(&forwarded);
        prop_assert_eq!(created.status, 201, "{}", String::from_utf8_lossy(&created.body));
        a.finish(pending, &created);
        // The retry, through replica A (which answers it itself) and through replica B
        // (which has no record, so the backend answers it).
        let (ct, body) = spell(&retry, retry_spelling);
        let edge = a.post(ct, key, &body).err();
        let (forwarded, _) = Gateway::new().post(ct, key, &body).unwrap();
        let answer = backend.run(&forwarded);
        let behind = said(answer.status, &answer.headers, &answer.body);
        let want = if first == retry {
            Said::Replayed
        } else {
            Said::Refused("idempotency-key-reused".into())
        };
        prop_assert_eq!(edge, Some(want.clone()));
        prop_assert_eq!(behind, want);
    }
}
