//! The `spin-runner` binary against the real backend component, started the way the
//! end-to-end harness starts it: `spin-runner up --listen 127.0.0.1:0`, reading the one
//! `Serving …` line, stopping it with a signal.

// Test helpers outside `#[test]` functions may unwrap and panic too: this whole crate is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::{BufRead, BufReader, Read};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

use edge_contract::{Identity, Request, Signer};
use support::{fixture, send, sqlite_rows, RedisServer};

const HMAC_KEY: &str = "runner-test-key-0123456789abcdef0123456789";
const ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

/// Builds the backend component once per test run (cheap when it is up to date). The
/// backend is developed alongside: when its working tree does not build right now, the last
/// component that did build is served (with a warning), since these tests are about the
/// runner.
fn backend_wasm() -> PathBuf {
    static BUILT: OnceLock<PathBuf> = OnceLock::new();
    BUILT
        .get_or_init(|| {
            let root = repo_root();
            let wasm = root.join("target/wasm32-wasip2/release/workspace_backend.wasm");
            let output = Command::new(env!("CARGO"))
                .current_dir(&root)
                .args([
                    "build",
                    "-p",
                    "workspace-backend",
                    "--target",
                    "wasm32-wasip2",
                    "--release",
                ])
                .output()
                .unwrap();
            let log = String::from_utf8_lossy(&output.stderr);
            match (output.status.success(), wasm.is_file()) {
                (true, _) => {}
                (false, true) => eprintln!(
                    "warning: the backend does not build right now; serving the last build.\n{log}"
                ),
                (false, false) => panic!("building the backend failed:\n{log}"),
            }
            wasm
        })
        .clone()
}

struct Runner {
    child: Child,
    addr: SocketAddr,
    stdout: BufReader<std::process::ChildStdout>,
    stderr_log: PathBuf,
}

impl Runner {
    /// Starts the binary; `Err(stderr)` when it exits before serving.
    fn start(manifest: &Path, state_dir: &Path, env: &[(&str, &str)]) -> Result<Self, String> {
        Self::start_with(
            manifest,
            Some(state_dir),
            &state_dir.join("runner.stderr"),
            env,
            &[],
        )
    }

    /// `state_dir: None` leaves `--state-dir` out; `args` are added to `up`'s.
    fn start_with(
        manifest: &Path,
        state_dir: Option<&Path>,
        stderr_log: &Path,
        env: &[(&str, &str)],
        args: &[&str],
    ) -> Result<Self, String> {
        let stderr_log = stderr_log.to_owned();
        let mut command = Command::new(env!("CARGO_BIN_EXE_spin-runner"));
        command
            .args(["up", "--from"])
            .arg(manifest)
            .args(["--listen", "127.0.0.1:0"]);
        if let Some(state_dir) = state_dir {
            command.arg("--state-dir").arg(state_dir);
        }
        command.args(args);
        command
            .current_dir(std::env::temp_dir())
            .env_remove("SPIN_VARIABLE_GATEWAY_HMAC_KEYS")
            .env_remove("SPIN_RUNNER_CACHE_DIR")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&stderr_log).unwrap());
        let mut child = command.spawn().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        // Returns at the first line, or at EOF when the runner exits early.
        stdout.read_line(&mut line).unwrap();
        let Some(url) = line.trim_end().strip_prefix("Serving http://") else {
            let _ = child.wait();
            return Err(std::fs::read_to_string(&stderr_log).unwrap_or_default());
        };
        let addr = url.parse().unwrap();
        Ok(Self {
            child,
            addr,
            stdout,
            stderr_log,
        })
    }

    /// Sends `signal`, waits, and returns the exit code and whatever else came on stdout.
    fn stop(mut self, signal: &str) -> (Option<i32>, String) {
        let status = Command::new("kill")
            .args(["-s", signal, &self.child.id().to_string()])
            .status()
            .unwrap();
        assert!(status.success());
        let code = self.child.wait().unwrap().code();
        let mut rest = String::new();
        self.stdout.read_to_string(&mut rest).unwrap();
        (code, rest)
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr_log).unwrap_or_default()
    }
}

