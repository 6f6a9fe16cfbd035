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
///
/// Hosts differ in one respect callers must respect: a compare-and-swap from *absent*
/// (`expected: None`) is an insert-if-absent under the local runner but an unconditional
/// write under `spin up`'s SQLite store, so it must never be what decides between two
/// writers. `increment` and a compare-and-swap from a present value are atomic everywhere,
/// so "insert if absent" is spelled `increment(key, 1) == 1` (the seen-nonce records of
/// `replay`) or an election on a counter (`idempotency`).
pub trait Kv {
    /// The value of `key`, if any.
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError>;
    /// Writes `value` at `key`, replacing any previous value.
    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError>;
    /// Removes `key` (no error when absent).
    fn delete(&self, key: &str) -> Result<(), StoreError>;
    /// Atomically adds `delta` to the counter at `key` (absent counts as 0); returns the new value.
    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError>;
    /// Replaces the value of `key` with `new` if it is still `expected`; returns whether the
    /// swap happened. With `expected: Some(..)` this is atomic on every host. With `None`
    /// (the key was absent) the swap may overwrite a value written since (Spin's SQLite
    /// store does): only a caller already known to be the key's sole writer may rely on it.
    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError>;
    /// Writes every pair, in one host call where the host has batches
    /// (`wasi:keyvalue/batch`). Not atomic, as that interface says: others may see the
    /// writes one by one, in any order, and a failure may leave some done. So callers batch
    /// only writes that may land in any order, and order what must come later after it.
    fn set_many(&self, pairs: &[(&str, &[u8])]) -> Result<(), StoreError> {
        pairs
            .iter()
            .try_for_each(|(key, value)| self.set(key, value))
    }
    /// Removes every key, in one host call where the host has batches; not atomic either
    /// (see [`Kv::set_many`]).
    fn delete_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        keys.iter().try_for_each(|key| self.delete(key))
    }
}

/// What a compare-and-swap does when the key was absent at `cas.current()` and has been
/// written since, before `swap`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum CasFromAbsent {
    /// The swap fails: a true insert-if-absent (the local runner).
    #[default]
    InsertIfAbsent,
    /// The swap overwrites whatever is there and succeeds (`spin up`'s default SQLite store:
    /// `INSERT .. ON CONFLICT DO UPDATE`).
    Overwrite,
}

/// An in-memory [`Kv`], safe to share between threads; optionally failing every call, to
/// test the service's behaviour when the store is down.
///
/// By default a compare-and-swap is one atomic step, as under the local runner. Built with
/// [`MemoryKv::spin_sqlite`] it takes Spin's two host calls instead ([`MemoryKv::cas_current`]
/// then [`MemoryKv::cas_swap`], another thread may run in between) with Spin's SQLite
/// semantics, so tests can reproduce the races `spin up` allows.
#[derive(Debug, Default)]
pub struct MemoryKv {
    map: Mutex<BTreeMap<String, Vec<u8>>>,
    cas_from_absent: CasFromAbsent,
    /// When set, every operation fails with this message.
    pub fail_with: Mutex<Option<String>>,
    before_swap: SwapHook,
}

/// What runs once, just before the next compare-and-swap (see [`MemoryKv::before_next_swap`]).
#[derive(Default)]
struct SwapHook(Mutex<Option<Hook>>);

type Hook = Box<dyn FnOnce(&MemoryKv) + Send>;

impl fmt::Debug for SwapHook {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("SwapHook")
    }
}

impl MemoryKv {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// An empty store whose compare-and-swap behaves like Spin's default SQLite store.
    pub fn spin_sqlite() -> Self {
        Self {
            cas_from_absent: CasFromAbsent::Overwrite,
            ..Self::default()
        }
    }

    /// The first half of a compare-and-swap (`cas.current()`): the key's value now.
    pub fn cas_current(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.get(key)
    }

    /// The second half (`swap`), given what [`MemoryKv::cas_current`] saw: conditional on
    /// the value being unchanged when `seen` is a value; when `seen` is `None`, an insert
    /// if still absent or, for [`CasFromAbsent::Overwrite`], an unconditional write.
    pub fn cas_swap(&self, key: &str, seen: Option<&[u8]>, new: &[u8]) -> Result<bool, StoreError> {
        let mut map = self.lock()?;
        let now = map.get(key).map(Vec::as_slice);
        let swap = match seen {
            Some(_) => now == seen,
            None => now.is_none() || self.cas_from_absent == CasFromAbsent::Overwrite,
        };
        if swap {
            map.insert(key.to_owned(), new.to_vec());
        }
        Ok(swap)
    }

    /// Every key currently stored, sorted.
    pub fn keys(&self) -> Vec<String> {
        self.lock()
            .map(|m| m.keys().cloned().collect())
            .unwrap_or_default()
    }

    /// Runs `hook` on this store once, just before the next compare-and-swap reads the
    /// key: another request's writes landing between a caller's read and its swap.
    pub fn before_next_swap(&self, hook: impl FnOnce(&MemoryKv) + Send + 'static) {
        if let Ok(mut h) = self.before_swap.0.lock() {
            *h = Some(Box::new(hook));
        }
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
        let hook = self.before_swap.0.lock().ok().and_then(|mut h| h.take());
        if let Some(hook) = hook {
            hook(self);
        }
        if self.cas_from_absent == CasFromAbsent::Overwrite {
            // As `SpinKv` does it: two host calls, not one step.
            let current = self.cas_current(key)?;
            if current.as_deref() != expected {
                return Ok(false);
            }
            return self.cas_swap(key, current.as_deref(), new);
        }
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
    fn spin_sqlite_cas_from_absent_overwrites_but_from_present_is_conditional() {
        let kv = MemoryKv::spin_sqlite();
        // Two claims both see the key absent, then both swap: both succeed, the last wins.
        assert_eq!(kv.cas_current("k").unwrap(), None);
        assert_eq!(kv.cas_current("k").unwrap(), None);
        assert!(kv.cas_swap("k", None, b"a").unwrap());
        assert!(kv.cas_swap("k", None, b"b").unwrap());
        assert_eq!(kv.get("k").unwrap(), Some(b"b".to_vec()));
        // From a present value the swap fails once someone else wrote.
        let seen = kv.cas_current("k").unwrap();
        kv.set("k", b"c").unwrap();
        assert!(!kv.cas_swap("k", seen.as_deref(), b"d").unwrap());
        assert_eq!(kv.get("k").unwrap(), Some(b"c".to_vec()));
        // Unraced, the trait method still refuses a stale expectation.
        assert!(!kv.compare_and_swap("k", None, b"e").unwrap());
        assert!(kv.compare_and_swap("k", Some(b"c"), b"e").unwrap());
        // The runner's store refuses the racing insert.
        let runner = MemoryKv::new();
        assert!(runner.cas_swap("k", None, b"a").unwrap());
        assert!(!runner.cas_swap("k", None, b"b").unwrap());
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
