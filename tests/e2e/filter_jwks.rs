//! Keys from a live JWKS endpoint (a tiny HTTP server in this test, reached by Envoy
//! through an extra cluster): requests wait for the first load, a token signed with a
//! new `kid` triggers a (rate-limited) refresh, a removed key stops working — all
//! without restarting Envoy.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{
    post_json, send, shipped_filter_config, Stack, StackOptions, SEED_004_REQUEST, SEED_ORG,
};
use edge_policy::jwt::Alg;
use edge_policy::testkit::{self, Keys};
use serde_json::{json, Value};

/// Serves the current JWKS document, or the document [`JwksServer::route`] set for the
/// request's path; the first `slow` responses are delayed.
pub(crate) struct JwksServer {
    pub(crate) addr: SocketAddr,
    doc: Arc<Mutex<Value>>,
    routes: Arc<Mutex<HashMap<String, Value>>>,
    hits: Arc<AtomicUsize>,
}

impl JwksServer {
    pub(crate) fn start(doc: Value, slow: usize) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = listener.local_addr().unwrap();
        let doc = Arc::new(Mutex::new(doc));
        let routes = Arc::new(Mutex::new(HashMap::new()));
        let hits = Arc::new(AtomicUsize::new(0));
        let (d, r, h) = (Arc::clone(&doc), Arc::clone(&routes), Arc::clone(&hits));
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let (d, r, h) = (Arc::clone(&d), Arc::clone(&r), Arc::clone(&h));
                std::thread::spawn(move || {
                    let mut buf = [0u8; 4096];
                    let mut seen = Vec::new();
                    while !seen.windows(4).any(|w| w == b"\r\n\r\n") {
                        match stream.read(&mut buf) {
                            Ok(0) | Err(_) => return,
                            Ok(n) => seen.extend_from_slice(&buf[..n]),
                        }
                    }
                    if h.fetch_add(1, Ordering::SeqCst) < slow {
                        std::thread::sleep(Duration::from_millis(1500));
                    }
                    let head = String::from_utf8_lossy(&seen);
                    let path = head.split(' ').nth(1).unwrap_or_default();
                    let routed = r.lock().unwrap().get(path).cloned();
                    let body = routed
                        .unwrap_or_else(|| d.lock().unwrap().clone())
                        .to_string();
                    let head = format!("HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                    let _ = stream.write_all(head.as_bytes());
                    let _ = stream.write_all(body.as_bytes());
                });
            }
        });
        Self {
            addr,
            doc,
            routes,
            hits,
        }
    }

    fn serve(&self, doc: Value) {
        *self.doc.lock().unwrap() = doc;
    }

    /// Serves `doc` at `path` instead of the JWKS document.
    fn route(&self, path: &str, doc: Value) {
        self.routes.lock().unwrap().insert(path.to_owned(), doc);
    }
}

fn keyset(keys: &[(&Keys, &str)]) -> Value {
    let list: Vec<Value> = keys
        .iter()
        .map(|(k, kid)| {
            let mut jwk = k.jwk("ed");
            jwk["kid"] = json!(kid);
            jwk
        })
        .collect();
    json!({ "keys": list })
}

fn now() -> i64 {
    i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap()
}

fn token(keys: &Keys, kid: &str) -> String {
    token_of("rotating-idp", keys, kid)
}

fn token_of(issuer: &str, keys: &Keys, kid: &str) -> String {
    keys.sign(
        Alg::EdDSA,
        Some(kid),
        &testkit::claims(issuer, "workspace-api", "u-rot", now()),
    )
}

/// Status of a GET through the gateway: the backend's 404 means the filter let it pass.
fn status(stack: &Stack, token: &str) -> u16 {
    send(
        "GET",
        &format!("{}/api/workspaces/w-missing", stack.gateway_url()),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )
    .status
}

fn counter(stack: &Stack, name: &str) -> u64 {
    stack
        .stat(&format!("wasmcustom.edge_filter.{name}"))
        .unwrap_or(0)
}