impl Drop for Runner {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn signed(method: &str, path: &str, request_id: &str, body: &[u8]) -> [(String, String); 3] {
    let identity = Identity {
        iss: "https://idp.example".into(),
        sub: "u-runner-test".into(),
        email: Some("runner@example.com".into()),
        email_verified: true,
        // What the gateway forwards for an owner: creates, and reads back.
        permissions: [(
            ORG.to_string(),
            ["workspace:create", "workspace:read"]
                .map(str::to_owned)
                .into(),
        )]
        .into(),
        company: Some(ORG.into()),
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let headers = Signer::new(HMAC_KEY.as_bytes().to_vec()).sign(
        &identity,
        &Request {
            request_id,
            method,
            path,
            body,
        },
        now,
        // The backend accepts a nonce once; each request ID here is used once.
        *uuid_bytes(request_id),
    );
    [
        ("x-request-id".into(), request_id.into()),
        (edge_contract::IDENTITY_HEADER.into(), headers.identity),
        (edge_contract::SIGNATURE_HEADER.into(), headers.signature),
    ]
}

fn uuid_bytes(request_id: &str) -> &[u8; 16] {
    request_id.as_bytes()[..16].try_into().unwrap()
}

fn as_refs(headers: &[(String, String)]) -> Vec<(&str, &str)> {
    headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect()
}

#[test]
fn serves_the_projects_spin_toml_and_writes_spins_sqlite_file() {
    backend_wasm();
    let state = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(
        &repo_root().join("spin.toml"),
        Some(state.path()),
        &state.path().join("runner.stderr"),
        &[("SPIN_VARIABLE_GATEWAY_HMAC_KEYS", HMAC_KEY)],
        &["--log-requests"],
    )
    .unwrap_or_else(|stderr| panic!("runner did not start:\n{stderr}"));

    // The backend answers (it refuses an unsigned request itself).
    let reply = send(runner.addr, "GET", "/api/workspaces", &[], b"");
    assert_eq!(reply.status, 401, "{}\n{}", reply.text(), runner.stderr());
    // Outside the manifest's routes the runner answers 404 itself.
    assert_eq!(send(runner.addr, "GET", "/other", &[], b"").status, 404);

    // A signed create goes through, and lands in the SQLite file with Spin's schema.
    let request_id = "5f0c6f1e-8a43-4b6e-9d3b-2a1f0e9c7b6a";
    let body = serde_json::json!({
        "orgId": ORG,
        "name": "Runner test workspace",
        "description": "written through spin-runner",
        "visibility": "org",
        "settings": {"timezone": "Europe/Paris", "defaultLanguage": "en-US"},
    })
    .to_string();
    let mut headers = signed("POST", "/api/workspaces", request_id, body.as_bytes()).to_vec();
    headers.push(("content-type".into(), "application/json".into()));
    headers.push((
        "idempotency-key".into(),
        "0d9f3c52-6f0e-4b8a-9a51-3b2f1c7e8d90".into(),
    ));
    let reply = send(
        runner.addr,
        "POST",
        "/api/workspaces",
        &as_refs(&headers),
        body.as_bytes(),
    );
    assert_eq!(reply.status, 201, "{}\n{}", reply.text(), runner.stderr());
    let created: serde_json::Value = serde_json::from_slice(&reply.body).unwrap();
    let id = created["data"]["workspaceId"].as_str().unwrap().to_owned();

    let rows = sqlite_rows(state.path());
    assert!(
        rows.iter().any(|(store, key, value)| store == "default"
            && (key.contains(&id) || String::from_utf8_lossy(value).contains(&id))),
        "workspace {id} not found in {rows:?}"
    );

    // Read back through the runner.
    let path = format!("/api/workspaces/{id}");
    let headers = signed("GET", &path, "7c1e2d3f-4a5b-4c6d-8e7f-9a0b1c2d3e4f", b"");
    let reply = send(runner.addr, "GET", &path, &as_refs(&headers), b"");
    assert_eq!(reply.status, 200, "{}", reply.text());

    // With --log-requests, every request is logged on stderr without header values.
    let log = runner.stderr();
    assert!(log.contains("POST /api/workspaces -> 201"), "{log}");
    let signature = &headers[2].1;
    assert!(
        !log.contains(signature.as_str()),
        "a header value leaked into the log"
    );

    let (code, more_stdout) = runner.stop("TERM");
    assert_eq!(code, Some(0));
    assert_eq!(more_stdout, "", "stdout must carry only the Serving line");
}

#[test]
fn a_trap_in_one_component_leaves_the_backend_serving() {
    let backend = backend_wasm();
    let state = tempfile::tempdir().unwrap();
    let manifest = state.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
spin_manifest_version = 2
[application]
name = "trap-and-backend"
[variables]
gateway_hmac_keys = {{ required = true, secret = true }}
[[trigger.http]]
route = "/api/..."
component = "backend"
[[trigger.http]]
route = "/trap"
component = "trap"
[component.backend]
source = "{backend}"
key_value_stores = ["default"]
[component.backend.variables]
gateway_hmac_keys = "{{{{ gateway_hmac_keys }}}}"
[component.trap]
source = "{trap}"
key_value_stores = ["default"]
"#,
            backend = backend.display(),
            trap = fixture("kv_then_trap.wat").display(),
        ),
    )
    .unwrap();
    let runner = Runner::start(
        &manifest,
        state.path(),
        &[("SPIN_VARIABLE_GATEWAY_HMAC_KEYS", HMAC_KEY)],
    )
    .unwrap_or_else(|stderr| panic!("runner did not start:\n{stderr}"));

