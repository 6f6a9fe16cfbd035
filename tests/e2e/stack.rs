//! The foundation end to end: the real Envoy with the real filter in front of the real
//! backend component under the local runner; shipped configs valid; state in Spin's SQLite.

use e2e::{dev_token, post_json, send, Stack, StackOptions, SEED_004_REQUEST, SEED_ORG};

fn envoy_configs(dir: &std::path::Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap().flatten() {
        let path = entry.path();
        if path.is_dir() {
            envoy_configs(&path, out);
        } else if matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml")
        ) {
            out.push(path);
        }
    }
}

#[test]
fn every_shipped_envoy_config_passes_envoy_validate() {
    xtask::artifacts::build().unwrap();
    let envoy = xtask::envoy::ensure_installed().unwrap();
    let mut configs = Vec::new();
    envoy_configs(&xtask::paths::root().join("envoy"), &mut configs);
    assert!(!configs.is_empty());
    for config in configs {
        xtask::envoy::validate(&envoy, &config).unwrap_or_else(|e| panic!("{e:#}"));
    }
}

#[test]
fn seed_example_is_created_through_the_gateway_and_read_back() {
    let stack = Stack::start(StackOptions::default());
    let token = dev_token("u-alice", &[(SEED_ORG, &["owner"])]);
    let created = post_json(
        &format!("{}/api/workspaces", stack.gateway_url()),
        &token,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(created.status, 201, "{}", created.text());
    let body = created.json();
    assert_eq!(body["message"], "Workspace created successfully");
    let id = body["data"]["workspaceId"].as_str().unwrap().to_owned();
    assert!(id.starts_with("w-"), "{id}");
    assert_eq!(body["data"]["orgId"], SEED_ORG);
    assert_eq!(body["data"]["createdBy"], "u-alice");
    assert_eq!(body["data"]["memberCount"], 1);
    assert!(created.header("x-request-id").is_some());

    let auth = format!("Bearer {token}");
    let read = send(
        "GET",
        &format!("{}/api/workspaces/{id}", stack.gateway_url()),
        &[("authorization", &auth)],
        None,
    );
    assert_eq!(read.status, 200, "{}", read.text());
    assert_eq!(read.json()["data"]["name"], "CS101: Introduction to AI");

    // The runner keeps Spin's own schema, so `spin up` reads what the runner wrote.
    let db = rusqlite::Connection::open(stack.state_dir().join("sqlite_key_value.db")).unwrap();
    let rows: i64 = db
        .query_row(
            "SELECT COUNT(*) FROM spin_key_value WHERE store = 'default' AND CAST(value AS TEXT) LIKE ?1",
            [format!("%{id}%")],
            |row| row.get(0),
        )
        .unwrap();
    assert!(rows >= 1, "no row of store `default` holds {id}");
}

#[test]
fn missing_or_bad_tokens_get_401_from_the_filter_and_never_reach_the_backend() {
    let stack = Stack::start(StackOptions::default());
    let url = format!("{}/api/workspaces", stack.gateway_url());
    let before = stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0);
    let no_token = send(
        "POST",
        &url,
        &[("content-type", "application/json")],
        Some(SEED_004_REQUEST.as_bytes()),
    );
    let forged = post_json(&url, "eyJhbGciOiJFZERTQSJ9.e30.AAAA", SEED_004_REQUEST, &[]);
    for r in [&no_token, &forged] {
        assert_eq!(r.status, 401, "{}", r.text());
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert!(r
            .header("www-authenticate")
            .unwrap_or("")
            .starts_with("Bearer"));
        assert!(r.header("x-request-id").is_some());
    }
    assert_eq!(
        stack.stat("cluster.backend.upstream_rq_total").unwrap_or(0),
        before
    );
}

#[test]
fn the_backend_refuses_identity_that_did_not_come_through_the_gateway() {
    let stack = Stack::start(StackOptions {
        envoy: false,
        ..StackOptions::default()
    });
    let url = format!("{}/api/workspaces", stack.backend_url());
    let spoofed = send(
        "POST",
        &url,
        &[
            ("content-type", "application/json"),
            ("x-edge-identity", "eyJzdWIiOiJ1LW1hbGxvcnkifQ"),
            ("x-edge-signature", "t=1,v1=AAAA"),
        ],
        Some(SEED_004_REQUEST.as_bytes()),
    );
    assert_eq!(spoofed.status, 401, "{}", spoofed.text());
    assert_eq!(
        spoofed.header("content-type"),
        Some("application/problem+json")
    );
}

#[test]
fn dropping_the_stack_leaves_no_process_behind() {
    let stack = Stack::start(StackOptions::default());
    let pids = [stack.envoy_pid().unwrap(), stack.backend_pid()];
    drop(stack);
    for pid in pids {
        // The children were reaped by the drop, so their /proc entries are gone.
        assert!(
            !std::path::Path::new(&format!("/proc/{pid}")).exists(),
            "process {pid} is still running"
        );
    }
}

#[test]
fn v3_members_create_only_where_their_company_allows_it_and_admins_always_can() {
    let stack = Stack::start(StackOptions::default());
    let gw = stack.gateway_url();
    let v3 = format!("{gw}/api/v3/workspaces");
    let admin = dev_token("u-admin", &[(SEED_ORG, &["admin"])]);
    let member = dev_token("u-member", &[(SEED_ORG, &["member"])]);
    let body = r#"{"name":"Reading group"}"#;

    // No settings record: user creation is off, and it is the backend that says so.
    let refused = post_json(&v3, &member, body, &[]);
    assert_eq!(refused.status, 403, "{}", refused.text());
    assert!(
        refused.json()["type"]
            .as_str()
            .unwrap()
            .ends_with("workspace-creation-disabled"),
        "{}",
        refused.text()
    );
    assert_eq!(post_json(&v3, &admin, body, &[]).status, 201);

    let auth = format!("Bearer {admin}");
    let allow = send(
        "PUT",
        &format!("{gw}/api/orgs/{SEED_ORG}/settings"),
        &[
            ("authorization", &auth),
            ("content-type", "application/json"),
        ],
        Some(br#"{"allowUserWorkspaceCreation": true}"#),
    );
    assert_eq!(allow.status, 200, "{}", allow.text());
    let created = post_json(&v3, &member, body, &[]);
    assert_eq!(created.status, 201, "{}", created.text());
    assert_eq!(created.json()["user_role"], "OWNER");

    // The seed 004 API still needs `workspace:create`, which members do not carry.
    let seed = post_json(
        &format!("{gw}/api/workspaces"),
        &member,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(seed.status, 403, "{}", seed.text());
}
