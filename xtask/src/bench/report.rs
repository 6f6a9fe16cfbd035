//! The bench's figures: medians, run-by-run ratios, targets, the table and the JSON.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::pin::Pinning;
use super::wrk::Outcome;
use super::Settings;

/// Throughput of the cached path (3) against the native chain (2): at least this.
pub const TARGET_RPS_RATIO: f64 = 0.9;
/// p99 latency of (3) against (2): at most this.
pub const TARGET_P99_RATIO: f64 = 1.2;
/// Distinct tokens (4), ours against the native chain under the same load: throughput at
/// least this, per algorithm (HS256 is reported without a target).
pub const TARGET_DISTINCT_RPS_RATIO: [(&str, f64); 3] =
    [("RS256", 0.4), ("ES256", 0.3), ("EdDSA", 0.6)];
/// Memory is "bounded" when, after the first 10 % of users, it grows by less than this.
pub const MEMORY_GROWTH_LIMIT_KIB: u64 = 16 * 1024;
/// Creates per second through the gateway (seed-004 body, distinct users, 32 connections,
/// default durability): at least this.
pub const TARGET_CREATES_PER_S: f64 = 2000.0;
/// Their p99 latency: below this, ms.
pub const TARGET_CREATES_P99_MS: f64 = 50.0;

/// One measurement of one scenario.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Sample {
    /// Requests per second.
    pub rps: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Envoy CPU time (user + system, all threads) per request, µs.
    pub cpu_us_per_req: f64,
    /// Completed requests.
    pub requests: u64,
    /// Responses ≥ 400 (should be 0).
    pub non_2xx: u64,
    /// Socket errors and timeouts (should be 0).
    pub socket_errors: u64,
}

impl Sample {
    /// From wrk's outcome and Envoy's CPU seconds over the run.
    pub fn new(o: &Outcome, cpu_seconds: f64) -> Self {
        Self {
            rps: o.rps,
            p50_us: o.p50_us,
            p99_us: o.p99_us,
            p999_us: o.p999_us,
            cpu_us_per_req: if o.requests > 0 {
                cpu_seconds * 1e6 / o.requests as f64
            } else {
                0.0
            },
            requests: o.requests,
            non_2xx: o.non_2xx,
            socket_errors: o.socket_errors,
        }
    }
}

fn median(mut values: Vec<f64>) -> f64 {
    values.retain(|v| v.is_finite());
    if values.is_empty() {
        return 0.0;
    }
    values.sort_by(f64::total_cmp);
    let n = values.len();
    if n % 2 == 1 {
        values[n / 2]
    } else {
        (values[n / 2 - 1] + values[n / 2]) / 2.0
    }
}

/// A scenario's runs and their medians.
#[derive(Debug, Clone, Serialize)]
pub struct ScenarioResult {
    /// Short key (`baseline`, `native`, `wasm`, `wasm-hs256`, …).
    pub key: String,
    /// Row label.
    pub label: String,
    /// A cost-breakdown row rather than one of the scenarios.
    pub breakdown: bool,
    /// Field-by-field medians of the runs.
    pub median: Sample,
    /// Every run.
    pub runs: Vec<Sample>,
    /// Envoy CPU per request over no filter (1), µs, run by run: what the chain adds.
    pub cpu_over_baseline_us: Option<RunByRun>,
    /// For our filter's rows, Envoy CPU per request over the floor (F), µs, run by run:
    /// what our filter adds beyond the least any proxy-wasm filter costs.
    pub cpu_over_floor_us: Option<RunByRun>,
}

impl ScenarioResult {
    /// Medians over `runs`.
    pub fn new(key: &str, label: &str, breakdown: bool, runs: Vec<Sample>) -> Self {
        let m = |f: fn(&Sample) -> f64| median(runs.iter().map(f).collect());
        let median = Sample {
            rps: m(|s| s.rps),
            p50_us: m(|s| s.p50_us),
            p99_us: m(|s| s.p99_us),
            p999_us: m(|s| s.p999_us),
            cpu_us_per_req: m(|s| s.cpu_us_per_req),
            requests: runs.iter().map(|s| s.requests).sum(),
            non_2xx: runs.iter().map(|s| s.non_2xx).sum(),
            socket_errors: runs.iter().map(|s| s.socket_errors).sum(),
        };
        Self {
            key: key.to_owned(),
            label: label.to_owned(),
            breakdown,
            median,
            runs,
            cpu_over_baseline_us: None,
            cpu_over_floor_us: None,
        }
    }
}

