//! Shared state with compare-and-swap: the narrow trait through which the policy reaches
//! proxy-wasm shared data, and an in-memory implementation for tests and benches.

use std::collections::HashMap;
use std::sync::Mutex;

/// Why a shared-data operation failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreError {
    /// Someone else wrote the key since it was read.
    CasMismatch,
    /// The host refused the operation.
    Host(String),
    /// Too many concurrent writers; gave up.
    Contended,
}

/// Key-value storage shared by every worker, with a version (`cas`) per key.
pub trait SharedStore {
    /// The value and its version, `None` when the key was never written.
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError>;
    /// Writes `value` if the key's version is still `cas` (`None`: unconditionally).
    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError>;
}

/// How often an update retries after losing a compare-and-swap race.
pub const MAX_CAS_TRIES: usize = 64;

/// Reads `key`, lets `f` compute the new value and a result, and writes the value back
/// with compare-and-swap, retrying when another worker won the race. `f` returning
/// `None` as the value writes nothing.
pub fn update<R>(
    store: &dyn SharedStore,
    key: &str,
    mut f: impl FnMut(Option<&[u8]>) -> (Option<Vec<u8>>, R),
) -> Result<R, StoreError> {
    for _ in 0..MAX_CAS_TRIES {
        let current = store.get(key)?;
        let (value, result) = f(current.as_ref().map(|(v, _)| v.as_slice()));
        let Some(value) = value else {
            return Ok(result);
        };
        match store.set(key, &value, current.map(|(_, cas)| cas)) {
            Ok(()) => return Ok(result),
            Err(StoreError::CasMismatch) => continue,
            Err(e) => return Err(e),
        }
    }
    Err(StoreError::Contended)
}

/// Writes `value` under `key` only if nothing is there yet. Envoy's compare-and-swap
/// cannot express "absent", so two workers racing here may both write; callers use it
/// only for the empty initial value of a slot, where both writes are the same bytes, and
/// at start-up, before traffic.
pub fn init_if_absent(store: &dyn SharedStore, key: &str, value: &[u8]) -> Result<(), StoreError> {
    if store.get(key)?.is_none() {
        store.set(key, value, None)?;
    }
    Ok(())
}

type Entries = HashMap<String, (Vec<u8>, u32)>;

/// An in-memory [`SharedStore`] with Envoy's semantics (a version per key, bumped on
/// every write; `cas` checked only when given and the key exists). Thread-safe, so
/// native tests can race several "workers" against it.
#[derive(Debug, Default)]
pub struct MemoryStore {
    inner: Mutex<(Entries, u32)>,
}

impl MemoryStore {
    /// An empty store.
    pub fn new() -> Self {
        Self::default()
    }

    /// Number of keys and total bytes of keys and values: what the store costs.
    pub fn footprint(&self) -> (usize, usize) {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let bytes = guard.0.iter().map(|(k, (v, _))| k.len() + v.len()).sum();
        (guard.0.len(), bytes)
    }
}

impl SharedStore for MemoryStore {
    fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
        let guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        Ok(guard.0.get(key).cloned())
    }

    fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        let mut guard = self.inner.lock().unwrap_or_else(|p| p.into_inner());
        let (map, next) = &mut *guard;
        if let (Some(cas), Some((_, current))) = (cas, map.get(key)) {
            if cas != *current {
                return Err(StoreError::CasMismatch);
            }
        }
        *next = next.wrapping_add(1).max(1);
        map.insert(key.to_owned(), (value.to_vec(), *next));
        Ok(())
    }
}
