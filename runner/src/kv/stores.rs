//! The key-value stores a component may open, by label: each label is served by the SQLite
//! file `spin up` uses by default, or by what the runtime configuration gives it (another
//! SQLite file, or a Redis), as `spin up --runtime-config-file` does.

use std::collections::BTreeMap;
use std::sync::Arc;

use super::redis::RedisKv;
use super::{KvError, SqliteKv, Swap};

/// What serves one label.
#[derive(Clone, Debug)]
pub enum Backend {
    /// A SQLite file in Spin's schema; the label is the `store` column.
    Sqlite(SqliteKv),
    /// A Redis database; the label is not part of the keys (as in Spin, one Redis per label).
    Redis(RedisKv),
}

impl Backend {
    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        match self {
            Self::Sqlite(kv) => format!("SQLite {}", kv.path().display()),
            Self::Redis(kv) => format!("Redis {}", kv.describe()),
        }
    }
}

/// Every label's backend; labels the runtime configuration does not name use the default
/// SQLite file.
#[derive(Clone, Debug)]
pub struct Stores {
    default: SqliteKv,
    configured: Arc<BTreeMap<String, Backend>>,
}

impl Stores {
    /// Every label on `default`.
    pub fn sqlite(default: SqliteKv) -> Self {
        Self {
            default,
            configured: Arc::new(BTreeMap::new()),
        }
    }

    /// `configured` labels on their backends, the others on `default`.
    pub fn new(default: SqliteKv, configured: BTreeMap<String, Backend>) -> Self {
        Self {
            default,
            configured: Arc::new(configured),
        }
    }

    /// What serves `label`.
    pub fn backend(&self, label: &str) -> Backend {
        self.configured
            .get(label)
            .cloned()
            .unwrap_or_else(|| Backend::Sqlite(self.default.clone()))
    }

    /// The value of `key`.
    pub async fn get(&self, label: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.get(label, key),
            Backend::Redis(kv) => kv.get(key).await,
        }
    }

    /// Whether `key` has a value.
    pub async fn exists(&self, label: &str, key: &str) -> Result<bool, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.exists(label, key),
            Backend::Redis(kv) => kv.exists(key).await,
        }
    }

    /// Every key of the store. The one read that may scan a large table: on SQLite it runs
    /// off the executor's threads (point reads run inline).
    pub async fn keys(&self, label: &str) -> Result<Vec<String>, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => tokio::task::block_in_place(|| kv.keys(label)),
            Backend::Redis(kv) => kv.keys().await,
        }
    }

    /// The values of `keys`, in the order asked.
    pub async fn get_many(
        &self,
        label: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.get_many(label, keys),
            Backend::Redis(kv) => kv.get_many(keys).await,
        }
    }

    /// Sets `key`.
    pub async fn set(&self, label: &str, key: &str, value: Vec<u8>) -> Result<(), KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.set(label, key, value).await,
            Backend::Redis(kv) => kv.set(key, &value).await,
        }
    }

    /// Deletes `key`.
    pub async fn delete(&self, label: &str, key: &str) -> Result<(), KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.delete(label, key).await,
            Backend::Redis(kv) => kv.delete(key).await,
        }
    }

    /// Sets every pair.
    pub async fn set_many(
        &self,
        label: &str,
        pairs: Vec<(String, Vec<u8>)>,
    ) -> Result<(), KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.set_many(label, pairs).await,
            Backend::Redis(kv) => kv.set_many(pairs).await,
        }
    }

    /// Deletes every key.
    pub async fn delete_many(&self, label: &str, keys: Vec<String>) -> Result<(), KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.delete_many(label, keys).await,
            Backend::Redis(kv) => kv.delete_many(keys).await,
        }
    }

    /// Adds `delta` to the counter at `key` and returns the sum.
    pub async fn increment(&self, label: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.increment(label, key, delta).await,
            Backend::Redis(kv) => kv.increment(key, delta).await,
        }
    }

    /// Sets `key` to `new` if it still holds `expected`.
    pub async fn compare_and_swap(
        &self,
        label: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Result<Swap, KvError> {
        match self.backend(label) {
            Backend::Sqlite(kv) => kv.compare_and_swap(label, key, expected, new).await,
            Backend::Redis(kv) => kv.compare_and_swap(key, expected, new).await,
        }
    }
}