/// A figure of two scenarios taken run by run (run *k* of one against run *k* of the
/// other: `a / b` or `a - b`), and the median of those.
#[derive(Debug, Clone, Default, Serialize)]
pub struct RunByRun {
    /// Median of the run-by-run figures.
    pub median: f64,
    /// Each run's figure.
    pub runs: Vec<f64>,
}

impl RunByRun {
    fn of(
        a: &ScenarioResult,
        b: &ScenarioResult,
        f: fn(&Sample) -> f64,
        op: fn(f64, f64) -> f64,
    ) -> Self {
        let runs: Vec<f64> = a
            .runs
            .iter()
            .zip(&b.runs)
            .map(|(x, y)| op(f(x), f(y)))
            .collect();
        Self {
            median: median(runs.clone()),
            runs,
        }
    }
}

fn ratio(a: &ScenarioResult, b: &ScenarioResult, f: fn(&Sample) -> f64) -> RunByRun {
    RunByRun::of(a, b, f, |x, y| if y > 0.0 { x / y } else { f64::NAN })
}

/// Envoy CPU per request of `a` over `b`, µs, run by run.
fn cpu_over(a: &ScenarioResult, b: &ScenarioResult) -> RunByRun {
    RunByRun::of(a, b, |s| s.cpu_us_per_req, |x, y| x - y)
}

/// Ratios of one scenario against another.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Ratios {
    /// Throughput.
    pub rps: RunByRun,
    /// Median latency.
    pub p50: RunByRun,
    /// p99 latency.
    pub p99: RunByRun,
    /// p99.9 latency.
    pub p999: RunByRun,
    /// Envoy CPU per request.
    pub cpu_per_req: RunByRun,
}

fn ratios(a: &ScenarioResult, b: &ScenarioResult) -> Ratios {
    Ratios {
        rps: ratio(a, b, |s| s.rps),
        p50: ratio(a, b, |s| s.p50_us),
        p99: ratio(a, b, |s| s.p99_us),
        p999: ratio(a, b, |s| s.p999_us),
        cpu_per_req: ratio(a, b, |s| s.cpu_us_per_req),
    }
}

/// What one Envoy `--concurrency` measured.
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyRun {
    /// Envoy worker threads.
    pub envoy_concurrency: u32,
    /// Where Envoy and wrk ran.
    pub pinning: Pinning,
    /// The machine's load average (1, 5, 15 min) before and after these scenarios: on a
    /// shared machine, how much CPU the figures had to share.
    pub load_average: [[f64; 3]; 2],
    /// Every scenario.
    pub scenarios: Vec<ScenarioResult>,
    /// The filter's counters after the runs (decisions, cache, …).
    pub filter_stats: Vec<(String, u64)>,
}

/// One algorithm's distinct-token scenarios, ours against the native chain.
#[derive(Debug, Clone, Serialize)]
pub struct DistinctRatios {
    /// `HS256`, `RS256`, `ES256`, `EdDSA`.
    pub alg: String,
    /// `wasm-<alg>` / `native-<alg>`.
    pub ratios: Ratios,
}

/// Everything measured at one Envoy `--concurrency`, with its ratios (all zero where a
/// scenario was left out with `--only`).
#[derive(Debug, Clone, Serialize)]
pub struct ConcurrencyResult {
    /// The measurements.
    #[serde(flatten)]
    pub run: ConcurrencyRun,
    /// Ours (3) / native (2).
    pub wasm_vs_native: Ratios,
    /// Ours (3) / floor (F).
    pub wasm_vs_floor: Ratios,
    /// Floor (F) / native (2).
    pub floor_vs_native: Ratios,
    /// Ours (3) / none (1).
    pub wasm_vs_baseline: Ratios,
    /// Floor (F) / none (1).
    pub floor_vs_baseline: Ratios,
    /// Native (2) / none (1).
    pub native_vs_baseline: Ratios,
    /// Distinct tokens (4), ours / native, per algorithm.
    pub distinct_wasm_vs_native: Vec<DistinctRatios>,
}

