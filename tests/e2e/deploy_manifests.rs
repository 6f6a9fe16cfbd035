//! The deployment manifests (`deploy/`, `envoy/envoy.production.yaml`), checked offline and
//! against a running gateway: each custom resource against its CRD's published schema,
//! strictly (an unknown field is an error, as with `kubectl --validate=strict`); the Envoy
//! fragments the Istio and Envoy Gateway patches inject, merged into a bootstrap and checked
//! with `envoy --mode validate`; the one filter configuration every target embeds; and the
//! metrics the dashboard and the alerts query, against what a running gateway exports.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use e2e::{send, Stack, StackOptions};
use edge_policy::config::Policy;
use serde_json::{json, Map, Value};

use crate::filter_jwks::JwksServer;

fn root() -> PathBuf {
    xtask::paths::root()
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The YAML documents of a file (separated by `---` lines), as JSON.
fn documents(path: &Path) -> Vec<Value> {
    let text = read(path);
    let mut docs = Vec::new();
    let mut current = String::new();
    for line in text.lines().chain(std::iter::once("---")) {
        if line.trim_end() == "---" {
            let value: Value = serde_yaml::from_str(&current)
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            if !value.is_null() {
                docs.push(value);
            }
            current.clear();
        } else {
            current.push_str(line);
            current.push('\n');
        }
    }
    docs
}

/// Every YAML manifest under `deploy/`, with its documents.
fn manifests() -> Vec<(PathBuf, Vec<Value>)> {
    let mut files = Vec::new();
    let mut dirs = vec![root().join("deploy")];
    while let Some(dir) = dirs.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                dirs.push(path);
            } else if path.extension().is_some_and(|e| e == "yaml" || e == "yml") {
                files.push(path);
            }
        }
    }
    files.sort();
    files
        .into_iter()
        .map(|p| {
            let docs = documents(&p);
            (p, docs)
        })
        .collect()
}

/// The one manifest of `kind` under `deploy/`.
fn manifest(kind: &str) -> Value {
    let mut found: Vec<Value> = manifests()
        .into_iter()
        .flat_map(|(_, docs)| docs)
        .filter(|d| d["kind"] == kind)
        .collect();
    assert_eq!(found.len(), 1, "one {kind} under deploy/");
    found.remove(0)
}

/// Makes a Kubernetes structural schema strict: every object schema that neither lists
/// `additionalProperties` nor preserves unknown fields refuses fields it does not name.
/// Branches of `allOf`/`anyOf`/`oneOf` are left alone: they only restate fields the node
/// itself declares.
fn strict(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let preserves = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let is_object =
        obj.get("type").and_then(Value::as_str) == Some("object") || obj.contains_key("properties");
    if is_object && !preserves && !obj.contains_key("additionalProperties") {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    if let Some(Value::Object(props)) = obj.get_mut("properties") {
        for child in props.values_mut() {
            strict(child);
        }
    }
    if let Some(items) = obj.get_mut("items") {
        strict(items);
    }
    if let Some(extra @ Value::Object(_)) = obj.get_mut("additionalProperties") {
        strict(extra);
    }
}

/// What `metadata` may hold in a manifest meant to be applied.
fn metadata_schema() -> Value {
    json!({
        "type": "object",
        "required": ["name"],
        "additionalProperties": false,
        "properties": {
            "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "namespace": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"},
            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
        }
    })
}

/// The strict schema of a resource: its `spec` as `spec_schema` says, its `apiVersion`,
/// `kind` and `metadata` as a manifest must carry them.
fn resource_schema(api_version: &str, kind: &str, mut schema: Value) -> Value {
    let props = schema["properties"].as_object_mut().unwrap();
    props.insert("apiVersion".into(), json!({"const": api_version}));
    props.insert("kind".into(), json!({"const": kind}));
    props.insert("metadata".into(), metadata_schema());
    // `status` is the controller's to write.
    props.remove("status");
    schema["required"] = json!(["apiVersion", "kind", "metadata", "spec"]);
    strict(&mut schema);
    schema
}

