//! Spin's runtime configuration file (`spin up --runtime-config-file`), the part spin-runner
//! serves: `[key_value_store.<label>]` tables of type `spin` (a SQLite file) or `redis`.
//!
//! ```toml
//! [key_value_store.default]
//! type = "redis"
//! url = "redis://127.0.0.1:6379/0"
//!
//! [key_value_store.archive]
//! type = "spin"
//! path = "archive.db"   # relative to this file's folder
//! ```
//!
//! Other sections (`variables_provider`, `sqlite_database`, `llm_compute`, …) are for
//! interfaces spin-runner does not provide; they are reported once at start-up and ignored.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use serde::Deserialize;

/// The runtime configuration, as far as spin-runner serves it.
#[derive(Debug, Default, Deserialize)]
pub struct RuntimeConfig {
    /// Key-value stores by label.
    #[serde(default)]
    pub key_value_store: BTreeMap<String, KvStoreConfig>,
    /// Every other top-level section, ignored.
    #[serde(flatten)]
    pub ignored: BTreeMap<String, toml::Value>,
}

/// One `[key_value_store.<label>]` table.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case", deny_unknown_fields)]
pub enum KvStoreConfig {
    /// Spin's SQLite store in the file at `path` (default: the state directory's
    /// `sqlite_key_value.db`).
    Spin {
        /// The database file; relative paths are from the configuration file's folder.
        #[serde(default)]
        path: Option<PathBuf>,
    },
    /// A Redis database.
    Redis {
        /// `redis://[user:password@]host[:port][/db]`.
        url: String,
    },
}

impl RuntimeConfig {
    /// Reads and checks `path`; errors name the file, the line and the setting.
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("cannot read runtime configuration {}", path.display()))?;
        let mut config = Self::parse(&text)
            .with_context(|| format!("invalid runtime configuration {}", path.display()))?;
        let base = path.parent().unwrap_or_else(|| Path::new(""));
        for store in config.key_value_store.values_mut() {
            if let KvStoreConfig::Spin { path: Some(p) } = store {
                if p.is_relative() {
                    *p = base.join(&*p);
                }
            }
        }
        Ok(config)
    }

    /// Parses the TOML text.
    pub fn parse(text: &str) -> Result<Self> {
        let config: Self = toml::from_str(text)?;
        for (label, store) in &config.key_value_store {
            if let KvStoreConfig::Redis { url } = store {
                if !(url.starts_with("redis://") || url.starts_with("rediss://")) {
                    anyhow::bail!(
                        "key_value_store.{label}.url: expected a redis:// or rediss:// URL"
                    );
                }
            }
        }
        Ok(config)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stores_of_both_types_and_ignored_sections() {
        let config = RuntimeConfig::parse(
            r#"
            [key_value_store.default]
            type = "redis"
            url = "redis://127.0.0.1:6379/1"

            [key_value_store.local]
            type = "spin"

            [variables_provider]
            type = "vault"
            "#,
        )
        .unwrap();
        assert_eq!(
            config.key_value_store["default"],
            KvStoreConfig::Redis {
                url: "redis://127.0.0.1:6379/1".into()
            }
        );
        assert_eq!(
            config.key_value_store["local"],
            KvStoreConfig::Spin { path: None }
        );
        assert!(config.ignored.contains_key("variables_provider"));
    }

    #[test]
    fn errors_name_the_setting() {
        for (text, names) in [
            (
                "[key_value_store.default]\ntype = \"azure_cosmos\"\n",
                "azure_cosmos",
            ),
            ("[key_value_store.default]\ntype = \"redis\"\n", "url"),
            (
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"http://x\"\n",
                "key_value_store.default.url",
            ),
            (
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"redis://x\"\nurll = 1\n",
                "urll",
            ),
        ] {
            let e = format!("{:#}", RuntimeConfig::parse(text).unwrap_err());
            assert!(e.contains(names), "{text}: {e}");
        }
    }

    #[test]
    fn relative_sqlite_paths_are_from_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("runtime-config.toml");
        std::fs::write(
            &file,
            "[key_value_store.a]\ntype = \"spin\"\npath = \"a.db\"\n",
        )
        .unwrap();
        let config = RuntimeConfig::load(&file).unwrap();
        assert_eq!(
            config.key_value_store["a"],
            KvStoreConfig::Spin {
                path: Some(dir.path().join("a.db"))
            }
        );
    }
}