impl ConcurrencyResult {
    /// The ratios of `run`'s scenarios, and each scenario's CPU over none and over the floor.
    fn new(mut run: ConcurrencyRun) -> Self {
        let s = &run.scenarios;
        let distinct_wasm_vs_native = ALGS
            .iter()
            .map(|alg| {
                let lower = alg.to_ascii_lowercase();
                DistinctRatios {
                    alg: (*alg).to_owned(),
                    ratios: pair(s, &format!("wasm-{lower}"), &format!("native-{lower}")),
                }
            })
            .filter(|d| d.ratios.rps.median > 0.0)
            .collect();
        let wasm_vs_native = pair(s, "wasm", "native");
        let wasm_vs_floor = pair(s, "wasm", "floor");
        let floor_vs_native = pair(s, "floor", "native");
        let wasm_vs_baseline = pair(s, "wasm", "baseline");
        let floor_vs_baseline = pair(s, "floor", "baseline");
        let native_vs_baseline = pair(s, "native", "baseline");
        let find = |key: &str| run.scenarios.iter().find(|s| s.key == key).cloned();
        let (baseline, floor) = (find("baseline"), find("floor"));
        for s in &mut run.scenarios {
            if s.key != "baseline" {
                s.cpu_over_baseline_us = baseline.as_ref().map(|b| cpu_over(s, b));
            }
            if s.key.starts_with("wasm") {
                s.cpu_over_floor_us = floor.as_ref().map(|f| cpu_over(s, f));
            }
        }
        Self {
            run,
            wasm_vs_native,
            wasm_vs_floor,
            floor_vs_native,
            wasm_vs_baseline,
            floor_vs_baseline,
            native_vs_baseline,
            distinct_wasm_vs_native,
        }
    }
}

/// Scenario `a` against `b`, by key; all zero when either was not measured.
fn pair(scenarios: &[ScenarioResult], a: &str, b: &str) -> Ratios {
    let find = |key: &str| scenarios.iter().find(|s| s.key == key);
    match (find(a), find(b)) {
        (Some(a), Some(b)) => ratios(a, b),
        _ => Ratios::default(),
    }
}

/// The algorithm families of the distinct-token scenarios, in table order.
const ALGS: [&str; 4] = ["HS256", "RS256", "ES256", "EdDSA"];

/// A point of the memory run: requests completed so far, Envoy's RSS.
#[derive(Debug, Clone, Serialize)]
pub struct RssPoint {
    /// Requests completed.
    pub requests: u64,
    /// VmRSS, KiB.
    pub rss_kib: u64,
}

/// Envoy's memory after many distinct users.
#[derive(Debug, Clone, Serialize)]
pub struct Memory {
    /// Distinct users (one token, one subject and one Idempotency-Key each).
    pub users: u64,
    /// Requests wrk completed (the last few in flight when the files ended are not counted).
    pub requests: u64,
    /// Responses ≥ 400 wrk saw (should be 0).
    pub non_2xx: u64,
    /// 2xx responses Envoy served in the run (warm-up excluded): every user passed.
    pub passed_2xx: u64,
    /// Requests per second during the run.
    pub rps: f64,
    /// VmRSS before the users, KiB.
    pub rss_start_kib: u64,
    /// VmRSS at about 10 % of the users, KiB.
    pub rss_at_10pct_kib: u64,
    /// VmRSS after all users, KiB.
    pub rss_end_kib: u64,
    /// Highest VmRSS seen, KiB.
    pub rss_peak_kib: u64,
    /// Growth from 10 % to 100 % of the users, KiB.
    pub growth_after_10pct_kib: i64,
    /// The configured limits that bound the filter's state.
    pub limits: Value,
    /// Before the run: the first request carried `RateLimit` (the limiter counted it) and
    /// its retry was replayed with `Idempotent-Replayed: true` (the store kept it).
    pub store_checks: Value,
    /// Whether growth after the first 10 % stayed under [`MEMORY_GROWTH_LIMIT_KIB`].
    pub bounded: bool,
    /// RSS over the run.
    pub trace: Vec<RssPoint>,
    /// The filter's counters after the run.
    pub filter_stats: Vec<(String, u64)>,
}

