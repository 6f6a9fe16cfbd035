//! The edge filter through the real Envoy (`--concurrency 2`) with the shipped
//! configuration, in front of the real backend: every status the filter answers, attack
//! tokens, request IDs, spoofed identity headers, stats.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use e2e::{post_json, send, Response, Stack, StackOptions, TokenSpec, SEED_004_REQUEST, SEED_ORG};
use edge_policy::testkit;
use serde_json::json;

const RID: &str = "0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a";

fn token(spec: TokenSpec) -> String {
    spec.mint().unwrap()
}

fn owner(sub: &str) -> TokenSpec {
    TokenSpec::new(sub, &[(SEED_ORG, &["owner"])])
}

/// A filter counter: Envoy files Wasm metrics under `wasmcustom.` (stripped again on
/// `/stats/prometheus`).
fn counter(stack: &Stack, name: &str) -> u64 {
    stack
        .stat(&format!("wasmcustom.edge_filter.{name}"))
        .unwrap_or(0)
}

fn get(stack: &Stack, path: &str, headers: &[(&str, &str)]) -> Response {
    send(
        "GET",
        &format!("{}{path}", stack.gateway_url()),
        headers,
        None,
    )
}

/// A problem+json from the filter: status, body shape, request ID, never the token.
fn assert_problem(r: &Response, status: u16, slug: &str, token: Option<&str>) {
    assert_eq!(r.status, status, "{}", r.text());
    assert_eq!(r.header("content-type"), Some("application/problem+json"));
    let body = r.json();
    assert_eq!(
        body["type"],
        format!("urn:workspace-api:problem:{slug}"),
        "{body}"
    );
    assert_eq!(body["status"], status);
    let rid = r
        .header("x-request-id")
        .expect("x-request-id on every response");
    assert_eq!(body["requestId"], rid);
    if let Some(t) = token {
        assert!(!r.text().contains(t), "the body echoes the token");
    }
}

