//! Past one machine: two Envoys (each `--concurrency 2`, the real filter) in front of two
//! runners on one Redis (Spin's runtime configuration), the per-user limits of the create
//! routes enforced by the rate limit service (`edge-ratelimit`, counters in the same Redis).
//! Every request is sent to one gateway or the other, and each gateway load-balances both
//! backends: limits, idempotency and IDs must hold across all of them.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpListener};
use std::sync::Mutex;

use e2e::{
    post_json, send, shipped_filter_config, Stack, StackOptions, TokenSpec, SEED_004_REQUEST,
    SEED_ORG,
};
use serde_json::Value;
use xtask::shared::{limits_through_service, RateLimitService, Redis, RATE_LIMIT_CLUSTER};

const ANY: &str = "127.0.0.1:0";

/// Redis, the rate limit service and two gateway + backend pairs, every gateway routing to
/// both backends. Field order is drop order: the stacks stop before what they share.
struct ScaleOut {
    gateways: [Stack; 2],
    rls: RateLimitService,
    redis: Redis,
    _dir: tempfile::TempDir,
}

fn free_port() -> SocketAddr {
    TcpListener::bind(ANY).unwrap().local_addr().unwrap()
}

/// The shipped filter configuration, the create routes' limits given to the rate limit
/// service: v1 fails closed (`deny`), v3 open (`allow`).
fn filter_config() -> Value {
    let mut config = shipped_filter_config();
    limits_through_service(
        &mut config,
        &[
            ("create-workspace", "deny"),
            ("create-workspace-v3", "allow"),
        ],
    );
    config
}

impl ScaleOut {
    fn start() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let redis = Redis::start(ANY.parse().unwrap(), &dir.path().join("redis")).unwrap();
        let rls = RateLimitService::start(ANY.parse().unwrap(), &redis.url(), dir.path()).unwrap();
        let runtime = redis.runtime_config(dir.path()).unwrap();
        let backends = [free_port(), free_port()];
        let config = filter_config();
        let gateway = |own: usize| {
            Stack::start(StackOptions {
                envoy_concurrency: 2,
                filter_config: Some(config.clone()),
                grpc_clusters: vec![(RATE_LIMIT_CLUSTER.into(), rls.addr)],
                backend_listen: backends[own],
                extra_backends: vec![backends[1 - own]],
                runner_args: vec![
                    "--log-requests".into(),
                    "--runtime-config-file".into(),
                    runtime.display().to_string(),
                ],
                ..Default::default()
            })
        };
        let gateways = [gateway(0), gateway(1)];
        Self {
            gateways,
            rls,
            redis,
            _dir: dir,
        }
    }

    /// The gateway URL for request `i` (alternating).
    fn url(&self, i: usize, path: &str) -> String {
        format!("{}{path}", self.gateways[i % 2].gateway_url())
    }

    /// A filter counter summed over both gateways.
    fn stat(&self, name: &str) -> u64 {
        self.gateways
            .iter()
            .map(|g| {
                g.stat(&format!("wasmcustom.edge_filter.{name}"))
                    .unwrap_or(0)
            })
            .sum()
    }
}

fn token(sub: &str) -> String {
    TokenSpec::new(sub, &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap()
}

/// Runs `f(i)` for `0..n` on `n` threads at once and collects the results.
fn parallel<T: Send>(n: usize, f: impl Fn(usize) -> T + Sync) -> Vec<T> {
    let out = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..n {
            let (f, out) = (&f, &out);
            s.spawn(move || {
                let r = f(i);
                out.lock().unwrap().push(r);
            });
        }
    });
    out.into_inner().unwrap()
}

