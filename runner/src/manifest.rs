//! `spin.toml` (manifest version 2): the subset spin-runner serves, and a clear error for the
//! rest. Anything Spin would act on but the runner cannot (other triggers, file mounts,
//! outbound hosts, SQLite databases, remote sources…) is refused at start-up rather than
//! silently ignored, so a manifest never means something different here than under `spin up`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{bail, Context, Result};
use serde::Deserialize;

use crate::variables::{self, Template};

/// A manifest checked and ready to serve.
#[derive(Debug, Clone)]
pub struct Manifest {
    /// `[application] name`.
    pub name: String,
    /// Application variables (`[variables]`), by name.
    pub variables: BTreeMap<String, VariableDecl>,
    /// HTTP routes in manifest order.
    pub routes: Vec<HttpRoute>,
    /// Components by ID.
    pub components: BTreeMap<String, Component>,
}

/// An application variable declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum VariableDecl {
    /// `{ default = "…" }`.
    Default(String),
    /// `{ required = true }`.
    Required,
}

/// One `[[trigger.http]]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpRoute {
    /// The route as written (`/api/...`, `/health`).
    pub route: String,
    /// The component it maps to.
    pub component: String,
}

/// One `[component.<id>]` table.
#[derive(Debug, Clone)]
pub struct Component {
    /// The component ID.
    pub id: String,
    /// The `.wasm` file, resolved against the manifest's folder.
    pub source: PathBuf,
    /// Store labels the component may open (`key_value_stores`).
    pub key_value_stores: Vec<String>,
    /// Component variables: name → template over application variables.
    pub variables: BTreeMap<String, Template>,
    /// `environment`: WASI environment variables.
    pub environment: BTreeMap<String, String>,
}

