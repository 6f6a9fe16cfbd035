//! Envoy's memory after a million distinct users passed the edge filter's rate limiter and
//! idempotency store: bounded by the configured slots, not by the traffic.

use std::fs;
use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Result};
use serde_json::Value;

use super::gateway::Gateway;
use super::tokens::{self, Family, Keys, PoolSpec};
use super::{http_full, procfs, report, wrk, Settings, WRK_THREADS};

/// A million distinct users through the rate limiter and the idempotency store.
#[allow(clippy::too_many_arguments)]
pub fn run(
    wrk_bin: &Path,
    envoy_bin: &Path,
    keys: &Keys,
    token_dir: &Path,
    work: &Path,
    wasm_config: &Value,
    policy: &Value,
    settings: &Settings,
) -> Result<report::Memory> {
    let users = settings.memory_users;
    let pool = tokens::pool(
        keys,
        token_dir,
        &format!("users-hs256-{users}"),
        PoolSpec {
            family: Family::HS256,
            tokens: users,
            threads: WRK_THREADS,
            distinct_users: true,
        },
    )?;
    let concurrency = 2;
    let gw = Gateway::start(
        envoy_bin,
        "memory",
        wasm_config.clone(),
        concurrency,
        &[],
        &work.join("memory"),
    )?;
    let body = work.join("idem-body.json");
    fs::write(&body, br#"{"name":"bench"}"#)?;
    // One request so the VM, its shared data and the listener exist before "at start",
    // then the same again: the replay proves the idempotency store holds what passes, and
    // the RateLimit header that the rate limiter counted it.
    let token = keys.mint(Family::HS256, "u-bench-warmup", "warmup")?;
    let auth = format!("Bearer {token}");
    let headers = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "warmup-1"),
        ("content-type", "application/json"),
    ];
    let url = format!("{}/api/bench/idem", gw.url);
    let mut seen = Vec::new();
    for _ in 0..2 {
        let (status, got, text) = http_full("POST", &url, &headers, Some(br#"{"name":"bench"}"#))?;
        if status != 200 {
            bail!(
                "memory run: POST /api/bench/idem answered {status}: {text}\n{}",
                gw.log_tail()
            );
        }
        seen.push(got);
    }
    let has = |i: usize, name: &str, value: Option<&str>| {
        seen.get(i).is_some_and(|h| {
            h.iter()
                .any(|(n, v)| n == name && value.is_none_or(|want| v == want))
        })
    };
    let store_checks = serde_json::json!({
        "ratelimit_header_on_first": has(0, "ratelimit", None),
        "idempotent_replay_on_second": has(1, "idempotent-replayed", Some("true")),
    });
    std::thread::sleep(Duration::from_millis(300));
    let rss_start = procfs::rss_kib(gw.pid())?;
    let pid = gw.pid();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let (outcome, trace) = std::thread::scope(|scope| -> Result<_> {
        let sampler = scope.spawn(|| {
            let mut trace = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let done = gw.stat("http.bench.downstream_rq_completed").unwrap_or(0);
                if let Ok(rss) = procfs::rss_kib(pid) {
                    trace.push(report::RssPoint {
                        requests: done,
                        rss_kib: rss,
                    });
                }
                std::thread::sleep(Duration::from_millis(500));
            }
            trace
        });
        let outcome = wrk::run(
            wrk_bin,
            work,
            &wrk::Load {
                base_url: &gw.url,
                method: "POST",
                path: "/api/bench/idem",
                tokens: &pool.prefix,
                idempotency_keys: true,
                key_prefix: "bench",
                body: Some(&body),
                duration: Duration::from_secs(3600),
                connections: settings.connections,
                threads: WRK_THREADS,
                cpus: &[],
                stop_at_eof: true,
            },
        );
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
        let trace = sampler.join().unwrap_or_default();
        Ok((outcome?, trace))
    })?;
    // wrk stops counting at the end of the files; the last requests in flight still
    // complete in Envoy, whose own count is the one reported.
    std::thread::sleep(Duration::from_millis(500));
    let rss_end = procfs::rss_kib(pid)?;
    let passed = gw
        .stat("http.bench.downstream_rq_2xx")
        .unwrap_or(0)
        .saturating_sub(2);
    Ok(report::Memory::new(
        users,
        rss_start,
        rss_end,
        &outcome,
        trace,
        passed,
        policy,
        store_checks,
        gw.stats_containing("edge_filter"),
    ))
}
