//! Host-independent policy logic of the edge filter.
//!
//! Nothing here imports `proxy_wasm`: the clock, randomness and shared data come in
//! through [`gate::Host`] and [`store::SharedStore`], so every rule runs natively (and on
//! `wasm32-unknown-unknown` under `wasm-bindgen-test`) against in-memory fakes. The
//! `edge-filter` crate adapts Envoy's callbacks to [`gate::Worker`].

pub mod cache;
pub mod config;
pub mod duration;
pub mod gate;
pub mod hash;
pub mod headers;
pub mod idempotency;
pub mod jwks;
pub mod jwt;
pub mod keyfetch;
pub mod permission;
pub mod problem;
pub mod ratelimit;
pub mod rls;
pub mod route;
pub mod slots;
pub mod store;
#[cfg(feature = "testkit")]
#[allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]
pub mod testkit;
pub mod verifying;

pub use config::{ConfigError, Policy};
pub use gate::{Host, Pending, RateLimitCall, RequestHead, Step, Worker};