#[test]
fn the_edge_decides_before_the_backend() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let create = format!("{gw}/api/workspaces");

    // Allowed: 201 from the backend, with the request ID kept (normalized) and rate-limit headers.
    let alice = token(owner("u-alice"));
    let ok = post_json(
        &create,
        &alice,
        SEED_004_REQUEST,
        &[("x-request-id", &RID.to_uppercase())],
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    assert_eq!(ok.header("x-request-id"), Some(RID));
    assert_eq!(
        ok.header("ratelimit-policy"),
        Some("\"create-workspace\";q=20;w=60")
    );
    assert!(ok
        .header("ratelimit")
        .unwrap()
        .starts_with("\"create-workspace\";r=19;"));
    assert_eq!(ok.json()["data"]["createdBy"], "u-alice");

    // Spoofed identity headers are replaced by the verified identity.
    let forged = "eyJzdWIiOiJ1LW1hbGxvcnkiLCJvcmdzIjp7fX0";
    let spoof = post_json(
        &create,
        &alice,
        SEED_004_REQUEST,
        &[
            ("x-edge-identity", forged),
            ("x-edge-signature", "t=1,v1=AAAA"),
        ],
    );
    assert_eq!(spoof.status, 201, "{}", spoof.text());
    assert_eq!(spoof.json()["data"]["createdBy"], "u-alice");

    // A generated request ID is a v4 UUID.
    let auth = format!("Bearer {alice}");
    let r = get(
        &stack,
        "/api/workspaces/w-none",
        &[("authorization", &auth)],
    );
    let rid = r.header("x-request-id").unwrap();
    assert_eq!(uuid::Uuid::parse_str(rid).unwrap().get_version_num(), 4);

    // Attack and broken tokens: 401 with WWW-Authenticate, never reaching the backend.
    let dev_jwks: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(xtask::paths::root().join("dev/jwks.json")).unwrap(),
    )
    .unwrap();
    let dev_public = serde_json::to_vec(&dev_jwks["keys"][0]).unwrap();
    let claims = json!({"iss": "dev-local", "aud": "workspace-api", "sub": "u-mallory", "exp": 4_000_000_000u64,
                        "orgs": {SEED_ORG: ["owner"]}});
    let big = TokenSpec {
        extra: [("pad".to_owned(), json!("x".repeat(10_000)))]
            .into_iter()
            .collect(),
        ..owner("u-big")
    };
    let attacks: Vec<(&str, String, &str)> = vec![
        ("alg none", testkit::forge_none(&claims), "alg_not_allowed"),
        (
            "HS256 keyed with the public JWK",
            testkit::forge_hs256(&dev_public, Some("dev-ed25519-1"), &claims),
            "alg_not_allowed",
        ),
        (
            "expired",
            token(TokenSpec {
                ttl_secs: -120,
                ..owner("u-x")
            }),
            "expired",
        ),
        (
            "not yet valid",
            token(TokenSpec {
                not_before_secs: 600,
                ..owner("u-x")
            }),
            "not_yet_valid",
        ),
        (
            "wrong audience",
            token(TokenSpec {
                audience: "other-api".into(),
                ..owner("u-x")
            }),
            "wrong_audience",
        ),
        (
            "wrong issuer",
            token(TokenSpec {
                issuer: "evil".into(),
                ..owner("u-x")
            }),
            "untrusted_issuer",
        ),
        ("oversized", token(big), "token_too_large"),
        ("garbage", "abc.def.ghi".into(), "token_malformed"),
    ];
    let upstream_before = stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0);
    for (name, t, reason) in &attacks {
        let auth = format!("Bearer {t}");
        let r = post_json(&create, t, SEED_004_REQUEST, &[]);
        assert_problem(&r, 401, "invalid-token", Some(t));
        assert_eq!(
            r.header("www-authenticate"),
            Some("Bearer realm=\"workspace-api\", error=\"invalid_token\""),
            "{name}"
        );
        let r = get(&stack, "/api/workspaces/w-1", &[("authorization", &auth)]);
        assert_eq!(r.status, 401, "{name}");
        assert!(
            counter(&stack, &format!("denied.{reason}")) >= 1,
            "{name}: no {reason} counter"
        );
    }
    let r = get(&stack, "/api/workspaces/w-1", &[]);
    assert_problem(&r, 401, "unauthenticated", None);
    assert_eq!(
        r.header("www-authenticate"),
        Some("Bearer realm=\"workspace-api\"")
    );
    let r = get(
        &stack,
        "/api/workspaces/w-1",
        &[("authorization", &auth), ("authorization", &auth)],
    );
    assert_eq!(r.status, 401, "duplicate Authorization");
    let r = get(
        &stack,
        "/api/workspaces/w-1",
        &[("authorization", &format!("Basic {alice}"))],
    );
    assert_problem(&r, 401, "invalid-token", Some(&alice));
    assert_eq!(
        stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0),
        upstream_before,
        "a refused request reached the backend"
    );

    // Request IDs: malformed or oversized → 400.
    for bad in ["not-a-uuid", &"1".repeat(100)] {
        let r = get(
            &stack,
            "/api/workspaces/w-1",
            &[("authorization", &auth), ("x-request-id", bad)],
        );
        assert_problem(&r, 400, "invalid-request-id", None);
        assert_ne!(r.header("x-request-id"), Some(bad));
    }

    // Permissions: another organization (existing or not) and a member → the same 403.
    let other_org = SEED_004_REQUEST.replace(SEED_ORG, "99999999-5678-90ef-1234-567890abcdef");
    let r = post_json(&create, &alice, &other_org, &[]);
    assert_problem(&r, 403, "forbidden", None);
    let member = token(TokenSpec::new("u-member", &[(SEED_ORG, &["member"])]));
    let r2 = post_json(&create, &member, SEED_004_REQUEST, &[]);
    assert_problem(&r2, 403, "forbidden", None);
    assert_eq!(
        r.json()["detail"],
        r2.json()["detail"],
        "403s do not reveal whether the organization exists"
    );
    let granted = token(TokenSpec {
        perms: vec!["workspace:create".into()],
        ..TokenSpec::new("u-granted", &[(SEED_ORG, &["member"])])
    });
    assert_eq!(
        post_json(&create, &granted, SEED_004_REQUEST, &[]).status,
        201,
        "explicit grant"
    );

    // Bodies: invalid JSON 400, missing orgId 400, over the limit 413.
    assert_problem(
        &post_json(&create, &alice, "{\"orgId\":", &[]),
        400,
        "invalid-body",
        None,
    );
    let r = post_json(&create, &alice, "{}", &[]);
    assert_problem(&r, 400, "validation-failed", None);
    assert_eq!(r.json()["errors"][0]["pointer"], "#/orgId");
    let huge = format!(
        "{{\"orgId\":\"{SEED_ORG}\",\"name\":\"{}\"}}",
        "n".repeat(70_000)
    );
    assert_problem(
        &post_json(&create, &alice, &huge, &[]),
        413,
        "payload-too-large",
        None,
    );

    // v3: organization from the `company` claim.
    let v3 = format!("{gw}/api/v3/workspaces");
    let r = post_json(&v3, &alice, "{\"name\":\"Engineering\"}", &[]);
    assert_eq!(r.status, 201, "{}", r.text());
    let elsewhere = token(TokenSpec {
        company: Some("99999999-5678-90ef-1234-567890abcdef".into()),
        ..owner("u-else")
    });
    assert_problem(
        &post_json(&v3, &elsewhere, "{\"name\":\"x\"}", &[]),
        403,
        "forbidden",
        None,
    );

    // Idempotency: a malformed key is refused.
    assert_problem(
        &post_json(
            &create,
            &alice,
            SEED_004_REQUEST,
            &[("idempotency-key", "a b")],
        ),
        400,
        "invalid-idempotency-key",
        None,
    );

    // Stats per decision and reason, on the Prometheus endpoint too.
    assert!(counter(&stack, "allowed") >= 4);
    let prom = send(
        "GET",
        &format!("{}/stats/prometheus", stack.admin_url()),
        &[],
        None,
    )
    .text();
    // The reason is a label (envoy/envoy.yaml's `stats_tags`), not part of the name.
    for name in [
        "edge_filter_allowed",
        "edge_filter_denied{reason=\"not_member\"}",
        "edge_filter_denied{reason=\"missing_permission\"}",
        "edge_filter_denied{reason=\"expired\"}",
    ] {
        assert!(prom.contains(name), "{name} missing from /stats/prometheus");
    }
    assert!(
        !prom.contains("edge_filter_denied_not_member"),
        "a reason left in a metric name"
    );
    // One log line per denial with the request ID and reason, never a token.
    let log = stack.envoy_log();
    assert!(log.contains("reason=expired"));
    assert!(!log.contains(&alice[..40]), "a token was logged");
}

