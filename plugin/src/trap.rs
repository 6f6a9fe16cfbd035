//! A deliberate trap for the recovery tests. Only a build with the `test-trap` feature has
//! one: a request carrying [`MARKER`] panics, the panic aborts, V8 traps and Envoy marks the
//! VM failed, so the end-to-end tests can watch `failure_policy: FAIL_RELOAD` replace it.
//! The shipped build compiles [`check`] to nothing.

/// The request header that makes a `test-trap` build panic.
#[cfg(feature = "test-trap")]
pub const MARKER: &str = "x-edge-test-trap";

/// Panics when the request carries [`MARKER`] (`test-trap` builds only).
#[cfg(feature = "test-trap")]
// Panicking is this function's whole purpose: it stands in for a bug that traps the VM.
#[allow(clippy::panic)]
pub fn check() {
    use proxy_wasm::hostcalls;
    use proxy_wasm::types::MapType;
    // The `_bytes` read: the marker's value may be any bytes, and only its presence counts.
    if let Ok(Some(_)) = hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, MARKER) {
        panic!("{MARKER} present: trapping on purpose (test-trap build)");
    }
}

/// Does nothing: the shipped build has no trap.
#[cfg(not(feature = "test-trap"))]
#[inline(always)]
pub fn check() {}