impl Manifest {
    /// Reads and checks the manifest at `path`.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read manifest {}", path.display()))?;
        let base = path.parent().unwrap_or_else(|| Path::new("."));
        Self::parse(&text, base).with_context(|| format!("invalid manifest {}", path.display()))
    }

    /// Parses and checks manifest text; relative `source` paths are resolved against `base`.
    pub fn parse(text: &str, base: &Path) -> Result<Self> {
        let raw: RawManifest = toml::from_str(text)?;
        raw.check(base)
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    spin_manifest_version: u32,
    application: RawApplication,
    #[serde(default)]
    variables: BTreeMap<String, RawVariable>,
    #[serde(default)]
    trigger: BTreeMap<String, Vec<toml::Value>>,
    #[serde(default)]
    component: BTreeMap<String, RawComponent>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawApplication {
    name: String,
    #[serde(default)]
    version: Option<String>,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    authors: Vec<String>,
    #[serde(default)]
    trigger: Option<toml::Table>,
    #[serde(default)]
    tool: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawVariable {
    #[serde(default)]
    default: Option<String>,
    #[serde(default)]
    required: bool,
    #[serde(default)]
    secret: bool,
    #[serde(default)]
    description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttpTrigger {
    #[serde(default)]
    id: Option<String>,
    route: toml::Value,
    component: toml::Value,
    #[serde(default)]
    executor: Option<toml::Table>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawComponent {
    source: toml::Value,
    #[serde(default)]
    description: Option<String>,
    #[serde(default)]
    allowed_outbound_hosts: Vec<String>,
    #[serde(default)]
    key_value_stores: Vec<String>,
    #[serde(default)]
    variables: BTreeMap<String, String>,
    #[serde(default)]
    environment: BTreeMap<String, String>,
    #[serde(default)]
    files: Vec<toml::Value>,
    #[serde(default)]
    exclude_files: Vec<String>,
    #[serde(default)]
    sqlite_databases: Vec<String>,
    #[serde(default)]
    ai_models: Vec<String>,
    #[serde(default)]
    dependencies: Option<toml::Table>,
    #[serde(default)]
    build: Option<toml::Table>,
    #[serde(default)]
    tool: Option<toml::Table>,
}

impl RawManifest {
    fn check(self, base: &Path) -> Result<Manifest> {
        if self.spin_manifest_version != 2 {
            bail!(
                "spin_manifest_version = {} is not supported: spin-runner reads version 2",
                self.spin_manifest_version
            );
        }
        // Informational fields Spin itself does not act on at run time.
        let _ = (&self.application.version, &self.application.description);
        let _ = (&self.application.authors, &self.application.tool);
        if let Some(trigger) = &self.application.trigger {
            check_application_trigger(trigger)?;
        }

        let mut variables = BTreeMap::new();
        for (name, raw) in self.variables {
            variables::validate_name(&name)
                .with_context(|| format!("invalid application variable name {name:?}"))?;
            let _ = (raw.secret, &raw.description);
            let decl = match (raw.default, raw.required) {
                (Some(_), true) => {
                    bail!("variable {name:?} cannot have both a default and `required = true`")
                }
                (Some(value), false) => VariableDecl::Default(value),
                (None, true) => VariableDecl::Required,
                (None, false) => {
                    bail!("variable {name:?} must have a `default` or `required = true`")
                }
            };
            variables.insert(name, decl);
        }

        let mut components = BTreeMap::new();
        for (id, raw) in self.component {
            let component = raw
                .check(&id, base, &variables)
                .with_context(|| format!("in [component.{id}]"))?;
            components.insert(id, component);
        }

        let mut routes = Vec::new();
        for (kind, entries) in self.trigger {
            if kind != "http" {
                bail!("trigger type {kind:?} is not supported: spin-runner serves only [[trigger.http]]");
            }
            for entry in entries {
                let raw: RawHttpTrigger =
                    entry.try_into().context("invalid [[trigger.http]] entry")?;
                routes.push(raw.check(&components)?);
            }
        }
        if routes.is_empty() {
            bail!("the manifest has no [[trigger.http]] route to serve");
        }

        Ok(Manifest {
            name: self.application.name,
            variables,
            routes,
            components,
        })
    }
}

fn check_application_trigger(trigger: &toml::Table) -> Result<()> {
    for (kind, settings) in trigger {
        if kind != "http" {
            bail!("[application.trigger.{kind}] is not supported");
        }
        let Some(settings) = settings.as_table() else {
            bail!("[application.trigger.http] must be a table");
        };
        for (key, value) in settings {
            match (key.as_str(), value.as_str()) {
                ("base", Some("/")) => {}
                _ => bail!("[application.trigger.http] {key} is not supported (only base = \"/\")"),
            }
        }
    }
    Ok(())
}

impl RawHttpTrigger {
    fn check(self, components: &BTreeMap<String, Component>) -> Result<HttpRoute> {
        let _ = &self.id;
        let component = match self.component {
            toml::Value::String(id) => id,
            _ => bail!(
                "inline components in [[trigger.http]] are not supported: name a [component.<id>]"
            ),
        };
        if !components.contains_key(&component) {
            bail!("[[trigger.http]] names component {component:?}, which the manifest does not define");
        }
        let route = match self.route {
            toml::Value::String(route) => route,
            _ => bail!("route of component {component:?}: private endpoints (route = {{ private = true }}) are not supported"),
        };
        crate::routes::validate_route(&route)
            .with_context(|| format!("route {route:?} of component {component:?}"))?;
        if let Some(executor) = &self.executor {
            if executor.get("type").and_then(toml::Value::as_str) != Some("spin")
                || executor.len() != 1
            {
                bail!("component {component:?}: only the default executor (type = \"spin\") is supported");
            }
        }
        Ok(HttpRoute { route, component })
    }
}

impl RawComponent {
    fn check(
        self,
        id: &str,
        base: &Path,
        app_variables: &BTreeMap<String, VariableDecl>,
    ) -> Result<Component> {
        let _ = (
            &self.description,
            &self.build,
            &self.tool,
            &self.exclude_files,
        );
        let source = match self.source {
            toml::Value::String(path) => base.join(path),
            _ => bail!(
                "only a local file path is supported as `source` (no url or registry sources)"
            ),
        };
        if !self.allowed_outbound_hosts.is_empty() {
            bail!("allowed_outbound_hosts is not supported: spin-runner denies all outbound network access");
        }
        if !self.files.is_empty() {
            bail!("`files` is not supported: spin-runner mounts no files into components");
        }
        if !self.sqlite_databases.is_empty() {
            bail!(
                "sqlite_databases is not supported: spin-runner implements key-value stores only"
            );
        }
        if !self.ai_models.is_empty() {
            bail!("ai_models is not supported");
        }
        if self.dependencies.is_some() {
            bail!("component dependencies are not supported");
        }
        for label in &self.key_value_stores {
            if label != crate::kv::DEFAULT_STORE {
                bail!(
                    "key-value store {label:?} is not defined: spin-runner has no runtime configuration, \
                     so only the \"default\" store exists (as under `spin up` without --runtime-config-file)"
                );
            }
        }
        let mut variables = BTreeMap::new();
        for (name, text) in self.variables {
            variables::validate_name(&name)
                .with_context(|| format!("invalid component variable name {name:?}"))?;
            let template =
                Template::parse(&text).with_context(|| format!("component variable {name:?}"))?;
            for reference in template.references() {
                if !app_variables.contains_key(reference) {
                    bail!("component variable {name:?} refers to {reference:?}, which [variables] does not declare");
                }
            }
            variables.insert(name, template);
        }
        Ok(Component {
            id: id.to_owned(),
            source,
            key_value_stores: self.key_value_stores,
            variables,
            environment: self.environment,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const BASE: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
version = "0.1.0"
[variables]
secret_key = { required = true, secret = true }
greeting = { default = "hello" }
[[trigger.http]]
route = "/api/..."
component = "api"
[component.api]
source = "target/api.wasm"
key_value_stores = ["default"]
[component.api.variables]
key = "{{ secret_key }}"
message = "{{greeting}}, world"
[component.api.build]
command = "cargo build"
"#;

    #[test]
    fn parses_the_supported_subset() {
        let m = Manifest::parse(BASE, Path::new("/app")).unwrap();
        assert_eq!(m.name, "app");
        assert_eq!(m.variables["secret_key"], VariableDecl::Required);
        assert_eq!(
            m.variables["greeting"],
            VariableDecl::Default("hello".into())
        );
        assert_eq!(
            m.routes,
            vec![HttpRoute {
                route: "/api/...".into(),
                component: "api".into()
            }]
        );
        let api = &m.components["api"];
        assert_eq!(api.source, Path::new("/app/target/api.wasm"));
        assert_eq!(api.key_value_stores, vec!["default".to_string()]);
        assert_eq!(api.variables.len(), 2);
    }

    #[test]
    fn the_projects_own_manifest_parses() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let m = Manifest::load(&root.join("spin.toml")).unwrap();
        assert!(m.routes.iter().any(|r| r.route == "/api/..."));
    }

    /// Each edit of the base manifest and a fragment of the error it must give.
    #[test]
    fn unsupported_or_invalid_manifests_are_refused_clearly() {
        let cases: &[(&str, &str, &str)] = &[
            (
                "spin_manifest_version = 2",
                "spin_manifest_version = 1",
                "version 2",
            ),
            (
                "[[trigger.http]]",
                "[[trigger.redis]]\nchannel = \"x\"\n[[trigger.http]]",
                "trigger type \"redis\"",
            ),
            (
                "route = \"/api/...\"",
                "route = { private = true }",
                "private endpoints",
            ),
            (
                "route = \"/api/...\"",
                "route = \"/users/:id\"",
                "not supported",
            ),
            (
                "route = \"/api/...\"",
                "route = \"/a/.../b\"",
                "only allowed at the end",
            ),
            (
                "component = \"api\"",
                "component = \"nope\"",
                "does not define",
            ),
            (
                "key_value_stores = [\"default\"]",
                "key_value_stores = [\"other\"]",
                "\"other\" is not defined",
            ),
            (
                "key_value_stores = [\"default\"]",
                "allowed_outbound_hosts = [\"https://x.org\"]",
                "allowed_outbound_hosts",
            ),
            (
                "key_value_stores = [\"default\"]",
                "files = [\"static/*\"]",
                "`files`",
            ),
            (
                "key_value_stores = [\"default\"]",
                "sqlite_databases = [\"default\"]",
                "sqlite_databases",
            ),
            (
                "key_value_stores = [\"default\"]",
                "unknown_thing = 1",
                "unknown field",
            ),
            (
                "source = \"target/api.wasm\"",
                "source = { url = \"https://x/a.wasm\", digest = \"sha256:0\" }",
                "local file path",
            ),
            (
                "greeting = { default = \"hello\" }",
                "greeting = { }",
                "must have a `default`",
            ),
            (
                "greeting = { default = \"hello\" }",
                "greeting = { default = \"a\", required = true }",
                "both",
            ),
            (
                "greeting = { default = \"hello\" }",
                "Greeting = { default = \"a\" }",
                "invalid application variable name",
            ),
            (
                "message = \"{{greeting}}, world\"",
                "message = \"{{ nope }}\"",
                "does not declare",
            ),
            (
                "message = \"{{greeting}}, world\"",
                "message = \"{{ greeting \"",
                "unmatched",
            ),
        ];
        for (from, to, expected) in cases {
            assert!(BASE.contains(from), "bad case {from}");
            let text = BASE.replacen(from, to, 1);
            let err = Manifest::parse(&text, Path::new("/app")).unwrap_err();
            let message = format!("{err:#}");
            assert!(
                message.contains(expected),
                "{to:?}: {message:?} lacks {expected:?}"
            );
        }
    }
}
