//! The per-request host state, and the Spin interfaces spin-runner adds to WASI and
//! `wasi:http`: `fermyon:spin/key-value@2.0.0`, `fermyon:spin/variables@2.0.0` and
//! `wasi:keyvalue/{store,atomics,batch}@0.2.0-draft2`, with Spin's semantics (checked against
//! Spin's `factor-key-value` and `key-value-spin`).

use std::sync::Arc;

use wasmtime::component::{HasSelf, Linker, Resource, ResourceTable};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::kv::{KvError, Stores, Swap};
use crate::outbound::DenyOutbound;
use crate::variables::{Lookup, ResolvedVariables};

wasmtime::component::bindgen!({
    world: "spin-host",
    path: "wit",
    imports: { default: async | trappable },
    with: {
        "fermyon:spin/key-value.store": OpenStore,
        "wasi:keyvalue/store.bucket": OpenStore,
        "wasi:keyvalue/atomics.cas": PendingCas,
    },
});

use fermyon::spin::{key_value, variables};
use wasi::keyvalue::{atomics, batch, store};

/// An opened store (a `key-value.store` or a `wasi:keyvalue` bucket): its label.
pub struct OpenStore {
    label: String,
}

/// A `wasi:keyvalue/atomics.cas`: the key, and the value `current` last read, which `swap`
/// expects to still be there (`None` until read: the key is expected to be absent, as in Spin).
pub struct PendingCas {
    label: String,
    key: String,
    expected: Option<Vec<u8>>,
}

/// What a component instance may reach besides WASI: shared by every request it serves.
#[derive(Clone)]
pub struct ComponentHost {
    /// The component ID, for variable lookups.
    pub component: Arc<str>,
    /// Store labels from `key_value_stores`.
    pub allowed_stores: Arc<[String]>,
    /// The key-value stores, by label.
    pub kv: Stores,
    /// Resolved variables of every component.
    pub variables: Arc<ResolvedVariables>,
}

/// The data of one request's `Store`.
pub struct HostState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    outbound: DenyOutbound,
    host: ComponentHost,
}

impl HostState {
    /// Fresh state for one request.
    pub fn new(wasi: WasiCtx, host: ComponentHost) -> Self {
        Self {
            wasi,
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            outbound: DenyOutbound,
            host,
        }
    }
}

impl WasiView for HostState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl WasiHttpView for HostState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView {
            ctx: &mut self.http,
            table: &mut self.table,
            hooks: &mut self.outbound,
        }
    }
}

/// Adds WASI, `wasi:http` and the Spin interfaces to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    wasmtime_wasi::p2::add_to_linker_async(linker)?;
    wasmtime_wasi_http::p2::add_only_http_to_linker_async(linker)?;
    SpinHost::add_to_linker::<HostState, HasSelf<HostState>>(linker, |state| state)?;
    Ok(())
}

enum Open {
    Allowed,
    Denied,
}

impl HostState {
    fn check_store(&self, label: &str) -> Open {
        if self.host.allowed_stores.iter().any(|s| s == label) {
            Open::Allowed
        } else {
            Open::Denied
        }
    }

    fn label(&self, store: &Resource<OpenStore>) -> wasmtime::Result<String> {
        Ok(self.table.get(store)?.label.clone())
    }
}

fn spin_err(e: KvError) -> key_value::Error {
    key_value::Error::Other(e.0)
}

fn wasi_err(e: KvError) -> store::Error {
    store::Error::Other(e.0)
}

type SpinResult<T> = wasmtime::Result<Result<T, key_value::Error>>;
type WasiResult<T> = wasmtime::Result<Result<T, store::Error>>;

impl key_value::Host for HostState {}

impl key_value::HostStore for HostState {
    async fn open(&mut self, label: String) -> SpinResult<Resource<OpenStore>> {
        // Labels outside `key_value_stores` are denied; every allowed label exists, because
        // start-up refuses labels that are not defined (as Spin does).
        match self.check_store(&label) {
            Open::Denied => Ok(Err(key_value::Error::AccessDenied)),
            Open::Allowed => Ok(Ok(self.table.push(OpenStore { label })?)),
        }
    }

    async fn get(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
    ) -> SpinResult<Option<Vec<u8>>> {
        let label = self.label(&store)?;
        Ok(self.host.kv.get(&label, &key).await.map_err(spin_err))
    }

