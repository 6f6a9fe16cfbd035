//! Creates per second through the local runner (the backend alone, no Envoy): one client,
//! then 16 concurrent clients, without and with an `Idempotency-Key` (one compare-and-swap
//! more per create). Ignored by default; run it with
//!
//! ```text
//! cargo test -p e2e --release --test backend_bench -- --ignored --nocapture
//! ```
//!
//! `BENCH_CREATES` sets the creates per configuration (default 400).

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

#[path = "backend_support.rs"]
mod support;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::thread;
use std::time::Instant;

use e2e::SEED_004_REQUEST;
use support::*;

fn run(stack: &e2e::Stack, clients: usize, total: usize, with_key: bool) -> f64 {
    let next = AtomicUsize::new(0);
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..clients {
            s.spawn(|| loop {
                let i = next.fetch_add(1, Ordering::Relaxed);
                if i >= total {
                    return;
                }
                let key = uuid::Uuid::new_v4().to_string();
                let extra: &[(&str, &str)] = if with_key {
                    &[("idempotency-key", &key)]
                } else {
                    &[]
                };
                let r = post_json(stack, &owner(), "/api/workspaces", SEED_004_REQUEST, extra);
                assert_eq!(r.status, 201, "{}", r.text());
            });
        }
    });
    total as f64 / start.elapsed().as_secs_f64()
}

#[test]
#[ignore = "benchmark: run explicitly with --ignored --nocapture"]
fn creates_per_second_through_the_runner() {
    let total: usize = std::env::var("BENCH_CREATES")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(400);
    let stack = backend();
    // Warm-up: the first requests pay for instantiation caches and SQLite's first pages.
    run(&stack, 4, 40, false);
    println!("backend creates/s through spin-runner ({total} creates each, release client):");
    for (clients, with_key) in [(1, false), (16, false), (1, true), (16, true)] {
        let rate = run(&stack, clients, total, with_key);
        let key = if with_key {
            "with Idempotency-Key"
        } else {
            "no Idempotency-Key"
        };
        println!("  {clients:>2} client(s), {key:<20}: {rate:8.1} creates/s");
    }
    let listed = get(
        &stack,
        &owner(),
        &format!("/api/workspaces?orgId={ORG}&limit=1"),
    );
    assert_eq!(listed.status, 200);
}
