//! The edge contract as a table: a request in, the status (and reason) out. Runs the
//! whole decision pipeline natively against an in-memory shared store and a fixed clock.

#![allow(clippy::unwrap_used, clippy::panic, clippy::type_complexity)] // test helpers, not the request path

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use edge_policy::jwt::Alg;
use edge_policy::rls::{self, DescriptorStatus, Failure, ProtoDuration, RateLimitResponse};
use edge_policy::store::{MemoryStore, SharedStore, StoreError};
use edge_policy::testkit::{self, Keys};
use edge_policy::{Host, Pending, Policy, RateLimitCall, RequestHead, Step, Worker};
use prost::Message;
use serde_json::{json, Value};

const NOW: i64 = 1_800_000_000;
const ORG: &str = "org-1";
const RID: &str = "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e";

fn config(keys: &Keys) -> Value {
    json!({
        "issuers": [{
            "issuer": "test-iss", "audiences": ["workspace-api"],
            "algorithms": ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"],
            "jwks": keys.jwks(), "clock_skew": "60s", "max_lifetime": "24h"
        }, {
            "issuer": "ed-only", "audiences": ["workspace-api"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]}
        }],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "roles": {"owner": ["workspace:create", "org:settings:write"], "member": ["workspace:read"]},
        "routes": [
            {"name": "create", "method": "POST", "path": "/api/workspaces", "permission": "workspace:create",
             "org": {"body_field": "orgId"}, "rate_limit": {"requests": 100, "per": "60s"}, "idempotency": "optional"},
            {"name": "create-v3", "method": "POST", "path": "/api/v3/workspaces", "permission": "workspace:create",
             "org": {"claim": "company"}, "conditions": [{"claim": "email_verified", "equals": true}],
             "idempotency": "optional"},
            {"name": "strict", "method": "PUT", "path": "/api/strict", "idempotency": "required",
             "conditions": [{"claim": "email", "email_domain_in": ["university.edu"]}]},
            {"name": "get", "method": "GET", "path": "/api/workspaces/{id}"},
            {"name": "settings", "method": "PUT", "path": "/api/orgs/{orgId}/settings", "permission": "org:settings:write",
             "org": {"path_param": "orgId"}}
        ],
        "limits": {"unauthenticated": {"requests": 1000, "per": "60s"}, "max_body_bytes": 256}
    })
}

struct Fixture {
    keys: Keys,
    worker: Worker,
    store: Store,
    counter: u8,
    /// The headers of the last refusal.
    refused_with: Vec<(String, String)>,
    /// What the rate limit service answers next, and the calls made to it.
    rls_answers: VecDeque<Result<Vec<u8>, Failure>>,
    rls_calls: Vec<RateLimitCall>,
}

/// The in-memory shared store, which a test can take down.
#[derive(Default)]
struct Store {
    memory: MemoryStore,
    down: AtomicBool,
}

impl Store {
    fn check(&self) -> Result<(), StoreError> {
        if self.down.load(Ordering::SeqCst) {
            return Err(StoreError::Host("shared data is unavailable".into()));
        }
        Ok(())
    }
}

impl SharedStore for Store {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        self.check()?;
        self.memory.get(key)
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        self.check()?;
        self.memory.set(key, value, cas)
    }
}

#[derive(Debug, PartialEq)]
struct Outcome {
    status: u16,
    reason: &'static str,
    retry_after: Option<String>,
}

const CLIENT: &str = "192.0.2.7";

impl Fixture {
    fn new() -> Self {
        Self::with(|_| {})
    }

    /// A fixture whose configuration `edit` changed first.
    fn with(edit: impl FnOnce(&mut Value)) -> Self {
        let keys = Keys::new(1);
        let mut cfg = config(&keys);
        edit(&mut cfg);
        let policy = Policy::from_json(cfg.to_string().as_bytes()).unwrap();
        let store = Store::default();
        let mut worker = Worker::new(
            Arc::new(policy),
            b"0123456789abcdef0123456789abcdef".to_vec(),
        );
        worker.init_shared(&store, [0x5a; 16]).unwrap();
        Self {
            keys,
            worker,
            store,
            counter: 0,
            refused_with: Vec::new(),
            rls_answers: VecDeque::new(),
            rls_calls: Vec::new(),
        }
    }

    fn token(&self, alg: Alg, patch: Value) -> String {
        let mut claims = testkit::claims("test-iss", "workspace-api", "u-alice", NOW);
        merge(&mut claims, patch);
        let kid = match alg.family() {
            edge_policy::jwt::Family::Hmac => "hmac",
            edge_policy::jwt::Family::Rsa => "rsa",
            edge_policy::jwt::Family::P256 => "p256",
            edge_policy::jwt::Family::Ed25519 => "ed",
        };
        self.keys.sign(alg, Some(kid), &claims)
    }

    /// Completes `pending`'s idempotency claim with an upstream answer, as the adapter does.
    fn finish(
        &mut self,
        pending: &mut Pending,
        status: u16,
        headers: &[(String, String)],
        body: &[u8],
    ) {
        let mut random = || [9u8; 16];
        let host = Host {
            store: &self.store,
            now_ms: NOW as u64 * 1000,
            random: &mut random,
        };
        self.worker
            .finish(pending, status, headers, Some(body), &host)
            .unwrap();
    }

    /// Runs a request through headers and (if needed) body; 200 means forwarded.
    fn run(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Outcome, Pending) {
        self.run_as(CLIENT, true, method, path, headers, body)
    }

