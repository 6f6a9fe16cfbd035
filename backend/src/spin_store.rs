//! [`Kv`] on Spin's key-value store: `fermyon:spin/key-value` for reads and writes,
//! `wasi:keyvalue/atomics` for the counter and compare-and-swap, `wasi:keyvalue/batch` for
//! writes that go together. All name the same store (the component's `default` store), so
//! Spin and the local runner back them with one table.
//!
//! A compare-and-swap is two host calls, `cas.current()` then `swap`. Spin's SQLite store
//! makes the swap a conditional `UPDATE .. WHERE value = <current>` when the key had a
//! value, but an `INSERT .. ON CONFLICT DO UPDATE` when it had none: from absent it
//! overwrites whatever was written in between (`spinframework/spin`,
//! `crates/key-value-spin/src/store.rs`). The runner's is an insert-if-absent. Callers
//! therefore never let a swap from absent decide between writers (see `idempotency`).

use spin_sdk::key_value::Store;
use spin_sdk::wit::wasi::keyvalue::{atomics, batch, store as wasi_store};

use crate::store::{Kv, StoreError};

/// The component's `default` store, opened once per request.
pub struct SpinKv {
    store: Store,
    bucket: wasi_store::Bucket,
}

impl SpinKv {
    /// Opens the store named `label` through both interfaces.
    pub fn open(label: &str) -> Result<Self, StoreError> {
        let store = Store::open(label).map_err(|e| StoreError(e.to_string()))?;
        let bucket = wasi_store::open(label).map_err(wasi_error)?;
        Ok(Self { store, bucket })
    }
}

fn wasi_error(e: wasi_store::Error) -> StoreError {
    StoreError(match e {
        wasi_store::Error::NoSuchStore => "no such store".into(),
        wasi_store::Error::AccessDenied => "access denied".into(),
        wasi_store::Error::Other(msg) => msg,
    })
}

impl Kv for SpinKv {
    fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
        self.store.get(key).map_err(|e| StoreError(e.to_string()))
    }

    fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
        self.store
            .set(key, value)
            .map_err(|e| StoreError(e.to_string()))
    }

    fn delete(&self, key: &str) -> Result<(), StoreError> {
        self.store
            .delete(key)
            .map_err(|e| StoreError(e.to_string()))
    }

    fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
        atomics::increment(&self.bucket, key, delta).map_err(wasi_error)
    }

    fn compare_and_swap(
        &self,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, StoreError> {
        let cas = atomics::Cas::new(&self.bucket, key).map_err(wasi_error)?;
        let current = cas.current().map_err(wasi_error)?;
        if current.as_deref() != expected {
            return Ok(false);
        }
        match atomics::swap(cas, new) {
            Ok(()) => Ok(true),
            Err(atomics::CasError::CasFailed(_)) => Ok(false),
            Err(atomics::CasError::StoreError(e)) => Err(wasi_error(e)),
        }
    }

    fn set_many(&self, pairs: &[(&str, &[u8])]) -> Result<(), StoreError> {
        let owned: Vec<(String, Vec<u8>)> = pairs
            .iter()
            .map(|(key, value)| ((*key).to_owned(), value.to_vec()))
            .collect();
        batch::set_many(&self.bucket, &owned).map_err(wasi_error)
    }

    fn delete_many(&self, keys: &[&str]) -> Result<(), StoreError> {
        let owned: Vec<String> = keys.iter().map(|key| (*key).to_owned()).collect();
        batch::delete_many(&self.bucket, &owned).map_err(wasi_error)
    }
}
