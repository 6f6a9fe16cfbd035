//! `cargo xtask bench`: what the edge filter costs next to Envoy's own filters and next to
//! the least any proxy-wasm filter costs, measured in one run on the same machine and load
//! (method in `docs/performance.md`).
//!
//! Scenarios, all in front of the same fixed `direct_response` upstream:
//! - (1) `baseline`: Envoy with no HTTP filter but the router;
//! - (2) `native`: `jwt_authn` (local JWKS, cache on) + `local_ratelimit` + `rbac` on the
//!   JWT payload;
//! - (F) `floor`: a minimal proxy-wasm filter on the same V8 runtime (`envoy/bench/floor/`:
//!   reads the request headers once, sets one request and one response header);
//! - (3) `wasm`: our filter, JWT + request ID + rate limit + permission, one token (cached);
//! - (4) `wasm-<alg>` and `native-<alg>`: a distinct token per request (4× the token
//!   cache), per algorithm family, through our filter and through the native chain;
//!
//! and the breakdown rows (our filter with fewer checks). Every scenario runs with Envoy
//! `--concurrency` 1 and 2, at 32 connections, several times interleaved, Envoy and wrk
//! pinned to CPUs of their own where the machine has enough (`pin`); the table shows medians
//! and ratios taken run by run. Then: Envoy's memory after a million distinct users passed
//! the rate limiter and the idempotency store (`memory`), and creates per second through the
//! gateway and straight to the runner, beside the disk's own commit rate (`creates`).

mod creates;
mod gateway;
mod memory;
mod pin;
pub mod procfs;
mod report;
mod scenarios;
mod table;
mod tokens;
mod wrk;

use std::fs;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::{artifacts, envoy, paths};
use tokens::{Family, Keys};

pub use report::Report;

/// `cargo xtask bench` options.
#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// A CI-sized run: short loads, one repetition, few users (seconds, not minutes).
    #[arg(long)]
    pub smoke: bool,
    /// Seconds of load per measurement (default 10; smoke 0.5).
    #[arg(long)]
    pub duration: Option<f64>,
    /// Repetitions of every measurement; the table shows medians (default 5; smoke 1).
    #[arg(long)]
    pub runs: Option<u32>,
    /// Open connections.
    #[arg(long, default_value_t = 32)]
    pub connections: u32,
    /// Envoy worker counts to measure, comma-separated.
    #[arg(long, value_delimiter = ',', default_value = "1,2")]
    pub concurrency: Vec<u32>,
    /// Only these side-by-side scenarios, by key, comma-separated (e.g.
    /// `baseline,native,floor,wasm`); default: all of them.
    #[arg(long, value_delimiter = ',')]
    pub only: Vec<String>,
    /// Never pin: Envoy and wrk share every CPU (by default Envoy runs on CPUs of its own and
    /// wrk on the others whenever at least one CPU is left for wrk).
    #[arg(long)]
    pub no_pin: bool,
    /// Distinct users for the memory run (default 1000000; smoke 2000).
    #[arg(long)]
    pub users: Option<u64>,
    /// Skip the memory run.
    #[arg(long)]
    pub skip_memory: bool,
    /// Skip the creates per second (through the gateway and straight to the runner).
    #[arg(long)]
    pub skip_creates: bool,
    /// Only the creates per second (no side-by-side scenarios, no memory run).
    #[arg(long, conflicts_with = "skip_creates")]
    pub creates_only: bool,
    /// Distinct users of the creates run (default 4000; smoke 64).
    #[arg(long)]
    pub create_users: Option<u64>,
    /// Where to write the JSON (default `target/bench/latest.json`; smoke `smoke.json`).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// What one invocation uses, after defaults.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// Smoke run.
    pub smoke: bool,
    /// Seconds per measurement.
    pub duration_s: f64,
    /// Warm-up seconds per scenario before measuring.
    pub warmup_s: f64,
    /// Repetitions.
    pub runs: u32,
    /// Connections.
    pub connections: u32,
    /// wrk threads, at most (a pinned wrk runs no more threads than it has CPUs).
    pub wrk_threads: u32,
    /// Envoy worker counts.
    pub envoy_concurrency: Vec<u32>,
    /// Distinct tokens per algorithm in scenario (4).
    pub distinct_tokens: u64,
    /// The filter's token cache, per worker (from `envoy/bench/wasm.yaml`).
    pub token_cache_entries: u64,
    /// Users in the memory run (0: skipped).
    pub memory_users: u64,
    /// Seconds of each creates figure (0: skipped).
    pub creates_s: f64,
    /// Distinct users of the creates run.
    pub create_users: u64,
}

const WRK_THREADS: u32 = 2;
/// The filter's token cache in a smoke run.
const SMOKE_TOKEN_CACHE: u64 = 16;