    /// [`Fixture::run`] from client address `from`; `may_wait` false is the adapter's
    /// second run of a request that waited for keys. Status 0 means "wait for keys".
    fn run_as(
        &mut self,
        from: &str,
        may_wait: bool,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> (Outcome, Pending) {
        let headers: Vec<(&[u8], &[u8])> = headers
            .iter()
            .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
            .collect();
        self.run_raw_as(
            from,
            may_wait,
            method.as_bytes(),
            path.as_bytes(),
            &headers,
            body,
        )
    }

    /// [`Fixture::run`] with every part as bytes, as Envoy hands them over.
    fn run_raw(
        &mut self,
        method: &[u8],
        path: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> (Outcome, Pending) {
        self.run_raw_as(CLIENT, true, method, path, headers, body)
    }

    fn run_raw_as(
        &mut self,
        from: &str,
        may_wait: bool,
        method: &[u8],
        path: &[u8],
        headers: &[(&[u8], &[u8])],
        body: &[u8],
    ) -> (Outcome, Pending) {
        let req = RequestHead {
            method,
            path,
            headers,
            client_addr: Some(from),
            has_body: !body.is_empty(),
        };
        self.counter = self.counter.wrapping_add(1);
        let c = self.counter;
        let mut random = move || [c; 16];
        let mut host = Host {
            store: &self.store,
            now_ms: NOW as u64 * 1000,
            random: &mut random,
        };
        let mut pending = Pending::default();
        let mut step = self
            .worker
            .on_headers(&req, &mut host, may_wait, &mut pending);
        // The adapter's call to the rate limit service, answered from the queue.
        if let Step::AskRateLimit(call) = step {
            self.rls_calls.push(call);
            pending.rate_limit_answer = Some(self.rls_answers.pop_front().unwrap());
            step = self.worker.on_headers(&req, &mut host, false, &mut pending);
        }
        if matches!(step, Step::Forward) && pending.needs_body {
            step = self.worker.on_body(body, &mut host, &mut pending);
        }
        let outcome = match step {
            Step::Forward => Outcome {
                status: 200,
                reason: "allowed",
                retry_after: None,
            },
            Step::Reject(r) => {
                assert!(r.headers.iter().any(|(n, _)| n == "x-request-id"), "{r:?}");
                self.refused_with.clone_from(&r.headers);
                Outcome {
                    status: r.status,
                    reason: r.reason,
                    retry_after: r
                        .headers
                        .iter()
                        .find(|(n, _)| n == "retry-after")
                        .map(|(_, v)| v.clone()),
                }
            }
            Step::WaitForKeys { .. } => Outcome {
                status: 0,
                reason: "wait",
                retry_after: None,
            },
            Step::AskRateLimit(_) => panic!("asked the rate limit service twice"),
        };
        (outcome, pending)
    }
}

fn merge(into: &mut Value, patch: Value) {
    if let (Some(into), Value::Object(patch)) = (into.as_object_mut(), patch) {
        for (k, v) in patch {
            if v.is_null() {
                into.remove(&k);
            } else {
                into.insert(k, v);
            }
        }
    }
}

fn bearer(t: &str) -> String {
    format!("Bearer {t}")
}

#[test]
fn every_algorithm_verifies_with_its_own_key() {
    let mut f = Fixture::new();
    for alg in [
        Alg::HS256,
        Alg::HS384,
        Alg::HS512,
        Alg::RS256,
        Alg::RS384,
        Alg::RS512,
        Alg::PS256,
        Alg::PS384,
        Alg::PS512,
        Alg::ES256,
        Alg::EdDSA,
    ] {
        let auth = bearer(&f.token(alg, json!({})));
        let (got, _) = f.run(
            "GET",
            "/api/workspaces/w-1",
            &[("authorization", &auth)],
            b"",
        );
        assert_eq!(got.status, 200, "{alg:?}: {got:?}");
    }
}

#[test]
fn tokens_the_edge_refuses() {
    let mut f = Fixture::new();
    let c = |patch: Value| {
        let mut v = testkit::claims("test-iss", "workspace-api", "u-alice", NOW);
        merge(&mut v, patch);
        v
    };
    let good = f.token(Alg::EdDSA, json!({}));
    let (head, _) = good.rsplit_once('.').unwrap();
    let cases: Vec<(&str, String, u16, &str)> = vec![
        ("no token", String::new(), 401, "missing_token"),
        (
            "alg none",
            testkit::forge_none(&c(json!({}))),
            401,
            "alg_not_allowed",
        ),
        (
            "HS256 keyed with the RSA public key",
            testkit::forge_hs256(&f.keys.public_bytes("rsa"), Some("rsa"), &c(json!({}))),
            401,
            "bad_signature",
        ),
        (
            "HS256 keyed with the Ed25519 public key, ed-only issuer",
            testkit::forge_hs256(
                &f.keys.public_bytes("ed"),
                Some("ed"),
                &c(json!({"iss": "ed-only"})),
            ),
            401,
            "alg_not_allowed",
        ),
        (
            "RS256 token naming the EC key",
            f.keys.sign(Alg::RS256, Some("p256"), &c(json!({}))),
            401,
            "bad_signature",
        ),
        (
            "tampered signature",
            format!("{head}.AAAA"),
            401,
            "bad_signature",
        ),
        (
            "tampered claims",
            format!(
                "{}.{}",
                testkit::forge_none(&c(json!({"sub": "u-root"}))).trim_end_matches('.'),
                good.rsplit('.').next().unwrap()
            )
            .replace("\"none\"", "\"EdDSA\""),
            401,
            "alg_not_allowed",
        ),
        (
            "unknown kid",
            f.keys.sign(Alg::EdDSA, Some("gone"), &c(json!({}))),
            401,
            "unknown_kid",
        ),
        (
            "expired",
            f.token(
                Alg::EdDSA,
                json!({"exp": NOW - 61, "iat": NOW - 600, "nbf": NOW - 600}),
            ),
            401,
            "expired",
        ),
        (
            "expired within skew",
            f.token(Alg::EdDSA, json!({"exp": NOW - 30})),
            200,
            "allowed",
        ),
        (
            "not yet valid",
            f.token(Alg::EdDSA, json!({"nbf": NOW + 120})),
            401,
            "not_yet_valid",
        ),
        (
            "issued in the future",
            f.token(Alg::EdDSA, json!({"iat": NOW + 120, "exp": NOW + 600})),
            401,
            "not_yet_valid",
        ),
        (
            "no exp",
            f.token(Alg::EdDSA, json!({"exp": null})),
            401,
            "no_exp",
        ),
        (
            "lifetime over 24h",
            f.token(Alg::EdDSA, json!({"exp": NOW + 25 * 3600})),
            401,
            "lifetime_too_long",
        ),
        (
            "wrong audience",
            f.token(Alg::EdDSA, json!({"aud": "other-api"})),
            401,
            "wrong_audience",
        ),
        (
            "audience list containing ours",
            f.token(Alg::EdDSA, json!({"aud": ["x", "workspace-api"]})),
            200,
            "allowed",
        ),
        (
            "unknown issuer",
            f.token(Alg::EdDSA, json!({"iss": "evil"})),
            401,
            "untrusted_issuer",
        ),
        (
            "no sub",
            f.token(Alg::EdDSA, json!({"sub": null})),
            401,
            "claims_malformed",
        ),
        (
            "orgs not a map",
            f.token(Alg::EdDSA, json!({"orgs": ["org-1"]})),
            401,
            "claims_malformed",
        ),
        ("garbage", "not.a.jwt".to_owned(), 401, "token_malformed"),
        ("oversized", "a".repeat(9000), 401, "token_too_large"),
    ];
    for (name, token, status, reason) in cases {
        let auth = bearer(&token);
        let headers: Vec<(&str, &str)> = if token.is_empty() {
            vec![]
        } else {
            vec![("authorization", &auth)]
        };
        let (got, _) = f.run("GET", "/api/workspaces/w-1", &headers, b"");
        assert_eq!((got.status, got.reason), (status, reason), "{name}");
    }
}

#[test]
fn authorization_header_forms() {
    let mut f = Fixture::new();
    let t = f.token(Alg::EdDSA, json!({}));
    let cases: Vec<(Vec<(&str, String)>, u16, &str)> = vec![
        (
            vec![("authorization", format!("bearer {t}"))],
            200,
            "allowed",
        ),
        (
            vec![("authorization", format!("Basic {t}"))],
            401,
            "bad_authorization",
        ),
        (vec![("authorization", t.clone())], 401, "bad_authorization"),
        (
            vec![("authorization", bearer(&t)), ("authorization", bearer(&t))],
            401,
            "bad_authorization",
        ),
        (
            vec![("authorization", format!("Bearer {t}\u{1}"))],
            401,
            "bad_authorization",
        ),
    ];
    for (headers, status, reason) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (got, _) = f.run("GET", "/api/workspaces/w-1", &h, b"");
        assert_eq!((got.status, got.reason), (status, reason), "{headers:?}");
    }
}

#[test]
fn request_ids_and_identity_headers() {
    let mut f = Fixture::new();
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let (got, p) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[
            ("authorization", &auth),
            ("x-request-id", &RID.to_uppercase()),
            ("x-edge-identity", "forged"),
        ],
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(p.request_id, RID);
    // The bearer token stops at the edge, the client's identity headers are dropped (those
    // it sent, whatever their case; removing one it did not send would be a wasted host
    // call), and the signed identity goes out as filter state the route turns into headers.
    assert_eq!(p.remove_headers, ["authorization", "x-edge-identity"]);
    let (_, sent_both) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[
            ("authorization", &auth),
            ("X-Edge-Signature", "forged"),
            ("x-edge-identity", "forged"),
            ("x-edge-identity", "forged again"),
        ],
        b"",
    );
    assert_eq!(
        sent_both.remove_headers,
        ["authorization", "x-edge-identity", "x-edge-signature"]
    );
    let (_, sent_none) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(sent_none.remove_headers, ["authorization"]);
    let mut set: std::collections::HashMap<String, String> =
        p.set_headers.iter().cloned().collect();
    for (key, value) in &p.forward_state {
        let header = match *key {
            edge_policy::gate::IDENTITY_STATE => "x-edge-identity",
            edge_policy::gate::SIGNATURE_STATE => "x-edge-signature",
            other => panic!("unexpected state {other}"),
        };
        set.insert(header.to_owned(), value.clone());
    }
    assert_eq!(set["x-request-id"], RID);
    let verifier = edge_contract_verifier();
    let id = verifier
        .verify(
            &set["x-edge-identity"],
            &set["x-edge-signature"],
            &edge_contract::Request {
                request_id: RID,
                method: "GET",
                path: "/api/workspaces/w-1",
                body: b"",
            },
            NOW as u64,
        )
        .unwrap()
        .identity;
    assert_eq!((id.iss.as_str(), id.sub.as_str()), ("test-iss", "u-alice"));
    // The role map applied at the edge: the backend gets permissions, never role names.
    assert_eq!(
        id.permissions[ORG],
        [
            "org:settings:write",
            "workspace:create",
            "workspace:create:self-service"
        ]
        .map(str::to_owned)
        .into()
    );
    assert_eq!(
        id.permissions["org-2"],
        ["workspace:read".to_owned()].into()
    );

    let (got, p) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", &auth)],
        b"",
    );
    assert_eq!(got.status, 200);
    assert_eq!(uuid_version(&p.request_id), 4, "generated");
    for bad in [
        "nope",
        "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7",
        &"1".repeat(80),
    ] {
        let (got, _) = f.run(
            "GET",
            "/api/workspaces/w-1",
            &[("authorization", &auth), ("x-request-id", bad)],
            b"",
        );
        assert_eq!((got.status, got.reason), (400, "bad_request_id"), "{bad}");
    }
}

fn edge_contract_verifier() -> edge_contract::Verifier {
    edge_contract::Verifier::new(vec![b"0123456789abcdef0123456789abcdef".to_vec()])
}

fn uuid_version(id: &str) -> usize {
    id.as_bytes()[14] as usize - b'0' as usize
}