/// `(apiVersion, kind)` → strict schema, from the CRDs as their projects publish them
/// (`tests/fixtures/crds/`), served versions only.
fn published_schemas() -> Vec<(String, String, Value)> {
    let dir = root().join("tests/fixtures/crds");
    let mut out = Vec::new();
    for name in [
        "istio-wasmplugins.yaml",
        "envoy-gateway-envoyextensionpolicies.yaml",
        "envoy-gateway-envoypatchpolicies.yaml",
        "spinkube-spinapps.yaml",
    ] {
        for crd in documents(&dir.join(name)) {
            let group = crd["spec"]["group"].as_str().unwrap();
            let kind = crd["spec"]["names"]["kind"].as_str().unwrap();
            for version in crd["spec"]["versions"].as_array().unwrap() {
                if version["served"] != true {
                    continue;
                }
                let api_version = format!("{group}/{}", version["name"].as_str().unwrap());
                let schema = version["schema"]["openAPIV3Schema"].clone();
                out.push((
                    api_version.clone(),
                    kind.to_owned(),
                    resource_schema(&api_version, kind, schema),
                ));
            }
        }
    }
    out
}

/// The fields this project uses of two CRDs that are not in `tests/fixtures/crds/` (Istio's
/// `EnvoyFilter`, the Prometheus Operator's `PrometheusRule`), as their references define
/// them: checked as strictly, without the published file.
fn restated_schemas() -> Vec<(String, String, Value)> {
    let envoy_filter = json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "required": ["configPatches"],
            "properties": {
                "workloadSelector": {"type": "object", "properties": {
                    "labels": {"type": "object", "additionalProperties": {"type": "string"}}}},
                "configPatches": {"type": "array", "minItems": 1, "items": {
                    "type": "object",
                    "required": ["applyTo", "patch"],
                    "properties": {
                        "applyTo": {"enum": ["LISTENER", "FILTER_CHAIN", "NETWORK_FILTER", "HTTP_FILTER",
                            "ROUTE_CONFIGURATION", "VIRTUAL_HOST", "HTTP_ROUTE", "CLUSTER", "EXTENSION_CONFIG",
                            "BOOTSTRAP", "LISTENER_FILTER"]},
                        "match": {"type": "object", "properties": {
                            "context": {"enum": ["ANY", "SIDECAR_INBOUND", "SIDECAR_OUTBOUND", "GATEWAY"]},
                            "listener": {"type": "object", "properties": {
                                "portNumber": {"type": "integer"},
                                "filterChain": {"type": "object", "properties": {
                                    "filter": {"type": "object", "properties": {
                                        "name": {"type": "string"},
                                        "subFilter": {"type": "object", "properties": {
                                            "name": {"type": "string"}}}}}}}}}}},
                        "patch": {"type": "object", "required": ["operation", "value"], "properties": {
                            "operation": {"enum": ["MERGE", "ADD", "REMOVE", "INSERT_BEFORE", "INSERT_AFTER",
                                "INSERT_FIRST", "REPLACE"]},
                            "value": {"type": "object", "x-kubernetes-preserve-unknown-fields": true}}}
                    }}}
            }}}
    });
    let prometheus_rule = json!({
        "type": "object",
        "properties": {"spec": {
            "type": "object",
            "required": ["groups"],
            "properties": {"groups": {"type": "array", "items": {
                "type": "object",
                "required": ["name", "rules"],
                "properties": {
                    "name": {"type": "string"},
                    "interval": {"type": "string"},
                    "rules": {"type": "array", "items": {
                        "type": "object",
                        "required": ["expr"],
                        "properties": {
                            "alert": {"type": "string"},
                            "record": {"type": "string"},
                            "expr": {"type": "string", "minLength": 1},
                            "for": {"type": "string", "pattern": "^[0-9]+(ms|s|m|h|d|w|y)$"},
                            "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                            "annotations": {"type": "object", "additionalProperties": {"type": "string"}}
                        }}}
                }}}}
        }}
    });
    [
        ("networking.istio.io/v1alpha3", "EnvoyFilter", envoy_filter),
        (
            "monitoring.coreos.com/v1",
            "PrometheusRule",
            prometheus_rule,
        ),
    ]
    .into_iter()
    .map(|(v, k, s)| (v.to_owned(), k.to_owned(), resource_schema(v, k, s)))
    .collect()
}

