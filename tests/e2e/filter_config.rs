//! Configurations Envoy must refuse: the filter logs one error line naming the field and
//! Envoy does not start serving with a half-read policy. And the shipped one passes
//! `envoy --mode validate`, which runs the filter's `on_configure`.

#![allow(clippy::unwrap_used, clippy::panic, clippy::type_complexity)] // test helpers

use e2e::{shipped_filter_config, Stack, StackOptions};
use serde_json::json;

#[test]
fn envoy_refuses_a_bad_filter_config_and_the_log_names_the_field() {
    let cases: Vec<(&str, Box<dyn Fn(&mut serde_json::Value)>)> = vec![
        ("colour", Box::new(|c| c["colour"] = json!("red"))),
        (
            "routes[0].rate_limit.per",
            Box::new(|c| c["routes"][0]["rate_limit"]["per"] = json!("1 minute")),
        ),
        (
            "issuers[0].algorithms",
            Box::new(|c| c["issuers"][0]["algorithms"] = json!(["none"])),
        ),
        (
            "identity.hmac_key_env",
            Box::new(|c| c["identity"] = json!({"hmac_key_env": "EDGE_TEST_UNSET_HMAC_KEY"})),
        ),
    ];
    for (field, edit) in cases {
        let mut config = shipped_filter_config();
        edit(&mut config);
        let err = match Stack::try_start(StackOptions {
            filter_config: Some(config),
            ..Default::default()
        }) {
            Ok(_) => panic!("Envoy accepted a config with a bad `{field}`"),
            Err(e) => format!("{e:#}"),
        };
        let line = err
            .lines()
            .find(|l| l.contains("invalid filter configuration"))
            .unwrap_or_else(|| panic!("no error line for `{field}` in:\n{err}"));
        assert!(line.contains("[error]"), "{line}");
        assert!(line.contains(&format!("field `{field}`")), "{line}");
        assert!(
            !line.contains("local-dev-only-gateway-hmac-key"),
            "a key was logged: {line}"
        );
    }
}

#[test]
fn the_shipped_config_passes_envoy_validate() {
    xtask::artifacts::build().unwrap();
    let envoy = xtask::envoy::ensure_installed().unwrap();
    xtask::envoy::validate(&envoy, &xtask::paths::root().join("envoy/envoy.yaml"))
        .unwrap_or_else(|e| panic!("{e:#}"));
}
