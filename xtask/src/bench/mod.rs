//! `cargo xtask bench`: what the edge filter costs next to Envoy's own filters, measured in
//! one run on the same machine and load (issue 5; method in `docs/performance.md`).
//!
//! Scenarios, all in front of the same fixed `direct_response` upstream:
//! 1. `baseline`: Envoy with no HTTP filter but the router;
//! 2. `native`: `jwt_authn` (local JWKS, cache on) + `local_ratelimit` + `rbac` on the JWT
//!    payload;
//! 3. `wasm`: our filter, JWT + request ID + rate limit + permission, one token (cached);
//! 4. `wasm-<alg>`: our filter, a distinct token per request (4× the token cache), per
//!    algorithm family.
//!
//! Every scenario runs with Envoy `--concurrency` 1 and 2, at 32 connections, several times
//! interleaved; the table shows medians and the ratios (3)/(2), (3)/(1) taken run by run.
//! Then: Envoy's memory after a million distinct users passed the rate limiter and the
//! idempotency store, and creates per second through the gateway and straight to the
//! runner, beside the disk's own commit rate (`creates`).

mod creates;
mod gateway;
pub mod procfs;
mod report;
mod tokens;
mod wrk;

use std::fs;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;
use serde_json::Value;

use crate::{artifacts, envoy, paths};
use gateway::Gateway;
use tokens::{Family, Keys, Pool, PoolSpec};

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
    /// wrk threads.
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

/// One scenario of the side-by-side table.
#[derive(Debug, Clone)]
struct Scenario {
    key: String,
    label: String,
    gateway: Kind,
    path: &'static str,
    pool: Pool,
    /// Part of the cost breakdown, not of the issue's four scenarios.
    breakdown: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Baseline,
    Native,
    Wasm,
}

