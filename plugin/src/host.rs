//! The host services `edge_policy` needs, over [`crate::abi`]: every host error handled,
//! every value read as bytes. [`decide`] is the one place that builds the host view of a
//! decision; [`KeyCalls`] starts key fetches.

use edge_policy::headers::{self, Pair};
use edge_policy::keyfetch::{Fetch, KeyServer};
use edge_policy::problem::Reply;
use edge_policy::rls;
use edge_policy::store::{SharedStore, StoreError};
use edge_policy::{Host, RateLimitCall};

use crate::abi::{self, Map};
use crate::metrics::Metrics;

/// Proxy-wasm shared data: one map per VM id, shared by every worker thread.
pub struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        abi::shared_data(key).map_err(|s| StoreError::Host(format!("get_shared_data: {s:?}")))
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(abi::CAS_MISMATCH) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(format!("set_shared_data: {status:?}"))),
        }
    }
}

/// Runs `f` with the host view of one decision: the shared store, Envoy's clock, randomness.
pub fn decide<R>(f: impl FnOnce(&mut Host<'_>) -> R) -> R {
    let mut random = random16;
    f(&mut Host {
        store: &EnvoyStore,
        now_ms: now_ms(),
        random: &mut random,
    })
}

/// Envoy's clock in unix milliseconds; 0 if the host cannot tell (every token then looks
/// expired or not yet valid: failing closed).
pub fn now_ms() -> u64 {
    abi::now_nanos().map_or(0, |n| n / 1_000_000)
}

/// 16 random bytes from the host (WASI `random_get`, which Envoy implements).
pub fn random16() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    if getrandom::getrandom(&mut bytes).is_err() {
        // No entropy: derive from the clock rather than fail the request; request IDs
        // and claim generations only need to be unique, not secret.
        let t = now_ms().to_be_bytes();
        bytes[..8].copy_from_slice(&t);
        bytes[8..].copy_from_slice(&edge_policy::hash::digest64(&[&t, b"edge"]).to_be_bytes());
    }
    bytes
}

/// Log levels of the proxy-wasm ABI.
#[derive(Debug, Clone, Copy)]
pub enum Level {
    /// Routine decisions.
    Info = 2,
    /// Degraded operation.
    Warn = 3,
    /// Failures operators must act on.
    Error = 4,
}

/// Logs, ignoring a failing host (there is nowhere else to report it).
pub fn log(level: Level, message: &str) {
    let _ = abi::log(level as u32, message);
}

/// A header map, serialized as the host holds it; [`decoded`] reads it.
pub fn header_map(map: Map) -> Vec<u8> {
    abi::header_map(map).unwrap_or_default()
}

/// The pairs of a serialized header map; empty if the host sent something unreadable (every
/// interpreted header then looks absent, which the policy answers with 400/401).
pub fn decoded(wire: &[u8]) -> Vec<Pair<'_>> {
    headers::decode(wire).unwrap_or_default()
}

/// The client IP without port, from the `source.address` property.
pub fn client_addr() -> Option<String> {
    let raw = abi::property(&["source", "address"]).ok()??;
    let text = String::from_utf8(raw).ok()?;
    let ip = match text.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
        None => text
            .rsplit_once(':')
            .map_or(text.clone(), |(ip, _)| ip.to_owned()),
    };
    Some(ip)
}

/// Sends a local reply; logs when the host refuses it (the stream is gone).
pub fn send_reply(reply: &Reply, request_id: &str) {
    let headers = headers::encode(&reply.headers);
    if let Err(status) = abi::send_local_response(reply.status, &headers, &reply.body) {
        log(
            Level::Error,
            &format!("request_id={request_id} cannot send local reply: {status:?}"),
        );
    }
}

/// Starts a `ShouldRateLimit` call through its Envoy cluster; the answer arrives in
/// `on_grpc_call_response` of the context current now.
pub fn start_rate_limit_call(call: &RateLimitCall) -> Result<u32, rls::Failure> {
    // The SDK's call, not `abi`, for the same reason as `dispatch_http_call` below. Envoy
    // answers Ok, ParseFailure or InternalFailure here, which the SDK returns as errors.
    proxy_wasm::hostcalls::dispatch_grpc_call(
        &call.cluster,
        rls::SERVICE,
        rls::METHOD,
        vec![],
        Some(&call.message),
        std::time::Duration::from_millis(call.timeout_ms),
    )
    .map_err(|_| rls::Failure::NotStarted)
}

/// Starts key fetches as HTTP calls through Envoy clusters, and reports the failed ones.
pub struct KeyCalls<'a>(pub &'a mut Metrics);

impl KeyServer for KeyCalls<'_> {
    fn start(&mut self, fetch: &Fetch<'_>) -> Option<u32> {
        // The SDK's call, not `abi`: its dispatcher must record the token to route the
        // answer back (it panics on a token it does not know). Envoy answers only Ok,
        // BadArgument or InternalFailure here, which the SDK returns as errors.
        match proxy_wasm::hostcalls::dispatch_http_call(
            fetch.cluster,
            fetch.headers.to_vec(),
            None,
            vec![],
            fetch.timeout,
        ) {
            Ok(token) => Some(token),
            Err(status) => {
                self.failed(fetch.issuer, &format!("could not start: {status:?}"));
                None
            }
        }
    }
}

impl KeyCalls<'_> {
    /// Counts a failed key fetch and logs why.
    pub fn failed(&mut self, issuer: usize, why: &str) {
        self.0.count("jwks_fetch.failed");
        log(
            Level::Warn,
            &format!("jwks fetch for issuer #{issuer} {why}"),
        );
    }
}
