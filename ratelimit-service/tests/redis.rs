//! limitador's Redis storage behind two service instances on one `redis-server`
//! (Debian's package, which `cargo xtask test` installs): one set of counters, exact under
//! concurrency.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use edge_ratelimit::{Config, Limiter};
use envoy_types::pb::envoy::service::ratelimit::v3::rate_limit_response::Code;
use envoy_types::pb::envoy::service::ratelimit::v3::RateLimitRequest;

const LIMITS: &str = r#"
    [[limit]]
    namespace = "edge"
    descriptor = { route = "create" }
    per = ["user"]
    max_value = 20
    seconds = 60
"#;

/// A private `redis-server` on a free port in a temporary folder; killed when dropped.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new("redis-server")
            .args([
                "--bind",
                "127.0.0.1",
                "--port",
                &port.to_string(),
                "--save",
                "",
            ])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server (Debian's package; `cargo xtask test` installs it)");
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not listen");
            std::thread::sleep(Duration::from_millis(20));
        }
        Self {
            port,
            child,
            _dir: dir,
        }
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn create_by(user: &str) -> RateLimitRequest {
    edge_ratelimit::request("edge", &[("route", "create"), ("user", user)])
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_on_one_redis_admit_exactly_the_limit() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let instances = [
        Arc::new(
            Limiter::new(Some(&url), Config::parse(LIMITS).unwrap())
                .await
                .unwrap(),
        ),
        Arc::new(
            Limiter::new(Some(&url), Config::parse(LIMITS).unwrap())
                .await
                .unwrap(),
        ),
    ];
    let calls: Vec<_> = (0..25)
        .map(|i| {
            let limiter = Arc::clone(&instances[i % 2]);
            tokio::spawn(async move {
                let answer = limiter.should_rate_limit(&create_by("alice")).await;
                answer.map_err(|e| e.to_string())
            })
        })
        .collect();
    let mut admitted = 0;
    let mut remaining = Vec::new();
    for call in calls {
        let response = call.await.unwrap().unwrap();
        let status = &response.statuses[0];
        if response.overall_code == Code::Ok as i32 {
            admitted += 1;
            remaining.push(status.limit_remaining);
        } else {
            assert_eq!(response.overall_code, Code::OverLimit as i32);
            assert_eq!(status.limit_remaining, 0);
            let reset = status.duration_until_reset.unwrap();
            assert!((1..=60).contains(&reset.seconds), "{reset:?}");
        }
        assert_eq!(status.current_limit.as_ref().unwrap().requests_per_unit, 20);
    }
    assert_eq!(admitted, 20, "the limit holds across instances");
    // Every admitted call saw a different count (none read a stale value).
    remaining.sort_unstable();
    remaining.dedup();
    assert_eq!(remaining.len(), 20, "{remaining:?}");

    // The same counters from a third instance (a restart): still spent; another user is not.
    let third = Limiter::new(Some(&url), Config::parse(LIMITS).unwrap())
        .await
        .unwrap();
    let again = third.should_rate_limit(&create_by("alice")).await.unwrap();
    assert_eq!(again.overall_code, Code::OverLimit as i32);
    let bob = third.should_rate_limit(&create_by("bob")).await.unwrap();
    assert_eq!(bob.overall_code, Code::Ok as i32);
    assert_eq!(bob.statuses[0].limit_remaining, 19);
}

#[tokio::test]
async fn an_unreachable_redis_is_an_error_not_an_answer() {
    let redis = Redis::start();
    let url = format!("redis://127.0.0.1:{}/0", redis.port);
    let limiter = Limiter::new(Some(&url), Config::parse(LIMITS).unwrap())
        .await
        .unwrap();
    drop(redis);
    // The gRPC service turns this into UNAVAILABLE; the filter then applies its failure mode.
    let answer = tokio::time::timeout(
        Duration::from_secs(30),
        limiter.should_rate_limit(&create_by("alice")),
    )
    .await
    .expect("an answer, not a hang");
    assert!(answer.is_err(), "{answer:?}");
}
