//! The rules both tiers share (`edge-contract`), through the real Envoy and straight at the
//! real backend on one stack: the role map in the filter's configuration decides what the
//! edge lets through and what the backend accepts; a retry that switches encoding or JSON
//! spelling is a replay at either tier; a key one tier refuses, the other refuses alike.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use e2e::{
    dev_token, post_json, send, shipped_filter_config, Response, Stack, StackOptions,
    SEED_004_REQUEST, SEED_ORG,
};
use edge_contract::Identity;
use serde_json::json;

use crate::support::{self, call, problem};

const V3_JSON: &str = r#"{"name":"Reading group","description":"Tuesdays"}"#;
const V3_FORM: &str = "name=Reading+group&description=Tuesdays";
const V3_MULTIPART: &str = "--b\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nTuesdays\r\n--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nReading group\r\n--b--\r\n";
const V3_JSON_RESPELLED: &str =
    "{\n  \"description\" : \"Tuesdays\",\n  \"name\" : \"Reading group\"\n}";

/// The same v3 payload in every spelling a client may retry it in.
const V3_SPELLINGS: [(&str, &str); 4] = [
    ("application/json", V3_JSON),
    ("application/x-www-form-urlencoded", V3_FORM),
    ("multipart/form-data; boundary=b", V3_MULTIPART),
    ("application/json", V3_JSON_RESPELLED),
];

fn through_gateway(
    stack: &Stack,
    token: &str,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Response {
    let auth = format!("Bearer {token}");
    let mut all = vec![("authorization", auth.as_str())];
    all.extend_from_slice(headers);
    send(
        method,
        &format!("{}{path}", stack.gateway_url()),
        &all,
        Some(body),
    )
}

fn backend_requests(stack: &Stack) -> u64 {
    stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0)
}

/// `(status, slug)` of a problem answer, `(status, "")` of any other.
fn outcome(r: &Response) -> (u16, String) {
    if r.status >= 400 {
        (r.status, problem(r))
    } else {
        (r.status, String::new())
    }
}

/// A platform team edits the role map in Envoy's filter configuration, and nothing else:
/// members may now create and change settings, admins may no longer create. Each answer
/// below needs both tiers to follow the new map: a 201 passed the edge and the backend, and
/// the admin's v3 refusal comes from the backend, which used to let admins bypass the
/// company's setting by role name.
#[test]
fn both_tiers_follow_the_role_map_in_the_filter_config() {
    let mut config = shipped_filter_config();
    config["roles"]["member"] = json!([
        "workspace:create",
        "workspace:read",
        "org:settings:read",
        "org:settings:write"
    ]);
    config["roles"]["admin"] = json!([
        "workspace:create:self-service",
        "workspace:read",
        "org:settings:read"
    ]);
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        ..Default::default()
    });
    let member = dev_token("u-member", &[(SEED_ORG, &["member"])]);
    let admin = dev_token("u-admin", &[(SEED_ORG, &["admin"])]);
    let json_type = [("content-type", "application/json")];
    let create = |token: &str| {
        through_gateway(
            &stack,
            token,
            "POST",
            "/api/workspaces",
            &json_type,
            SEED_004_REQUEST.as_bytes(),
        )
    };
    let v3 = |token: &str| {
        through_gateway(
            &stack,
            token,
            "POST",
            "/api/v3/workspaces",
            &json_type,
            V3_JSON.as_bytes(),
        )
    };
    let settings = format!("/api/orgs/{SEED_ORG}/settings");
    let put_settings = |token: &str| {
        through_gateway(
            &stack,
            token,
            "PUT",
            &settings,
            &json_type,
            br#"{"allowUserWorkspaceCreation": true}"#,
        )
    };

    // Seed 004: the member creates (the edge passes it, the backend accepts it).
    let r = create(&member);
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["data"]["createdBy"], "u-member");
    // The admin is refused at the edge: the backend never sees the request.
    let before = backend_requests(&stack);
    assert_eq!(outcome(&create(&admin)), (403, "forbidden".into()));
    assert_eq!(backend_requests(&stack), before);

    // v3, the company not allowing user creation (no settings record): the member's
    // `workspace:create` bypasses the setting; the admin, now a standard user, passes the
    // edge (self-service) and the backend refuses.
    let r = v3(&member);
    assert_eq!(r.status, 201, "{}", r.text());
    let before = backend_requests(&stack);
    assert_eq!(
        outcome(&v3(&admin)),
        (403, "workspace-creation-disabled".into())
    );
    assert_eq!(backend_requests(&stack), before + 1);

    // Settings: the member may write them now; the admin may not, at the edge.
    let before = backend_requests(&stack);
    assert_eq!(outcome(&put_settings(&admin)), (403, "forbidden".into()));
    assert_eq!(backend_requests(&stack), before);
    let r = put_settings(&member);
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["allowUserWorkspaceCreation"], true);
    // With the setting on, self-service is enough for the admin too.
    assert_eq!(v3(&admin).status, 201);
    // And settings stay readable to both: `org:settings:read` at the edge and the backend.
    for token in [&member, &admin] {
        let r = through_gateway(&stack, token, "GET", &settings, &[], b"");
        assert_eq!(r.status, 200, "{}", r.text());
    }
    // An organization in the path the caller is not a member of: refused at the edge.
    let other = "/api/orgs/0d8e1c2b-3a4f-4e5d-8c7b-6a5f4e3d2c1b/settings";
    let r = through_gateway(&stack, &member, "GET", other, &[], b"");
    assert_eq!(outcome(&r), (403, "forbidden".into()));
}