impl BenchArgs {
    fn settings(&self, token_cache_entries: u64) -> Settings {
        let smoke = self.smoke;
        Settings {
            smoke,
            duration_s: self.duration.unwrap_or(if smoke { 0.5 } else { 10.0 }),
            warmup_s: if smoke { 0.2 } else { 2.0 },
            runs: self.runs.unwrap_or(if smoke { 1 } else { 5 }).max(1),
            connections: self.connections.max(1),
            wrk_threads: WRK_THREADS,
            envoy_concurrency: if self.creates_only {
                Vec::new()
            } else if self.concurrency.is_empty() {
                vec![1, 2]
            } else {
                self.concurrency.clone()
            },
            // FIFO cache, tokens visited cyclically: with 4× the cache no token is still
            // cached when it comes round again, even split over two workers.
            distinct_tokens: token_cache_entries * 4,
            token_cache_entries,
            memory_users: if self.skip_memory || self.creates_only {
                0
            } else {
                self.users
                    .unwrap_or(if smoke { 2_000 } else { 1_000_000 })
                    .max(2)
            },
            creates_s: if self.skip_creates {
                0.0
            } else if smoke {
                1.0
            } else {
                10.0
            },
            create_users: self
                .create_users
                .unwrap_or(if smoke { 64 } else { 4_000 })
                .max(1),
        }
    }
}

/// Runs the benchmark, prints the table and writes the JSON; returns the report.
pub fn run(args: &BenchArgs) -> Result<Report> {
    let started = Instant::now();
    let wrk_bin = wrk::ensure_installed()?;
    let envoy_bin = envoy::ensure_installed()?;
    artifacts::build()?;
    artifacts::build_floor()?;
    let dir = paths::target_dir().join("bench");
    let work = dir.join("work");
    fs::create_dir_all(&work)?;

    // The filter's policy from envoy/bench/wasm.yaml, keys swapped for the bench issuer's.
    let keys = Keys::load_or_generate(&dir.join("keys.json"))?;
    let mut wasm_config = gateway::load("wasm")?;
    let mut policy = gateway::wasm_policy(&mut wasm_config)?;
    policy["issuers"][0]["jwks"] = keys.jwks(&Family::ALL)?;
    if args.smoke {
        // A small cache, so a small pool of distinct tokens still gets no help from it:
        // minting thousands of RS256 tokens takes minutes in a debug build.
        policy["limits"]["token_cache_entries"] = Value::from(SMOKE_TOKEN_CACHE);
    }
    let cache_entries = policy
        .pointer("/limits/token_cache_entries")
        .and_then(Value::as_u64)
        .unwrap_or(1024);
    gateway::set_wasm_policy(&mut wasm_config, &policy)?;
    let settings = args.settings(cache_entries);

    let configs = scenarios::Configs::load(&keys, wasm_config.clone(), &settings)?;
    let token_dir = dir.join("tokens");
    let mut report = Report::new(&settings, &envoy_bin, &wrk_bin);
    if !settings.envoy_concurrency.is_empty() {
        let scenarios = scenarios::list(&keys, &token_dir, &settings, &args.only)?;
        let bench = scenarios::Bench {
            wrk_bin: &wrk_bin,
            envoy_bin: &envoy_bin,
            work: &work,
            configs: &configs,
            settings: &settings,
            pin: !args.no_pin,
        };
        for &concurrency in &settings.envoy_concurrency {
            report.add_concurrency(bench.run_at(concurrency, &scenarios)?);
        }
    }

    if settings.memory_users > 0 {
        eprintln!(
            "xtask bench: memory after {} distinct users",
            settings.memory_users
        );
        report.memory = Some(memory::run(
            &wrk_bin,
            &envoy_bin,
            &keys,
            &token_dir,
            &work,
            &wasm_config,
            &policy,
            &settings,
        )?);
    }
    if settings.creates_s > 0.0 {
        report.creates = Some(creates::run(&wrk_bin, &work, &settings)?);
    }
    report.finish(started.elapsed());
    let out = args.out.clone().unwrap_or_else(|| {
        dir.join(if args.smoke {
            "smoke.json"
        } else {
            "latest.json"
        })
    });
    fs::write(&out, serde_json::to_vec_pretty(&report)?)
        .with_context(|| format!("writing {}", out.display()))?;
    println!("{}", report.table());
    println!("JSON: {}", out.display());
    Ok(report)
}

/// A small HTTP client for sanity checks: `(status, body)`.
fn http(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, String)> {
    http_full(method, url, headers, body).map(|(status, _, text)| (status, text))
}

/// Response headers, names lower-case.
type Headers = Vec<(String, String)>;

/// Like [`http`], with the response headers.
fn http_full(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> Result<(u16, Headers, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(10)))
        .build()
        .into();
    let result = match method {
        "POST" => {
            let mut req = agent.post(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.send(body.unwrap_or_default())
        }
        _ => {
            let mut req = agent.get(url);
            for (k, v) in headers {
                req = req.header(*k, *v);
            }
            req.call()
        }
    };
    let mut response = result.map_err(|e| anyhow::anyhow!("{method} {url}: {e}"))?;
    let status = response.status().as_u16();
    let got = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_ascii_lowercase(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let text = response.body_mut().read_to_string().unwrap_or_default();
    Ok((status, got, text))
}
