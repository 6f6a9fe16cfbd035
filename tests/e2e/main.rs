//! The end-to-end suite: the real Envoy with the real filter on V8, the real backend component
//! under the local runner (or `spin up`), real SQLite files. One test binary, one module per
//! area, so the suite links once; `cargo test --test e2e -- <module>::` runs one area, e.g.
//! `cargo test --test e2e -- filter_hostile::`.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)] // test code

#[path = "support.rs"]
mod support;

mod backend_api;
mod backend_bench;
mod backend_concurrency;
mod backend_crash;
mod backend_gateway;
mod bench_smoke;
mod contract_tiers;
mod deploy_manifests;
mod filter_attacks;
mod filter_config;
mod filter_env;
mod filter_gateway;
mod filter_hostile;
mod filter_jwks;
mod filter_limits;
mod filter_ratelimit_attack;
mod filter_recovery;
mod filter_scopes;
mod gateway_health;
mod gateway_openapi;
mod gateway_schemathesis;
mod scale_out;
mod stack;