/// Runs the benchmark, prints the table and writes the JSON; returns the report.
pub fn run(args: &BenchArgs) -> Result<Report> {
    let started = Instant::now();
    let wrk_bin = wrk::ensure_installed()?;
    let envoy_bin = envoy::ensure_installed()?;
    artifacts::build()?;
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

    let mut native_config = gateway::load("native")?;
    gateway::set_native_jwks(&mut native_config, &keys.jwks(&[Family::RS256])?)?;
    let baseline_config = gateway::load("baseline")?;

    let token_dir = dir.join("tokens");
    // The side-by-side scenarios' token pools (minted once, kept in target/bench/tokens).
    let scenarios = if settings.envoy_concurrency.is_empty() {
        Vec::new()
    } else {
        let cached = tokens::pool(
            &keys,
            &token_dir,
            "cached-rs256",
            PoolSpec {
                family: Family::RS256,
                tokens: 1,
                threads: WRK_THREADS,
                distinct_users: false,
            },
        )?;
        let mut scenarios = vec![
            scenario("baseline", "(1) Envoy, no filter", Kind::Baseline, &cached),
            scenario(
                "native",
                "(2) native jwt_authn+local_ratelimit+rbac (RS256, cached)",
                Kind::Native,
                &cached,
            ),
            scenario(
                "wasm",
                "(3) our filter, all checks (RS256, cached)",
                Kind::Wasm,
                &cached,
            ),
        ];
        for family in Family::ALL {
            let pool = tokens::pool(
                &keys,
                &token_dir,
                &format!(
                    "distinct-{}-{}",
                    family.alg().to_ascii_lowercase(),
                    settings.distinct_tokens
                ),
                PoolSpec {
                    family,
                    tokens: settings.distinct_tokens,
                    threads: WRK_THREADS,
                    distinct_users: false,
                },
            )?;
            scenarios.push(scenario(
                &format!("wasm-{}", family.alg().to_ascii_lowercase()),
                &format!("(4) our filter, distinct {} tokens", family.alg()),
                Kind::Wasm,
                &pool,
            ));
        }
        for (key, label, path) in [
            (
                "wasm-jwt-only",
                "    breakdown: JWT + request ID + identity only",
                "/api/bench/jwt-only",
            ),
            (
                "wasm-jwt-ratelimit",
                "    breakdown: + rate limit (no permission)",
                "/api/bench/jwt-ratelimit",
            ),
        ] {
            let mut s = scenario(key, label, Kind::Wasm, &cached);
            s.path = path;
            s.breakdown = true;
            scenarios.push(s);
        }
        scenarios
    };
    let mut report = Report::new(&settings, &envoy_bin, &wrk_bin);
    for &concurrency in &settings.envoy_concurrency {
        eprintln!("xtask bench: Envoy --concurrency {concurrency}");
        let run_dir = work.join(format!("c{concurrency}"));
        let baseline = Gateway::start(
            &envoy_bin,
            "baseline",
            baseline_config.clone(),
            concurrency,
            &run_dir,
        )?;
        let native = Gateway::start(
            &envoy_bin,
            "native",
            native_config.clone(),
            concurrency,
            &run_dir,
        )?;
        let wasm = Gateway::start(
            &envoy_bin,
            "wasm",
            wasm_config.clone(),
            concurrency,
            &run_dir,
        )?;
        let gateway_of = |kind: Kind| match kind {
            Kind::Baseline => &baseline,
            Kind::Native => &native,
            Kind::Wasm => &wasm,
        };
        for s in &scenarios {
            sanity_check(gateway_of(s.gateway), s)?;
        }
        let mut samples: Vec<Vec<report::Sample>> = vec![Vec::new(); scenarios.len()];
        // Warm every scenario once (JIT, caches, connection set-up), then measure them
        // interleaved, run after run, so a disturbance on this shared machine hits a whole
        // run rather than one scenario.
        for s in &scenarios {
            measure(
                &wrk_bin,
                &work,
                gateway_of(s.gateway),
                s,
                &settings,
                settings.warmup_s,
            )?;
        }
        for run in 0..settings.runs {
            for (i, s) in scenarios.iter().enumerate() {
                let sample = measure(
                    &wrk_bin,
                    &work,
                    gateway_of(s.gateway),
                    s,
                    &settings,
                    settings.duration_s,
                )?;
                eprintln!(
                    "  run {}/{} {:<20} {:>9.0} req/s  p99 {:>7.2} ms  {:>6.1} µs CPU/req",
                    run + 1,
                    settings.runs,
                    s.key,
                    sample.rps,
                    sample.p99_us / 1000.0,
                    sample.cpu_us_per_req
                );
                samples[i].push(sample);
            }
        }
        let cache_stats = wasm.stats_containing("edge_filter");
        report.add_concurrency(
            concurrency,
            scenarios
                .iter()
                .zip(samples)
                .map(|(s, samples)| {
                    report::ScenarioResult::new(&s.key, &s.label, s.breakdown, samples)
                })
                .collect(),
            cache_stats,
        );
    }

    if settings.memory_users > 0 {
        eprintln!(
            "xtask bench: memory after {} distinct users",
            settings.memory_users
        );
        report.memory = Some(memory_run(
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

fn scenario(key: &str, label: &str, gateway: Kind, pool: &Pool) -> Scenario {
    Scenario {
        key: key.to_owned(),
        label: label.to_owned(),
        gateway,
        path: "/api/bench",
        pool: pool.clone(),
        breakdown: false,
    }
}

/// One request of the scenario must pass (200): a misconfigured scenario measuring 401s
/// would be fast and wrong.
fn sanity_check(gateway: &Gateway, s: &Scenario) -> Result<()> {
    let token = tokens::first_token(&s.pool)?;
    let (status, body) = http(
        "GET",
        &format!("{}{}", gateway.url, s.path),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )?;
    if status != 200 {
        bail!(
            "scenario {}: GET {} answered {status}, not 200: {body}\nEnvoy log:\n{}",
            s.key,
            s.path,
            gateway.log_tail()
        );
    }
    Ok(())
}

fn measure(
    wrk_bin: &Path,
    work: &Path,
    gateway: &Gateway,
    s: &Scenario,
    settings: &Settings,
    seconds: f64,
) -> Result<report::Sample> {
    let cpu_before = procfs::cpu_seconds(gateway.pid())?;
    let outcome = wrk::run(
        wrk_bin,
        work,
        &wrk::Load {
            base_url: &gateway.url,
            method: "GET",
            path: s.path,
            tokens: &s.pool.prefix,
            idempotency_keys: false,
            key_prefix: "bench",
            body: None,
            duration: Duration::from_secs_f64(seconds),
            connections: settings.connections,
            threads: settings.wrk_threads,
            stop_at_eof: false,
        },
    )?;
    let cpu = procfs::cpu_seconds(gateway.pid())? - cpu_before;
    Ok(report::Sample::new(&outcome, cpu))
}

/// A million distinct users through the rate limiter and the idempotency store.
#[allow(clippy::too_many_arguments)]
fn memory_run(
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
