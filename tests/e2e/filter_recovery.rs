//! Defence in depth: a filter VM that traps fails closed and heals. The real Envoy
//! (`--concurrency 2`) runs the filter's `test-trap` build (`plugin/src/trap.rs`: a request
//! carrying `x-edge-test-trap` panics the VM) with the shipped configuration, whose
//! `failure_policy: FAIL_RELOAD` answers 503 while a worker's VM is down and replaces the VM
//! on that worker's next request once the backoff has passed since its last load.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use e2e::raw::{RawConn, RawRequest, RawResponse};
use e2e::{dev_token, post_json, Stack, StackOptions, SEED_004_REQUEST, SEED_ORG};
use xtask::artifacts::FilterBuild;

const MARKER: &str = "x-edge-test-trap";
const TIMEOUT: Duration = Duration::from_secs(5);
const RELOADED: &str = "wasm.workspace_policy.vm_reload_success";
const HELD_BACK: &str = "wasm.workspace_policy.vm_reload_backoff";
const RELOAD_FAILED: &str = "wasm.workspace_policy.vm_reload_failure";

/// Every shipped Envoy configuration that loads a proxy-wasm module (the filter, or the
/// bench's floor, which must fail as ours does to be compared with it) fails closed and
/// reloads.
#[test]
fn every_shipped_envoy_config_fails_closed_and_reloads() {
    let root = xtask::paths::root();
    let mut checked = Vec::new();
    for file in [
        "envoy/envoy.yaml",
        "envoy/envoy.production.yaml",
        "envoy/bench/wasm.yaml",
        "envoy/bench/floor.yaml",
    ] {
        let text = std::fs::read_to_string(root.join(file)).unwrap();
        let config: serde_json::Value = serde_yaml::from_str(&text).unwrap();
        let plugin =
            xtask::envoy::wasm_plugin(&config).unwrap_or_else(|| panic!("{file}: no wasm filter"));
        assert_eq!(plugin["failure_policy"], "FAIL_RELOAD", "{file}");
        assert!(
            plugin
                .pointer("/reload_config/backoff/base_interval")
                .is_some(),
            "{file}: the backoff is implicit"
        );
        let interval = xtask::envoy::reload_base_interval(plugin).unwrap();
        assert!(
            (Duration::from_millis(100)..=Duration::from_secs(10)).contains(&interval),
            "{file}: backoff {interval:?}"
        );
        checked.push(file);
    }
    // The other shipped configurations load no filter; a new one that does belongs above.
    let shipped = ["envoy", "envoy/bench"]
        .into_iter()
        .flat_map(|dir| std::fs::read_dir(root.join(dir)).unwrap())
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|e| e == "yaml"));
    for path in shipped {
        let rel = path.strip_prefix(&root).unwrap().display().to_string();
        if !checked.contains(&rel.as_str()) {
            let text = std::fs::read_to_string(&path).unwrap();
            assert!(!text.contains("filters.http.wasm"), "{rel} is not checked");
        }
    }
}