    async fn set(
        &mut self,
        store: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> SpinResult<()> {
        let label = self.label(&store)?;
        Ok(self
            .host
            .kv
            .set(&label, &key, value)
            .await
            .map_err(spin_err))
    }

    async fn delete(&mut self, store: Resource<OpenStore>, key: String) -> SpinResult<()> {
        let label = self.label(&store)?;
        Ok(self.host.kv.delete(&label, &key).await.map_err(spin_err))
    }

    async fn exists(&mut self, store: Resource<OpenStore>, key: String) -> SpinResult<bool> {
        let label = self.label(&store)?;
        Ok(self.host.kv.exists(&label, &key).await.map_err(spin_err))
    }

    async fn get_keys(&mut self, store: Resource<OpenStore>) -> SpinResult<Vec<String>> {
        let label = self.label(&store)?;
        Ok(self.host.kv.keys(&label).await.map_err(spin_err))
    }

    async fn drop(&mut self, store: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(store)?;
        Ok(())
    }
}

impl variables::Host for HostState {
    async fn get(&mut self, name: String) -> wasmtime::Result<Result<String, variables::Error>> {
        Ok(self
            .host
            .variables
            .get(&self.host.component, &name)
            .map_err(|e| match e {
                Lookup::InvalidName(m) => variables::Error::InvalidName(m),
                Lookup::Undefined(m) => variables::Error::Undefined(m),
            }))
    }
}

impl store::Host for HostState {
    async fn open(&mut self, identifier: String) -> WasiResult<Resource<OpenStore>> {
        match self.check_store(&identifier) {
            Open::Denied => Ok(Err(store::Error::AccessDenied)),
            Open::Allowed => Ok(Ok(self.table.push(OpenStore { label: identifier })?)),
        }
    }
}

impl store::HostBucket for HostState {
    async fn get(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> WasiResult<Option<Vec<u8>>> {
        let label = self.label(&bucket)?;
        Ok(self.host.kv.get(&label, &key).await.map_err(wasi_err))
    }

    async fn set(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        value: Vec<u8>,
    ) -> WasiResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .host
            .kv
            .set(&label, &key, value)
            .await
            .map_err(wasi_err))
    }

    async fn delete(&mut self, bucket: Resource<OpenStore>, key: String) -> WasiResult<()> {
        let label = self.label(&bucket)?;
        Ok(self.host.kv.delete(&label, &key).await.map_err(wasi_err))
    }

    async fn exists(&mut self, bucket: Resource<OpenStore>, key: String) -> WasiResult<bool> {
        let label = self.label(&bucket)?;
        Ok(self.host.kv.exists(&label, &key).await.map_err(wasi_err))
    }

    /// All keys in one response with no cursor, as Spin answers; a cursor (which Spin never
    /// hands out) is refused the way Spin refuses it.
    async fn list_keys(
        &mut self,
        bucket: Resource<OpenStore>,
        cursor: Option<String>,
    ) -> WasiResult<store::KeyResponse> {
        if cursor.is_some() {
            return Ok(Err(store::Error::Other(
                "list_keys: cursor not supported".into(),
            )));
        }
        let label = self.label(&bucket)?;
        Ok(self
            .host
            .kv
            .keys(&label)
            .await
            .map(|keys| store::KeyResponse { keys, cursor: None })
            .map_err(wasi_err))
    }

    async fn drop(&mut self, bucket: Resource<OpenStore>) -> wasmtime::Result<()> {
        self.table.delete(bucket)?;
        Ok(())
    }
}

impl batch::Host for HostState {
    async fn get_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> WasiResult<Vec<(String, Option<Vec<u8>>)>> {
        let label = self.label(&bucket)?;
        Ok(self.host.kv.get_many(&label, keys).await.map_err(wasi_err))
    }

    async fn set_many(
        &mut self,
        bucket: Resource<OpenStore>,
        key_values: Vec<(String, Vec<u8>)>,
    ) -> WasiResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .host
            .kv
            .set_many(&label, key_values)
            .await
            .map_err(wasi_err))
    }

    async fn delete_many(
        &mut self,
        bucket: Resource<OpenStore>,
        keys: Vec<String>,
    ) -> WasiResult<()> {
        let label = self.label(&bucket)?;
        Ok(self
            .host
            .kv
            .delete_many(&label, keys)
            .await
            .map_err(wasi_err))
    }
}

