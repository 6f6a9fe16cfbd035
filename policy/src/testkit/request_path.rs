//! The benchmark's request as the filter handles it inside its VM, natively: the policy of
//! `envoy/bench/wasm.yaml` and the request `cargo xtask bench` sends (`GET /api/bench` with a
//! bearer token), run through the same `edge_policy` calls the adapter makes per request.
//! The criterion benches (`benches/request_path.rs`) time it and `tests/allocations.rs`
//! counts its allocations, so both measure what the bench's Envoy runs.

use std::sync::Arc;

use serde_json::{json, Value};

use super::{claims, Keys};
use crate::headers;
use crate::jwt::Alg;
use crate::store::MemoryStore;
use crate::{Host, Pending, Policy, RequestHead, Step, Worker};

/// The bench's Envoy configuration, whose filter configuration is the policy used here.
const BENCH_ENVOY_YAML: &str = include_str!("../../../envoy/bench/wasm.yaml");
/// The clock of every request (unix seconds): tokens are issued at it, valid 10 minutes.
pub const NOW: i64 = 1_800_000_000;
/// The bench's route: JWT, request ID, rate limit and permission.
pub const PATH: &str = "/api/bench";

/// The edge filter's configuration in `envoy/bench/wasm.yaml` (the JSON of its
/// `configuration` block), its issuer's keys replaced by [`Keys::jwks`].
pub fn bench_policy(keys: &Keys) -> Value {
    let mut policy: Value = serde_json::from_str(&configuration_block(BENCH_ENVOY_YAML))
        .unwrap_or_else(|e| panic!("envoy/bench/wasm.yaml: the configuration is not JSON: {e}"));
    policy["issuers"][0]["jwks"] = keys.jwks();
    policy
}

/// The text of the YAML literal block under `value: |` (the filter's configuration).
fn configuration_block(yaml: &str) -> String {
    let mut lines = yaml.lines().skip_while(|l| l.trim() != "value: |");
    let header = lines.next().unwrap_or_default();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let outer = indent(header);
    lines
        .take_while(|l| l.trim().is_empty() || indent(l) > outer)
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where a request is between the calls the adapter makes (for per-stage counts).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stage {
    /// Before anything.
    Start,
    /// The serialized header map decoded into pairs.
    Decoded,
    /// `Worker::on_headers` decided.
    Decided,
    /// `Worker::response_headers` computed.
    Responded,
}

/// A worker with the bench's policy, an in-memory shared store, and the header maps of
/// requests carrying `tokens` distinct tokens, sent in turn.
pub struct RequestPath {
    worker: Worker,
    store: MemoryStore,
    wires: Vec<Vec<u8>>,
    next: usize,
    random: u64,
}

impl RequestPath {
    /// `tokens` distinct tokens signed with `alg` for one user (1: every request carries the
    /// same token, so after the first the token cache answers); `token_cache_entries`
    /// overrides the policy's cache size (fewer entries than tokens: every request verifies
    /// a signature).
    pub fn new(alg: Alg, tokens: usize, token_cache_entries: Option<u64>) -> Self {
        let keys = Keys::new(1);
        let mut policy = bench_policy(&keys);
        if let Some(entries) = token_cache_entries {
            policy["limits"]["token_cache_entries"] = json!(entries);
        }
        let issuer = policy["issuers"][0]["issuer"].as_str().unwrap_or_default();
        let audience = policy["issuers"][0]["audiences"][0]
            .as_str()
            .unwrap_or_default();
        let kid = match alg.family() {
            crate::jwt::Family::Hmac => "hmac",
            crate::jwt::Family::Rsa => "rsa",
            crate::jwt::Family::P256 => "p256",
            crate::jwt::Family::Ed25519 => "ed",
        };
        let wires = (0..tokens)
            .map(|n| {
                let mut c = claims(issuer, audience, "u-bench", NOW);
                c["jti"] = json!(format!("bench-{n}"));
                let token = keys.sign(alg, Some(kid), &c);
                headers::encode(&[
                    (":authority", "127.0.0.1:8093"),
                    (":path", PATH),
                    (":method", "GET"),
                    (":scheme", "http"),
                    ("authorization", &format!("Bearer {token}")),
                    ("x-forwarded-proto", "http"),
                ])
            })
            .collect();
        let policy = Policy::from_json(policy.to_string().as_bytes())
            .unwrap_or_else(|e| panic!("the bench policy: {e}"));
        let hmac_key = match &policy.identity_key {
            crate::config::KeySource::Inline(key) => key.clone(),
            crate::config::KeySource::Env(_) => b"bench-only-gateway-hmac-key".to_vec(),
        };
        let store = MemoryStore::new();
        let mut worker = Worker::new(Arc::new(policy), hmac_key);
        worker
            .init_shared(&store, [0x5a; 16])
            .unwrap_or_else(|e| panic!("init_shared: {e:?}"));
        Self {
            worker,
            store,
            wires,
            next: 0,
            random: 0x9e37_79b9_7f4a_7c15,
        }
    }

    /// One request, the next token in turn, through what the adapter runs in the VM for a
    /// request without a body that passes: decode the header map, decide the headers, then
    /// compute the response headers. `at` is called at each [`Stage`]. Returns the number
    /// of response headers; panics unless the request is forwarded.
    pub fn request(&mut self, at: &mut dyn FnMut(Stage)) -> usize {
        at(Stage::Start);
        let Self {
            worker,
            store,
            wires,
            next,
            random,
        } = self;
        let wire = &wires[*next % wires.len()];
        *next = next.wrapping_add(1);
        let pairs = headers::decode(wire).unwrap_or_default();
        at(Stage::Decoded);
        let req = RequestHead {
            method: headers::first(&pairs, ":method").unwrap_or_default(),
            path: headers::first(&pairs, ":path").unwrap_or_default(),
            headers: &pairs,
            client_addr: Some("127.0.0.1"),
            has_body: false,
        };
        // Host randomness stand-in: xorshift, distinct bytes on every call.
        let mut draw = || {
            *random ^= *random << 13;
            *random ^= *random >> 7;
            *random ^= *random << 17;
            let mut out = [0u8; 16];
            out[..8].copy_from_slice(&random.to_le_bytes());
            out[8..].copy_from_slice(&random.rotate_left(32).to_le_bytes());
            out
        };
        let mut host = Host {
            store: &*store,
            now_ms: NOW as u64 * 1000,
            random: &mut draw,
        };
        let mut pending = Pending::default();
        let step = worker.on_headers(&req, &mut host, true, &mut pending);
        at(Stage::Decided);
        if !matches!(step, Step::Forward) || pending.needs_body {
            panic!("the bench request was not forwarded: {step:?}");
        }
        let response = worker.response_headers(&pending);
        at(Stage::Responded);
        response.len()
    }
}