/// Every supported algorithm verifies inside Envoy's V8 (RSA, PSS, P-256, Ed25519, HMAC),
/// and the per-issuer allow-list holds there too.
#[test]
fn every_algorithm_verifies_inside_envoy() {
    use edge_policy::jwt::Alg;
    let keys = testkit::Keys::new(7);
    let mut config = e2e::shipped_filter_config();
    let issuers = config["issuers"].as_array_mut().unwrap();
    issuers.push(json!({"issuer": "all-algs", "audiences": ["workspace-api"], "jwks": keys.jwks(),
        "algorithms": ["HS256", "HS384", "HS512", "RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "EdDSA"]}));
    issuers.push(json!({"issuer": "rsa-only", "audiences": ["workspace-api"], "jwks": {"keys": [keys.jwk("rsa")]},
        "algorithms": ["RS256"]}));
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let now = i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let kid = |alg: Alg| match alg.family() {
        edge_policy::jwt::Family::Hmac => "hmac",
        edge_policy::jwt::Family::Rsa => "rsa",
        edge_policy::jwt::Family::P256 => "p256",
        edge_policy::jwt::Family::Ed25519 => "ed",
    };
    let all = [
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
    ];
    for alg in all {
        let t = keys.sign(
            alg,
            Some(kid(alg)),
            &testkit::claims("all-algs", "workspace-api", "u-algs", now),
        );
        let r = get(
            &stack,
            "/api/workspaces/w-missing",
            &[("authorization", &format!("Bearer {t}"))],
        );
        assert_eq!(
            r.status,
            404,
            "{alg:?} did not pass the filter: {}",
            r.text()
        );
        let t = keys.sign(
            alg,
            Some(kid(alg)),
            &testkit::claims("rsa-only", "workspace-api", "u-algs", now),
        );
        let r = get(
            &stack,
            "/api/workspaces/w-missing",
            &[("authorization", &format!("Bearer {t}"))],
        );
        let want = if alg == Alg::RS256 { 404 } else { 401 };
        assert_eq!(r.status, want, "{alg:?} for the RS256-only issuer");
    }
    // The HMAC-with-the-RSA-public-key confusion, against an issuer that allows HS256 too.
    let forged = testkit::forge_hs256(
        &keys.public_bytes("rsa"),
        Some("rsa"),
        &testkit::claims("all-algs", "workspace-api", "u-evil", now),
    );
    let r = get(
        &stack,
        "/api/workspaces/w-missing",
        &[("authorization", &format!("Bearer {forged}"))],
    );
    assert_problem(&r, 401, "invalid-token", Some(&forged));
}
