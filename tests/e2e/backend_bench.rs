//! Creates per second straight to the runner (no Envoy): `POST /api/workspaces` with the
//! seed-004 body, a distinct user per create (signed as the gateway signs), 1 and 32
//! concurrent clients, without and with an `Idempotency-Key`, under each of the runner's
//! durability settings. Ignored by default; `cargo xtask bench` runs it and reads its
//! `BENCH_JSON` lines. By hand:
//!
//! ```text
//! cargo test --test e2e -- --ignored --nocapture --exact backend_bench::creates_per_second_straight_to_the_runner
//! ```
//!
//! `BENCH_SECONDS` sets the seconds per figure (default 5), `BENCH_WARMUP_SECONDS` the
//! warm-up of each runner (default 1).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use e2e::{Stack, StackOptions, SEED_004_REQUEST};
use xtask::bench::procfs::cpu_seconds;

fn seconds(var: &str, default: f64) -> Duration {
    Duration::from_secs_f64(
        std::env::var(var)
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(default),
    )
}

/// What one figure measured.
struct Figure {
    creates: usize,
    errors: usize,
    elapsed: Duration,
    /// Latencies of the creates answered 201, sorted.
    latencies: Vec<Duration>,
}

impl Figure {
    fn percentile_us(&self, p: f64) -> f64 {
        if self.latencies.is_empty() {
            return 0.0;
        }
        let rank = ((p / 100.0) * self.latencies.len() as f64).ceil() as usize;
        self.latencies[rank.clamp(1, self.latencies.len()) - 1].as_secs_f64() * 1e6
    }
}

/// `clients` threads create for `duration`, each create by another user.
fn load(stack: &Stack, clients: usize, duration: Duration, with_key: bool) -> Figure {
    let next_user = AtomicUsize::new(0);
    let errors = AtomicUsize::new(0);
    let first_error = Mutex::new(None);
    let started = Instant::now();
    let mut latencies: Vec<Duration> = thread::scope(|s| {
        let handles: Vec<_> = (0..clients)
            .map(|_| {
                s.spawn(|| {
                    let mut mine = Vec::new();
                    while started.elapsed() < duration {
                        let n = next_user.fetch_add(1, Ordering::Relaxed);
                        let who = user(&format!("u-bench-{n}"), &[(ORG, "owner")]);
                        let key = uuid::Uuid::new_v4().to_string();
                        let extra: &[(&str, &str)] = if with_key {
                            &[("idempotency-key", &key)]
                        } else {
                            &[]
                        };
                        let sent = Instant::now();
                        let r = post_json(stack, &who, "/api/workspaces", SEED_004_REQUEST, extra);
                        if r.status == 201 {
                            mine.push(sent.elapsed());
                        } else {
                            errors.fetch_add(1, Ordering::Relaxed);
                            first_error
                                .lock()
                                .unwrap()
                                .get_or_insert_with(|| format!("{} {}", r.status, r.text()));
                        }
                    }
                    mine
                })
            })
            .collect();
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap())
            .collect()
    });
    let elapsed = started.elapsed();
    if let Some(e) = first_error.into_inner().unwrap() {
        eprintln!("first error: {e}");
    }
    latencies.sort();
    Figure {
        creates: latencies.len(),
        errors: errors.into_inner(),
        elapsed,
        latencies,
    }
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture (cargo xtask bench does)"]
fn creates_per_second_straight_to_the_runner() {
    let duration = seconds("BENCH_SECONDS", 5.0);
    let warmup = seconds("BENCH_WARMUP_SECONDS", 1.0);
    for durability in ["process", "power"] {
        let stack = Stack::start(StackOptions {
            envoy: false,
            runner_args: vec!["--durability".into(), durability.into()],
            ..StackOptions::default()
        });
        // The first requests pay for the first instances and SQLite's first pages.
        load(&stack, 8, warmup, false);
        for clients in [1, 32] {
            for with_key in [false, true] {
                let cpu_before = cpu_seconds(stack.backend_pid()).unwrap();
                let f = load(&stack, clients, duration, with_key);
                let cpu = cpu_seconds(stack.backend_pid()).unwrap() - cpu_before;
                let requests = f.creates + f.errors;
                let rate = f.creates as f64 / f.elapsed.as_secs_f64();
                let (p50, p99) = (f.percentile_us(50.0), f.percentile_us(99.0));
                println!(
                    "runner, {durability} durability, {clients:>2} client(s), {}: {rate:7.0} creates/s, p50 {:.1} ms, p99 {:.1} ms, {} errors, {:.0} µs runner CPU/create",
                    if with_key { "with Idempotency-Key" } else { "no Idempotency-Key  " },
                    p50 / 1000.0,
                    p99 / 1000.0,
                    f.errors,
                    cpu * 1e6 / requests.max(1) as f64
                );
                println!(
                    "BENCH_JSON {}",
                    serde_json::json!({
                        "via": "runner",
                        "durability": durability,
                        "connections": clients,
                        "idempotency_key": with_key,
                        "creates_per_s": rate,
                        "p50_us": p50,
                        "p99_us": p99,
                        "requests": requests,
                        "non_2xx": f.errors,
                        "socket_errors": 0,
                        "runner_cpu_us_per_req": cpu * 1e6 / requests.max(1) as f64,
                    })
                );
                assert!(f.creates > 0, "no create succeeded");
            }
        }
    }
}