/// The errors of `doc` against `schema`.
fn errors(schema: &Value, doc: &Value) -> Vec<String> {
    let validator = jsonschema::draft4::options().build(schema).unwrap();
    validator
        .iter_errors(doc)
        .map(|e| format!("{e} at {}", e.instance_path()))
        .collect()
}

fn schema_for<'a>(schemas: &'a [(String, String, Value)], doc: &Value) -> Option<&'a Value> {
    schemas
        .iter()
        .find(|(v, k, _)| doc["apiVersion"] == v.as_str() && doc["kind"] == k.as_str())
        .map(|(_, _, s)| s)
}

#[test]
fn every_manifest_validates_strictly_against_its_crd() {
    let published = published_schemas();
    let restated = restated_schemas();
    let mut kinds = Vec::new();
    for (path, docs) in manifests() {
        assert!(!docs.is_empty(), "{}: no document", path.display());
        for doc in docs {
            let schema = schema_for(&published, &doc)
                .or_else(|| schema_for(&restated, &doc))
                .unwrap_or_else(|| {
                    panic!(
                        "{}: no schema for {} {}: add its CRD to tests/fixtures/crds/",
                        path.display(),
                        doc["apiVersion"],
                        doc["kind"]
                    )
                });
            let errors = errors(schema, &doc);
            assert!(errors.is_empty(), "{}: {errors:#?}", path.display());
            kinds.push(doc["kind"].as_str().unwrap().to_owned());
        }
    }
    kinds.sort();
    assert_eq!(
        kinds,
        [
            "EnvoyExtensionPolicy",
            "EnvoyFilter",
            "EnvoyPatchPolicy",
            "PrometheusRule",
            "SpinApp",
            "WasmPlugin"
        ]
    );
}

#[test]
fn strict_validation_refuses_unknown_and_misplaced_fields() {
    let schemas = published_schemas();
    let cases: [(&str, &str, Value); 5] = [
        ("WasmPlugin", "/spec/vmConfig/envs", json!([])),
        ("WasmPlugin", "/spec/failStrategy", json!("FAIL_SOMETIMES")),
        (
            "EnvoyExtensionPolicy",
            "/spec/wasm/0/failClosed",
            json!(true),
        ),
        ("SpinApp", "/spec/checks/readiness/httpGet/port", json!(80)),
        ("EnvoyPatchPolicy", "/metadata/labelz", json!({})),
    ];
    for (kind, pointer, value) in cases {
        let mut doc = manifest(kind);
        let (parent, field) = pointer.rsplit_once('/').unwrap();
        doc.pointer_mut(parent).unwrap()[field] = value;
        let schema = schema_for(&schemas, &doc).unwrap();
        assert!(!errors(schema, &doc).is_empty(), "{kind}: {pointer} passed");
    }
}

/// What the filter needs around it besides the Wasm filter, as one control plane injects it.
#[derive(Debug, Default)]
struct Companions {
    /// Fields set on the HTTP connection manager.
    hcm: Map<String, Value>,
    /// The HTTP filter placed right before the router.
    before_router: Option<Value>,
    /// Clusters added.
    clusters: Vec<Value>,
    /// The route configuration's `request_headers_to_add`.
    route_headers: Option<Value>,
}