#[test]
fn permissions_and_bodies() {
    let mut f = Fixture::new();
    let owner = bearer(&f.token(Alg::EdDSA, json!({})));
    let granted = bearer(&f.token(
        Alg::EdDSA,
        json!({"sub": "u-g", "perms": ["workspace:create"]}),
    ));
    let unverified = bearer(&f.token(Alg::EdDSA, json!({"sub": "u-u", "email_verified": false})));
    let outsider = bearer(&f.token(Alg::EdDSA, json!({"sub": "u-o", "email": "o@evil.example"})));
    let body = |org: &str| format!(r#"{{"orgId":"{org}","name":"n"}}"#).into_bytes();
    let cases: Vec<(&str, &str, &String, Vec<u8>, u16, &str)> = vec![
        (
            "owner of the org",
            "/api/workspaces",
            &owner,
            body("org-1"),
            200,
            "allowed",
        ),
        (
            "member without the permission",
            "/api/workspaces",
            &owner,
            body("org-2"),
            403,
            "missing_permission",
        ),
        (
            "explicit grant as member",
            "/api/workspaces",
            &granted,
            body("org-2"),
            200,
            "allowed",
        ),
        (
            "org that does not exist",
            "/api/workspaces",
            &owner,
            body("org-404"),
            403,
            "not_member",
        ),
        (
            "not JSON",
            "/api/workspaces",
            &owner,
            b"{".to_vec(),
            400,
            "invalid_json",
        ),
        (
            "no orgId",
            "/api/workspaces",
            &owner,
            b"{}".to_vec(),
            400,
            "missing_org",
        ),
        (
            "too large",
            "/api/workspaces",
            &owner,
            vec![b' '; 300],
            413,
            "body_too_large",
        ),
        (
            "v3: company from the claim",
            "/api/v3/workspaces",
            &owner,
            b"name=x".to_vec(),
            200,
            "allowed",
        ),
        (
            "v3: ABAC email_verified",
            "/api/v3/workspaces",
            &unverified,
            b"name=x".to_vec(),
            403,
            "condition_failed",
        ),
    ];
    for (name, path, auth, body, status, reason) in cases {
        let (got, _) = f.run("POST", path, &[("authorization", auth)], &body);
        assert_eq!((got.status, got.reason), (status, reason), "{name}");
    }
    let (got, _) = f.run(
        "PUT",
        "/api/strict",
        &[("authorization", &outsider), ("idempotency-key", "k")],
        b"",
    );
    assert_eq!(
        (got.status, got.reason),
        (403, "condition_failed"),
        "email domain condition"
    );
    let (got, _) = f.run("PUT", "/api/strict", &[("authorization", &owner)], b"");
    assert_eq!(
        (got.status, got.reason),
        (400, "bad_idempotency_key"),
        "required key"
    );
    // The organization from the path, decided at the headers: the body is not needed.
    for (path, status, reason) in [
        ("/api/orgs/org-1/settings", 200, "allowed"),
        ("/api/orgs/org-2/settings", 403, "missing_permission"),
        ("/api/orgs/org-404/settings", 403, "not_member"),
        ("/api/orgs/ORG-1/settings", 403, "not_member"),
    ] {
        let (got, p) = f.run("PUT", path, &[("authorization", &owner)], b"");
        assert_eq!((got.status, got.reason), (status, reason), "{path}");
        assert!(!p.needs_body || status != 200, "{path}");
    }
}

#[test]
fn keys_and_fingerprints_are_the_contracts() {
    let mut f = Fixture::new();
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    // Key syntax: one rule for both tiers (`edge_contract::idempotency::parse_key`).
    for (key, status) in [
        ("k", 200),
        ("\"k-quoted\"", 200),
        (" k-spaced ", 200),
        ("a\\b", 400),
        ("\"a\\b\"", 400),
        ("a,b", 400),
        ("a b", 400),
        ("\"\"", 400),
    ] {
        let h = [("authorization", auth.as_str()), ("idempotency-key", key)];
        let body = br#"{"orgId":"org-1"}"#;
        let (got, _) = f.run("POST", "/api/workspaces", &h, body);
        assert_eq!(got.status, status, "{key:?}: {got:?}");
    }
    // Fingerprint: the decoded payload, whatever its encoding or JSON spelling.
    let first: [(&str, &[u8]); 1] = [("application/json", br#"{"name":"A","description":"d"}"#)];
    let same: [(&str, &[u8]); 3] = [
        ("application/x-www-form-urlencoded", b"description=d&name=A"),
        ("multipart/form-data; boundary=x", b"--x\r\nContent-Disposition: form-data; name=name\r\n\r\nA\r\n--x\r\nContent-Disposition: form-data; name=description\r\n\r\nd\r\n--x--"),
        ("application/json; charset=utf-8", b"{ \"description\": \"d\", \"name\": \"A\" }"),
    ];
    let send = |f: &mut Fixture, (ct, body): (&str, &[u8])| {
        let h = [
            ("authorization", auth.as_str()),
            ("idempotency-key", "v3-key"),
            ("content-type", ct),
        ];
        f.run("POST", "/api/v3/workspaces", &h, body)
    };
    let (got, mut claim) = send(&mut f, first[0]);
    assert_eq!(got.status, 200);
    // In flight: every spelling is the same request (409), another payload is not (422).
    for spelling in same {
        assert_eq!(send(&mut f, spelling).0.status, 409, "{}", spelling.0);
    }
    let other: (&str, &[u8]) = ("application/x-www-form-urlencoded", b"name=A&description=e");
    assert_eq!(send(&mut f, other).0.reason, "idempotency_mismatch");
    f.finish(&mut claim, 201, &[], b"{\"id\":1}");
    for spelling in same {
        let (got, _) = send(&mut f, spelling);
        assert_eq!(
            (got.status, got.reason),
            (201, "idempotent_replay"),
            "{}",
            spelling.0
        );
    }
    assert_eq!(send(&mut f, other).0.status, 422);
}

#[test]
fn rate_limit_headers_and_unauthenticated_floods() {
    let mut f = Fixture::with(|c| {
        c["routes"][0]["rate_limit"]["requests"] = json!(3);
        c["limits"]["unauthenticated"]["requests"] = json!(5);
    });
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    for i in 0..3 {
        let (got, p) = f.run(
            "POST",
            "/api/workspaces",
            &[("authorization", &auth)],
            br#"{"orgId":"org-1"}"#,
        );
        assert_eq!(got.status, 200, "request {i}");
        let rl: Vec<_> = p
            .response_headers
            .iter()
            .map(|(n, v)| format!("{n}: {v}"))
            .collect();
        assert_eq!(
            rl,
            [
                r#"ratelimit-policy: "create";q=3;w=60"#.to_owned(),
                format!(r#"ratelimit: "create";r={};t={}"#, 2 - i, 20 * (i + 1))
            ]
        );
    }
    let (got, _) = f.run(
        "POST",
        "/api/workspaces",
        &[("authorization", &auth)],
        br#"{"orgId":"org-1"}"#,
    );
    assert_eq!((got.status, got.reason), (429, "rate_limited"));

    // Five failed authentications from one address, then even a new valid token from it is
    // refused before its signature is checked; a cached token still passes.
    for _ in 0..5 {
        let (got, _) = f.run(
            "GET",
            "/api/workspaces/w",
            &[("authorization", "Bearer x.y.z")],
            b"",
        );
        assert_eq!(got.status, 401);
    }
    let fresh = bearer(&f.token(Alg::EdDSA, json!({"sub": "u-new"})));
    let (got, _) = f.run(
        "GET",
        "/api/workspaces/w",
        &[("authorization", &fresh)],
        b"",
    );
    assert_eq!(
        (got.status, got.reason),
        (429, "unauthenticated_rate_limited")
    );
    let (got, _) = f.run("GET", "/api/workspaces/w", &[("authorization", &auth)], b"");
    assert_eq!(got.status, 200);
}

#[test]
fn idempotent_retries_at_the_edge() {
    let mut f = Fixture::new();
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let body = br#"{"orgId":"org-1","name":"a"}"#;
    let h = [
        ("authorization", auth.as_str()),
        ("idempotency-key", "\"k-1\""),
    ];
    let (got, mut first) = f.run("POST", "/api/workspaces", &h, body);
    assert_eq!(got.status, 200);
    assert!(first.holds_claim());
    let (got, _) = f.run("POST", "/api/workspaces", &h, body);
    assert_eq!((got.status, got.reason), (409, "idempotency_in_flight"));
    let (got, _) = f.run(
        "POST",
        "/api/workspaces",
        &h,
        br#"{"orgId":"org-1","name":"b"}"#,
    );
    assert_eq!((got.status, got.reason), (422, "idempotency_mismatch"));

    f.finish(
        &mut first,
        201,
        &[
            ("content-type".into(), "application/json".into()),
            ("date".into(), "x".into()),
        ],
        b"{\"id\":1}",
    );

    let headers: Vec<(&[u8], &[u8])> = h
        .iter()
        .map(|(n, v)| (n.as_bytes(), v.as_bytes()))
        .collect();
    let req = RequestHead {
        method: b"POST",
        path: b"/api/workspaces",
        headers: &headers,
        client_addr: None,
        has_body: true,
    };
    let mut random = || [10u8; 16];
    let mut host = Host {
        store: &f.store,
        now_ms: NOW as u64 * 1000,
        random: &mut random,
    };
    let mut p = Pending::default();
    assert!(matches!(
        f.worker.on_headers(&req, &mut host, true, &mut p),
        Step::Forward
    ));
    let Step::Reject(replay) = f.worker.on_body(body, &mut host, &mut p) else {
        panic!("expected a replay")
    };
    assert_eq!(replay.status, 201);
    assert_eq!(replay.body, b"{\"id\":1}");
    assert!(replay
        .headers
        .contains(&("idempotent-replayed".into(), "true".into())));
    assert!(replay
        .headers
        .contains(&("content-type".into(), "application/json".into())));
    assert!(!replay.headers.iter().any(|(n, _)| n == "date"));

    // A gateway failure releases the key: the retry is processed anew.
    let h2 = [("authorization", auth.as_str()), ("idempotency-key", "k-2")];
    let (_, mut p2) = f.run("POST", "/api/workspaces", &h2, body);
    f.finish(&mut p2, 503, &[], b"upstream connect error");
    let (got, retry) = f.run("POST", "/api/workspaces", &h2, body);
    assert_eq!(got.status, 200);
    assert!(retry.holds_claim(), "the retry holds the key anew");
}

#[test]
fn configs_the_filter_refuses_name_the_field() {
    let keys = Keys::new(1);
    let base = config(&keys);
    let cases: Vec<(Value, &str)> = vec![
        (json!({"bogus": 1}), "bogus"),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "colour": "red"}]}),
            "routes[0].colour",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "1 minute"}}]}),
            "routes[0].rate_limit.per",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["none"], "jwks": keys.jwks()}]}),
            "issuers[0].algorithms",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [{"kty": "OKP", "crv": "Ed25519", "x": "short"}]}}]}),
            "issuers[0].jwks",
        ),
        (
            json!({"identity": {"hmac_key": "too-short"}}),
            "identity.hmac_key",
        ),
        (json!({"identity": {}}), "identity"),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "no-slash"}]}),
            "routes[0].path",
        ),
        (
            json!({"routes": [{"name": "x", "method": "POST", "path": "/a", "permission": "p"}]}),
            "routes[0].permission",
        ),
        (
            json!({"limits": {"rate_limit_slots": 0}}),
            "limits.rate_limit_slots",
        ),
        (
            json!({"routes": [{"name": "x", "method": "PUT", "path": "/a/{id}", "permission": "p",
                              "org": {"path_param": "orgId"}}]}),
            "routes[0].org.path_param",
        ),
        (json!({"roles": {"owner": [""]}}), "roles.owner"),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]},
                                "token_sources": [{"header": "Authorization"}]}]}),
            "issuers[0].token_sources[0].header",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]},
                                "token_sources": [{"header": "x-t"}, {"header": "x-t", "cookie": "c"}]}]}),
            "issuers[0].token_sources[1]",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]},
                                "token_sources": [{"cookie": "a;b"}]}]}),
            "issuers[0].token_sources[0].cookie",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]},
                                "token_sources": [{"query": "access_token"}]}]}),
            "issuers[0].token_sources[0].query",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]}, "scope_claim": "scopes"}]}),
            "issuers[0].scope_claim",
        ),
        (
            json!({"issuers": [{"issuer": "i", "audiences": ["a"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]}, "typ": "application/"}]}),
            "issuers[0].typ",
        ),
        (
            json!({"routes": [{"name": "x", "method": "POST", "path": "/a", "permission": "workspace create",
                              "org": {"body_field": "orgId"}}]}),
            "routes[0].permission",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "60s",
                              "service": {"cluster": "", "domain": "d"}}}]}),
            "routes[0].rate_limit.service.cluster",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "60s",
                              "service": {"cluster": "rls", "domain": ""}}}]}),
            "routes[0].rate_limit.service.domain",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "60s",
                              "service": {"cluster": "rls", "domain": "d", "timeout": "0ms"}}}]}),
            "routes[0].rate_limit.service.timeout",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "60s",
                              "service": {"cluster": "rls", "domain": "d", "failure_mode": "maybe"}}}]}),
            "routes[0].rate_limit.service.failure_mode",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/a", "rate_limit": {"requests": 20, "per": "60s",
                              "service": {"cluster": "rls", "domain": "d", "port": 1}}}]}),
            "routes[0].rate_limit.service.port",
        ),
        (
            json!({"limits": {"unauthenticated": {"requests": 5, "per": "60s", "service": {"cluster": "rls", "domain": "d"}}}}),
            "limits.unauthenticated.service",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/healthz", "auth": "anonymous"}]}),
            "routes[0].auth",
        ),
        (
            json!({"routes": [{"name": "x", "method": "POST", "path": "/healthz", "auth": "none"}]}),
            "routes[0].auth",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/healthz", "auth": "none",
                              "rate_limit": {"requests": 1, "per": "1s"}}]}),
            "routes[0].auth",
        ),
        (
            json!({"routes": [{"name": "x", "method": "GET", "path": "/o/{orgId}", "auth": "none",
                              "permission": "p", "org": {"path_param": "orgId"}}]}),
            "routes[0].auth",
        ),
    ];
    for (patch, field) in cases {
        let mut cfg = base.clone();
        merge(&mut cfg, patch.clone());
        let err = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
        assert_eq!(err.field, field, "{patch} -> {err}");
        assert!(err.to_string().contains(&format!("`{field}`")), "{err}");
    }
}

