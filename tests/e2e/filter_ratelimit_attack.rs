//! Rate-limit state an attacker cannot reset, through the real Envoy and the real filter:
//! floods from many client addresses never give a user back a spent request, and a flood
//! of unverifiable tokens waiting for keys gets 429 after its address's allowance.
//!
//! Client addresses: each request binds its socket to a loopback address (127.0.0.x)
//! before connecting; Envoy's `use_remote_address: true` makes the peer address the
//! client's, which is what the per-address allowance is keyed by.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use e2e::{shipped_filter_config, Stack, StackOptions, TokenSpec, SEED_004_REQUEST, SEED_ORG};
use edge_policy::jwt::Alg;
use edge_policy::testkit::{self, Keys};
use serde_json::{json, Value};
use socket2::{Domain, SockAddr, Socket, Type};

/// A response read off the wire.
#[derive(Debug)]
struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

impl Reply {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    fn problem_type(&self) -> String {
        let body: Value = serde_json::from_str(&self.body).unwrap_or(Value::Null);
        body["type"].as_str().unwrap_or("").to_owned()
    }
}

/// One HTTP/1.1 request to the gateway from client address `from`.
fn send_from(
    from: Ipv4Addr,
    gateway: SocketAddr,
    method: &str,
    path: &str,
    token: &str,
    body: Option<&str>,
) -> Reply {
    let socket = Socket::new(Domain::IPV4, Type::STREAM, None).unwrap();
    socket
        .bind(&SockAddr::from(SocketAddrV4::new(from, 0)))
        .unwrap();
    socket.connect(&SockAddr::from(gateway)).unwrap();
    let mut stream = TcpStream::from(socket);
    stream
        .set_read_timeout(Some(Duration::from_secs(30)))
        .unwrap();
    let body = body.unwrap_or("");
    let request = format!(
        "{method} {path} HTTP/1.1\r\nhost: {gateway}\r\nauthorization: Bearer {token}\r\n\
         content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no response head: {}", String::from_utf8_lossy(&raw)));
    let head = String::from_utf8_lossy(&raw[..split]).into_owned();
    let mut lines = head.split("\r\n");
    let status = lines
        .next()
        .and_then(|l| l.split(' ').nth(1))
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("bad status line: {head}"));
    let headers = lines
        .filter_map(|l| l.split_once(':'))
        .map(|(n, v)| (n.trim().to_ascii_lowercase(), v.trim().to_owned()))
        .collect();
    Reply {
        status,
        headers,
        body: String::from_utf8_lossy(&raw[split + 4..]).into_owned(),
    }
}

fn loopback(last: u8) -> Ipv4Addr {
    Ipv4Addr::new(127, 0, 0, last)
}

fn counter(stack: &Stack, name: &str) -> u64 {
    stack
        .stat(&format!("wasmcustom.edge_filter.{name}"))
        .unwrap_or(0)
}

/// The attack that once passed: a user spends their 20 creates, then bad tokens pour in
/// from 49 addresses. The per-user table has a single slot here, so a design that kept
/// failed-auth allowances in it, or forgot draining buckets, would hand the user a fresh
/// bucket; the next create must still be 429.
#[test]
fn a_user_cannot_reset_their_own_rate_limit() {
    let mut config = shipped_filter_config();
    config["routes"][0]["rate_limit"] = json!({"requests": 20, "per": "1h"});
    config["limits"]["rate_limit_slots"] = json!(1);
    let stack = Stack::start(StackOptions {
        envoy_concurrency: 2,
        filter_config: Some(config),
        ..Default::default()
    });
    let gateway = stack.gateway_addr().unwrap();
    let user = TokenSpec::new("u-attacker", &[(SEED_ORG, &["owner"])])
        .mint()
        .unwrap();
    let create = |from: Ipv4Addr| {
        send_from(
            from,
            gateway,
            "POST",
            "/api/workspaces",
            &user,
            Some(SEED_004_REQUEST),
        )
    };
    let forwarded_before = stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0);

    for i in 0..20 {
        let r = create(loopback(1));
        assert_eq!(r.status, 201, "create {i}: {}", r.body);
    }
    let r = create(loopback(1));
    assert_eq!(r.status, 429);
    assert!(r
        .header("ratelimit")
        .is_some_and(|v| v.starts_with("\"create-workspace\";r=0;t=")));

    // 49 addresses x 4 bad tokens, in parallel: each is refused, none is forwarded.
    let refused = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for last in 2..=50u8 {
            let refused = &refused;
            s.spawn(move || {
                for i in 0..4 {
                    let r = send_from(
                        loopback(last),
                        gateway,
                        "POST",
                        "/api/workspaces",
                        &format!("bad.token.{last}x{i}"),
                        Some(SEED_004_REQUEST),
                    );
                    refused.lock().unwrap().push(r.status);
                }
            });
        }
    });
    let refused = refused.into_inner().unwrap();
    assert_eq!(refused.len(), 196);
    assert!(refused.iter().all(|s| *s == 401), "{refused:?}");

    for from in [loopback(1), loopback(51)] {
        let r = create(from);
        assert_eq!(r.status, 429, "from {from}");
        assert_eq!(
            r.problem_type(),
            "urn:workspace-api:problem:rate-limited",
            "from {from}"
        );
        assert!(
            r.header("ratelimit")
                .is_some_and(|v| v.starts_with("\"create-workspace\";r=0;t=")),
            "{r:?}"
        );
        // The next token comes 3 minutes after the first create: no earlier.
        let retry: u64 = r.header("retry-after").unwrap().parse().unwrap();
        assert!((120..=180).contains(&retry), "retry-after {retry}");
    }
    assert_eq!(
        stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0) - forwarded_before,
        20,
        "exactly the 20 creates reached the backend"
    );
}