fn istio_companions() -> Companions {
    let mut c = Companions::default();
    for patch in manifest("EnvoyFilter")["spec"]["configPatches"]
        .as_array()
        .unwrap()
    {
        let value = &patch["patch"]["value"];
        match patch["applyTo"].as_str().unwrap() {
            "NETWORK_FILTER" => {
                let mut fields = value["typed_config"].as_object().unwrap().clone();
                fields.remove("@type");
                c.hcm.extend(fields);
            }
            "HTTP_FILTER" => {
                assert_eq!(patch["patch"]["operation"], "INSERT_BEFORE");
                assert_eq!(
                    patch["match"]["listener"]["filterChain"]["filter"]["subFilter"]["name"],
                    "envoy.filters.http.router"
                );
                c.before_router = Some(value.clone());
            }
            "CLUSTER" => c.clusters.push(value.clone()),
            "ROUTE_CONFIGURATION" => {
                c.route_headers = Some(value["request_headers_to_add"].clone());
            }
            other => panic!("unexpected applyTo {other}"),
        }
    }
    c
}

fn envoy_gateway_companions() -> Companions {
    let mut c = Companions::default();
    for patch in manifest("EnvoyPatchPolicy")["spec"]["jsonPatches"]
        .as_array()
        .unwrap()
    {
        let op = &patch["operation"];
        assert_eq!(op["op"], "add");
        let path = op["path"].as_str().unwrap();
        let json_path = op["jsonPath"].as_str().unwrap_or("");
        match patch["type"].as_str().unwrap() {
            "type.googleapis.com/envoy.config.listener.v3.Listener" if path.is_empty() => {
                assert!(
                    json_path.contains("envoy.filters.http.router"),
                    "{json_path}"
                );
                c.before_router = Some(op["value"].clone());
            }
            "type.googleapis.com/envoy.config.listener.v3.Listener" => {
                assert!(json_path.contains("http_connection_manager"), "{json_path}");
                c.hcm
                    .insert(path.trim_start_matches('/').to_owned(), op["value"].clone());
            }
            "type.googleapis.com/envoy.config.cluster.v3.Cluster" => {
                assert_eq!(patch["name"], op["value"]["name"]);
                c.clusters.push(op["value"].clone());
            }
            "type.googleapis.com/envoy.config.route.v3.RouteConfiguration" => {
                assert_eq!(path, "/request_headers_to_add");
                c.route_headers = Some(op["value"].clone());
            }
            other => panic!("unexpected patch type {other}"),
        }
    }
    c
}

/// The local gateway's bootstrap (`envoy/envoy.yaml`, free ports).
fn bootstrap() -> Value {
    xtask::envoy::render(&xtask::envoy::GatewaySpec {
        listen: "127.0.0.1:0".parse().unwrap(),
        admin: "127.0.0.1:0".parse().unwrap(),
        backend: "127.0.0.1:9".parse().unwrap(),
        filter_wasm: xtask::paths::filter_wasm(),
        filter_config: None,
        extra_clusters: Vec::new(),
        access_log: None,
        grpc_clusters: Vec::new(),
        extra_backends: Vec::new(),
    })
    .unwrap()
}

const HCM: &str = "/static_resources/listeners/0/filter_chains/0/filters/0/typed_config";

/// `bootstrap` without the buffer filter, the identity headers and the request-ID settings:
/// what a control plane generates for the Wasm filter alone.
fn strip_companions(config: &mut Value) {
    let hcm = config.pointer_mut(HCM).unwrap().as_object_mut().unwrap();
    hcm.remove("generate_request_id");
    hcm.remove("preserve_external_request_id");
    hcm["route_config"]
        .as_object_mut()
        .unwrap()
        .remove("request_headers_to_add");
    let filters = hcm["http_filters"].as_array_mut().unwrap();
    filters.retain(|f| f["name"] != "envoy.filters.http.buffer");
}

/// Applies `c` as the control plane would.
fn apply(config: &mut Value, c: &Companions) {
    let hcm = config.pointer_mut(HCM).unwrap().as_object_mut().unwrap();
    hcm.extend(c.hcm.clone());
    if let Some(headers) = &c.route_headers {
        hcm["route_config"]["request_headers_to_add"] = headers.clone();
    }
    if let Some(filter) = &c.before_router {
        let filters = hcm["http_filters"].as_array_mut().unwrap();
        let router = filters
            .iter()
            .position(|f| f["name"] == "envoy.filters.http.router")
            .unwrap();
        filters.insert(router, filter.clone());
    }
    let clusters = config
        .pointer_mut("/static_resources/clusters")
        .unwrap()
        .as_array_mut()
        .unwrap();
    clusters.extend(c.clusters.iter().cloned());
}