impl Memory {
    /// Summarizes the run.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        users: u64,
        rss_start_kib: u64,
        rss_end_kib: u64,
        outcome: &Outcome,
        trace: Vec<RssPoint>,
        passed_2xx: u64,
        policy: &Value,
        store_checks: Value,
        filter_stats: Vec<(String, u64)>,
    ) -> Self {
        let tenth = users / 10;
        let rss_at_10pct_kib = trace
            .iter()
            .find(|p| p.requests >= tenth)
            .map_or(rss_start_kib, |p| p.rss_kib);
        let rss_peak_kib = trace
            .iter()
            .map(|p| p.rss_kib)
            .chain([rss_start_kib, rss_end_kib])
            .max()
            .unwrap_or(rss_end_kib);
        let growth = rss_end_kib as i64 - rss_at_10pct_kib as i64;
        Self {
            users,
            requests: outcome.requests,
            non_2xx: outcome.non_2xx,
            passed_2xx,
            rps: outcome.rps,
            rss_start_kib,
            rss_at_10pct_kib,
            rss_end_kib,
            rss_peak_kib,
            growth_after_10pct_kib: growth,
            limits: serde_json::json!({
                "rate_limit_slots": policy.pointer("/limits/rate_limit_slots"),
                "token_cache_entries": policy.pointer("/limits/token_cache_entries"),
                "idempotency_slots": policy.pointer("/idempotency/slots"),
                "idempotency_max_response_bytes": policy.pointer("/idempotency/max_response_bytes"),
            }),
            bounded: growth < MEMORY_GROWTH_LIMIT_KIB as i64,
            store_checks,
            trace,
            filter_stats,
        }
    }
}

/// One figure of the creates run.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CreateRow {
    /// `gateway` (Envoy + filter + runner, loaded by wrk) or `runner` (the runner alone,
    /// loaded by `tests/e2e/backend_bench.rs`).
    pub via: String,
    /// The runner's `--durability`.
    pub durability: String,
    /// Open connections (concurrent clients).
    pub connections: u32,
    /// Whether every create carried its own `Idempotency-Key`.
    pub idempotency_key: bool,
    /// Creates answered 201 per second.
    pub creates_per_s: f64,
    /// Latency percentiles, µs.
    pub p50_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// Requests completed.
    pub requests: u64,
    /// Responses other than 201 (wrk: ≥ 400).
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Envoy's CPU time per request, µs (0 straight to the runner).
    #[serde(default)]
    pub envoy_cpu_us_per_req: f64,
    /// The runner's CPU time per request, µs (all its threads: requests, writer, readers).
    #[serde(default)]
    pub runner_cpu_us_per_req: f64,
}

impl CreateRow {
    /// From wrk's outcome.
    pub fn from_wrk(
        via: &str,
        durability: &str,
        connections: u32,
        idempotency_key: bool,
        o: &Outcome,
    ) -> Self {
        Self {
            via: via.to_owned(),
            durability: durability.to_owned(),
            connections,
            idempotency_key,
            creates_per_s: if o.seconds > 0.0 {
                o.requests.saturating_sub(o.non_2xx) as f64 / o.seconds
            } else {
                0.0
            },
            p50_us: o.p50_us,
            p99_us: o.p99_us,
            requests: o.requests,
            non_2xx: o.non_2xx,
            socket_errors: o.socket_errors,
            envoy_cpu_us_per_req: 0.0,
            runner_cpu_us_per_req: 0.0,
        }
    }

    /// Records CPU seconds spent by Envoy and the runner over the figure.
    pub fn with_cpu(mut self, envoy_s: f64, runner_s: f64) -> Self {
        if self.requests > 0 {
            self.envoy_cpu_us_per_req = envoy_s * 1e6 / self.requests as f64;
            self.runner_cpu_us_per_req = runner_s * 1e6 / self.requests as f64;
        }
        self
    }
}

