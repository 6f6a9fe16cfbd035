//! The benchmark never rots: `cargo xtask bench --smoke` (seconds, not minutes) runs every
//! scenario against the real Envoy and the real filter, and every figure comes out present
//! and sane. Timings are never asserted here: targets are the full run's business, reported
//! as met or not met (docs/performance.md).

use std::path::Path;
use std::process::Command;

use serde_json::Value;

const SCENARIOS: [&str; 7] = [
    "baseline",
    "native",
    "wasm",
    "wasm-hs256",
    "wasm-rs256",
    "wasm-es256",
    "wasm-eddsa",
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
    for r in results {
        let c = &r["envoy_concurrency"];
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
        for ratio in ["wasm_vs_native", "wasm_vs_baseline", "native_vs_baseline"] {
            for field in ["rps", "p99", "cpu_per_req"] {
                let v = num(r, &format!("/{ratio}/{field}/median"));
                assert!(v.is_finite() && v > 0.0, "{ratio}.{field} = {v}");
            }
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
    assert_eq!(targets.len(), 7, "{targets:?}");
    assert!(targets.iter().all(|t| t["met"].is_boolean()));
}