/// `envoy --mode validate` of `config`, with exactly `env` of the variables the filter reads.
fn envoy_validate(config: &Value, env: &[(&str, &str)]) -> Result<(), String> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("envoy.json");
    std::fs::write(&path, config.to_string()).unwrap();
    let envoy = xtask::envoy::ensure_installed().unwrap();
    xtask::envoy::validate_with(&envoy, &path, |command| {
        command
            .env_remove("GATEWAY_HMAC_KEY")
            .envs(env.iter().copied());
    })
    .map_err(|e| format!("{e:#}"))
}

/// The cluster `name` of the production Envoy configuration.
fn production_cluster(name: &str) -> Value {
    let prod = production();
    prod["static_resources"]["clusters"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == name)
        .cloned()
        .unwrap_or_else(|| panic!("no cluster {name} in envoy/envoy.production.yaml"))
}

#[test]
fn the_patches_inject_what_the_local_gateway_has_and_envoy_accepts_it() {
    xtask::artifacts::build_filter().unwrap();
    let shipped = bootstrap();
    for (plane, companions) in [
        ("Istio", istio_companions()),
        ("Envoy Gateway", envoy_gateway_companions()),
    ] {
        assert_eq!(companions.clusters.len(), 1, "{plane}: the JWKS cluster");
        assert_eq!(
            companions.clusters[0],
            production_cluster("idp_jwks"),
            "{plane}: the JWKS cluster differs from envoy/envoy.production.yaml's"
        );
        let mut config = shipped.clone();
        strip_companions(&mut config);
        apply(&mut config, &companions);
        // Exactly the local gateway's listener: same filters in the same order, same headers.
        assert_eq!(
            config.pointer(HCM),
            shipped.pointer(HCM),
            "{plane}: the patched listener differs from envoy/envoy.yaml's"
        );
        envoy_validate(&config, &[]).unwrap_or_else(|e| panic!("{plane}: {e}"));
    }
}

fn production() -> Value {
    serde_yaml::from_str(&read(&root().join("envoy/envoy.production.yaml"))).unwrap()
}

fn wasm_config(config: &mut Value) -> &mut Value {
    config
        .pointer_mut(HCM)
        .unwrap()
        .get_mut("http_filters")
        .unwrap()
        .as_array_mut()
        .unwrap()
        .iter_mut()
        .find(|f| f["name"] == "edge.workspace_policy")
        .map(|f| &mut f["typed_config"]["config"])
        .unwrap()
}

fn filter_config() -> Value {
    serde_json::from_str(&read(&root().join("deploy/filter-config.json"))).unwrap()
}