#[test]
fn keys_rotate_without_a_restart() {
    let (a, b) = (Keys::new(10), Keys::new(20));
    let server = JwksServer::start(keyset(&[(&a, "key-a")]), 2);
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": "rotating-idp", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
        "remote_jwks": {"cluster": "jwks", "authority": "idp.test", "path": "/.well-known/jwks.json",
                        "refresh_interval": "1h", "min_refresh_interval": "1s", "timeout": "3s"}
    }));
    let stack = Stack::start(StackOptions {
        envoy_concurrency: 2,
        filter_config: Some(config),
        extra_clusters: vec![("jwks".into(), server.addr)],
        ..Default::default()
    });

    // The first fetches are slow: requests wait for the keys instead of failing, a POST
    // whose body the filter must read too (it resumes, then reads and decides the body).
    let started = Instant::now();
    let mut claims = testkit::claims("rotating-idp", "workspace-api", "u-rot", now());
    claims["orgs"] = json!({ SEED_ORG: ["owner"] });
    let created = post_json(
        &format!("{}/api/workspaces", stack.gateway_url()),
        &a.sign(Alg::EdDSA, Some("key-a"), &claims),
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["data"]["createdBy"], "u-rot");
    assert_eq!(status(&stack, &token(&a, "key-a")), 404);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "waited past the bound"
    );
    assert_eq!(status(&stack, &token(&a, "key-a")), 404);
    assert!(
        counter(&stack, "waiting_for_keys") >= 1,
        "no request had to wait"
    );

    // Rotation: the IdP now publishes only key B. A token naming key B makes each worker
    // refresh (at most once per second), and passes.
    server.serve(keyset(&[(&b, "key-b")]));
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&stack, &token(&b, "key-b")) != 404 {
        assert!(Instant::now() < deadline, "key B never accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut consecutive = 0;
    while consecutive < 10 {
        consecutive = if status(&stack, &token(&b, "key-b")) == 404 {
            consecutive + 1
        } else {
            0
        };
        assert!(
            Instant::now() < deadline,
            "key B not accepted by every worker"
        );
    }
    // Key A was removed: its new tokens are refused.
    let deadline = Instant::now() + Duration::from_secs(10);
    while status(&stack, &token(&a, "key-a")) != 401 {
        assert!(Instant::now() < deadline, "removed key A still accepted");
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(counter(&stack, "jwks_fetch.ok") >= 3);
    assert!(server.hits.load(Ordering::SeqCst) >= 3);
    // An unknown kid does not hammer the IdP: a burst costs at most a refresh per worker per second.
    let before = server.hits.load(Ordering::SeqCst);
    for i in 0..30 {
        assert_eq!(status(&stack, &token(&b, &format!("nope-{i}"))), 401);
    }
    assert!(
        server.hits.load(Ordering::SeqCst) - before <= 4,
        "unknown kids refreshed too often"
    );
}

/// The key server is down: requests wait at most `limits.key_wait`, then get 503 with
/// Retry-After (fail closed), and the failure is counted.
#[test]
fn an_unreachable_key_server_fails_closed_within_the_bound() {
    let closed = {
        let l = TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": "rotating-idp", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
        "remote_jwks": {"cluster": "jwks", "authority": "idp.test", "path": "/jwks", "timeout": "1s"}
    }));
    config["limits"]["key_wait"] = json!("2s");
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        extra_clusters: vec![("jwks".into(), closed)],
        ..Default::default()
    });
    let started = Instant::now();
    let r = send(
        "GET",
        &format!("{}/api/workspaces/w-1", stack.gateway_url()),
        &[(
            "authorization",
            &format!("Bearer {}", token(&Keys::new(3), "k")),
        )],
        None,
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:workspace-api:problem:unavailable");
    assert_eq!(r.header("retry-after"), Some("5"));
    assert!(started.elapsed() < Duration::from_secs(5));
    assert!(counter(&stack, "jwks_fetch.failed") >= 1);
    // Tokens of the other (inline) issuer are unaffected.
    let dev = e2e::dev_token("u-alice", &[(SEED_ORG, &["owner"])]);
    assert_eq!(status(&stack, &dev), 404);
}

/// OpenID Connect discovery through the real Envoy: the filter reads the discovery
/// document, checks the issuer it states, and fetches the key set its `jwks_uri` names; a
/// document that states another issuer is refused, and that issuer's tokens fail closed.
#[test]
fn keys_are_found_through_openid_connect_discovery() {
    let keys = Keys::new(30);
    let server = JwksServer::start(json!({"keys": []}), 0);
    server.route(
        "/.well-known/openid-configuration",
        json!({"issuer": "https://idp.test", "jwks_uri": "http://idp.test/oauth/keys",
               "response_types_supported": ["code"]}),
    );
    server.route("/oauth/keys", keyset(&[(&keys, "k1")]));
    server.route(
        "/liar/.well-known/openid-configuration",
        json!({"issuer": "https://someone-else.test", "jwks_uri": "http://idp.test/oauth/keys"}),
    );
    let mut config = shipped_filter_config();
    let issuers = config["issuers"].as_array_mut().unwrap();
    for (issuer, path) in [
        ("https://idp.test", "/.well-known/openid-configuration"),
        (
            "https://liar.test",
            "/liar/.well-known/openid-configuration",
        ),
    ] {
        issuers.push(json!({
            "issuer": issuer, "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
            "remote_jwks": {"cluster": "jwks", "discovery": format!("http://idp.test{path}"),
                            "refresh_interval": "1h", "timeout": "3s"}
        }));
    }
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        extra_clusters: vec![("jwks".into(), server.addr)],
        ..Default::default()
    });
    // The key set discovery names verifies the issuer's tokens.
    assert_eq!(
        status(&stack, &token_of("https://idp.test", &keys, "k1")),
        404
    );
    assert!(counter(&stack, "jwks_fetch.ok") >= 1);
    // The liar's document states another issuer: never followed, its tokens get 503.
    let r = send(
        "GET",
        &format!("{}/api/workspaces/w-1", stack.gateway_url()),
        &[(
            "authorization",
            &format!("Bearer {}", token_of("https://liar.test", &keys, "k1")),
        )],
        None,
    );
    assert_eq!(r.status, 503, "{}", r.text());
    assert_eq!(r.json()["type"], "urn:workspace-api:problem:unavailable");
    assert!(counter(&stack, "jwks_fetch.failed") >= 1);
}
