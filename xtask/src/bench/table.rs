//! The report as Markdown, so it can go into the README as is.

use std::fmt::Write as _;

use super::report::{ConcurrencyResult, Report, RunByRun, ScenarioResult};

impl Report {
    /// The human table (Markdown, so it can go into the README as is).
    pub fn table(&self) -> String {
        let mut t = String::new();
        let s = &self.settings;
        if self.results.is_empty() {
            let _ = writeln!(
                t,
                "\n`{}` — {} — {} ({} CPUs), Envoy {}, commit {}",
                self.command,
                self.generated_at,
                self.machine.cpu,
                self.machine.cpus,
                envoy_version(&self.machine.envoy),
                self.machine.commit,
            );
        } else {
            let _ = writeln!(
            t,
            "\n`{}` — {} — {} ({} CPUs), Envoy {}, {}, {} connections, {} s × {} interleaved run(s) per figure (medians), commit {}\n",
            self.command,
            self.generated_at,
            self.machine.cpu,
            self.machine.cpus,
            envoy_version(&self.machine.envoy),
            wrk_version(&self.machine.wrk),
            s.connections,
            s.duration_s,
            s.runs,
            self.machine.commit,
        );
        }
        self.scenario_tables(&mut t);
        if let Some(m) = &self.memory {
            let _ = writeln!(
                t,
                "\nMemory (Envoy VmRSS, --concurrency 2): {:.1} MiB at start → {:.1} MiB after {} distinct users through the rate limiter and the idempotency store ({} answered 2xx; peak {:.1} MiB; {:.1} MiB at 10 %; {:.0} req/s; {} errors). Limits: {}.",
                m.rss_start_kib as f64 / 1024.0,
                m.rss_end_kib as f64 / 1024.0,
                m.users,
                m.passed_2xx,
                m.rss_peak_kib as f64 / 1024.0,
                m.rss_at_10pct_kib as f64 / 1024.0,
                m.rps,
                m.non_2xx,
                m.limits
            );
        }
        if let Some(c) = &self.creates {
            let _ = writeln!(
                t,
                "\nCreates: `POST /api/workspaces`, seed-004 body, a distinct user per create ({} users through the gateway), {} s per figure:\n",
                c.users, s.creates_s
            );
            let _ = writeln!(
                t,
                "| via | durability | connections | Idempotency-Key | creates/s | p50 ms | p99 ms | errors | Envoy CPU µs/create | runner CPU µs/create |"
            );
            let _ = writeln!(t, "|---|---|---:|---|---:|---:|---:|---:|---:|---:|");
            for r in &c.rows {
                let _ = writeln!(
                    t,
                    "| {} | {} | {} | {} | {:.0} | {:.1} | {:.1} | {} | {:.0} | {:.0} |",
                    r.via,
                    r.durability,
                    r.connections,
                    if r.idempotency_key { "yes" } else { "no" },
                    r.creates_per_s,
                    r.p50_us / 1000.0,
                    r.p99_us / 1000.0,
                    r.non_2xx + r.socket_errors,
                    r.envoy_cpu_us_per_req,
                    r.runner_cpu_us_per_req
                );
            }
            let rates = &c.commit_rates;
            let _ = writeln!(
                t,
                "\nThe disk, same run (`spin-runner commit-rate`, one row per commit): {:.0} commits/s with SQLite's defaults (rollback journal, synchronous=FULL), {:.0}/s in WAL with a sync per commit (synchronous=FULL), {:.0}/s in WAL without (synchronous=NORMAL).",
                rates.rollback_full, rates.wal_full, rates.wal_normal
            );
            let [before, after] = c.load_average;
            let _ = writeln!(
                t,
                "Load average of the machine (1/5/15 min, {} CPUs): {:.2} {:.2} {:.2} before, {:.2} {:.2} {:.2} after.",
                self.machine.cpus, before[0], before[1], before[2], after[0], after[1], after[2]
            );
        }
        let _ = writeln!(t, "\nTargets:\n");
        for target in &self.targets {
            let _ = writeln!(
                t,
                "- {}: **{}** ({})",
                target.target,
                if target.met { "met" } else { "not met" },
                target.measured
            );
        }
        if self.settings.smoke {
            let _ = writeln!(
                t,
                "\n(smoke run: figures prove the bench works, they are too short to compare)"
            );
        }
        t
    }