#[test]
fn every_target_embeds_the_one_filter_configuration() {
    let config = filter_config();
    Policy::from_json(config.to_string().as_bytes()).unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(
        config["identity"],
        json!({"hmac_key_env": "GATEWAY_HMAC_KEY"})
    );
    assert_eq!(manifest("WasmPlugin")["spec"]["pluginConfig"], config);
    assert_eq!(
        manifest("EnvoyExtensionPolicy")["spec"]["wasm"][0]["config"],
        config
    );
    let mut prod = production();
    let embedded = wasm_config(&mut prod)["configuration"]["value"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(serde_json::from_str::<Value>(&embedded).unwrap(), config);
    // Roles, routes and limits are the local gateway's: only where keys come from differs.
    let mut local = e2e::shipped_filter_config();
    let mut deployed = config.clone();
    for c in [&mut local, &mut deployed] {
        let c = c.as_object_mut().unwrap();
        c.remove("issuers");
        c.remove("identity");
    }
    assert_eq!(deployed, local);
}

#[test]
fn the_production_envoy_differs_from_the_local_one_only_where_documented() {
    let local: Value = serde_yaml::from_str(&read(&root().join("envoy/envoy.yaml"))).unwrap();
    let mut prod = production();
    let wasm = wasm_config(&mut prod);
    assert_eq!(wasm["failure_policy"], "FAIL_RELOAD");
    let remote = &wasm["vm_config"]["code"]["remote"];
    assert_eq!(remote["sha256"], "EDGE_FILTER_SHA256");
    assert_eq!(remote["http_uri"]["cluster"], "filter_artifacts");
    assert_eq!(
        wasm["vm_config"]["environment_variables"]["host_env_keys"],
        json!(["GATEWAY_HMAC_KEY"])
    );
    // Put back what is documented to differ: the rest must be envoy/envoy.yaml.
    let mut back = prod.clone();
    let mut local_copy = local.clone();
    let local_wasm = wasm_config(&mut local_copy).clone();
    let w = wasm_config(&mut back);
    w["vm_config"]["code"] = local_wasm["vm_config"]["code"].clone();
    w["configuration"] = local_wasm["configuration"].clone();
    back["static_resources"]["listeners"][0]["address"] =
        local["static_resources"]["listeners"][0]["address"].clone();
    back["static_resources"]["clusters"] = local["static_resources"]["clusters"].clone();
    assert_eq!(back, local);

    // Envoy accepts it as shipped, once the digest is filled in.
    xtask::artifacts::build_filter().unwrap();
    let wasm_bytes = std::fs::read(xtask::paths::filter_wasm()).unwrap();
    let packaged = tempfile::tempdir().unwrap();
    let digest = xtask::package::package(&wasm_bytes, packaged.path())
        .unwrap()
        .wasm_sha256;
    let text =
        read(&root().join("envoy/envoy.production.yaml")).replace("EDGE_FILTER_SHA256", &digest);
    let filled: Value = serde_yaml::from_str(&text).unwrap();
    envoy_validate(&filled, &[]).unwrap();
    // With the module loaded from disk (validation does not fetch), the filter checks its
    // configuration too: it runs with the key in the environment and refuses to without.
    let mut local_code = filled.clone();
    wasm_config(&mut local_code)["vm_config"]["code"] =
        json!({"local": {"filename": xtask::paths::filter_wasm()}});
    envoy_validate(
        &local_code,
        &[("GATEWAY_HMAC_KEY", "a-production-key-of-at-least-32-bytes!")],
    )
    .unwrap();
    let refused = envoy_validate(&local_code, &[]).unwrap_err();
    assert!(refused.contains("GATEWAY_HMAC_KEY"), "{refused}");
}

/// Metric names a PromQL expression selects (an identifier followed by `{` or `[`).
fn selected_metrics(expr: &str) -> Vec<String> {
    let bytes = expr.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        let start = i;
        while i < bytes.len() && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_') {
            i += 1;
        }
        if i > start {
            let word = &expr[start..i];
            let next = expr[i..].trim_start().chars().next();
            let quoted = start > 0 && bytes[start - 1] == b'"';
            if !quoted && matches!(next, Some('{' | '[')) {
                out.push(word.to_owned());
            }
        } else {
            i += 1;
        }
    }
    out
}

/// Every PromQL expression of the dashboard and the alerts.
fn queries() -> Vec<String> {
    let dashboard: Value =
        serde_json::from_str(&read(&root().join("deploy/observability/dashboard.json"))).unwrap();
    let mut exprs: Vec<String> = dashboard["panels"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["targets"].as_array().unwrap().iter())
        .map(|t| t["expr"].as_str().unwrap().to_owned())
        .collect();
    for rule in manifest("PrometheusRule")["spec"]["groups"][0]["rules"]
        .as_array()
        .unwrap()
    {
        exprs.push(rule["expr"].as_str().unwrap().to_owned());
    }
    exprs
}

