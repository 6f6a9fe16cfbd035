//! Spin application variables: names, `{{ name }}` templates, and resolution from
//! `SPIN_VARIABLE_<NAME>` environment variables with the manifest's defaults, as `spin up` does.
//! Every application variable is resolved once at start-up, so a missing required one stops
//! the runner before it serves anything.

use std::collections::BTreeMap;

use anyhow::{bail, Result};

use crate::manifest::{Manifest, VariableDecl};

/// The prefix of the environment variables that provide values (`spin up`'s env provider).
pub const ENV_PREFIX: &str = "SPIN_VARIABLE_";

/// Checks a variable name with Spin's rules: lower-case ASCII letters, digits and single
/// underscores, starting with a letter and not ending with an underscore.
pub fn validate_name(name: &str) -> Result<()> {
    let Some(first) = name.bytes().next() else {
        bail!("must not be empty");
    };
    if let Some(bad) = name
        .chars()
        .find(|c| !(c.is_ascii_lowercase() || c.is_ascii_digit() || *c == '_'))
    {
        bail!("invalid character {bad:?}: only lower-case letters, digits and underscores");
    }
    if !first.is_ascii_lowercase() {
        bail!("must start with a lower-case letter");
    }
    if name.ends_with('_') {
        bail!("must not end with an underscore");
    }
    if name.contains("__") {
        bail!("must not contain consecutive underscores");
    }
    Ok(())
}

/// The environment variable that provides `name`: `SPIN_VARIABLE_` and the name in upper case.
pub fn env_name(name: &str) -> String {
    format!("{ENV_PREFIX}{}", name.to_ascii_uppercase())
}

/// A component variable's value: literal text with `{{ variable }}` references.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template {
    parts: Vec<Part>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
enum Part {
    Literal(String),
    Reference(String),
}

impl Template {
    /// Parses a template the way Spin does: `{{` opens a reference up to the next `}}`.
    pub fn parse(text: &str) -> Result<Self> {
        let mut parts = Vec::new();
        let mut rest = text;
        while !rest.is_empty() {
            if let Some(after_open) = rest.strip_prefix("{{") {
                let Some((reference, after)) = after_open.split_once("}}") else {
                    bail!("unmatched '{{{{' in template");
                };
                parts.push(Part::Reference(reference.trim().to_owned()));
                rest = after;
            } else {
                let end = rest.find("{{").unwrap_or(rest.len());
                parts.push(Part::Literal(rest[..end].to_owned()));
                rest = &rest[end..];
            }
        }
        Ok(Self { parts })
    }

    /// The application variables the template refers to.
    pub fn references(&self) -> impl Iterator<Item = &str> {
        self.parts.iter().filter_map(|part| match part {
            Part::Reference(name) => Some(name.as_str()),
            Part::Literal(_) => None,
        })
    }

    fn render(&self, values: &BTreeMap<String, String>) -> Option<String> {
        let mut out = String::new();
        for part in &self.parts {
            match part {
                Part::Literal(text) => out.push_str(text),
                Part::Reference(name) => out.push_str(values.get(name)?),
            }
        }
        Some(out)
    }
}

/// Resolved component variables: component ID → variable name → value.
///
/// Values may be secrets: the type deliberately has no `Debug`.
#[derive(Default, Clone)]
pub struct ResolvedVariables {
    by_component: BTreeMap<String, BTreeMap<String, String>>,
}

/// Why a `variables.get` call found no value.
#[derive(Debug, PartialEq, Eq)]
pub enum Lookup {
    /// The name breaks Spin's naming rules.
    InvalidName(String),
    /// The component declares no such variable.
    Undefined(String),
}