    /// The side-by-side scenarios and their ratios (none in a `--creates-only` run).
    fn scenario_tables(&self, t: &mut String) {
        if self.results.is_empty() {
            return;
        }
        for r in &self.results {
            let [before, after] = r.run.load_average;
            let _ = writeln!(
                t,
                "- Envoy `--concurrency {}`: {} (Envoy's `Cpus_allowed_list`: {}); load average {:.2} before, {:.2} after (1 min, {} CPUs).",
                r.run.envoy_concurrency,
                r.run.pinning.note,
                r.run.pinning.envoy_cpus_allowed,
                before[0],
                after[0],
                self.machine.cpus
            );
        }
        let _ = writeln!(
            t,
            "\n| scenario | Envoy workers | req/s | p50 ms | p99 ms | p99.9 ms | Envoy CPU µs/req | over (1) µs | over (F) µs |"
        );
        let _ = writeln!(t, "|---|---:|---:|---:|---:|---:|---:|---:|---:|");
        let keys: Vec<&str> = self
            .results
            .first()
            .map(|r| r.run.scenarios.iter().map(|s| s.key.as_str()).collect())
            .unwrap_or_default();
        for key in keys {
            for r in &self.results {
                if let Some(sc) = r.run.scenarios.iter().find(|s| s.key == key) {
                    scenario_row(t, r.run.envoy_concurrency, sc);
                }
            }
        }
        let _ = writeln!(
            t,
            "\nRatios, run by run (run *k* of one scenario against run *k* of the other), median:\n"
        );
        let mut header = String::from("| ratio |");
        let mut rule = String::from("|---|");
        for r in &self.results {
            let _ = write!(
                header,
                " {} worker(s), {} |",
                r.run.envoy_concurrency,
                if r.run.pinning.pinned {
                    "pinned"
                } else {
                    "unpinned"
                }
            );
            rule.push_str("---:|");
        }
        let _ = writeln!(t, "{header}\n{rule}");
        let rows: [RatioRow; 12] = [
            ("ours (3) / native (2), throughput", |r| {
                &r.wasm_vs_native.rps
            }),
            ("ours (3) / native (2), p99", |r| &r.wasm_vs_native.p99),
            ("ours (3) / native (2), CPU per request", |r| {
                &r.wasm_vs_native.cpu_per_req
            }),
            ("ours (3) / floor (F), throughput", |r| &r.wasm_vs_floor.rps),
            ("ours (3) / floor (F), p99", |r| &r.wasm_vs_floor.p99),
            ("ours (3) / floor (F), CPU per request", |r| {
                &r.wasm_vs_floor.cpu_per_req
            }),
            ("floor (F) / native (2), throughput", |r| {
                &r.floor_vs_native.rps
            }),
            ("native (2) / none (1), throughput", |r| {
                &r.native_vs_baseline.rps
            }),
            ("native (2) / none (1), p99", |r| &r.native_vs_baseline.p99),
            ("floor (F) / none (1), throughput", |r| {
                &r.floor_vs_baseline.rps
            }),
            ("ours (3) / none (1), throughput", |r| {
                &r.wasm_vs_baseline.rps
            }),
            ("ours (3) / none (1), p99", |r| &r.wasm_vs_baseline.p99),
        ];
        for (name, f) in rows {
            ratio_row(t, name, &self.results, f);
        }
        let algs: Vec<&str> = self
            .results
            .first()
            .map(|r| {
                r.distinct_wasm_vs_native
                    .iter()
                    .map(|d| d.alg.as_str())
                    .collect()
            })
            .unwrap_or_default();
        for alg in algs {
            let of = |r: &ConcurrencyResult| {
                r.distinct_wasm_vs_native
                    .iter()
                    .find(|d| d.alg == alg)
                    .map(|d| d.ratios.clone())
                    .unwrap_or_default()
            };
            let rps: Vec<RunByRun> = self.results.iter().map(|r| of(r).rps).collect();
            let p99: Vec<RunByRun> = self.results.iter().map(|r| of(r).p99).collect();
            for (what, figures) in [("throughput", rps), ("p99", p99)] {
                let mut line = format!("| distinct {alg} (4): ours / native, {what} |");
                for f in &figures {
                    let _ = write!(line, " {} |", times(f));
                }
                let _ = writeln!(t, "{line}");
            }
        }
    }
}

/// A row of the ratio table: its name and where it is in one concurrency's results.
type RatioRow = (&'static str, fn(&ConcurrencyResult) -> &RunByRun);

fn ratio_row(
    t: &mut String,
    name: &str,
    results: &[ConcurrencyResult],
    f: fn(&ConcurrencyResult) -> &RunByRun,
) {
    let mut line = format!("| {name} |");
    for r in results {
        let _ = write!(line, " {} |", times(f(r)));
    }
    let _ = writeln!(t, "{line}");
}

/// `0.61×`, or `—` when not measured.
fn times(r: &RunByRun) -> String {
    if r.median.is_finite() && r.median > 0.0 {
        format!("{:.2}×", r.median)
    } else {
        "—".to_owned()
    }
}

/// `+12.3`, or `—` when not measured.
fn micros(r: Option<&RunByRun>) -> String {
    match r {
        Some(r) if r.median.is_finite() => format!("{:+.1}", r.median),
        _ => "—".to_owned(),
    }
}

fn scenario_row(t: &mut String, workers: u32, sc: &ScenarioResult) {
    let m = &sc.median;
    let flag = if m.non_2xx + m.socket_errors > 0 {
        format!(" ⚠ {} errors", m.non_2xx + m.socket_errors)
    } else {
        String::new()
    };
    let _ = writeln!(
        t,
        "| {}{} | {} | {:.0} | {:.2} | {:.2} | {:.2} | {:.1} | {} | {} |",
        sc.label,
        flag,
        workers,
        m.rps,
        m.p50_us / 1000.0,
        m.p99_us / 1000.0,
        m.p999_us / 1000.0,
        m.cpu_us_per_req,
        micros(sc.cpu_over_baseline_us.as_ref()),
        micros(sc.cpu_over_floor_us.as_ref()),
    );
}

/// `<path>  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL` → `1.40.0`.
fn envoy_version(line: &str) -> String {
    let after = line.split("version:").nth(1).unwrap_or(line);
    after.trim().split('/').nth(1).unwrap_or(line).to_owned()
}

/// `wrk debian/4.1.0-3+b2 [epoll] Copyright (C) 2012 Will Glozer` → `wrk debian/4.1.0-3+b2`.
fn wrk_version(line: &str) -> &str {
    line.split(" [").next().unwrap_or(line).trim()
}