    for _ in 0..3 {
        assert_eq!(send(runner.addr, "GET", "/trap", &[], b"").status, 500);
        let reply = send(runner.addr, "GET", "/api/workspaces", &[], b"");
        assert_eq!(reply.status, 401, "{}", reply.text());
    }
    // Without --log-requests, only the failures are logged.
    let log = runner.stderr();
    assert_eq!(log.matches("component \"trap\" failed").count(), 3, "{log}");
    assert!(!log.contains("-> 401"), "{log}");
    let (code, _) = runner.stop("INT");
    assert_eq!(code, Some(0));
}

#[test]
fn a_missing_required_variable_stops_the_start() {
    backend_wasm();
    let state = tempfile::tempdir().unwrap();
    let err = Runner::start(&repo_root().join("spin.toml"), state.path(), &[])
        .err()
        .expect("the runner must refuse to start");
    assert!(err.contains("SPIN_VARIABLE_GATEWAY_HMAC_KEYS"), "{err}");
}

#[test]
fn the_default_state_dir_is_dot_spin_next_to_the_manifest() {
    let app = tempfile::tempdir().unwrap();
    let manifest = app.path().join("spin.toml");
    std::fs::write(
        &manifest,
        format!(
            r#"
spin_manifest_version = 2
[application]
name = "default-state-dir"
[[trigger.http]]
route = "/kv"
component = "kv"
[component.kv]
source = "{kv}"
key_value_stores = ["default"]
"#,
            kv = fixture("kv_then_trap.wat").display(),
        ),
    )
    .unwrap();
    let logs = tempfile::tempdir().unwrap();
    let runner = Runner::start_with(&manifest, None, &logs.path().join("stderr"), &[], &[])
        .unwrap_or_else(|stderr| panic!("runner did not start:\n{stderr}"));
    assert_eq!(send(runner.addr, "GET", "/kv", &[], b"").status, 500);
    let rows = sqlite_rows(&app.path().join(".spin"));
    assert!(
        rows.iter()
            .any(|(_, key, value)| key == "hello" && value == b"world"),
        "{rows:?}"
    );
    assert_eq!(runner.stop("TERM").0, Some(0));
}

/// A request ID (and so a nonce) of its own for request `n` of test `t`.
fn request_id(t: u32, n: u32) -> String {
    format!(
        "{t:08x}-{n:04x}-4000-8000-{:012x}",
        u64::from(t) << 16 | u64::from(n)
    )
}

fn create(addr: SocketAddr, id: &str, key: &str, name: &str) -> support::Reply {
    let body = serde_json::json!({"orgId": ORG, "name": name}).to_string();
    let mut headers = signed("POST", "/api/workspaces", id, body.as_bytes()).to_vec();
    headers.push(("content-type".into(), "application/json".into()));
    headers.push(("idempotency-key".into(), key.into()));
    send(
        addr,
        "POST",
        "/api/workspaces",
        &as_refs(&headers),
        body.as_bytes(),
    )
}

