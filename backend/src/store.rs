//! The key-value interface the service needs, and an in-memory implementation for tests.
//!
//! The component runs on Spin's key-value store (see `spin_store`); everything above this
//! trait is host-independent so it can be tested on the native target.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Mutex;

/// A store failure: the host's store is unreachable or refused the operation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoreError(pub String);

impl fmt::Display for StoreError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "key-value store error: {}", self.0)
    }
}

impl std::error::Error for StoreError {}

/// The operations the service performs on its store: plain reads and writes of single keys,
/// an atomic counter and a compare-and-swap. Nothing ever rewrites a shared list, so no
/// operation needs a transaction (see `backend/README.md`, "Key layout").
pub trait Kv {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` at `key`, replacing any previous value.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (no error when absent).
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Atomically adds `delta` to the counter at `key` (absent counts as 0); returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// Atomically replaces the value of `key` with `new` if and only if it is still
    /// `expected` (`None`: the key is absent). Returns whether the swap happened.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
}

/// An in-memory [`Kv`], safe to share between threads; optionally failing every call, to
/// test the service's behaviour when the store is down.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
    /// When set, every operation fails with this message.
    pub fail_with: Mutex<Option<String>>,
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Every key currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Makes every later call fail (`Some`) or succeed again (`None`).
    pub fn set_failing(&self, message: Option<&str>) {
        if let Ok(mut f) = self.fail_with.lock() {
            *f = message.map(str::to_owned);
        }
    }

    fn lock(&self) -> Result<std::sync::MutexGuard<'_, BTreeMap<String, Vec<u8>>>, StoreError> {
        if let Ok(f) = self.fail_with.lock() {
            if let Some(msg) = f.as_ref() {
                return Err(StoreError(msg.clone()));
            }
        }
        self.map.lock().map_err(|_| StoreError("poisoned".into()))
    }
}

impl Kv for MemoryKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Ok(self.lock()?.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.lock()?.insert(key.to_owned(), value.to_vec());
        Ok(())
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.lock()?.remove(key);
        Ok(())
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        let mut map = self.lock()?;
        let current = match map.get(key) {
            Some(v) => {
                decode_counter(v).ok_or_else(|| StoreError(format!("{key} is not a counter")))?
            }
            None => 0,
        };
        let next = current + delta;
        map.insert(key.to_owned(), next.to_le_bytes().to_vec());
        Ok(next)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let mut map = self.lock()?;
        if map.get(key).map(Vec::as_slice) != expected {
            return Ok(false);
        }
        map.insert(key.to_owned(), new.to_vec());
        Ok(true)
    }
}

fn decode_counter(v: &[u8]) -> Option<i64> {
    Some(i64::from_le_bytes(v.try_into().ok()?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cas_claims_an_absent_key_once() {
        let kv = MemoryKv::new();
        assert!(kv.compare_and_swap("k", None, b"a").unwrap());
        assert!(!kv.compare_and_swap("k", None, b"b").unwrap());
        assert!(kv.compare_and_swap("k", Some(b"a"), b"c").unwrap());
        assert_eq!(kv.get("k").unwrap(), Some(b"c".to_vec()));
    }

    #[test]
    fn counters_start_at_zero_and_failures_are_reported() {
        let kv = MemoryKv::new();
        assert_eq!(kv.increment("n", 1).unwrap(), 1);
        assert_eq!(kv.increment("n", 0).unwrap(), 1);
        kv.set_failing(Some("down"));
        assert_eq!(kv.get("n"), Err(StoreError("down".into())));
    }
}