impl ResolvedVariables {
    /// Resolves every application variable (`lookup_env` is `std::env::var` in production),
    /// then every component's templates. Fails on the first required variable without a value.
    pub fn resolve(
        manifest: &Manifest,
        lookup_env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self> {
        let mut app_values = BTreeMap::new();
        for (name, decl) in &manifest.variables {
            let env = env_name(name);
            let value = match (lookup_env(&env), decl) {
                (Some(value), _) => value,
                (None, VariableDecl::Default(value)) => value.clone(),
                (None, VariableDecl::Required) => bail!(
                    "required variable {name:?} has no value: set the environment variable {env}"
                ),
            };
            app_values.insert(name.clone(), value);
        }
        let mut by_component = BTreeMap::new();
        for (id, component) in &manifest.components {
            let mut values = BTreeMap::new();
            for (name, template) in &component.variables {
                // The manifest check guarantees every reference is declared, hence resolved.
                let Some(value) = template.render(&app_values) else {
                    bail!("component {id:?} variable {name:?} refers to an undeclared variable");
                };
                values.insert(name.clone(), value);
            }
            by_component.insert(id.clone(), values);
        }
        Ok(Self { by_component })
    }

    /// The value of `name` for `component`, as `fermyon:spin/variables.get` returns it.
    pub fn get(&self, component: &str, name: &str) -> Result<String, Lookup> {
        validate_name(name).map_err(|e| Lookup::InvalidName(format!("{name:?}: {e}")))?;
        self.by_component
            .get(component)
            .and_then(|values| values.get(name))
            .cloned()
            .ok_or_else(|| {
                Lookup::Undefined(format!("no variable {name:?} for component {component:?}"))
            })
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;

    #[test]
    fn names_follow_spins_rules() {
        for good in ["a", "abc", "a1b2c3", "a_1", "gateway_hmac_keys"] {
            assert!(validate_name(good).is_ok(), "{good}");
        }
        for bad in ["", "aX", "1bc", "_x", "x.y", "x_", "a__b", "x-y"] {
            assert!(validate_name(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn env_names_are_upper_case_with_the_spin_prefix() {
        assert_eq!(
            env_name("gateway_hmac_keys"),
            "SPIN_VARIABLE_GATEWAY_HMAC_KEYS"
        );
    }

    #[test]
    fn templates_parse_like_spin() {
        let cases: &[(&str, &[&str])] = &[
            ("", &[]),
            ("plain", &[]),
            ("{{ a }}", &["a"]),
            ("x-{{a}}-{{ b }}-y", &["a", "b"]),
        ];
        for (text, refs) in cases {
            let t = Template::parse(text).unwrap();
            assert_eq!(t.references().collect::<Vec<_>>(), *refs, "{text}");
        }
        assert!(Template::parse("{{ matched }} {{ unmatched").is_err());
    }

    const MANIFEST: &str = r#"
spin_manifest_version = 2
[application]
name = "app"
[variables]
keys = { required = true, secret = true }
region = { default = "eu" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
[component.c.variables]
hmac = "{{ keys }}"
where = "region-{{ region }}"
literal = "fixed"
"#;

    fn manifest() -> Manifest {
        Manifest::parse(MANIFEST, Path::new(".")).unwrap()
    }

    #[test]
    fn environment_overrides_defaults_and_fills_required() {
        let env = |name: &str| match name {
            "SPIN_VARIABLE_KEYS" => Some("k1,k2".to_string()),
            "SPIN_VARIABLE_REGION" => Some("us".to_string()),
            _ => None,
        };
        let vars = ResolvedVariables::resolve(&manifest(), env).unwrap();
        assert_eq!(vars.get("c", "hmac").unwrap(), "k1,k2");
        assert_eq!(vars.get("c", "where").unwrap(), "region-us");
        assert_eq!(vars.get("c", "literal").unwrap(), "fixed");
    }

    #[test]
    fn defaults_apply_without_environment() {
        let env = |name: &str| (name == "SPIN_VARIABLE_KEYS").then(|| "k".to_string());
        let vars = ResolvedVariables::resolve(&manifest(), env).unwrap();
        assert_eq!(vars.get("c", "where").unwrap(), "region-eu");
    }

    #[test]
    fn a_missing_required_variable_is_a_start_up_error_naming_the_env_var() {
        let err = ResolvedVariables::resolve(&manifest(), |_| None)
            .err()
            .unwrap();
        let message = err.to_string();
        assert!(message.contains("\"keys\""), "{message}");
        assert!(message.contains("SPIN_VARIABLE_KEYS"), "{message}");
    }

    #[test]
    fn lookups_distinguish_invalid_and_undefined_names() {
        let vars = ResolvedVariables::resolve(&manifest(), |_| Some("v".into())).unwrap();
        assert!(matches!(
            vars.get("c", "Bad-Name"),
            Err(Lookup::InvalidName(_))
        ));
        assert!(matches!(vars.get("c", "keys"), Err(Lookup::Undefined(_))));
        assert!(matches!(
            vars.get("other", "hmac"),
            Err(Lookup::Undefined(_))
        ));
    }
}