#[test]
fn limits_keys_and_ids_hold_across_gateways_and_backends() {
    let mut world = ScaleOut::start();

    // 25 parallel creates by one user over both gateways: exactly 20 pass.
    let alice = token("u-scale-alice");
    let answers = parallel(25, |i| {
        post_json(
            &world.url(i, "/api/workspaces"),
            &alice,
            SEED_004_REQUEST,
            &[],
        )
    });
    let created = answers.iter().filter(|r| r.status == 201).count();
    let limited: Vec<_> = answers.iter().filter(|r| r.status == 429).collect();
    assert_eq!(
        (created, limited.len()),
        (20, 5),
        "{:?}",
        answers.iter().map(|r| r.status).collect::<Vec<_>>()
    );
    for r in &limited {
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((1..=60).contains(&retry), "retry-after {retry}");
        assert_eq!(
            r.header("ratelimit-policy"),
            Some("\"create-workspace\";q=20;w=60")
        );
        assert!(r
            .header("ratelimit")
            .unwrap()
            .starts_with("\"create-workspace\";r=0;t="));
        assert_eq!(r.json()["type"], "urn:workspace-api:problem:rate-limited");
    }
    for r in answers.iter().filter(|r| r.status == 201) {
        assert!(r
            .header("ratelimit")
            .unwrap()
            .starts_with("\"create-workspace\";r="));
    }
    assert_eq!(world.stat("rate_limit_service.answered"), 25);

    // 20 parallel creates with one Idempotency-Key over both gateways and both backends:
    // one workspace; the others replay it or are told the key is in use (409).
    let bob = token("u-scale-bob");
    let key = "scale-out-key-0001";
    let answers = parallel(20, |i| {
        post_json(
            &world.url(i, "/api/workspaces"),
            &bob,
            SEED_004_REQUEST,
            &[("idempotency-key", key)],
        )
    });
    let ids: BTreeSet<String> = answers
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| r.json()["data"]["workspaceId"].as_str().unwrap().to_owned())
        .collect();
    assert_eq!(ids.len(), 1, "one workspace: {ids:?}");
    for r in &answers {
        assert!(matches!(r.status, 201 | 409), "{} {}", r.status, r.text());
    }
    let listing = |g: usize| {
        let auth = format!("Bearer {bob}");
        let r = send(
            "GET",
            &world.url(g, &format!("/api/workspaces?orgId={SEED_ORG}")),
            &[("authorization", &auth)],
            None,
        );
        assert_eq!(r.status, 200, "{}", r.text());
        r.json()["data"].clone()
    };
    // That workspace reads the same from either gateway.
    let id = ids.iter().next().unwrap();
    let auth = format!("Bearer {bob}");
    let reads: Vec<_> = (0..4)
        .map(|g| {
            let r = send(
                "GET",
                &world.url(g, &format!("/api/workspaces/{id}")),
                &[("authorization", &auth)],
                None,
            );
            assert_eq!(r.status, 200, "{}", r.text());
            r.json()["data"].clone()
        })
        .collect();
    assert!(
        reads
            .iter()
            .all(|r| r == &reads[0] && r["createdBy"] == "u-scale-bob"),
        "{reads:?}"
    );

    // 100 parallel v3 creates by 100 users: 100 distinct IDs from the shared counter.
    let ids = parallel(100, |i| {
        let t = token(&format!("u-scale-v3-{i}"));
        let r = post_json(
            &world.url(i, "/api/v3/workspaces"),
            &t,
            "{\"name\":\"Scale\"}",
            &[],
        );
        assert_eq!(r.status, 201, "{}", r.text());
        r.json()["id"].as_i64().unwrap()
    });
    assert_eq!(ids.iter().collect::<BTreeSet<_>>().len(), 100, "{ids:?}");

    // The organization's listing is the same from either gateway (and either backend).
    assert_eq!(listing(0), listing(1));
    assert_eq!(listing(1), listing(0));

    // The rate limit service gone: v1 fails closed, v3 open, both counted.
    world.rls.stop();
    let carol = token("u-scale-carol");
    let denied = post_json(
        &world.url(0, "/api/workspaces"),
        &carol,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(denied.status, 503, "{}", denied.text());
    assert_eq!(
        denied.json()["detail"],
        "the rate-limit service did not answer"
    );
    assert_eq!(denied.header("retry-after"), Some("1"));
    let passed = post_json(
        &world.url(1, "/api/v3/workspaces"),
        &carol,
        "{\"name\":\"Open\"}",
        &[],
    );
    assert_eq!(passed.status, 201, "{}", passed.text());
    assert!(passed.header("ratelimit").is_none());
    assert!(world.stat("rate_limit_service.failed.unavailable") >= 2);
    assert_eq!(world.stat("denied.rate_limit_unavailable"), 1);
    assert_eq!(world.stat("rate_limit_service.failed_open"), 1);
    world.redis.stop();
}
