//! Exactness across Envoy's worker threads (`--concurrency 2`): token buckets and
//! idempotency claims live in proxy-wasm shared data, updated by compare-and-swap.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::sync::atomic::{AtomicU64, Ordering};

use e2e::{
    post_json, send, shipped_filter_config, Stack, StackOptions, TokenSpec, SEED_004_REQUEST,
    SEED_ORG,
};
use serde_json::json;

fn stack_with(edit: impl FnOnce(&mut serde_json::Value)) -> Stack {
    let mut config = shipped_filter_config();
    edit(&mut config);
    Stack::start(StackOptions {
        envoy_concurrency: 2,
        filter_config: Some(config),
        ..Default::default()
    })
}

/// 200 parallel requests of one user against a limit of 20 per hour (no refill during the
/// test): exactly 20 pass, the rest get 429 with Retry-After and the draft headers.
#[test]
fn exactly_the_limit_passes_under_200_parallel_requests() {
    let stack = stack_with(|c| {
        c["routes"][0]["rate_limit"] = json!({"requests": 20, "per": "1h"});
        c["limits"]["unauthenticated"] = json!({"requests": 10, "per": "1h"});
    });
    let create = format!("{}/api/workspaces", stack.gateway_url());
    let token = TokenSpec::new("u-burst", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    let (created, limited) = (AtomicU64::new(0), AtomicU64::new(0));
    std::thread::scope(|s| {
        for _ in 0..200 {
            s.spawn(|| {
                let r = post_json(&create, &token, SEED_004_REQUEST, &[]);
                match r.status {
                    201 => created.fetch_add(1, Ordering::SeqCst),
                    429 => {
                        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
                        assert!((1..=180).contains(&retry), "retry-after {retry}");
                        assert_eq!(
                            r.header("ratelimit-policy"),
                            Some("\"create-workspace\";q=20;w=3600")
                        );
                        assert!(r
                            .header("ratelimit")
                            .unwrap()
                            .starts_with("\"create-workspace\";r=0;t="));
                        assert_eq!(r.json()["type"], "urn:workspace-api:problem:rate-limited");
                        limited.fetch_add(1, Ordering::SeqCst)
                    }
                    other => panic!("unexpected {other}: {}", r.text()),
                };
            });
        }
    });
    assert_eq!((created.into_inner(), limited.into_inner()), (20, 180));

    // Another user has a bucket of their own.
    let other = TokenSpec::new("u-other", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    assert_eq!(
        post_json(&create, &other, SEED_004_REQUEST, &[]).status,
        201
    );

    // Floods of bad tokens from one address stop buying signature checks after 10.
    let statuses: Vec<u16> = (0..12)
        .map(|i| {
            send(
                "GET",
                &format!("{}/api/workspaces/w", stack.gateway_url()),
                &[("authorization", &format!("Bearer a.b.{i}"))],
                None,
            )
            .status
        })
        .collect();
    assert_eq!(&statuses[..10], &[401; 10]);
    assert_eq!(&statuses[10..], &[429, 429]);
}

/// Parallel requests with one Idempotency-Key: the backend sees exactly one; the others
/// get 409 (in flight) or the stored response replayed. Then replay, 422, and release of
/// the key when the gateway itself fails.
#[test]
fn idempotency_is_exact_under_parallel_requests() {
    let stack =
        stack_with(|c| c["routes"][0]["rate_limit"] = json!({"requests": 1000, "per": "1h"}));
    let create = format!("{}/api/workspaces", stack.gateway_url());
    let token = TokenSpec::new("u-idem", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    let key = "8e03978e-40d5-43e8-bc93-6894a57f9324";
    let before = stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0);
    let (processed, conflicts, replays) = (AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0));
    let first_body = std::sync::Mutex::new(None);
    std::thread::scope(|s| {
        for _ in 0..40 {
            s.spawn(|| {
                let r = post_json(
                    &create,
                    &token,
                    SEED_004_REQUEST,
                    &[("idempotency-key", key)],
                );
                match (r.status, r.header("idempotent-replayed")) {
                    (201, None) => {
                        processed.fetch_add(1, Ordering::SeqCst);
                        *first_body.lock().unwrap() = Some(r.body.clone());
                    }
                    (201, Some("true")) => {
                        replays.fetch_add(1, Ordering::SeqCst);
                    }
                    (409, _) => {
                        assert_eq!(
                            r.json()["type"],
                            "urn:workspace-api:problem:idempotency-key-in-use"
                        );
                        conflicts.fetch_add(1, Ordering::SeqCst);
                    }
                    (status, _) => panic!("unexpected {status}: {}", r.text()),
                }
            });
        }
    });
    assert_eq!(
        processed.into_inner(),
        1,
        "exactly one request reached the backend"
    );
    assert_eq!(conflicts.into_inner() + replays.into_inner(), 39);
    assert_eq!(
        stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0) - before,
        1
    );

    // A retry after completion: the same response, replayed from the edge.
    let again = post_json(
        &create,
        &token,
        SEED_004_REQUEST,
        &[("idempotency-key", key)],
    );
    assert_eq!(again.status, 201);
    assert_eq!(again.header("idempotent-replayed"), Some("true"));
    assert_eq!(Some(again.body.clone()), first_body.into_inner().unwrap());
    assert!(again.header("x-request-id").is_some());
    // The same key with another payload: 422. Another user's same key: their own.
    let other_payload = SEED_004_REQUEST.replace("CS101", "CS102");
    let r = post_json(&create, &token, &other_payload, &[("idempotency-key", key)]);
    assert_eq!(r.status, 422, "{}", r.text());
    let bob = TokenSpec::new("u-bob", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    let r = post_json(&create, &bob, SEED_004_REQUEST, &[("idempotency-key", key)]);
    assert_eq!((r.status, r.header("idempotent-replayed")), (201, None));

    // The backend goes away: the gateway's 503 releases the key instead of being replayed.
    let pid = stack.backend_pid();
    std::process::Command::new("kill")
        .arg("-9")
        .arg(pid.to_string())
        .status()
        .unwrap();
    let fresh = "9c1f0a2b-3d4e-4f50-8a6b-7c8d9e0f1a2b";
    for _ in 0..2 {
        let r = post_json(
            &create,
            &token,
            SEED_004_REQUEST,
            &[("idempotency-key", fresh)],
        );
        assert_eq!(
            (r.status, r.header("idempotent-replayed")),
            (503, None),
            "{}",
            r.text()
        );
    }
}

/// A rate limit in dry-run through Envoy: every create passes, the ones over the limit are
/// counted as `dry_run.rate_limited`, and no RateLimit headers announce a limit not in force.
#[test]
fn a_rate_limit_in_dry_run_counts_what_it_would_refuse() {
    let mut config = shipped_filter_config();
    config["routes"][0]["rate_limit"] = json!({"requests": 2, "per": "1h"});
    config["routes"][0]["enforce"] = json!({"rate_limit": false});
    config["decision_state"] = json!(true);
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        access_log: true,
        ..Default::default()
    });
    let create = format!("{}/api/workspaces", stack.gateway_url());
    let token = TokenSpec::new("u-dry", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    for _ in 0..5 {
        let r = post_json(&create, &token, SEED_004_REQUEST, &[]);
        assert_eq!(r.status, 201, "{}", r.text());
        assert_eq!(r.header("ratelimit"), None);
    }
    let counted = stack
        .stat("wasmcustom.edge_filter.dry_run.rate_limited")
        .unwrap_or(0);
    assert_eq!(counted, 3);
    // With `decision_state`, the access log carries each decision.
    let anonymous = send("GET", &create, &[], None);
    assert_eq!(anonymous.status, 401);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let lines = loop {
        let log = stack.access_log();
        let lines: Vec<serde_json::Value> = log
            .lines()
            .filter_map(|l| serde_json::from_str(l).ok())
            .collect();
        if lines.len() >= 6 || std::time::Instant::now() > deadline {
            break lines;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    };
    let fields = |l: &serde_json::Value| {
        (
            l["status"].as_u64().unwrap_or(0),
            l["decision"].as_str().unwrap_or("").to_owned(),
            l["reason"].as_str().unwrap_or("").to_owned(),
            l["dry_run"].as_str().unwrap_or("").to_owned(),
        )
    };
    let seen: Vec<_> = lines.iter().map(fields).collect();
    let allowed = |dry: &str| {
        (
            201,
            "allowed".to_owned(),
            "allowed".to_owned(),
            dry.to_owned(),
        )
    };
    assert_eq!(
        seen.iter().filter(|s| **s == allowed("")).count(),
        2,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter()
            .filter(|s| **s == allowed("rate_limited"))
            .count(),
        3,
        "{seen:?}"
    );
    assert!(
        seen.contains(&(401, "denied".into(), "missing_token".into(), String::new())),
        "{seen:?}"
    );
}