#[test]
fn the_shipped_envoy_config_is_valid() {
    let yaml = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../envoy/envoy.yaml"))
        .unwrap();
    let json = shipped_configuration(&yaml);
    let policy = Policy::from_json(json.as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    let create = policy.routes.find("POST", "/api/workspaces").unwrap();
    assert_eq!(create.permission.as_deref(), Some("workspace:create"));
    assert_eq!(
        create.rate_limit.map(|b| (b.capacity, b.window_ms)),
        Some((20, 60_000))
    );
    assert!(policy.routes.find("POST", "/api/v3/workspaces").is_some());
    assert!(policy.routes.find("GET", "/api/workspaces/w-1").is_some());
    let health = policy.routes.find("GET", "/healthz").unwrap();
    assert_eq!(health.auth, edge_policy::config::RouteAuth::Anonymous);
    assert!(
        policy
            .routes
            .iter()
            .filter(|r| r.auth != edge_policy::config::RouteAuth::Token)
            .count()
            == 1
    );
}

/// The JSON inside the wasm filter's `configuration.value: |` block.
fn shipped_configuration(yaml: &str) -> String {
    let mut lines = yaml
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("configuration:"));
    let _ = lines.by_ref().find(|l| l.trim() == "value: |");
    let mut out = String::new();
    let mut indent = None;
    for line in lines {
        let this = line.len() - line.trim_start().len();
        let want = *indent.get_or_insert(this);
        if !line.trim().is_empty() && this < want {
            break;
        }
        out.push_str(line.get(want.min(line.len())..).unwrap_or(""));
        out.push('\n');
    }
    out
}

#[test]
fn remote_keys_make_requests_wait_then_decide() {
    let keys = Keys::new(1);
    let rotated = Keys::new(2);
    let mut f = Fixture::with(|c| {
        c["issuers"][1] = json!({"issuer": "remote", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
            "remote_jwks": {"cluster": "idp", "authority": "idp", "path": "/jwks"}});
        c["unmatched"] = json!("reject");
    });
    let claims = |sub: &str| {
        let mut c = testkit::claims("remote", "workspace-api", sub, NOW);
        c["iss"] = json!("remote");
        c
    };
    let run = |f: &mut Fixture, token: &str, may_wait: bool| {
        let auth = bearer(token);
        let headers: Vec<(&[u8], &[u8])> = vec![(b"authorization", auth.as_bytes())];
        let req = RequestHead {
            method: b"GET",
            path: b"/api/workspaces/w",
            headers: &headers,
            client_addr: None,
            has_body: false,
        };
        let mut random = || [1u8; 16];
        let mut host = Host {
            store: &f.store,
            now_ms: NOW as u64 * 1000,
            random: &mut random,
        };
        match f
            .worker
            .on_headers(&req, &mut host, may_wait, &mut Pending::default())
        {
            Step::Forward => 200,
            Step::Reject(r) => r.status,
            Step::WaitForKeys { issuer } => {
                assert_eq!(issuer, 1);
                0
            }
            Step::AskRateLimit(_) => panic!("no route here has a rate limit service"),
        }
    };
    let t = keys.sign(Alg::EdDSA, Some("ed"), &claims("u-1"));
    assert_eq!(run(&mut f, &t, true), 0, "keys not loaded: wait");
    assert_eq!(
        run(&mut f, &t, false),
        503,
        "still not loaded after the wait: 503"
    );
    let jwks = edge_policy::jwks::JwkSet::from_value(&json!({"keys": [keys.jwk("ed")]})).unwrap();
    f.worker.set_remote_keys(1, jwks);
    assert_eq!(run(&mut f, &t, true), 200);
    let new = rotated.sign(Alg::EdDSA, Some("ed-2"), &claims("u-2"));
    assert_eq!(
        run(&mut f, &new, true),
        0,
        "unknown kid: wait for a refresh"
    );
    assert_eq!(
        run(&mut f, &new, false),
        401,
        "still unknown after the refresh"
    );
    let mut jwk = rotated.jwk("ed");
    jwk["kid"] = json!("ed-2");
    f.worker.set_remote_keys(
        1,
        edge_policy::jwks::JwkSet::from_value(&json!({"keys": [jwk]})).unwrap(),
    );
    assert_eq!(run(&mut f, &new, true), 200, "rotated in without a restart");
    let (got, _) = f.run("GET", "/elsewhere", &[], b"");
    assert_eq!(
        (got.status, got.reason),
        (404, "no_route"),
        "unmatched: reject"
    );
}