/// A v3 create retried with the same key in another encoding, or with its JSON re-spelled,
/// is replayed: by the edge through the gateway, by the backend straight at it, and by the
/// backend for a direct retry of a create that went through the gateway (as a retry through
/// another gateway replica would reach it), since both tiers fingerprint the decoded payload.
/// A refused first request leaves the key free at both.
#[test]
fn a_v3_retry_that_switches_encoding_is_a_replay_at_both_tiers() {
    let stack = Stack::start(StackOptions::default());
    let admin = dev_token("u-admin", &[(SEED_ORG, &["admin"])]);
    let gateway = |ct: &str, body: &str, key: &str| {
        through_gateway(
            &stack,
            &admin,
            "POST",
            "/api/v3/workspaces",
            &[("content-type", ct), ("idempotency-key", key)],
            body.as_bytes(),
        )
    };
    // The identity the gateway forwards for that token.
    let who = Identity {
        company: Some(SEED_ORG.into()),
        ..support::user("u-admin", &[(SEED_ORG, "admin")])
    };
    let direct = |ct: &str, body: &str, key: &str| {
        call(
            &stack,
            Some(&who),
            "POST",
            "/api/v3/workspaces",
            &[("content-type", ct), ("idempotency-key", key)],
            Some(body.as_bytes()),
        )
    };
    let created = |r: &Response, how: &str| {
        assert_eq!(
            (r.status, r.header("idempotent-replayed")),
            (201, None),
            "{how}: {}",
            r.text()
        );
    };
    let replayed = |r: &Response, first: &Response, how: &str| {
        assert_eq!(
            (r.status, r.header("idempotent-replayed")),
            (201, Some("true")),
            "{how}: {}",
            r.text()
        );
        assert_eq!(r.json(), first.json(), "{how}");
    };

    for (name, send) in [
        ("gateway", &gateway as &dyn Fn(&str, &str, &str) -> Response),
        ("direct", &direct),
    ] {
        let key = format!("switch-{name}");
        let first = send("application/json", V3_JSON, &key);
        created(&first, name);
        for (ct, body) in &V3_SPELLINGS[1..] {
            replayed(&send(ct, body, &key), &first, &format!("{name}, {ct}"));
        }
        let other = send("application/x-www-form-urlencoded", "name=Other", &key);
        assert_eq!(
            outcome(&other),
            (422, "idempotency-key-reused".into()),
            "{name}"
        );
        // A refused first request consumes the key at neither tier (both keep successes
        // only): the corrected retry is created, not refused as a reuse.
        let key = format!("refused-{name}");
        let r = send("application/json", r#"{"name":"  "}"#, &key);
        assert_eq!(outcome(&r), (400, "validation-failed".into()), "{name}");
        created(&send("application/json", V3_JSON, &key), name);
    }

    // Through the gateway first, then straight at the backend in another encoding: the
    // backend's record, made from the request the gateway forwarded, matches.
    let first = gateway("application/x-www-form-urlencoded", V3_FORM, "across");
    created(&first, "across");
    for (ct, body) in V3_SPELLINGS {
        replayed(
            &direct(ct, body, "across"),
            &first,
            &format!("direct, {ct}"),
        );
    }
    let r = post_json(
        &format!("{}/api/v3/workspaces", stack.gateway_url()),
        &admin,
        V3_JSON,
        &[],
    );
    assert_eq!(r.json()["id"], first.json()["id"].as_i64().unwrap() + 1);
}

/// A key one tier refuses, the other refuses with the same 400 problem, and a key one accepts
/// the other accepts: `\` and `,` are refused at both, quoting is optional at both.
#[test]
fn a_key_either_tier_refuses_gets_the_same_400_at_both() {
    let stack = Stack::start(StackOptions::default());
    let owner = dev_token("u-owner", &[(SEED_ORG, &["owner"])]);
    let body = r#"{"name":"Keys"}"#;
    let cases = [
        (r"a\b", 400),
        (r#""a\b""#, 400),
        ("a,b", 400),
        (r#""a""b""#, 400),
        ("a b", 400),
        ("\"\"", 400),
        ("k-plain", 201),
        ("\"k-quoted\"", 201),
        ("!#$%&'*+-.^_`|~:;<=>?@[]{}()/", 201),
    ];
    for (key, status) in cases {
        let headers = [
            ("content-type", "application/json"),
            ("idempotency-key", key),
        ];
        let gateway = through_gateway(
            &stack,
            &owner,
            "POST",
            "/api/v3/workspaces",
            &headers,
            body.as_bytes(),
        );
        let direct = call(
            &stack,
            Some(&Identity {
                sub: "u-owner-direct".into(),
                company: Some(SEED_ORG.into()),
                ..support::owner()
            }),
            "POST",
            "/api/v3/workspaces",
            &headers,
            Some(body.as_bytes()),
        );
        let want = if status == 400 {
            (400, "invalid-idempotency-key".to_owned())
        } else {
            (status, String::new())
        };
        assert_eq!(outcome(&gateway), want, "gateway, key {key:?}");
        assert_eq!(outcome(&direct), want, "direct, key {key:?}");
    }
}
