//! The host services `edge_policy` needs, implemented with `proxy_wasm::hostcalls` and
//! with every host error handled (the SDK's trait helpers would unwrap them).

use std::time::UNIX_EPOCH;

use edge_policy::store::{SharedStore, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MapType, Status};

/// Proxy-wasm shared data: one map per VM id, shared by every worker thread.
pub struct EnvoyStore;

impl SharedStore for EnvoyStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), Some(cas))) => Ok(Some((value, cas))),
            Ok((Some(value), None)) => Ok(Some((value, 0))),
            Ok((None, _)) => Ok(None),
            Err(status) => Err(StoreError::Host(format!("get_shared_data: {status:?}"))),
        }
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(status) => Err(StoreError::Host(format!("set_shared_data: {status:?}"))),
        }
    }
}

/// Envoy's clock in unix milliseconds; 0 if the host cannot tell (every token then looks
/// expired or not yet valid: failing closed).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .and_then(|d| u64::try_from(d.as_millis()).ok())
        .unwrap_or(0)
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

/// Logs, ignoring a failing host (there is nowhere else to report it).
pub fn log(level: LogLevel, message: &str) {
    let _ = hostcalls::log(level, message);
}

/// Every request header, names lower-case as Envoy stores them.
pub fn request_headers() -> Vec<(String, String)> {
    hostcalls::get_map(MapType::HttpRequestHeaders).unwrap_or_default()
}

/// The client IP without port, from the `source.address` property.
pub fn client_addr() -> Option<String> {
    let raw = hostcalls::get_property(vec!["source", "address"]).ok()??;
    let text = String::from_utf8(raw).ok()?;
    let ip = match text.strip_prefix('[') {
        Some(v6) => v6.split(']').next().unwrap_or(v6).to_owned(),
        None => text
            .rsplit_once(':')
            .map_or(text.clone(), |(ip, _)| ip.to_owned()),
    };
    Some(ip)
}
