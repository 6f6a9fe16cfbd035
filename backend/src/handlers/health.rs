//! `GET /healthz`: whether this instance can serve, for probes and load balancers. It needs
//! no identity and reveals nothing but the status.

use crate::app::Env;
use crate::http::ApiResponse;
use crate::problem::Problem;

/// The key the probe reads. Nothing writes it: reading an absent key still makes the store
/// answer, which is all a probe needs, and costs one lookup.
pub const PROBE_KEY: &str = "health/probe";

/// 200 `{"status":"ok"}` when the store answers a read; 503 `store-unavailable` otherwise.
pub fn check(env: &Env<'_>) -> Result<ApiResponse, Problem> {
    env.kv.get(PROBE_KEY)?;
    Ok(ApiResponse::json(200, &serde_json::json!({"status": "ok"}))
        .with_header("cache-control", "no-store"))
}