/// Bytes a client can send that are not UTF-8 (or not text): an interpreted header gets its
/// documented problem, any other header passes untouched.
#[test]
fn header_bytes_are_decided_as_bytes() {
    let mut f = Fixture::new();
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let body = br#"{"orgId":"org-1","name":"a"}"#;
    let cases: Vec<(&[u8], &[u8], u16, &str)> = vec![
        (b"x-note", b"caf\xe9", 200, "allowed"),
        (b"x-note", b"\xff\xfe\x80", 200, "allowed"),
        (b"user-agent", b"\xc3\x28", 200, "allowed"),
        (b"x-request-id", b"caf\xe9", 400, "bad_request_id"),
        (b"idempotency-key", b"k\xe9", 400, "bad_idempotency_key"),
        (b"content-type", b"application/json\xff", 400, "bad_header"),
        (b"accept-language", b"fr-\xe9", 400, "bad_header"),
        (b"accept-language", b"fr\x01", 400, "bad_header"),
    ];
    for (name, value, status, reason) in cases {
        let headers: Vec<(&[u8], &[u8])> = vec![(b"authorization", auth.as_bytes()), (name, value)];
        let (got, _) = f.run_raw(b"POST", b"/api/workspaces", &headers, body);
        assert_eq!(
            (got.status, got.reason),
            (status, reason),
            "{}: {:?}",
            String::from_utf8_lossy(name),
            value
        );
    }
    let (got, _) = f.run_raw(
        b"GET",
        b"/api/workspaces/w-1",
        &[(b"authorization", b"Bearer \xe9\xe9")],
        b"",
    );
    assert_eq!((got.status, got.reason), (401, "bad_authorization"));
    for (method, path) in [
        (b"GET".as_slice(), b"/api/workspaces/caf\xe9".as_slice()),
        (b"GET", b"/api/workspaces/a b"),
        (b"G\xc9T", b"/api/workspaces/w-1"),
        (b"", b"/api/workspaces/w-1"),
        (b"GET", b""),
    ] {
        let (got, _) = f.run_raw(method, path, &[(b"authorization", auth.as_bytes())], b"");
        assert_eq!((got.status, got.reason), (400, "bad_request_target"));
    }
}

#[test]
fn unmatched_requests_are_refused_with_the_right_status() {
    let mut f = Fixture::with(|c| c["unmatched"] = json!("reject"));
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let h = [("authorization", auth.as_str())];
    let cases = [
        ("DELETE", "/api/workspaces/w-1", 405, "method_not_allowed"),
        ("post", "/api/workspaces", 405, "method_not_allowed"),
        ("QUERY", "/api/workspaces", 405, "method_not_allowed"),
        ("GET", "/api/elsewhere", 404, "no_route"),
        ("GET", "/api/workspaces/w-1", 200, "allowed"),
    ];
    for (method, path, status, reason) in cases {
        let (got, _) = f.run(method, path, &h, b"");
        assert_eq!(
            (got.status, got.reason),
            (status, reason),
            "{method} {path}"
        );
    }
}

#[test]
fn a_route_without_a_token_forwards_no_identity() {
    let mut f = Fixture::with(|c| {
        c["unmatched"] = json!("reject");
        c["routes"]
            .as_array_mut()
            .unwrap()
            .push(json!({"name": "health", "method": "GET", "path": "/healthz", "auth": "none"}));
    });
    let forged = [
        ("authorization", "Bearer not-a-token"),
        ("x-edge-identity", "forged"),
        ("x-edge-signature", "forged"),
    ];
    for headers in [&[][..], &forged[..]] {
        let (got, p) = f.run("GET", "/healthz", headers, b"");
        assert_eq!((got.status, got.reason), (200, "allowed"));
        assert!(p.forward_state.is_empty(), "no identity is signed");
        assert!(!p.needs_body);
        // What the client sent is dropped (nothing to drop when it sent none).
        for (name, _) in headers {
            assert!(p.remove_headers.iter().any(|h| h == name), "{name} kept");
        }
        assert!(p.set_headers.iter().any(|(n, _)| n == "x-request-id"));
    }
    // Other methods on that path, and every other route, still need what they needed.
    let (got, _) = f.run("POST", "/healthz", &[], b"{}");
    assert_eq!((got.status, got.reason), (405, "method_not_allowed"));
    let (got, _) = f.run("GET", "/api/workspaces/w-1", &[], b"");
    assert_eq!(got.status, 401);
    // A malformed request ID and an oversized body are refused there too.
    let (got, _) = f.run("GET", "/healthz", &[("x-request-id", "a b")], b"");
    assert_eq!(got.status, 400);
    let (got, p) = f.run("GET", "/healthz", &[], &[b'x'; 257]);
    assert_eq!((got.status, got.reason), (413, "body_too_large"));
    assert!(p.forward_state.is_empty());
}

#[test]
fn tokens_with_critical_extensions_are_refused() {
    let mut f = Fixture::new();
    let claims = testkit::claims("test-iss", "workspace-api", "u-alice", NOW);
    let header = json!({"alg": "HS256", "kid": "hmac", "crit": ["exp-ext"], "exp-ext": 1});
    let token = testkit::forge_hs256_with_header(f.keys.hmac_secret(), &header, &claims);
    // The same token without `crit` passes: only the extension is refused.
    let plain = json!({"alg": "HS256", "kid": "hmac"});
    let ok = testkit::forge_hs256_with_header(f.keys.hmac_secret(), &plain, &claims);
    let (got, _) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", &bearer(&ok))],
        b"",
    );
    assert_eq!(got.status, 200);
    let (got, _) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", &bearer(&token))],
        b"",
    );
    assert_eq!((got.status, got.reason), (401, "crit_not_understood"));
}

/// The backend keeps only its successes for replay, so the edge does too: a refusal (the
/// backend did not consume the key), a server error and a passing state (the backend's 409
/// while another replica holds the key, its 429) release the edge's claim.
#[test]
fn a_backend_answer_it_does_not_keep_releases_the_key() {
    let mut f = Fixture::new();
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let body = br#"{"orgId":"org-1","name":"a"}"#;
    for status in [400, 403, 404, 409, 415, 422, 429, 500, 503] {
        let key = format!("k-{status}");
        let h = [("authorization", auth.as_str()), ("idempotency-key", &key)];
        let (_, mut p) = f.run("POST", "/api/workspaces", &h, body);
        f.finish(&mut p, status, &[], b"{}");
        let (got, retry) = f.run("POST", "/api/workspaces", &h, body);
        assert_eq!(got.status, 200, "after a {status}");
        assert!(
            retry.holds_claim(),
            "after a {status} the retry is processed anew"
        );
    }
}