/// SQLite commits per second on the bench's disk, one row per commit
/// (`spin-runner commit-rate`).
#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct CommitRates {
    /// SQLite's defaults (rollback journal, `synchronous = FULL`): the runner before WAL.
    pub rollback_full: f64,
    /// WAL with a sync per commit: the limit of `--durability power` without group commit.
    pub wal_full: f64,
    /// WAL without a sync at commit: `--durability process`.
    pub wal_normal: f64,
}

/// The creates run.
#[derive(Debug, Clone, Serialize)]
pub struct Creates {
    /// Distinct users (one token each) the gateway figures cycle through.
    pub users: u64,
    /// Every figure.
    pub rows: Vec<CreateRow>,
    /// The disk's own commit rates, measured in the same run.
    pub commit_rates: CommitRates,
    /// The machine's load average (1, 5, 15 min) before and after the creates run: on a
    /// shared machine, how much CPU the figures had to share.
    pub load_average: [[f64; 3]; 2],
}

/// The load average of the last 1, 5 and 15 minutes (`/proc/loadavg`).
pub fn load_average() -> [f64; 3] {
    let text = std::fs::read_to_string("/proc/loadavg").unwrap_or_default();
    let mut fields = text.split_whitespace().map(|f| f.parse().unwrap_or(0.0));
    [(); 3].map(|()| fields.next().unwrap_or(0.0))
}

impl Creates {
    /// The figure for `via`, `durability`, `connections`, with or without a key.
    pub fn row(
        &self,
        via: &str,
        durability: &str,
        connections: u32,
        idempotency_key: bool,
    ) -> Option<&CreateRow> {
        self.rows.iter().find(|r| {
            r.via == via
                && r.durability == durability
                && r.connections == connections
                && r.idempotency_key == idempotency_key
        })
    }
}

/// A target of the issue, stated plainly.
#[derive(Debug, Clone, Serialize)]
pub struct Target {
    /// What is aimed at.
    pub target: String,
    /// What was measured.
    pub measured: String,
    /// Met or not.
    pub met: bool,
}

/// The machine and tools.
#[derive(Debug, Clone, Serialize)]
pub struct Machine {
    /// CPU model.
    pub cpu: String,
    /// Logical CPUs.
    pub cpus: usize,
    /// Total memory, MiB.
    pub memory_mib: u64,
    /// Kernel release.
    pub kernel: String,
    /// Envoy's version line.
    pub envoy: String,
    /// wrk's version line.
    pub wrk: String,
    /// The commit measured.
    pub commit: String,
}

/// The whole report (written as JSON).
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// When (UTC).
    pub generated_at: String,
    /// How to reproduce it.
    pub command: String,
    /// Settings.
    pub settings: Settings,
    /// Machine.
    pub machine: Machine,
    /// Per Envoy concurrency.
    pub results: Vec<ConcurrencyResult>,
    /// The memory run.
    pub memory: Option<Memory>,
    /// Creates per second, through the gateway and straight to the runner.
    pub creates: Option<Creates>,
    /// The targets.
    pub targets: Vec<Target>,
    /// Wall-clock seconds of the whole bench.
    pub elapsed_s: f64,
}

fn command_line(bin: &Path, arg: &str) -> String {
    Command::new(bin)
        .arg(arg)
        .output()
        .ok()
        .map(|o| {
            let mut t = String::from_utf8_lossy(&o.stdout).into_owned();
            t.push_str(&String::from_utf8_lossy(&o.stderr));
            t.lines()
                .map(str::trim)
                .find(|l| !l.is_empty())
                .unwrap_or_default()
                .to_owned()
        })
        .unwrap_or_default()
}

fn machine(envoy: &Path, wrk: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name"))
        .map(|l| l.trim_start_matches([' ', '\t', ':']).trim().to_owned())
        .unwrap_or_default();
    let memory_mib = std::fs::read_to_string("/proc/meminfo")
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse::<u64>().ok())
        .map_or(0, |kib| kib / 1024);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .unwrap_or_default()
        .trim()
        .to_owned();
    let git = |args: &[&str]| {
        Command::new("git")
            .args(args)
            .current_dir(crate::paths::root())
            .output()
            .ok()
            .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
            .unwrap_or_default()
    };
    let dirty = !git(&["status", "--porcelain", "--untracked-files=no"]).is_empty();
    Machine {
        cpu,
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        memory_mib,
        kernel,
        envoy: command_line(envoy, "--version"),
        wrk: super::wrk::version(wrk),
        commit: format!(
            "{}{}",
            git(&["rev-parse", "--short", "HEAD"]),
            if dirty {
                " (with uncommitted changes)"
            } else {
                ""
            }
        ),
    }
}

