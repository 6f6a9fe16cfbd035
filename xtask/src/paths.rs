//! Where the project's artifacts live, relative to the repository root.

use std::path::PathBuf;

/// The repository root (the folder holding the workspace `Cargo.toml`).
pub fn root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

/// The Cargo target folder, honouring `CARGO_TARGET_DIR`.
pub fn target_dir() -> PathBuf {
    match std::env::var_os("CARGO_TARGET_DIR") {
        Some(dir) => root().join(dir),
        None => root().join("target"),
    }
}

/// The filter module Envoy loads.
pub fn filter_wasm() -> PathBuf {
    target_dir().join("wasm32-wasip1/release/edge_filter.wasm")
}

/// The bench's floor filter (`envoy/bench/floor`): the least a proxy-wasm filter does.
pub fn floor_wasm() -> PathBuf {
    target_dir().join("wasm32-wasip1/release/edge_bench_floor.wasm")
}

/// The target folder of the filter's `test-trap` build: its own, so that build never
/// replaces the shipped [`filter_wasm`] (the two differ only in a feature, which Cargo
/// would otherwise build to the same file).
pub fn filter_test_trap_target_dir() -> PathBuf {
    target_dir().join("test-trap")
}

/// The filter's `test-trap` build: a request with `x-edge-test-trap` traps its VM. For the
/// recovery tests only.
pub fn filter_test_trap_wasm() -> PathBuf {
    filter_test_trap_target_dir().join("wasm32-wasip1/release/edge_filter.wasm")
}

/// The backend component `spin.toml` names.
pub fn backend_wasm() -> PathBuf {
    target_dir().join("wasm32-wasip2/release/workspace_backend.wasm")
}

/// The local runner that stands in for `spin up`.
pub fn runner_bin() -> PathBuf {
    target_dir().join("debug/spin-runner")
}

/// The rate limit service (`ratelimit-service/`), as `cargo build` leaves it.
pub fn ratelimit_bin() -> PathBuf {
    target_dir().join("debug/edge-ratelimit")
}

/// The limits the rate limit service runs with locally and in the tests.
pub fn ratelimit_limits() -> PathBuf {
    root().join("ratelimit-service/limits.toml")
}

/// The project-local Python virtual environment holding Envoy.
pub fn venv() -> PathBuf {
    root().join(".venv")
}

/// The Spin manifest.
pub fn spin_manifest() -> PathBuf {
    root().join("spin.toml")
}

/// The shipped local gateway configuration.
pub fn envoy_config() -> PathBuf {
    root().join("envoy/envoy.yaml")
}

/// The local-only HMAC key shared by the dev gateway and the dev backend.
pub fn dev_hmac_key() -> PathBuf {
    root().join("dev/gateway-hmac-key.txt")
}

/// The local-only JWT signing key.
pub fn dev_signing_key() -> PathBuf {
    root().join("dev/signing-key.jwk.json")
}

/// A folder for tools and caches the project installs for itself (ignored by git).
pub fn cache_dir() -> PathBuf {
    root().join(".cache")
}
