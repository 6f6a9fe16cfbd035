//! The benchmark never rots: `cargo xtask bench --smoke` (seconds, not minutes) builds the
//! floor filter, runs every scenario against the real Envoy, the real filter and the floor,
//! and every figure comes out present and sane. Timings are never asserted here: targets are
//! the full run's business, reported as met or not met (docs/performance.md).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 14] = [
    "baseline",
    "native",
    "floor",
    "wasm",
    "native-hs256",
    "wasm-hs256",
    "native-rs256",
    "wasm-rs256",
    "native-es256",
    "wasm-es256",
    "native-eddsa",
    "wasm-eddsa",
    "wasm-jwt-only",
    "wasm-jwt-ratelimit",
];

fn num(v: &Value, pointer: &str) -> f64 {
    v.pointer(pointer)
        .and_then(Value::as_f64)
        .unwrap_or_else(|| panic!("no number at {pointer} in {v}"))
}

fn assert_sane_sample(what: &str, m: &Value) {
    assert!(num(m, "/requests") > 0.0, "{what}: no requests: {m}");
    assert!(num(m, "/rps") > 0.0, "{what}: {m}");
    assert_eq!(num(m, "/non_2xx"), 0.0, "{what}: error responses: {m}");
    assert_eq!(num(m, "/socket_errors"), 0.0, "{what}: socket errors: {m}");
    let (p50, p99, p999) = (num(m, "/p50_us"), num(m, "/p99_us"), num(m, "/p999_us"));
    assert!(
        p50 > 0.0 && p50 <= p99 && p99 <= p999,
        "{what}: percentiles out of order: {m}"
    );
    assert!(p999 < 10e6, "{what}: p99.9 beyond wrk's timeout: {m}");
    let cpu = num(m, "/cpu_us_per_req");
    assert!(cpu > 0.0 && cpu < 1e6, "{what}: CPU per request: {m}");
}

