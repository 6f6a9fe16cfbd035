//! `GET /healthz` through the real Envoy and filter: no token needed, none forwarded, and a
//! 503 problem once the backend's store stops answering.

use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use e2e::{send, Stack, StackOptions};

#[test]
fn health_needs_no_token_and_passes_the_gateway() {
    let stack = Stack::start(StackOptions::default());
    let url = format!("{}/healthz", stack.gateway_url());
    let forged = [
        ("authorization", "Bearer not.a.token"),
        ("x-edge-identity", "forged"),
        ("x-edge-signature", "t=1,v1=AAAA"),
    ];
    for headers in [&[][..], &forged[..]] {
        let r = send("GET", &url, headers, None);
        assert_eq!(r.status, 200, "{}", r.text());
        assert_eq!(r.json(), serde_json::json!({"status": "ok"}));
        assert!(r.header("x-request-id").is_some());
    }
    let r = send("POST", &url, &[], Some(b"{}"));
    assert_eq!((r.status, r.header("allow")), (405, Some("GET")));
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let r = send("GET", &url, &[("x-request-id", "not a request id")], None);
    assert_eq!(r.status, 400);
    // Every other route still needs a token.
    let r = send(
        "GET",
        &format!("{}/api/workspaces/w-1", stack.gateway_url()),
        &[],
        None,
    );
    assert_eq!(r.status, 401);
    // The backend answers probes directly too (a kubelet's, which bypass the gateway).
    let r = send(
        "GET",
        &format!("{}/healthz", stack.backend_url()),
        &[],
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
}

/// A `redis-server` on a free port, killed on drop.
struct Redis {
    port: u16,
    child: Child,
    _dir: tempfile::TempDir,
}

impl Redis {
    fn start() -> Self {
        let redis = xtask::debian::ensure("redis-server", "redis-server").unwrap();
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = tempfile::tempdir().unwrap();
        let child = Command::new(redis)
            .args(["--bind", "127.0.0.1", "--port", &port.to_string()])
            .args(["--save", "", "--appendonly", "no"])
            .arg("--dir")
            .arg(dir.path())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
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

    fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
    }
}

#[test]
fn health_is_503_when_the_store_fails() {
    let mut redis = Redis::start();
    let config_dir = tempfile::tempdir().unwrap();
    let config = config_dir.path().join("runtime-config.toml");
    std::fs::write(
        &config,
        format!(
            "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://127.0.0.1:{}/0\"\n",
            redis.port
        ),
    )
    .unwrap();
    let stack = Stack::start(StackOptions {
        runner_args: vec!["--runtime-config-file".into(), config.display().to_string()],
        ..Default::default()
    });
    let url = format!("{}/healthz", stack.gateway_url());
    assert_eq!(send("GET", &url, &[], None).status, 200);
    redis.kill();
    let r = send("GET", &url, &[], None);
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    assert_eq!(
        r.json()["type"],
        "urn:workspace-api:problem:store-unavailable"
    );
    assert!(!r.text().contains("redis"), "the cause stays in the log");
}
