//! Schemathesis against the real gateway: generated requests (examples, coverage of every
//! boundary and unexpected method, fuzzing, then stateful create-and-read sequences along
//! the document's `links`) through Envoy, the filter and the backend, with every check on,
//! as `tests/schemathesis.toml` configures it. Whatever the gateway answers must be what
//! `openapi.yaml` says.

use std::process::Command;

use e2e::{dev_token, Stack, StackOptions, SEED_ORG};
use serde_json::json;

/// The shipped filter configuration with every quota out of reach: the run sends hundreds of
/// requests as one user from one address, and a 429 for all of them after the twentieth
/// create would hide every other answer. (429 and its headers are pinned by
/// `gateway_openapi` and `filter_limits` under the shipped quotas.)
pub fn unthrottled() -> serde_json::Value {
    let mut config = e2e::shipped_filter_config();
    for route in config["routes"].as_array_mut().unwrap() {
        route["rate_limit"]["requests"] = json!(1_000_000);
    }
    config["limits"]["unauthenticated"]["requests"] = json!(1_000_000);
    config
}

#[test]
fn schemathesis_finds_the_gateway_as_the_document_describes_it() {
    let schemathesis = xtask::schemathesis::ensure_installed().unwrap();
    let stack = Stack::start(StackOptions {
        filter_config: Some(unthrottled()),
        runner_args: Vec::new(),
        ..StackOptions::default()
    });
    let token = dev_token("u-schemathesis", &[(SEED_ORG, &["owner"])]);
    let root = xtask::paths::root();
    let reports = xtask::paths::target_dir().join("schemathesis");
    let out = Command::new(&schemathesis)
        .arg("--config-file")
        .arg(root.join("tests/schemathesis.toml"))
        .args(["--no-color", "run", "openapi.yaml", "--url"])
        .arg(stack.gateway_url())
        .arg("--header")
        .arg(format!("Authorization: Bearer {token}"))
        .arg("--report-dir")
        .arg(&reports)
        .args(["--report", "junit", "--output-sanitize", "true"])
        .current_dir(&root)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "schemathesis failed ({}); report in {}:\n{stdout}{}",
        out.status,
        reports.display(),
        String::from_utf8_lossy(&out.stderr)
    );
    println!("{stdout}");
}