/// Accepts connections and never answers: an identity provider that hangs.
fn hanging_server() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            held.lock().unwrap().push(stream);
        }
    });
    addr
}

/// Tokens naming an issuer whose keys never arrive cannot be verified, so each one
/// held spends a unit of its address's allowance: from one address, 30 in parallel
/// against an allowance of 10, exactly 10 are held and every one ends in 429; another
/// address is unaffected and gets the usual 503 once the wait is over.
#[test]
fn a_flood_waiting_for_keys_gets_429_after_the_allowance() {
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": "slow-idp", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
        "remote_jwks": {"cluster": "jwks", "authority": "idp.test", "path": "/jwks", "timeout": "30s"}
    }));
    config["limits"]["unauthenticated"] = json!({"requests": 10, "per": "1h"});
    config["limits"]["key_wait"] = json!("3s");
    let stack = Stack::start(StackOptions {
        envoy_concurrency: 2,
        filter_config: Some(config),
        extra_clusters: vec![("jwks".into(), hanging_server())],
        ..Default::default()
    });
    let gateway = stack.gateway_addr().unwrap();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let made_up = Keys::new(77);
    let token = |sub: &str| {
        made_up.sign(
            Alg::EdDSA,
            Some("k1"),
            &testkit::claims("slow-idp", "workspace-api", sub, now),
        )
    };
    let held_before = counter(&stack, "waiting_for_keys");

    let started = Instant::now();
    let replies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..30 {
            let (replies, token) = (&replies, token(&format!("u-{i}")));
            s.spawn(move || {
                let r = send_from(
                    loopback(7),
                    gateway,
                    "GET",
                    "/api/workspaces/w",
                    &token,
                    None,
                );
                replies.lock().unwrap().push((r, started.elapsed()));
            });
        }
        let other = token("u-other");
        s.spawn(move || {
            std::thread::sleep(Duration::from_millis(200));
            let r = send_from(
                loopback(8),
                gateway,
                "GET",
                "/api/workspaces/w",
                &other,
                None,
            );
            assert_eq!(r.status, 503, "another address: {r:?}");
            assert_eq!(r.header("retry-after"), Some("5"));
        });
    });
    let replies = replies.into_inner().unwrap();
    for (r, _) in &replies {
        assert_eq!(r.status, 429, "{r:?}");
        assert_eq!(r.problem_type(), "urn:workspace-api:problem:rate-limited");
        assert!(r.header("retry-after").is_some());
    }
    let fast = replies
        .iter()
        .filter(|(_, took)| *took < Duration::from_secs(2))
        .count();
    assert!(fast >= 20, "{fast} answered before the wait bound");
    assert_eq!(
        counter(&stack, "waiting_for_keys") - held_before,
        11,
        "exactly the allowance of one address, plus the other address's request, was held"
    );
    assert_eq!(counter(&stack, "denied.unauthenticated_rate_limited"), 30);
}

/// Past `limits.max_waiting_for_keys`, a worker answers at once (503 with `Retry-After`)
/// instead of holding one more stream open while keys load.
#[test]
fn requests_waiting_for_keys_are_bounded_per_worker() {
    let mut config = shipped_filter_config();
    config["issuers"].as_array_mut().unwrap().push(json!({
        "issuer": "slow-idp", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
        "remote_jwks": {"cluster": "jwks", "authority": "idp.test", "path": "/jwks", "timeout": "30s"}
    }));
    config["limits"]["unauthenticated"] = json!({"requests": 1000, "per": "1h"});
    config["limits"]["key_wait"] = json!("2s");
    config["limits"]["max_waiting_for_keys"] = json!(3);
    let stack = Stack::start(StackOptions {
        envoy_concurrency: 1,
        filter_config: Some(config),
        extra_clusters: vec![("jwks".into(), hanging_server())],
        ..Default::default()
    });
    let gateway = stack.gateway_addr().unwrap();
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let made_up = Keys::new(78);
    let held_before = counter(&stack, "waiting_for_keys");
    let replies = Mutex::new(Vec::new());
    std::thread::scope(|s| {
        for i in 0..10u8 {
            let replies = &replies;
            let token = made_up.sign(
                Alg::EdDSA,
                Some("k1"),
                &testkit::claims("slow-idp", "workspace-api", &format!("u-{i}"), now),
            );
            s.spawn(move || {
                let r = send_from(
                    loopback(20 + i),
                    gateway,
                    "GET",
                    "/api/workspaces/w",
                    &token,
                    None,
                );
                replies.lock().unwrap().push(r);
            });
        }
    });
    let replies = replies.into_inner().unwrap();
    assert!(replies.iter().all(|r| r.status == 503), "{replies:?}");
    assert!(replies.iter().all(|r| r.header("retry-after").is_some()));
    assert_eq!(counter(&stack, "waiting_for_keys") - held_before, 3);
    assert_eq!(counter(&stack, "denied.too_many_waiting_for_keys"), 7);
    assert_eq!(counter(&stack, "denied.keys_not_loaded"), 3);
}