/// The attack that once got through: a user spends their creates, then floods of bad
/// tokens from many addresses, and other users, try to push the user's bucket out of
/// shared state. One slot per table here, so every key collides with every other.
#[test]
fn a_user_cannot_reset_their_own_rate_limit() {
    let mut f = Fixture::with(|c| {
        c["routes"][0]["rate_limit"] = json!({"requests": 20, "per": "60s"});
        c["limits"]["unauthenticated"] = json!({"requests": 6, "per": "60s"});
        c["limits"]["rate_limit_slots"] = json!(1);
        c["limits"]["unauthenticated_slots"] = json!(1);
    });
    let alice = bearer(&f.token(Alg::EdDSA, json!({})));
    let others: Vec<String> = (0..8)
        .map(|i| bearer(&f.token(Alg::EdDSA, json!({"sub": format!("u-{i}")}))))
        .collect();
    let create = |f: &mut Fixture, from: &str, auth: &str| {
        f.run_as(
            from,
            true,
            "POST",
            "/api/workspaces",
            &[("authorization", auth)],
            br#"{"orgId":"org-1"}"#,
        )
    };
    // The other users are signed in already (their tokens cached).
    for auth in &others {
        let (got, _) = f.run("GET", "/api/workspaces/w", &[("authorization", auth)], b"");
        assert_eq!(got.status, 200);
    }
    for i in 0..20 {
        assert_eq!(create(&mut f, CLIENT, &alice).0.status, 200, "create {i}");
    }
    let (got, p) = create(&mut f, CLIENT, &alice);
    assert_eq!((got.status, got.reason), (429, "rate_limited"));
    assert!(p
        .response_headers
        .contains(&("ratelimit".into(), r#""create";r=0;t=60"#.into())));

    // 36 bad tokens from six addresses: refused, never forwarded, never a 5xx.
    for i in 0..36 {
        let from = format!("198.51.100.{}", i % 6 + 1);
        let (got, _) = create(&mut f, &from, &format!("Bearer bad.token.{i}"));
        assert!(
            [
                (401, "token_malformed"),
                (429, "unauthenticated_rate_limited")
            ]
            .contains(&(got.status, got.reason)),
            "{from}: {got:?}"
        );
    }
    // Other users: three find a free entry; the rest share the most spent bucket of the
    // slot (alice's) instead of taking it over.
    let statuses: Vec<u16> = others
        .iter()
        .map(|auth| create(&mut f, CLIENT, auth).0.status)
        .collect();
    assert_eq!(statuses, [200, 200, 200, 429, 429, 429, 429, 429]);

    let (got, p) = create(&mut f, CLIENT, &alice);
    assert_eq!(
        (got.status, got.reason, got.retry_after.as_deref()),
        (429, "rate_limited", Some("3"))
    );
    assert!(p
        .response_headers
        .contains(&("ratelimit".into(), r#""create";r=0;t=60"#.into())));
    // The flip side, with one slot of addresses: a slot full of spent allowances is
    // shared by a new address too, so its first unverified token is refused.
    let newcomer = bearer(&f.token(Alg::EdDSA, json!({"sub": "u-new"})));
    let (got, _) = create(&mut f, "192.0.2.99", &newcomer);
    assert_eq!(
        (got.status, got.reason),
        (429, "unauthenticated_rate_limited")
    );
}

/// Bad tokens from one address spend only that address's allowance; another address,
/// and every user's bucket, are untouched.
#[test]
fn failed_authentication_spends_the_address_allowance_only() {
    let mut f = Fixture::with(|c| c["limits"]["unauthenticated"]["requests"] = json!(3));
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let get = |f: &mut Fixture, from: &str, auth: &str| {
        let (got, _) = f.run_as(
            from,
            true,
            "GET",
            "/api/workspaces/w",
            &[("authorization", auth)],
            b"",
        );
        (got.status, got.reason)
    };
    let rows: Vec<(&str, &str, (u16, &str))> = vec![
        ("203.0.113.1", "Bearer x.y.z", (401, "token_malformed")),
        ("203.0.113.1", "Bearer x.y.z", (401, "token_malformed")),
        ("203.0.113.1", "Basic eA==", (401, "bad_authorization")),
        (
            "203.0.113.1",
            "Bearer x.y.z",
            (429, "unauthenticated_rate_limited"),
        ),
        ("203.0.113.1", &auth, (429, "unauthenticated_rate_limited")),
        ("203.0.113.2", &auth, (200, "allowed")),
        ("203.0.113.1", &auth, (200, "allowed")),
    ];
    for (i, (from, token, want)) in rows.into_iter().enumerate() {
        assert_eq!(get(&mut f, from, token), want, "row {i} from {from}");
    }
}

fn remote_issuer_fixture(allowance: u32) -> Fixture {
    Fixture::with(|c| {
        c["issuers"][1] = json!({"issuer": "remote", "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
            "remote_jwks": {"cluster": "idp", "authority": "idp", "path": "/jwks"}});
        c["limits"]["unauthenticated"] = json!({"requests": allowance, "per": "60s"});
        c["limits"]["max_waiting_for_keys"] = json!(16);
    })
}

/// Tokens naming an issuer whose keys are still loading cannot be verified, so holding
/// them costs the worker and proves nothing: each held request spends a unit of its
/// address's allowance, and the second run after the wait does not spend it again.
#[test]
fn requests_held_for_keys_spend_the_address_allowance() {
    let mut f = remote_issuer_fixture(3);
    assert_eq!(f.worker.policy.limits.max_waiting_for_keys, 16);
    let mut claims = testkit::claims("remote", "workspace-api", "u-1", NOW);
    claims["iss"] = json!("remote");
    let held = bearer(&f.keys.sign(Alg::EdDSA, Some("ed"), &claims));
    let get = |f: &mut Fixture, from: &str, may_wait: bool| {
        let (got, _) = f.run_as(
            from,
            may_wait,
            "GET",
            "/api/workspaces/w",
            &[("authorization", &held)],
            b"",
        );
        (got.status, got.reason)
    };
    let wait = (0, "wait");
    let limited = (429, "unauthenticated_rate_limited");
    let unavailable = (503, "keys_not_loaded");
    let rows: Vec<(&str, bool, (u16, &str))> = vec![
        ("203.0.113.1", true, wait),
        ("203.0.113.1", false, unavailable),
        ("203.0.113.1", true, wait),
        ("203.0.113.1", true, wait),
        ("203.0.113.1", true, limited),
        ("203.0.113.1", false, limited),
        ("203.0.113.2", true, wait),
        ("203.0.113.2", false, unavailable),
        ("203.0.113.2", false, unavailable),
        ("203.0.113.2", true, wait),
        ("203.0.113.2", true, wait),
        ("203.0.113.2", true, limited),
    ];
    for (i, (from, may_wait, want)) in rows.into_iter().enumerate() {
        assert_eq!(get(&mut f, from, may_wait), want, "row {i} from {from}");
    }
}

/// When shared state cannot be read or written, nothing that depends on it passes: 503
/// with Retry-After and the `store_error` reason the adapter counts.
#[test]
fn store_failures_fail_closed() {
    let mut f = Fixture::new();
    let cached = bearer(&f.token(Alg::EdDSA, json!({})));
    let fresh = bearer(&f.token(Alg::EdDSA, json!({"sub": "u-fresh"})));
    assert_eq!(
        f.run(
            "GET",
            "/api/workspaces/w",
            &[("authorization", &cached)],
            b""
        )
        .0
        .status,
        200
    );
    f.store.down.store(true, Ordering::SeqCst);
    let store_error = (503, "store_error", Some("1"));
    let rows: Vec<(&str, &str, &str, &[u8], (u16, &str, Option<&str>))> = vec![
        ("GET", "/api/workspaces/w", "", b"", store_error),
        ("GET", "/api/workspaces/w", "Bearer x.y.z", b"", store_error),
        ("GET", "/api/workspaces/w", &fresh, b"", store_error),
        (
            "POST",
            "/api/workspaces",
            &cached,
            br#"{"orgId":"org-1"}"#,
            store_error,
        ),
        // A cached token on a route without a limit needs no shared state.
        (
            "GET",
            "/api/workspaces/w",
            &cached,
            b"",
            (200, "allowed", None),
        ),
    ];
    for (method, path, auth, body, want) in rows {
        let headers: Vec<(&str, &str)> = if auth.is_empty() {
            vec![]
        } else {
            vec![("authorization", auth)]
        };
        let (got, _) = f.run(method, path, &headers, body);
        assert_eq!(
            (got.status, got.reason, got.retry_after.as_deref()),
            want,
            "{method} {path} {}",
            auth.get(..12).unwrap_or(auth)
        );
    }
    let mut f = remote_issuer_fixture(3);
    let mut claims = testkit::claims("remote", "workspace-api", "u-1", NOW);
    claims["iss"] = json!("remote");
    let held = bearer(&f.keys.sign(Alg::EdDSA, Some("ed"), &claims));
    f.store.down.store(true, Ordering::SeqCst);
    let (got, _) = f.run("GET", "/api/workspaces/w", &[("authorization", &held)], b"");
    assert_eq!(
        (got.status, got.reason),
        (503, "store_error"),
        "held for keys"
    );
}

/// A worker that has not agreed on the shared-state key refuses what needs shared
/// state; workers that did agree share every bucket, whatever key each drew.
#[test]
fn workers_share_one_slot_key() {
    let mut f = Fixture::with(|c| c["routes"][0]["rate_limit"]["requests"] = json!(2));
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let hmac = b"0123456789abcdef0123456789abcdef".to_vec();
    let create = |f: &mut Fixture| {
        let (got, _) = f.run(
            "POST",
            "/api/workspaces",
            &[("authorization", &auth)],
            br#"{"orgId":"org-1"}"#,
        );
        (got.status, got.reason)
    };
    assert_eq!(create(&mut f), (200, "allowed"));
    let mut second = Worker::new(Arc::clone(&f.worker.policy), hmac.clone());
    let first = std::mem::replace(&mut f.worker, Worker::new(Arc::clone(&second.policy), hmac));
    assert_eq!(create(&mut f), (503, "store_error"), "not initialized");
    second.init_shared(&f.store, [0xbb; 16]).unwrap();
    f.worker = second;
    assert_eq!(create(&mut f), (200, "allowed"), "the second of two");
    f.worker = first;
    assert_eq!(
        create(&mut f),
        (429, "rate_limited"),
        "spent on the other worker"
    );
}

#[test]
fn limits_for_shared_state_and_waiting_requests() {
    let keys = Keys::new(1);
    let policy = Policy::from_json(config(&keys).to_string().as_bytes()).unwrap();
    assert_eq!(
        (
            policy.limits.rate_limit_slots,
            policy.limits.unauthenticated_slots,
            policy.limits.max_waiting_for_keys
        ),
        (4096, 4096, 64),
        "defaults"
    );
    let cases: Vec<(Value, Result<(u32, usize), &str>)> = vec![
        (
            json!({"unauthenticated_slots": 16, "max_waiting_for_keys": 1}),
            Ok((16, 1)),
        ),
        (json!({"max_waiting_for_keys": 10_000}), Ok((4096, 10_000))),
        (
            json!({"unauthenticated_slots": 0}),
            Err("limits.unauthenticated_slots"),
        ),
        (
            json!({"max_waiting_for_keys": 0}),
            Err("limits.max_waiting_for_keys"),
        ),
        (
            json!({"max_waiting_for_keys": 10_001}),
            Err("limits.max_waiting_for_keys"),
        ),
        (
            json!({"max_waiting_for_keys": -1}),
            Err("limits.max_waiting_for_keys"),
        ),
    ];
    for (limits, want) in cases {
        let mut cfg = config(&keys);
        merge(&mut cfg["limits"], limits.clone());
        let got = Policy::from_json(cfg.to_string().as_bytes())
            .map(|p| {
                (
                    p.limits.unauthenticated_slots,
                    p.limits.max_waiting_for_keys,
                )
            })
            .map_err(|e| e.field);
        assert_eq!(got, want.map_err(str::to_owned), "{limits}");
    }
}

/// The same `sub` from two trusted issuers is two users: separate idempotency keys and
/// rate-limit buckets.
#[test]
fn the_principal_is_issuer_and_subject() {
    let mut f = Fixture::new();
    let body = br#"{"orgId":"org-1","name":"a"}"#;
    let from = |iss: &str| {
        let mut c = testkit::claims(iss, "workspace-api", "u-alice", NOW);
        c["orgs"] = json!({"org-1": ["owner"]});
        bearer(&f.keys.sign(Alg::EdDSA, Some("ed"), &c))
    };
    let (a, b) = (from("test-iss"), from("ed-only"));
    let key = ("idempotency-key", "shared-key");
    let (got, first) = f.run(
        "POST",
        "/api/workspaces",
        &[("authorization", &a), key],
        body,
    );
    assert_eq!(got.status, 200);
    assert!(first.holds_claim());
    // Same key, same sub, other issuer: not the first request's retry (no 409, no replay).
    let (got, second) = f.run(
        "POST",
        "/api/workspaces",
        &[("authorization", &b), key],
        body,
    );
    assert_eq!((got.status, got.reason), (200, "allowed"));
    assert!(second.holds_claim());
    // The same issuer again is the retry of the first.
    let (got, _) = f.run(
        "POST",
        "/api/workspaces",
        &[("authorization", &a), key],
        body,
    );
    assert_eq!((got.status, got.reason), (409, "idempotency_in_flight"));
}

/// An issuer whose permissions are narrowed to the token's OAuth scopes: a scope the
/// token lacks is a 403 that names it (RFC 6750 `insufficient_scope`); a token without
/// scopes may do nothing; what the roles do not give, no scope adds.
#[test]
fn scopes_narrow_what_roles_allow() {
    for claim in ["scope", "scp"] {
        let mut f = Fixture::with(|cfg| {
            cfg["issuers"][1]["scope_claim"] = json!(claim);
        });
        let token = |f: &Fixture, scopes: Value| {
            let mut claims = testkit::claims("ed-only", "workspace-api", "u-alice", NOW);
            if !scopes.is_null() {
                claims[claim] = scopes;
            }
            bearer(&f.keys.sign(Alg::EdDSA, Some("ed"), &claims))
        };
        let body = |org: &str| format!(r#"{{"orgId":"{org}","name":"n"}}"#).into_bytes();
        let create = |f: &mut Fixture, t: &str, org: &str| {
            f.run(
                "POST",
                "/api/workspaces",
                &[("authorization", t)],
                &body(org),
            )
            .0
        };
        let scoped = token(&f, json!("openid workspace:create org:settings:write"));
        let listed = token(&f, json!(["workspace:create", "profile"]));
        let narrow = token(&f, json!("workspace:read"));
        let none = token(&f, Value::Null);
        assert_eq!(create(&mut f, &scoped, "org-1").status, 200, "{claim}");
        assert_eq!(create(&mut f, &listed, "org-1").status, 200, "{claim}");
        for t in [&narrow, &none] {
            let got = create(&mut f, t, "org-1");
            assert_eq!((got.status, got.reason), (403, "insufficient_scope"));
            let challenge = f
                .refused_with
                .iter()
                .find(|(n, _)| n == "www-authenticate")
                .map(|(_, v)| v.as_str());
            assert_eq!(
                challenge,
                Some(
                    r#"Bearer realm="workspace-api", error="insufficient_scope", scope="workspace:create""#
                )
            );
        }
        // A scope never adds what the roles do not give (a member of org-2 cannot create).
        let got = create(&mut f, &scoped, "org-2");
        assert_eq!((got.status, got.reason), (403, "missing_permission"));
        assert!(!f.refused_with.iter().any(|(n, _)| n == "www-authenticate"));
        // Not a member: the same 403 as ever, scopes or not.
        let got = create(&mut f, &scoped, "org-9");
        assert_eq!((got.status, got.reason), (403, "not_member"));
        // Another issuer's tokens are not narrowed.
        let owner = bearer(&f.token(Alg::EdDSA, json!({})));
        assert_eq!(create(&mut f, &owner, "org-1").status, 200);
        // A scope claim of the wrong shape is a malformed token.
        let bad = token(&f, json!({"workspace:create": true}));
        let got = create(&mut f, &bad, "org-1");
        assert_eq!((got.status, got.reason), (401, "claims_malformed"));
    }
}

/// An issuer that requires RFC 9068 access tokens refuses any other `typ` (an ID token
/// is not an access token), comparing media types as RFC 7515 says.
#[test]
fn an_issuer_may_require_access_tokens() {
    let mut f = Fixture::with(|cfg| {
        cfg["issuers"][0]["typ"] = json!("at+jwt");
    });
    let claims = testkit::claims("test-iss", "workspace-api", "u-alice", NOW);
    for (typ, status, reason) in [
        (Some("at+jwt"), 200, "allowed"),
        (Some("application/AT+JWT"), 200, "allowed"),
        (Some("JWT"), 401, "wrong_token_type"),
        (None, 401, "wrong_token_type"),
    ] {
        let mut header = json!({"alg": "HS256", "kid": "hmac"});
        if let Some(typ) = typ {
            header["typ"] = json!(typ);
        }
        let token = testkit::forge_hs256_with_header(f.keys.hmac_secret(), &header, &claims);
        let (got, _) = f.run(
            "GET",
            "/api/workspaces/w-1",
            &[("authorization", &bearer(&token))],
            b"",
        );
        assert_eq!((got.status, got.reason), (status, reason), "typ {typ:?}");
    }
}

/// Tokens from a configured cookie or header, for the issuers that name them: found when
/// no `Authorization` header is sent, refused for an issuer that does not accept them, and
/// never forwarded.
#[test]
fn tokens_from_configured_cookies_and_headers() {
    let mut f = Fixture::with(|cfg| {
        cfg["issuers"][1]["token_sources"] =
            json!([{"cookie": "at"}, {"header": "X-Access-Token", "prefix": "Token "}]);
    });
    let sign = |f: &Fixture, iss: &str, alg: Alg, kid: &str| {
        let claims = testkit::claims(iss, "workspace-api", "u-alice", NOW);
        f.keys.sign(alg, Some(kid), &claims)
    };
    let ed = sign(&f, "ed-only", Alg::EdDSA, "ed");
    let other = sign(&f, "test-iss", Alg::HS256, "hmac");
    let get = |f: &mut Fixture, headers: &[(&str, &str)]| {
        f.run("GET", "/api/workspaces/w-1", headers, b"")
    };

    let cookie = format!("theme=dark; at={ed}; lang=en");
    let (got, pending) = get(&mut f, &[("cookie", &cookie)]);
    assert_eq!(got.status, 200, "{got:?}");
    // The token cookie is cut from what is forwarded.
    assert!(pending.remove_headers.contains(&"cookie".to_owned()));
    assert!(pending
        .set_headers
        .contains(&("cookie".to_owned(), "theme=dark; lang=en".to_owned())));
    let (got, pending) = get(&mut f, &[("cookie", &format!("at={ed}"))]);
    assert_eq!(got.status, 200);
    assert!(pending.remove_headers.contains(&"cookie".to_owned()));
    assert!(!pending.set_headers.iter().any(|(n, _)| n == "cookie"));

    let token_header = format!("token {ed}");
    let (got, pending) = get(&mut f, &[("X-Access-Token", &token_header)]);
    assert_eq!(got.status, 200);
    // The configured token header is dropped too.
    assert!(pending
        .remove_headers
        .contains(&"x-access-token".to_owned()));
    let cases: Vec<(Vec<(&str, String)>, u16, &str)> = vec![
        (
            vec![("x-access-token", ed.clone())],
            401,
            "bad_authorization",
        ),
        (
            vec![("cookie", format!("at={ed}; at={ed}"))],
            401,
            "bad_authorization",
        ),
        (vec![("cookie", "theme=dark".into())], 401, "missing_token"),
        (
            vec![("cookie", "at=not a token".into())],
            401,
            "token_malformed",
        ),
        // Another issuer's token in the cookie: that issuer accepts Authorization only.
        (
            vec![("cookie", format!("at={other}"))],
            401,
            "token_source_not_allowed",
        ),
        // Authorization comes first.
        (
            vec![
                ("authorization", bearer(&other)),
                ("cookie", "at=garbage".into()),
            ],
            200,
            "allowed",
        ),
    ];
    for (headers, status, reason) in cases {
        let h: Vec<(&str, &str)> = headers.iter().map(|(n, v)| (*n, v.as_str())).collect();
        let (got, _) = get(&mut f, &h);
        assert_eq!((got.status, got.reason), (status, reason), "{headers:?}");
    }
    // Once cached (verified through Authorization above), still not from the cookie.
    let (got, _) = get(&mut f, &[("cookie", &format!("at={other}"))]);
    assert_eq!(got.reason, "token_source_not_allowed");
}

/// Checks in dry-run decide, record what they would have refused, and let the request go;
/// the checks still enforced are applied as ever.
#[test]
fn checks_in_dry_run_are_recorded_not_applied() {
    let mut f = Fixture::with(|cfg| {
        cfg["routes"][0]["enforce"] = json!(false);
        cfg["routes"][0]["rate_limit"] = json!({"requests": 1, "per": "60s"});
        cfg["routes"][1]["enforce"] = json!({"conditions": false});
    });
    let owner = bearer(&f.token(Alg::EdDSA, json!({})));
    let body = |org: &str| format!(r#"{{"orgId":"{org}","name":"n"}}"#).into_bytes();
    let create = |f: &mut Fixture, org: &str| {
        f.run(
            "POST",
            "/api/workspaces",
            &[
                ("authorization", &owner),
                ("content-type", "application/json"),
            ],
            &body(org),
        )
    };
    let (got, pending) = create(&mut f, "org-1");
    assert_eq!(got.status, 200);
    assert!(pending.dry_run.is_empty(), "{:?}", pending.dry_run);
    // A member without the permission, over the limit: both only recorded, and no
    // RateLimit headers for a limit that is not in force.
    let (got, pending) = create(&mut f, "org-2");
    assert_eq!(got.status, 200);
    assert_eq!(pending.dry_run, ["rate_limited", "missing_permission"]);
    assert!(!pending
        .response_headers
        .iter()
        .any(|(n, _)| n.starts_with("ratelimit")));
    // Per check: the conditions are in dry-run, the permission is enforced.
    let v3 = |f: &mut Fixture, token: &str| {
        f.run(
            "POST",
            "/api/v3/workspaces",
            &[
                ("authorization", token),
                ("content-type", "application/json"),
            ],
            br#"{"name":"n"}"#,
        )
    };
    let unverified = bearer(&f.token(Alg::EdDSA, json!({"email_verified": false})));
    let (got, pending) = v3(&mut f, &unverified);
    assert_eq!(got.status, 200);
    assert_eq!(pending.dry_run, ["condition_failed"]);
    let outsider = bearer(&f.token(Alg::EdDSA, json!({"company": "org-9"})));
    let (got, _) = v3(&mut f, &outsider);
    assert_eq!((got.status, got.reason), (403, "not_member"));
    // A misspelt check is a configuration error naming the field.
    let mut cfg = config(&f.keys);
    cfg["routes"][0]["enforce"] = json!({"permisson": false});
    let err = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field, "routes[0].enforce", "{err}");
}

/// A route may accept only some issuers, and require audiences (any or all of a list).
#[test]
fn routes_name_the_issuers_and_audiences_they_accept() {
    let mut f = Fixture::with(|cfg| {
        cfg["routes"][3]["issuers"] = json!(["ed-only"]);
        cfg["routes"][3]["audiences"] = json!({"any_of": ["workspace-api"], "all_of": ["reader"]});
    });
    let get = |f: &mut Fixture, token: &str| {
        f.run(
            "GET",
            "/api/workspaces/w-1",
            &[("authorization", &bearer(token))],
            b"",
        )
        .0
    };
    let token = |f: &Fixture, iss: &str, alg: Alg, kid: &str, aud: Value| {
        let mut claims = testkit::claims(iss, "workspace-api", "u-alice", NOW);
        claims["aud"] = aud;
        f.keys.sign(alg, Some(kid), &claims)
    };
    let ok = token(
        &f,
        "ed-only",
        Alg::EdDSA,
        "ed",
        json!(["workspace-api", "reader"]),
    );
    assert_eq!(get(&mut f, &ok).status, 200);
    let cases = [
        (
            token(
                &f,
                "test-iss",
                Alg::HS256,
                "hmac",
                json!(["workspace-api", "reader"]),
            ),
            "issuer_not_accepted",
        ),
        (
            token(&f, "ed-only", Alg::EdDSA, "ed", json!("workspace-api")),
            "audience_not_accepted",
        ),
    ];
    for (t, reason) in cases {
        let got = get(&mut f, &t);
        assert_eq!((got.status, got.reason), (401, reason));
    }
    // Other routes take every issuer.
    let other = token(&f, "test-iss", Alg::HS256, "hmac", json!("workspace-api"));
    let (got, _) = f.run(
        "PUT",
        "/api/strict",
        &[("authorization", &bearer(&other)), ("idempotency-key", "k")],
        b"",
    );
    assert_ne!(got.reason, "issuer_not_accepted");
    // An issuer the configuration does not know is an error naming the field.
    let mut cfg = config(&f.keys);
    cfg["routes"][3]["issuers"] = json!(["nobody"]);
    let err = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field, "routes[3].issuers", "{err}");
}

/// The create route's limit through a rate limit service failing `mode`.
fn with_service(mode: &str) -> Fixture {
    Fixture::with(|c| {
        c["routes"][0]["rate_limit"]["service"] = json!({
            "cluster": "ratelimit", "domain": "workspace-api", "timeout": "300ms", "failure_mode": mode
        });
    })
}

fn rls_answer(code: i32, remaining: u32, reset_secs: i64) -> Vec<u8> {
    RateLimitResponse {
        overall_code: code,
        statuses: vec![DescriptorStatus {
            code,
            current_limit: Some(rls::RateLimit {
                requests_per_unit: 20,
                unit: 2,
                name: "create".into(),
            }),
            limit_remaining: remaining,
            duration_until_reset: Some(ProtoDuration {
                seconds: reset_secs,
                nanos: 0,
            }),
        }],
    }
    .encode_to_vec()
}

#[test]
fn a_rate_limit_service_decides_with_the_local_limiters_answers() {
    let mut f = with_service("deny");
    let auth = bearer(&f.token(Alg::EdDSA, json!({})));
    let create = |f: &mut Fixture| {
        f.run(
            "POST",
            "/api/workspaces",
            &[("authorization", &auth)],
            br#"{"orgId":"org-1"}"#,
        )
    };
    f.rls_answers.push_back(Ok(rls_answer(1, 19, 60)));
    let (got, p) = create(&mut f);
    assert_eq!(got.status, 200);
    assert_eq!(
        p.response_headers,
        [
            ("ratelimit-policy".into(), r#""create";q=20;w=60"#.into()),
            ("ratelimit".into(), r#""create";r=19;t=60"#.into()),
        ]
    );
    // The call: the configured cluster and timeout, the route and the verified user.
    let call = &f.rls_calls[0];
    assert_eq!((call.cluster.as_str(), call.timeout_ms), ("ratelimit", 300));
    let sent = rls::RateLimitRequest::decode(call.message.as_slice()).unwrap();
    assert_eq!(sent.domain, "workspace-api");
    let entries: Vec<_> = sent.descriptors[0]
        .entries
        .iter()
        .map(|e| (e.key.as_str(), e.value.as_str()))
        .collect();
    assert_eq!(entries[0], ("route", "create"));
    assert_eq!(entries[1].0, "user");
    assert!(entries[1].1.contains("u-alice"), "{entries:?}");

    // Over the limit: 429 with Retry-After and the same headers as the local limiter.
    f.rls_answers.push_back(Ok(rls_answer(2, 0, 17)));
    let (got, p) = create(&mut f);
    assert_eq!(
        got,
        Outcome {
            status: 429,
            reason: "rate_limited",
            retry_after: Some("17".into())
        }
    );
    assert!(p
        .response_headers
        .contains(&("ratelimit".into(), r#""create";r=0;t=17"#.into())));
    // A route without a service never asks it; the local store is not touched by one with.
    let (got, _) = f.run("GET", "/api/workspaces/w", &[("authorization", &auth)], b"");
    assert_eq!(got.status, 200);
    assert_eq!(f.rls_calls.len(), 2);
}

#[test]
fn an_unanswered_rate_limit_service_follows_the_failure_mode() {
    let failures = [
        Err(Failure::Status(4)),
        Err(Failure::Status(14)),
        Err(Failure::NotStarted),
        Ok(b"not protobuf".to_vec()),
        Ok(Vec::new()),
    ];
    for failure in failures {
        for (mode, status, reason) in [
            ("deny", 503, "rate_limit_unavailable"),
            ("allow", 200, "allowed"),
        ] {
            let mut f = with_service(mode);
            let auth = bearer(&f.token(Alg::EdDSA, json!({})));
            f.rls_answers.push_back(failure.clone());
            let (got, p) = f.run(
                "POST",
                "/api/workspaces",
                &[("authorization", &auth)],
                br#"{"orgId":"org-1"}"#,
            );
            assert_eq!(
                (got.status, got.reason),
                (status, reason),
                "{mode} {failure:?}"
            );
            assert_eq!(p.rate_limit_failed_open, mode == "allow");
            // No count was made, so no rate-limit headers claim one.
            assert!(p.response_headers.is_empty(), "{:?}", p.response_headers);
            if mode == "deny" {
                assert_eq!(got.retry_after.as_deref(), Some("1"));
            }
        }
    }
}

/// `auth: optional`: no token, the request goes on without an identity; a valid one is
/// verified and its identity forwarded; an invalid one is refused as anywhere.
#[test]
fn a_route_with_an_optional_token() {
    let mut f = Fixture::with(|c| {
        c["routes"][3]["auth"] = json!("optional");
    });
    let (got, p) = f.run("GET", "/api/workspaces/w-1", &[], b"");
    assert_eq!((got.status, got.reason), (200, "allowed"));
    assert!(p.forward_state.is_empty(), "no identity without a token");
    let token = bearer(&f.token(Alg::EdDSA, json!({})));
    let (got, p) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", &token)],
        b"",
    );
    assert_eq!(got.status, 200);
    assert!(!p.forward_state.is_empty(), "the identity is forwarded");
    let (got, _) = f.run(
        "GET",
        "/api/workspaces/w-1",
        &[("authorization", "Bearer not.a.token")],
        b"",
    );
    assert_eq!(got.status, 401);
    // A route that may have no caller cannot ask for a permission.
    let mut cfg = config(&f.keys);
    cfg["routes"][0]["auth"] = json!("optional");
    let err = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
    assert_eq!(err.field, "routes[0].auth", "{err}");
}