impl Report {
    /// An empty report.
    pub fn new(settings: &Settings, envoy: &Path, wrk: &Path) -> Self {
        // The command as typed (`cargo xtask` runs this binary with the rest of the line).
        let mut command = String::from("cargo xtask");
        for arg in std::env::args().skip(1) {
            command.push(' ');
            command.push_str(&arg);
        }
        Self {
            generated_at: chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
            command,
            settings: settings.clone(),
            machine: machine(envoy, wrk),
            results: Vec::new(),
            memory: None,
            creates: None,
            targets: Vec::new(),
            elapsed_s: 0.0,
        }
    }

    /// Records one concurrency's scenarios, with their ratios.
    pub fn add_concurrency(&mut self, run: ConcurrencyRun) {
        self.results.push(ConcurrencyResult::new(run));
    }

    /// Computes the targets.
    pub fn finish(&mut self, elapsed: Duration) {
        self.elapsed_s = elapsed.as_secs_f64();
        let mut targets = Vec::new();
        for r in &self.results {
            let c = format!(
                "--concurrency {}{}",
                r.run.envoy_concurrency,
                if r.run.pinning.pinned {
                    " (pinned)"
                } else {
                    " (unpinned)"
                }
            );
            let rps = r.wasm_vs_native.rps.median;
            if rps > 0.0 {
                targets.push(Target {
                    target: format!(
                        "cached path (3) throughput ≥ {TARGET_RPS_RATIO}× native (2), {c}"
                    ),
                    measured: format!("{rps:.2}×"),
                    met: rps >= TARGET_RPS_RATIO,
                });
                let p99 = r.wasm_vs_native.p99.median;
                targets.push(Target {
                    target: format!("cached path (3) p99 ≤ {TARGET_P99_RATIO}× native (2), {c}"),
                    measured: format!("{p99:.2}×"),
                    met: p99 > 0.0 && p99 <= TARGET_P99_RATIO,
                });
            }
            for d in &r.distinct_wasm_vs_native {
                let Some((_, floor)) = TARGET_DISTINCT_RPS_RATIO.iter().find(|(a, _)| *a == d.alg)
                else {
                    continue;
                };
                let rps = d.ratios.rps.median;
                targets.push(Target {
                    target: format!(
                        "distinct {} tokens (4): ours ≥ {floor}× the native chain's throughput, {c}",
                        d.alg
                    ),
                    measured: format!("{rps:.2}×"),
                    met: rps >= *floor,
                });
            }
        }
        if let Some(m) = &self.memory {
            targets.push(Target {
                target: format!(
                    "memory after {} users bounded by the configured limits (growth after the first 10 % < {} MiB)",
                    m.users,
                    MEMORY_GROWTH_LIMIT_KIB / 1024
                ),
                measured: format!(
                    "RSS {:.1} MiB at start, {:.1} MiB at 10 %, {:.1} MiB after all ({:+.1} MiB after 10 %)",
                    m.rss_start_kib as f64 / 1024.0,
                    m.rss_at_10pct_kib as f64 / 1024.0,
                    m.rss_end_kib as f64 / 1024.0,
                    m.growth_after_10pct_kib as f64 / 1024.0
                ),
                met: m.bounded,
            });
        }
        if let Some(c) = &self.creates {
            let row = c.row("gateway", "process", 32, false);
            let what = format!(
                "through the gateway (seed-004 body, {} distinct users, 32 connections, process durability)",
                c.users
            );
            targets.push(Target {
                target: format!("creates {what} ≥ {TARGET_CREATES_PER_S:.0}/s"),
                measured: row.map_or("not measured".into(), |r| {
                    format!("{:.0}/s", r.creates_per_s)
                }),
                met: row.is_some_and(|r| {
                    r.creates_per_s >= TARGET_CREATES_PER_S && r.non_2xx + r.socket_errors == 0
                }),
            });
            targets.push(Target {
                target: format!("p99 of creates {what} < {TARGET_CREATES_P99_MS:.0} ms"),
                measured: row.map_or("not measured".into(), |r| {
                    format!("{:.1} ms", r.p99_us / 1000.0)
                }),
                met: row
                    .is_some_and(|r| r.p99_us > 0.0 && r.p99_us / 1000.0 < TARGET_CREATES_P99_MS),
            });
        }
        self.targets = targets;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(rps: f64, p99: f64) -> Sample {
        Sample {
            rps,
            p99_us: p99,
            ..Sample::default()
        }
    }

    #[test]
    fn medians_and_run_by_run_ratios() {
        assert_eq!(median(vec![3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(vec![4.0, 1.0, 2.0, 3.0]), 2.5);
        let a = ScenarioResult::new(
            "wasm",
            "w",
            false,
            vec![sample(90.0, 12.0), sample(45.0, 24.0)],
        );
        let b = ScenarioResult::new(
            "native",
            "n",
            false,
            vec![sample(100.0, 10.0), sample(50.0, 20.0)],
        );
        let r = ratios(&a, &b);
        assert!((r.rps.median - 0.9).abs() < 1e-9);
        assert!((r.p99.median - 1.2).abs() < 1e-9);
    }

    /// A scenario whose runs cost `cpu` µs per request at `rps` requests per second.
    fn scenario(key: &str, runs: &[(f64, f64)]) -> ScenarioResult {
        let runs = runs
            .iter()
            .map(|&(rps, cpu)| Sample {
                rps,
                p99_us: 1000.0,
                cpu_us_per_req: cpu,
                ..Sample::default()
            })
            .collect();
        ScenarioResult::new(key, key, false, runs)
    }

    #[test]
    fn what_each_chain_adds_over_none_and_ours_over_the_floor() {
        let run = ConcurrencyRun {
            envoy_concurrency: 1,
            pinning: Pinning::plan(1, &[0, 1], true, true, 2),
            load_average: [[0.0; 3]; 2],
            scenarios: vec![
                scenario("baseline", &[(100.0, 30.0), (90.0, 34.0)]),
                scenario("native", &[(60.0, 60.0), (50.0, 70.0)]),
                scenario("floor", &[(66.0, 45.0), (60.0, 50.0)]),
                scenario("wasm", &[(30.0, 105.0), (30.0, 110.0)]),
                scenario("native-rs256", &[(40.0, 150.0), (40.0, 160.0)]),
                scenario("wasm-rs256", &[(4.0, 900.0), (8.0, 900.0)]),
            ],
            filter_stats: Vec::new(),
        };
        let r = ConcurrencyResult::new(run);
        let find = |key: &str| r.run.scenarios.iter().find(|s| s.key == key).unwrap();
        let over = |key: &str, floor: bool| {
            let s = find(key);
            let d = if floor {
                &s.cpu_over_floor_us
            } else {
                &s.cpu_over_baseline_us
            };
            d.as_ref().map(|d| d.median)
        };
        assert_eq!(over("baseline", false), None);
        assert_eq!(over("native", false), Some(33.0), "(30 + 36) / 2");
        assert_eq!(
            over("native", true),
            None,
            "only our rows against the floor"
        );
        assert_eq!(over("floor", true), None);
        assert_eq!(over("wasm", true), Some(60.0));
        assert_eq!(over("wasm-rs256", true), Some(852.5));
        assert!((r.wasm_vs_floor.rps.median - 0.477_272_7).abs() < 1e-6);
        assert!((r.floor_vs_native.rps.median - 1.15).abs() < 1e-9);
        assert_eq!(
            r.distinct_wasm_vs_native.len(),
            1,
            "RS256 alone was measured"
        );
        assert_eq!(r.distinct_wasm_vs_native[0].alg, "RS256");
        assert!((r.distinct_wasm_vs_native[0].ratios.rps.median - 0.15).abs() < 1e-9);
    }
}