#[test]
fn two_runners_on_one_redis_are_one_backend() {
    backend_wasm();
    let redis = RedisServer::start();
    let dirs = [tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap()];
    let config = redis.runtime_config(dirs[0].path());
    let config = config.to_str().unwrap();
    let runners: Vec<Runner> = dirs
        .iter()
        .map(|dir| {
            Runner::start_with(
                &repo_root().join("spin.toml"),
                Some(dir.path()),
                &dir.path().join("runner.stderr"),
                &[("SPIN_VARIABLE_GATEWAY_HMAC_KEYS", HMAC_KEY)],
                &["--runtime-config-file", config],
            )
            .unwrap_or_else(|stderr| panic!("runner did not start:\n{stderr}"))
        })
        .collect();
    let (a, b) = (runners[0].addr, runners[1].addr);
    assert!(
        runners[0]
            .stderr()
            .contains(&format!("\"default\": Redis {}", redis.url())),
        "{}",
        runners[0].stderr()
    );

    // Created through one, replayed and read through the other.
    let first = create(a, &request_id(1, 1), "key-shared", "Shared through Redis");
    assert_eq!(first.status, 201, "{}", first.text());
    let created: serde_json::Value = serde_json::from_slice(&first.body).unwrap();
    let again = create(b, &request_id(1, 2), "key-shared", "Shared through Redis");
    assert_eq!(
        (again.status, again.header("idempotent-replayed")),
        (201, Some("true")),
        "{}",
        again.text()
    );
    assert_eq!(again.body, first.body);
    let id = created["data"]["workspaceId"].as_str().unwrap();
    let path = format!("/api/workspaces/{id}");
    let headers = signed("GET", &path, &request_id(1, 3), b"");
    assert_eq!(send(b, "GET", &path, &as_refs(&headers), b"").status, 200);

    // One key raced through both runners at once: one workspace.
    let replies: Vec<support::Reply> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..16u32)
            .map(|n| {
                let addr = if n % 2 == 0 { a } else { b };
                s.spawn(move || create(addr, &request_id(2, n), "key-raced", "Raced"))
            })
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    let ids: std::collections::BTreeSet<String> = replies
        .iter()
        .filter(|r| r.status == 201)
        .map(|r| {
            let v: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
            v["data"]["workspaceId"].as_str().unwrap().to_owned()
        })
        .collect();
    assert_eq!(ids.len(), 1, "{ids:?}");
    for r in &replies {
        assert!(matches!(r.status, 201 | 409), "{} {}", r.status, r.text());
    }

    // A replayed signature is refused by the other runner too: the nonce store is shared.
    let body = serde_json::json!({"orgId": ORG, "name": "Once"}).to_string();
    let mut headers = signed(
        "POST",
        "/api/workspaces",
        &request_id(3, 1),
        body.as_bytes(),
    )
    .to_vec();
    headers.push(("content-type".into(), "application/json".into()));
    let r = send(
        a,
        "POST",
        "/api/workspaces",
        &as_refs(&headers),
        body.as_bytes(),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    let r = send(
        b,
        "POST",
        "/api/workspaces",
        &as_refs(&headers),
        body.as_bytes(),
    );
    assert_eq!(r.status, 401, "{}", r.text());

    // The organization lists exactly the three workspaces, through either runner; nothing
    // reached the runners' own SQLite files.
    for addr in [a, b] {
        let path = format!("/api/workspaces?orgId={ORG}");
        let headers = signed("GET", &path, &request_id(4, addr.port().into()), b"");
        let r = send(addr, "GET", &path, &as_refs(&headers), b"");
        assert_eq!(r.status, 200, "{}", r.text());
        let listed: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        let names: Vec<&str> = listed["data"]
            .as_array()
            .unwrap()
            .iter()
            .map(|w| w["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["Shared through Redis", "Raced", "Once"], "{listed}");
    }
    for dir in &dirs {
        assert!(sqlite_rows(dir.path()).is_empty());
    }
}
