//! One benchmark Envoy: a config from `envoy/bench/`, its keys swapped for the bench
//! issuer's, its addresses for free ports.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::paths;
use crate::process::{self, Service};
use crate::stack::http_get;

const JWT_AUTHN_TYPE: &str =
    "type.googleapis.com/envoy.extensions.filters.http.jwt_authn.v3.JwtAuthentication";
const WASM_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";
const START_TIMEOUT: Duration = Duration::from_secs(120);

/// A bench config, by file name under `envoy/bench/`.
pub fn config_path(name: &str) -> PathBuf {
    paths::root()
        .join("envoy/bench")
        .join(format!("{name}.yaml"))
}

/// Loads `envoy/bench/<name>.yaml` as JSON.
pub fn load(name: &str) -> Result<Value> {
    let path = config_path(name);
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// Replaces the native `jwt_authn` provider's `local_jwks` with `jwks`, and sizes its
/// verified-token cache (per worker, as the edge filter's) to `cache_entries`.
pub fn set_native_jwks(config: &mut Value, jwks: &Value, cache_entries: u64) -> Result<()> {
    let filter = find_typed(config, JWT_AUTHN_TYPE).context("no jwt_authn filter")?;
    let providers = filter
        .get_mut("providers")
        .and_then(Value::as_object_mut)
        .context("jwt_authn has no providers")?;
    for provider in providers.values_mut() {
        provider["local_jwks"] = serde_json::json!({ "inline_string": jwks.to_string() });
        provider["jwt_cache_config"] = serde_json::json!({ "jwt_cache_size": cache_entries });
    }
    Ok(())
}

/// The wasm filter's configuration JSON.
pub fn wasm_policy(config: &mut Value) -> Result<Value> {
    let wasm = find_typed(config, WASM_TYPE).context("no wasm filter")?;
    let text = wasm
        .pointer("/config/configuration/value")
        .and_then(Value::as_str)
        .context("the wasm filter has no StringValue configuration")?;
    serde_json::from_str(text).context("the wasm filter's configuration is not JSON")
}

/// Sets the wasm filter's configuration JSON and points it at the built module.
pub fn set_wasm_policy(config: &mut Value, policy: &Value) -> Result<()> {
    let wasm = find_typed(config, WASM_TYPE).context("no wasm filter")?;
    let value = wasm
        .pointer_mut("/config/configuration/value")
        .context("the wasm filter has no configuration value")?;
    *value = Value::from(policy.to_string());
    set_wasm_module(config, &paths::filter_wasm())
}

/// Points the config's wasm filter at the module `wasm`.
pub fn set_wasm_module(config: &mut Value, wasm: &Path) -> Result<()> {
    let filter = find_typed(config, WASM_TYPE).context("no wasm filter")?;
    let code = filter
        .pointer_mut("/config/vm_config/code/local")
        .context("the wasm filter loads no local module")?;
    code["filename"] = Value::from(wasm.display().to_string());
    Ok(())
}

fn find_typed<'a>(value: &'a mut Value, type_url: &str) -> Option<&'a mut Value> {
    if value.get("@type").and_then(Value::as_str) == Some(type_url) {
        return Some(value);
    }
    match value {
        Value::Object(map) => map.values_mut().find_map(|v| find_typed(v, type_url)),
        Value::Array(items) => items.iter_mut().find_map(|v| find_typed(v, type_url)),
        _ => None,
    }
}

/// A running bench Envoy; dropping it stops it.
pub struct Gateway {
    service: Service,
    /// `http://127.0.0.1:<port>`.
    pub url: String,
    /// Admin `http://127.0.0.1:<port>`.
    pub admin: String,
}

impl Gateway {
    /// Starts Envoy with `config` (addresses replaced by free ports), confined to `cpus`
    /// (empty: any), and waits until ready.
    pub fn start(
        bin: &Path,
        name: &str,
        mut config: Value,
        concurrency: u32,
        cpus: &[usize],
        dir: &Path,
    ) -> Result<Self> {
        for pointer in [
            "/admin/address/socket_address",
            "/static_resources/listeners/0/address/socket_address",
        ] {
            let socket = config
                .pointer_mut(pointer)
                .with_context(|| format!("bench config without {pointer}"))?;
            socket["address"] = Value::from("127.0.0.1");
            socket["port_value"] = Value::from(0);
        }
        fs::create_dir_all(dir)?;
        let config_path = dir.join(format!("{name}-c{concurrency}.json"));
        fs::write(&config_path, serde_json::to_vec_pretty(&config)?)?;
        let admin_file = dir.join(format!("{name}-c{concurrency}.admin"));
        let _ = fs::remove_file(&admin_file);
        let log = dir.join(format!("{name}-c{concurrency}.log"));
        let mut cmd = super::pin::command(bin, cpus);
        cmd.arg("-c")
            .arg(&config_path)
            .arg("--concurrency")
            .arg(concurrency.to_string())
            .arg("--disable-hot-restart")
            .arg("--admin-address-path")
            .arg(&admin_file)
            .arg("--log-level")
            .arg("warn")
            .current_dir(paths::root())
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::options().append(true).open(&log)?);
        let mut service =
            Service::new("envoy", process::spawn(cmd).context("starting envoy")?, log);
        let deadline = Instant::now() + START_TIMEOUT;
        let admin = loop {
            if let Some(addr) = fs::read_to_string(&admin_file)
                .ok()
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
            {
                if http_get(&format!("http://{addr}/ready")).is_ok_and(|(s, _)| s == 200) {
                    break format!("http://{addr}");
                }
            }
            if let Some(status) = service.exited() {
                bail!(
                    "envoy ({name}) exited ({status}) during start-up:\n{}",
                    service.log_tail(40)
                );
            }
            if Instant::now() > deadline {
                bail!(
                    "envoy ({name}) was not ready in time:\n{}",
                    service.log_tail(40)
                );
            }
            std::thread::sleep(Duration::from_millis(25));
        };
        let (_, listeners) = http_get(&format!("{admin}/listeners?format=json"))?;
        let json: Value = serde_json::from_str(&listeners)?;
        let port = json
            .pointer("/listener_statuses/0/local_address/socket_address/port_value")
            .and_then(Value::as_u64)
            .context("envoy reports no listener port")?;
        Ok(Self {
            service,
            url: format!("http://127.0.0.1:{port}"),
            admin,
        })
    }

    /// Envoy's process ID.
    pub fn pid(&self) -> u32 {
        self.service.pid()
    }

    /// The end of Envoy's log, for error messages.
    pub fn log_tail(&self) -> String {
        self.service.log_tail(30)
    }

    /// A counter or gauge by its exact name.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let (_, text) = http_get(&format!("{}/stats?format=json&usedonly", self.admin)).ok()?;
        let json: Value = serde_json::from_str(&text).ok()?;
        json["stats"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?["value"]
            .as_u64()
    }

    /// Every stat whose name contains `part`, as `(name, value)`.
    pub fn stats_containing(&self, part: &str) -> Vec<(String, u64)> {
        let Ok((_, text)) = http_get(&format!("{}/stats?format=json&usedonly", self.admin)) else {
            return Vec::new();
        };
        let Ok(json) = serde_json::from_str::<Value>(&text) else {
            return Vec::new();
        };
        json["stats"]
            .as_array()
            .map(|stats| {
                stats
                    .iter()
                    .filter_map(|s| {
                        let name = s["name"].as_str()?;
                        let value = s["value"].as_u64()?;
                        name.contains(part).then(|| (name.to_owned(), value))
                    })
                    .collect()
            })
            .unwrap_or_default()
    }
}
