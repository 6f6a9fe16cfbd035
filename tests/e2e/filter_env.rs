//! The production form of the identity key: read by the filter from Envoy's environment
//! (`vm_config.environment_variables.host_env_keys` in `envoy/envoy.yaml`), never written
//! in the configuration.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers

use e2e::{dev_hmac_key, dev_token, post_json, shipped_filter_config, Stack, StackOptions};
use e2e::{SEED_004_REQUEST, SEED_ORG};
use serde_json::json;

#[test]
fn the_identity_key_comes_from_envoys_environment() {
    // Envoy's environment only (the backend checks with the same key).
    let mut config = shipped_filter_config();
    config["identity"] = json!({"hmac_key_env": "GATEWAY_HMAC_KEY"});
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        envoy_env: vec![("GATEWAY_HMAC_KEY".into(), dev_hmac_key())],
        ..Default::default()
    });
    let token = dev_token("u-env", &[(SEED_ORG, &["owner"])]);
    let r = post_json(
        &format!("{}/api/workspaces", stack.gateway_url()),
        &token,
        SEED_004_REQUEST,
        &[],
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(r.json()["data"]["createdBy"], "u-env");
    assert!(
        !stack.envoy_log().contains(&dev_hmac_key()),
        "the key was logged"
    );
}