impl atomics::HostCas for HostState {
    async fn new(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
    ) -> WasiResult<Resource<PendingCas>> {
        let label = self.label(&bucket)?;
        Ok(Ok(self.table.push(PendingCas {
            label,
            key,
            expected: None,
        })?))
    }

    async fn current(&mut self, cas: Resource<PendingCas>) -> WasiResult<Option<Vec<u8>>> {
        let (label, key) = {
            let cas = self.table.get(&cas)?;
            (cas.label.clone(), cas.key.clone())
        };
        let value = match self.host.kv.get(&label, &key).await {
            Ok(value) => value,
            Err(e) => return Ok(Err(wasi_err(e))),
        };
        self.table.get_mut(&cas)?.expected.clone_from(&value);
        Ok(Ok(value))
    }

    async fn drop(&mut self, cas: Resource<PendingCas>) -> wasmtime::Result<()> {
        self.table.delete(cas)?;
        Ok(())
    }
}

impl atomics::Host for HostState {
    async fn increment(
        &mut self,
        bucket: Resource<OpenStore>,
        key: String,
        delta: i64,
    ) -> WasiResult<i64> {
        let label = self.label(&bucket)?;
        Ok(self
            .host
            .kv
            .increment(&label, &key, delta)
            .await
            .map_err(wasi_err))
    }

