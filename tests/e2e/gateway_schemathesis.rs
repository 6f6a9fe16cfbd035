//! Schemathesis against the real gateway: generated requests (examples, coverage of every
//! boundary and unexpected method, fuzzing, then stateful create-and-read sequences along
//! the document's `links`) through Envoy, the filter and the backend, with every check on,
//! as `tests/schemathesis.toml` configures it. Whatever the gateway answers must be what
//! `openapi.yaml` says.

use std::path::Path;
use std::process::Command;

use e2e::{dev_token, Stack, StackOptions, SEED_ORG};
use serde_json::json;

/// The shipped filter configuration with every quota out of reach: the run sends hundreds of
/// requests as one user from one address, and a 429 for all of them after the twentieth
/// create would hide every other answer. (429 and its headers are pinned by
/// `gateway_openapi` and `filter_limits` under the shipped quotas.)
fn unthrottled() -> serde_json::Value {
    let mut config = e2e::shipped_filter_config();
    for route in config["routes"].as_array_mut().unwrap() {
        if let Some(limit) = route.get_mut("rate_limit") {
            limit["requests"] = json!(1_000_000);
        }
    }
    config["limits"]["unauthenticated"]["requests"] = json!(1_000_000);
    config
}

/// Runs Schemathesis as `tests/schemathesis.toml` configures it, against `stack`'s gateway
/// with an owner's token, on `document` (a path from the repository root), with `extra`
/// arguments; returns whether it passed and what it printed.
fn schemathesis(stack: &Stack, document: &Path, extra: &[&str]) -> (bool, String) {
    let bin = xtask::schemathesis::ensure_installed().unwrap();
    let token = dev_token("u-schemathesis", &[(SEED_ORG, &["owner"])]);
    let root = xtask::paths::root();
    let out = Command::new(&bin)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .args(["--no-color", "run"])
        .arg(document)
        .arg("--url")
        .arg(stack.gateway_url())
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .args(extra)
        .current_dir(&root)
        .output()
        .unwrap();
    let printed = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), printed)
}

fn unthrottled_stack() -> Stack {
    Stack::start(StackOptions {
        filter_config: Some(unthrottled()),
        runner_args: Vec::new(),
        ..StackOptions::default()
    })
}

#[test]
fn schemathesis_finds_the_gateway_as_the_document_describes_it() {
    let stack = unthrottled_stack();
    let reports = xtask::paths::target_dir().join("schemathesis");
    let reports = reports.to_str().unwrap();
    let (passed, printed) = schemathesis(
        &stack,
        Path::new("openapi.yaml"),
        &["--report-dir", reports, "--report", "junit"],
    );
    assert!(
        passed,
        "schemathesis failed; report in {reports}:\n{printed}"
    );
    println!("{printed}");
}

/// The run can fail: a document that calls any `X-Request-ID` valid is caught on one
/// operation in the coverage phase alone (the gateway answers 400 to a value it calls valid).
#[test]
fn schemathesis_catches_a_document_that_promises_more_than_the_gateway_keeps() {
    let stack = unthrottled_stack();
    let mut doc = super::gateway_openapi::document();
    doc["components"]["schemas"]["RequestIdInput"] = json!({"type": "string"});
    let loose = stack.state_dir().join("loose-openapi.json");
    std::fs::write(&loose, serde_json::to_vec(&doc).unwrap()).unwrap();
    let (passed, printed) = schemathesis(
        &stack,
        &loose,
        &[
            "--phases",
            "coverage",
            "--include-path",
            "/api/v3/workspaces/{id}",
        ],
    );
    assert!(!passed, "{printed}");
    assert!(
        printed.contains("ST202 Schema-valid request rejected"),
        "{printed}"
    );
    assert!(printed.contains("invalid-request-id"), "{printed}");
}