#[test]
fn the_dashboard_and_alerts_query_metrics_the_gateway_exports() {
    // A gateway whose filter has done everything the dashboard shows: allowed and denied
    // requests, a rate limit, a JWKS fetch that worked and one that failed.
    let keys = edge_policy::testkit::Keys::new(3);
    let server = JwksServer::start(json!({"keys": [keys.jwk("ed")]}), 0);
    let closed = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap();
    let mut config = e2e::shipped_filter_config();
    for (name, cluster) in [("remote-ok", "jwks_ok"), ("remote-down", "jwks_down")] {
        config["issuers"].as_array_mut().unwrap().push(json!({
            "issuer": name, "audiences": ["workspace-api"], "algorithms": ["EdDSA"],
            "remote_jwks": {"cluster": cluster, "authority": "idp.test", "path": "/jwks", "timeout": "1s"}
        }));
    }
    config["limits"]["unauthenticated"] = json!({"requests": 1, "per": "60s"});
    let stack = Stack::start(StackOptions {
        filter_config: Some(config),
        extra_clusters: vec![
            ("jwks_ok".into(), server.addr),
            ("jwks_down".into(), closed),
        ],
        ..Default::default()
    });
    let gw = stack.gateway_url();
    send("GET", &format!("{gw}/healthz"), &[], None);
    // Before the flood of bad tokens: that spends this address's allowance.
    let token = e2e::dev_token("u-dashboard", &[(e2e::SEED_ORG, &["owner"])]);
    let key = [("idempotency-key", "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e")];
    for _ in 0..2 {
        let r = e2e::post_json(
            &format!("{gw}/api/workspaces"),
            &token,
            e2e::SEED_004_REQUEST,
            &key,
        );
        assert_eq!(r.status, 201, "{}", r.text());
    }
    send("GET", &format!("{gw}/api/workspaces/w-1"), &[], None);
    for _ in 0..3 {
        let bad = [("authorization", "Bearer not.a.token")];
        send("GET", &format!("{gw}/api/workspaces/w-1"), &bad, None);
    }
    let deadline = Instant::now() + Duration::from_secs(20);
    while ["jwks_fetch.ok", "jwks_fetch.failed"].iter().any(|c| {
        stack
            .stat(&format!("wasmcustom.edge_filter.{c}"))
            .unwrap_or(0)
            == 0
    }) {
        assert!(Instant::now() < deadline, "no JWKS fetch counted");
        std::thread::sleep(Duration::from_millis(100));
    }
    let scrape = send(
        "GET",
        &format!("{}/stats/prometheus", stack.admin_url()),
        &[],
        None,
    )
    .text();
    let exported: Vec<&str> = scrape
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.split(['{', ' ']).next())
        .collect();
    let queries = queries();
    assert!(queries.len() >= 8, "{queries:#?}");
    for expr in &queries {
        let metrics = selected_metrics(expr);
        assert!(!metrics.is_empty(), "no metric in {expr}");
        for metric in metrics {
            assert!(
                exported.contains(&metric.as_str()),
                "{metric} (in `{expr}`) is not exported:\n{scrape}"
            );
        }
    }
    // The reason is a label, as the dashboard groups by it.
    assert!(
        scrape.contains("edge_filter_denied{reason=\"missing_token\"}")
            && scrape.contains("edge_filter_denied{reason=\"unauthenticated_rate_limited\"}")
            && scrape.contains("edge_filter_replayed{reason=\"idempotent_replay\"}"),
        "{scrape}"
    );
}

#[test]
fn metric_names_are_read_from_selectors_only() {
    assert_eq!(
        selected_metrics(
            "sum by (reason) (rate(edge_filter_denied{reason=~\"a|b\"}[5m])) / sum(rate(x_total [1m]))"
        ),
        ["edge_filter_denied", "x_total"]
    );
    assert_eq!(
        selected_metrics(
            "histogram_quantile(0.9, sum by (le) (rate(a_bucket{p=\"g\"}[$__rate_interval])))"
        ),
        ["a_bucket"]
    );
}