    /// On a lost race, returns `cas-failed` with a fresh handle on the same key whose
    /// expected value is the one now stored, so the guest can recompute and retry (Spin's
    /// behavior).
    async fn swap(
        &mut self,
        cas: Resource<PendingCas>,
        value: Vec<u8>,
    ) -> wasmtime::Result<Result<(), atomics::CasError>> {
        let PendingCas {
            label,
            key,
            expected,
        } = self.table.delete(cas)?;
        let swapped = self
            .host
            .kv
            .compare_and_swap(&label, &key, expected, value)
            .await;
        match swapped {
            Ok(Swap::Swapped) => Ok(Ok(())),
            Ok(Swap::Conflict { current }) => {
                let retry = self.table.push(PendingCas {
                    label,
                    key,
                    expected: current,
                })?;
                Ok(Err(atomics::CasError::CasFailed(retry)))
            }
            Err(e) => Ok(Err(atomics::CasError::StoreError(wasi_err(e)))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use super::*;
    use crate::kv::{Durability, SqliteKv, DB_FILE};
    use crate::manifest::Manifest;

    /// Fresh host state over a database in a temporary folder (kept while the test runs).
    fn state() -> (tempfile::TempDir, HostState) {
        let manifest = Manifest::parse(
            r#"
spin_manifest_version = 2
[application]
name = "t"
[variables]
region = { default = "eu" }
[[trigger.http]]
route = "/..."
component = "c"
[component.c]
source = "c.wasm"
key_value_stores = ["default"]
[component.c.variables]
where = "in-{{ region }}"
"#,
            Path::new("."),
        )
        .unwrap();
        let variables = ResolvedVariables::resolve(&manifest, |_| None).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let kv =
            Stores::sqlite(SqliteKv::open(&dir.path().join(DB_FILE), Durability::Process).unwrap());
        let state = HostState::new(
            WasiCtx::builder().build(),
            ComponentHost {
                component: Arc::from("c"),
                allowed_stores: vec!["default".to_string()].into(),
                kv,
                variables: Arc::new(variables),
            },
        );
        (dir, state)
    }

    fn borrow<T: 'static>(r: &Resource<T>) -> Resource<T> {
        Resource::new_borrow(r.rep())
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn spin_key_value_denies_unlisted_stores_and_round_trips() {
        let (_dir, mut s) = state();
        let denied = <HostState as key_value::HostStore>::open(&mut s, "other".into())
            .await
            .unwrap();
        assert!(matches!(denied, Err(key_value::Error::AccessDenied)));
        let store = <HostState as key_value::HostStore>::open(&mut s, "default".into())
            .await
            .unwrap()
            .unwrap();
        key_value::HostStore::set(&mut s, borrow(&store), "k".into(), b"v".to_vec())
            .await
            .unwrap()
            .unwrap();
        let got = key_value::HostStore::get(&mut s, borrow(&store), "k".into())
            .await
            .unwrap();
        assert_eq!(got.unwrap(), Some(b"v".to_vec()));
        let keys = key_value::HostStore::get_keys(&mut s, borrow(&store))
            .await
            .unwrap();
        assert_eq!(keys.unwrap(), vec!["k".to_string()]);
        key_value::HostStore::delete(&mut s, borrow(&store), "k".into())
            .await
            .unwrap()
            .unwrap();
        let exists = key_value::HostStore::exists(&mut s, borrow(&store), "k".into())
            .await
            .unwrap();
        assert!(!exists.unwrap());
        key_value::HostStore::drop(&mut s, store).await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn wasi_keyvalue_cas_reports_conflicts_with_a_fresh_handle() {
        let (_dir, mut s) = state();
        let denied = <HostState as store::Host>::open(&mut s, "other".into())
            .await
            .unwrap();
        assert!(matches!(denied, Err(store::Error::AccessDenied)));
        let bucket = <HostState as store::Host>::open(&mut s, "default".into())
            .await
            .unwrap()
            .unwrap();
        store::HostBucket::set(&mut s, borrow(&bucket), "k".into(), b"one".to_vec())
            .await
            .unwrap()
            .unwrap();

        let cas = atomics::HostCas::new(&mut s, borrow(&bucket), "k".into())
            .await
            .unwrap()
            .unwrap();
        let current = atomics::HostCas::current(&mut s, borrow(&cas))
            .await
            .unwrap()
            .unwrap();
        assert_eq!(current, Some(b"one".to_vec()));
        // Someone else writes in between: the swap fails and hands back a retry handle that
        // already expects the new value.
        store::HostBucket::set(&mut s, borrow(&bucket), "k".into(), b"two".to_vec())
            .await
            .unwrap()
            .unwrap();
        let failed = atomics::Host::swap(&mut s, cas, b"three".to_vec())
            .await
            .unwrap();
        let Err(atomics::CasError::CasFailed(retry)) = failed else {
            panic!("expected cas-failed");
        };
        let get = store::HostBucket::get(&mut s, borrow(&bucket), "k".into())
            .await
            .unwrap();
        assert_eq!(get.unwrap(), Some(b"two".to_vec()));
        assert!(atomics::Host::swap(&mut s, retry, b"three".to_vec())
            .await
            .unwrap()
            .is_ok());
        let get = store::HostBucket::get(&mut s, borrow(&bucket), "k".into())
            .await
            .unwrap();
        assert_eq!(get.unwrap(), Some(b"three".to_vec()));

        // A CAS on an absent key without `current` claims it only while it stays absent.
        let claim = atomics::HostCas::new(&mut s, borrow(&bucket), "new".into())
            .await
            .unwrap()
            .unwrap();
        assert!(atomics::Host::swap(&mut s, claim, b"mine".to_vec())
            .await
            .unwrap()
            .is_ok());
        let again = atomics::HostCas::new(&mut s, borrow(&bucket), "new".into())
            .await
            .unwrap()
            .unwrap();
        let lost = atomics::Host::swap(&mut s, again, b"theirs".to_vec())
            .await
            .unwrap();
        assert!(matches!(lost, Err(atomics::CasError::CasFailed(_))));

        let n = atomics::Host::increment(&mut s, borrow(&bucket), "n".into(), 5)
            .await
            .unwrap();
        assert_eq!(n.unwrap(), 5);
        let listed = store::HostBucket::list_keys(&mut s, borrow(&bucket), None)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(listed.keys, vec!["k", "n", "new"]);
        assert_eq!(listed.cursor, None);
        let cursor = store::HostBucket::list_keys(&mut s, borrow(&bucket), Some("k".into()))
            .await
            .unwrap();
        assert!(cursor.is_err());

        let many = batch::Host::get_many(&mut s, borrow(&bucket), vec!["n".into(), "zz".into()])
            .await
            .unwrap()
            .unwrap();
        assert_eq!(
            many,
            vec![
                ("n".to_string(), Some(5i64.to_le_bytes().to_vec())),
                ("zz".to_string(), None)
            ]
        );
    }

    #[tokio::test(flavor = "multi_thread")]
    async fn variables_resolve_per_component() {
        let (_dir, mut s) = state();
        let got = variables::Host::get(&mut s, "where".into()).await.unwrap();
        assert_eq!(got.unwrap(), "in-eu");
        let undefined = variables::Host::get(&mut s, "region".into()).await.unwrap();
        assert!(matches!(undefined, Err(variables::Error::Undefined(_))));
        let invalid = variables::Host::get(&mut s, "Nope".into()).await.unwrap();
        assert!(matches!(invalid, Err(variables::Error::InvalidName(_))));
    }
}