#[test]
fn smoke_bench_reports_every_figure() {
    let root = xtask::paths::root();
    let out = xtask::paths::target_dir().join("bench/smoke-test.json");
    let _ = std::fs::remove_file(&out);
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let status = Command::new(cargo)
        .args([
            "run",
            "--quiet",
            "--package",
            "xtask",
            "--",
            "bench",
            "--smoke",
            "--out",
        ])
        .arg(&out)
        .current_dir(&root)
        .status()
        .unwrap();
    assert!(
        status.success(),
        "cargo xtask bench --smoke failed ({status})"
    );
    let report: Value = serde_json::from_slice(&std::fs::read(Path::new(&out)).unwrap()).unwrap();

    assert_eq!(report["settings"]["smoke"], true);
    assert!(!report["machine"]["envoy"].as_str().unwrap().is_empty());
    let results = report["results"].as_array().unwrap();
    let workers: Vec<u64> = results
        .iter()
        .map(|r| r["envoy_concurrency"].as_u64().unwrap())
        .collect();
    assert_eq!(workers, [1, 2]);
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    for r in results {
        let c = &r["envoy_concurrency"];
        // Envoy and wrk are pinned apart whenever a CPU is left for wrk (so always at one
        // worker on this machine), on CPUs that do not overlap.
        let pinning = &r["pinning"];
        let workers = c.as_u64().unwrap();
        if workers == 1 && cpus >= 2 {
            assert_eq!(pinning["pinned"], true, "{pinning}");
        }
        let list = |key: &str| -> Vec<u64> {
            pinning[key]
                .as_array()
                .unwrap()
                .iter()
                .map(|c| c.as_u64().unwrap())
                .collect()
        };
        let (envoy, wrk) = (list("envoy_cpus"), list("wrk_cpus"));
        if pinning["pinned"] == true {
            assert_eq!(envoy.len() as u64, workers, "{pinning}");
            assert!(
                !wrk.is_empty() && wrk.iter().all(|c| !envoy.contains(c)),
                "{pinning}"
            );
        } else {
            assert!(envoy.is_empty() && wrk.is_empty(), "{pinning}");
        }
        assert!(!pinning["envoy_cpus_allowed"].as_str().unwrap().is_empty());
        for key in SCENARIOS {
            let s = r["scenarios"]
                .as_array()
                .unwrap()
                .iter()
                .find(|s| s["key"] == key)
                .unwrap_or_else(|| panic!("scenario {key} missing at --concurrency {c}"));
            assert_sane_sample(&format!("{key} at --concurrency {c}"), &s["median"]);
            assert_eq!(s["runs"].as_array().unwrap().len(), 1);
        }
        for ratio in [
            "wasm_vs_native",
            "wasm_vs_floor",
            "floor_vs_native",
            "wasm_vs_baseline",
            "floor_vs_baseline",
            "native_vs_baseline",
        ] {
            for field in ["rps", "p99", "cpu_per_req"] {
                let v = num(r, &format!("/{ratio}/{field}/median"));
                assert!(v.is_finite() && v > 0.0, "{ratio}.{field} = {v}");
            }
        }
        let distinct = r["distinct_wasm_vs_native"].as_array().unwrap();
        let algs: Vec<&str> = distinct
            .iter()
            .map(|d| d["alg"].as_str().unwrap())
            .collect();
        assert_eq!(algs, ["HS256", "RS256", "ES256", "EdDSA"]);
        for d in distinct {
            let v = num(d, "/ratios/rps/median");
            assert!(v.is_finite() && v > 0.0, "{d}");
        }
        // What each chain adds over no filter, and ours over the floor, run by run.
        for s in r["scenarios"].as_array().unwrap() {
            let key = s["key"].as_str().unwrap();
            let over_none = &s["cpu_over_baseline_us"];
            assert_eq!(over_none.is_null(), key == "baseline", "{key}: {s}");
            assert_eq!(
                s["cpu_over_floor_us"].is_null(),
                !key.starts_with("wasm"),
                "{key}: {s}"
            );
        }
    }

    let memory = &report["memory"];
    assert_eq!(num(memory, "/users"), 2000.0);
    assert!(
        num(memory, "/passed_2xx") >= 2000.0,
        "every user passes: {memory}"
    );
    assert_eq!(num(memory, "/non_2xx"), 0.0, "{memory}");
    assert_eq!(
        memory["store_checks"]["ratelimit_header_on_first"], true,
        "{memory}"
    );
    assert_eq!(
        memory["store_checks"]["idempotent_replay_on_second"], true,
        "{memory}"
    );
    assert!(num(memory, "/rss_start_kib") > 0.0);
    assert!(num(memory, "/rss_end_kib") > 0.0);

    let creates = &report["creates"];
    let rows = creates["rows"].as_array().unwrap();
    for via in ["gateway", "runner"] {
        for durability in ["process", "power"] {
            for connections in [1, 32] {
                for key in [false, true] {
                    let what = format!("creates {via} {durability} {connections} key={key}");
                    let row = rows
                        .iter()
                        .find(|r| {
                            r["via"] == via
                                && r["durability"] == durability
                                && r["connections"] == connections
                                && r["idempotency_key"] == key
                        })
                        .unwrap_or_else(|| panic!("{what} missing: {creates}"));
                    assert!(num(row, "/creates_per_s") > 0.0, "{what}: {row}");
                    assert_eq!(num(row, "/non_2xx"), 0.0, "{what}: {row}");
                    assert_eq!(num(row, "/socket_errors"), 0.0, "{what}: {row}");
                    let (p50, p99) = (num(row, "/p50_us"), num(row, "/p99_us"));
                    assert!(p50 > 0.0 && p50 <= p99, "{what}: {row}");
                }
            }
        }
    }
    for mode in ["rollback_full", "wal_full", "wal_normal"] {
        assert!(
            num(creates, &format!("/commit_rates/{mode}")) > 0.0,
            "{creates}"
        );
    }

    // Targets are stated, met or not, never asserted.
    let targets = report["targets"].as_array().unwrap();
    // Per Envoy concurrency: the cached path's throughput and p99, three distinct-token
    // families; then memory, and the creates' throughput and p99.
    assert_eq!(targets.len(), 2 * (2 + 3) + 1 + 2, "{targets:?}");
    assert!(targets.iter().all(|t| t["met"].is_boolean()));
}