#[test]
fn a_trapped_vm_answers_503_and_heals_within_the_backoff() {
    let shipped = xtask::envoy::shipped_config().unwrap();
    let backoff =
        xtask::envoy::reload_base_interval(xtask::envoy::wasm_plugin(&shipped).unwrap()).unwrap();
    // Envoy jitters the wait up to 1.5 times the base interval; the rest is this machine.
    // Under 20 s in all: the stack's start, 1.5 backoffs of waiting and one of recovering.
    let bound = backoff * 3 / 2 + Duration::from_secs(2);
    let stack = Stack::start(StackOptions {
        envoy_concurrency: 2,
        filter: FilterBuild::TestTrap,
        ..Default::default()
    });
    let gateway = stack.gateway_addr().unwrap();
    let token = dev_token("u-recovery", &[(SEED_ORG, &["owner"])]);
    let created = post_json(
        &format!("{}/api/workspaces", stack.gateway_url()),
        &token,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let path = format!(
        "/api/workspaces/{}",
        created.json()["data"]["workspaceId"].as_str().unwrap()
    );
    let read = RawRequest::new("GET", &path)
        .header("authorization", format!("Bearer {token}"))
        .to_bytes();
    let trap = RawRequest::new("GET", &path)
        .header("authorization", format!("Bearer {token}"))
        .header(MARKER, "1")
        .to_bytes();
    let stat = |name: &str| stack.stat(name).unwrap_or(0);
    let (reloaded, failed) = (stat(RELOADED), stat(RELOAD_FAILED));

    // A keep-alive connection stays on one worker, so it sees that worker's VM.
    let mut conn = RawConn::connect(gateway, TIMEOUT).unwrap();
    assert_eq!(conn.exchange(&read).unwrap().status, 200);

    // A VM that has run longer than the longest jittered backoff traps: its request gets
    // the 503 FAIL_CLOSED would give (nothing forwarded), and the very next request on that
    // worker gets a fresh VM. A rare crash costs only the request that caused it.
    std::thread::sleep(backoff * 3 / 2);
    assert_trapped(&conn.exchange(&trap).unwrap());
    let trapped = Instant::now();
    let r = conn.exchange(&read).unwrap();
    let first = trapped.elapsed();
    assert_eq!(r.status, 200, "{}", r.summary());

    // Trapped again right after its reload: now the worker must wait out the backoff,
    // answering 503 meanwhile, while the other worker serves as usual.
    assert_trapped(&conn.exchange(&trap).unwrap());
    let down = Instant::now();
    assert_trapped(&conn.exchange(&read).unwrap());
    assert!(
        other_worker_serves(gateway, &read),
        "no new connection got a 200 while one worker was down"
    );
    let second = time_to_recover(&mut conn, &read, bound);
    let second_total = down.elapsed();
    println!(
        "recovery after a trap: {first:?} (VM older than the backoff), \
         {second_total:?} (trapped again right after its reload; backoff {backoff:?})"
    );
    assert!(
        second_total + Duration::from_millis(100) >= backoff,
        "reloaded after {second_total:?}, before the {backoff:?} backoff"
    );
    assert!(second <= bound);

    // Both workers serve again, and the operator's counters tell the story.
    for _ in 0..16 {
        let r = RawConn::connect(gateway, TIMEOUT)
            .and_then(|mut c| c.exchange(&read))
            .unwrap();
        assert_eq!(r.status, 200, "{}", r.summary());
    }
    assert_eq!(stat(RELOADED), reloaded + 2, "{RELOADED}");
    assert!(stat(HELD_BACK) > 0, "{HELD_BACK}");
    assert_eq!(stat(RELOAD_FAILED), failed, "{RELOAD_FAILED}");
    let log = stack.envoy_log();
    assert_eq!(log.matches("edge filter panicked").count(), 2, "{log}");
    assert!(log.contains("Function: proxy_on_request_headers failed"));
}

/// Envoy's own 503 for a failed VM: no body, no problem+json, never the backend's answer.
fn assert_trapped(r: &RawResponse) {
    assert_eq!(r.status, 503, "{}", r.summary());
    assert!(r.body.is_empty(), "{}", r.summary());
    assert_eq!(r.header("content-type"), None, "{}", r.summary());
}

/// Sends `read` on `conn` until it gets a 200, at most for `bound`; every other answer must
/// be the failed VM's 503.
fn time_to_recover(conn: &mut RawConn, read: &[u8], bound: Duration) -> Duration {
    let start = Instant::now();
    loop {
        let r = conn.exchange(read).unwrap();
        if r.status == 200 {
            return start.elapsed();
        }
        assert_trapped(&r);
        assert!(
            start.elapsed() < bound,
            "the worker did not recover within {bound:?}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Whether any of 16 new connections (spread over the workers by the kernel) gets a 200.
fn other_worker_serves(gateway: SocketAddr, read: &[u8]) -> bool {
    (0..16).any(|_| {
        RawConn::connect(gateway, TIMEOUT)
            .and_then(|mut c| c.exchange(read))
            .is_ok_and(|r| r.status == 200)
    })
}
