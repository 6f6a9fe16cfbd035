//! Loading an application and serving it over HTTP/1.1: one fresh component instance per
//! request, requests served concurrently, a trapping request answered with 500 while the
//! runner keeps serving.

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};
use bytes::Bytes;
use http::{HeaderValue, Request, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use tokio::net::TcpListener;
use wasmtime::component::Linker;
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};
use wasmtime_wasi::WasiCtx;
use wasmtime_wasi_http::io::TokioIo;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use wasmtime_wasi_http::WasiHttpView;

use crate::cache;
use crate::host::{self, ComponentHost, HostState};
use crate::kv::redis::RedisKv;
use crate::kv::{Backend, Durability, SqliteKv, Stores, DB_FILE};
use crate::manifest::Manifest;
use crate::routes::{spin_headers, RouteMatch, Router};
use crate::runtime_config::{KvStoreConfig, RuntimeConfig};
use crate::variables::ResolvedVariables;

/// What `spin-runner up` needs to start.
#[derive(Debug, Clone)]
pub struct Options {
    /// The manifest (`spin.toml`).
    pub manifest: PathBuf,
    /// Holds `sqlite_key_value.db`; created if missing.
    pub state_dir: PathBuf,
    /// Compiled-component cache; `None` for [`cache::default_dir`].
    pub cache_dir: Option<PathBuf>,
    /// What an answered key-value write survives.
    pub durability: Durability,
    /// Write one stderr line per request.
    pub log_requests: bool,
    /// Spin's runtime configuration file (`--runtime-config-file`): which store serves
    /// each key-value label.
    pub runtime_config: Option<PathBuf>,
}

/// How often a running guest yields to the executor (Spin uses the same mechanism).
const EPOCH_TICK: Duration = Duration::from_millis(10);

/// The most requests (component instances) served at once with the pooling allocator, as
/// Spin's default.
const MAX_INSTANCES: u32 = 1_000;

/// The wasmtime engine spin-runner uses: wasmtime's defaults (Cranelift, async support) plus
/// epoch interruption, so a guest computing for a long time yields its executor thread every
/// [`EPOCH_TICK`] instead of holding up other requests (there are few threads on 2 cores),
/// and, as in Spin, the pooling instance allocator: every request still gets a fresh
/// instance, but its memory, tables and stack come from slots reserved once, reset in place,
/// instead of being mapped and unmapped per request. Where the address space cannot hold
/// the pool, the engine falls back to allocating on demand and says so on stderr.
/// A thread ticks the epoch for as long as the engine lives.
pub fn engine() -> Result<Engine> {
    let mut config = Config::new();
    config.epoch_interruption(true);
    config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling()));
    let engine = match Engine::new(&config) {
        Ok(engine) => engine,
        Err(e) => {
            eprintln!(
                "spin-runner: the pooling allocator is unavailable ({e}); allocating instances on demand"
            );
            config.allocation_strategy(InstanceAllocationStrategy::OnDemand);
            Engine::new(&config).map_err(anyhow::Error::from)?
        }
    };
    let weak = engine.weak();
    std::thread::Builder::new()
        .name("spin-runner-epoch".into())
        .spawn(move || {
            while let Some(engine) = weak.upgrade() {
                engine.increment_epoch();
                drop(engine);
                std::thread::sleep(EPOCH_TICK);
            }
        })
        .context("cannot start the epoch thread")?;
    Ok(engine)
}

/// Spin's pool limits, sized for [`MAX_INSTANCES`] concurrent requests of components made
/// of a few core modules (the backend is one module with one memory and one table).
fn pooling() -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::new();
    pool.total_component_instances(MAX_INSTANCES)
        .total_memories(MAX_INSTANCES)
        .total_tables(2 * MAX_INSTANCES)
        .total_stacks(MAX_INSTANCES)
        .total_core_instances(4 * MAX_INSTANCES)
        .table_elements(100_000)
        .max_component_instance_size(10 << 20)
        .max_core_instance_size(10 << 20)
        .max_core_instances_per_component(200)
        .max_tables_per_component(64)
        .max_memories_per_component(32)
        .max_tables_per_module(2)
        .max_memories_per_module(2)
        .max_memory_size(4 << 30)
        // A request's pages are zeroed in place up to this size instead of being returned
        // to the kernel and faulted in again by the next request.
        .linear_memory_keep_resident(2 << 20)
        .table_keep_resident(1 << 19);
    pool
}

/// The default SQLite file in the state directory, and the stores the runtime configuration
/// names. Redis connections are made on the runtime `App::load` is called from.
fn open_stores(options: &Options) -> Result<Stores> {
    let open_sqlite = |db: &Path| {
        let kv = SqliteKv::open(db, options.durability)
            .with_context(|| format!("cannot open key-value database {}", db.display()))?;
        eprintln!(
            "spin-runner: key-value database {} (write-ahead log, group commit, {} durability)",
            db.display(),
            options.durability
        );
        anyhow::Ok(kv)
    };
    let default = open_sqlite(&options.state_dir.join(DB_FILE))?;
    let config = match &options.runtime_config {
        Some(path) => RuntimeConfig::load(path)?,
        None => RuntimeConfig::default(),
    };
    for section in config.ignored.keys() {
        eprintln!("spin-runner: runtime configuration [{section}] is not served here; ignored");
    }
    let mut configured = std::collections::BTreeMap::new();
    for (label, store) in config.key_value_store {
        let backend = match store {
            KvStoreConfig::Spin { path: None } => Backend::Sqlite(default.clone()),
            KvStoreConfig::Spin { path: Some(db) } => Backend::Sqlite(open_sqlite(&db)?),
            KvStoreConfig::Redis { url } => {
                let runtime = tokio::runtime::Handle::try_current().map_err(|_| {
                    anyhow!("key_value_store.{label}: a Redis store needs the async runtime")
                })?;
                let kv = runtime
                    .block_on(RedisKv::connect(&url))
                    .with_context(|| format!("key_value_store.{label}: cannot reach Redis"))?;
                Backend::Redis(kv)
            }
        };
        eprintln!(
            "spin-runner: key-value store {label:?}: {}",
            backend.describe()
        );
        configured.insert(label, backend);
    }
    Ok(Stores::new(default, configured))
}

struct LoadedComponent {
    pre: ProxyPre<HostState>,
    host: ComponentHost,
    environment: Vec<(String, String)>,
}

/// A loaded application, ready to serve.
pub struct App {
    router: Router,
    components: BTreeMap<String, LoadedComponent>,
    log_requests: bool,
}

impl App {
    /// Reads the manifest, resolves variables (`env` is `std::env::var` in production), opens
    /// the key-value database and compiles (or loads from cache) every component.
    pub fn load(options: &Options, env: impl Fn(&str) -> Option<String>) -> Result<Self> {
        let manifest = Manifest::load(&options.manifest)?;
        let router = Router::build(&manifest.routes)?;
        let variables = Arc::new(ResolvedVariables::resolve(&manifest, env)?);

        std::fs::create_dir_all(&options.state_dir).with_context(|| {
            format!(
                "cannot create state directory {}",
                options.state_dir.display()
            )
        })?;
        let kv = open_stores(options)?;

        let engine = engine()?;
        let mut linker = Linker::new(&engine);
        host::add_to_linker(&mut linker).map_err(anyhow::Error::from)?;

        let mut components = BTreeMap::new();
        let served: std::collections::BTreeSet<&str> = manifest
            .routes
            .iter()
            .map(|r| r.component.as_str())
            .collect();
        for (id, component) in &manifest.components {
            if !served.contains(id.as_str()) {
                continue;
            }
            let cache_dir = options
                .cache_dir
                .clone()
                .unwrap_or_else(|| cache::default_dir(&component.source, &options.state_dir));
            let started = Instant::now();
            let (compiled, outcome) = cache::load(&engine, &component.source, &cache_dir)
                .with_context(|| format!("component {id:?}"))?;
            eprintln!(
                "spin-runner: component {id:?} ready in {:.2}s ({outcome:?}; cache {})",
                started.elapsed().as_secs_f64(),
                cache_dir.display()
            );
            let pre = linker
                .instantiate_pre(&compiled)
                .map_err(|e| anyhow!("{e:#}"))
                .with_context(|| {
                    format!("component {id:?} imports something spin-runner does not provide")
                })?;
            let pre = ProxyPre::new(pre)
                .map_err(|e| anyhow!("{e:#}"))
                .with_context(|| {
                    format!("component {id:?} does not export wasi:http/incoming-handler@0.2.x")
                })?;
            let host = ComponentHost {
                component: Arc::from(id.as_str()),
                allowed_stores: component.key_value_stores.clone().into(),
                kv: kv.clone(),
                variables: variables.clone(),
            };
            let environment = component.environment.clone().into_iter().collect();
            components.insert(
                id.clone(),
                LoadedComponent {
                    pre,
                    host,
                    environment,
                },
            );
        }
        Ok(Self {
            router,
            components,
            log_requests: options.log_requests,
        })
    }

    /// The routes, for the start-up banner: (route, component).
    pub fn routes(&self) -> impl Iterator<Item = (&str, &str)> {
        self.router.describe()
    }
}

/// Serves `app` on `listener` until `shutdown` completes.
pub async fn serve(
    app: Arc<App>,
    listener: TcpListener,
    shutdown: impl Future<Output = ()>,
) -> Result<()> {
    tokio::pin!(shutdown);
    loop {
        let (stream, client) = tokio::select! {
            () = &mut shutdown => return Ok(()),
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Running out of file descriptors and the like: keep serving.
                    eprintln!("spin-runner: accept failed: {e}");
                    continue;
                }
            },
        };
        // A response head and its body are separate writes: without this, Nagle's algorithm
        // holds the second until the client acknowledges the first.
        let _ = stream.set_nodelay(true);
        let local = stream.local_addr().ok();
        let app = app.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |req| {
                let app = app.clone();
                async move { Ok::<_, Infallible>(handle(&app, req, client, local).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), service)
                .await
            {
                eprintln!("spin-runner: connection from {client}: {e}");
            }
        });
    }
}

async fn handle(
    app: &App,
    req: Request<Incoming>,
    client: SocketAddr,
    local: Option<SocketAddr>,
) -> Response<HyperOutgoingBody> {
    let started = Instant::now();
    let method = req.method().clone();
    // The path only: a query string may carry secrets.
    let path = req.uri().path().to_owned();
    let (response, component) = match app.router.route(&path) {
        None => (text(StatusCode::NOT_FOUND, "Not Found"), None),
        Some(route) => {
            let component = route.component.clone();
            let response = match call(app, req, &route, client, local).await {
                Ok(response) => response,
                Err(e) => {
                    eprintln!(
                        "spin-runner: {method} {path}: component {component:?} failed: {e:#}"
                    );
                    text(StatusCode::INTERNAL_SERVER_ERROR, "Internal Server Error")
                }
            };
            (response, Some(component))
        }
    };
    if app.log_requests {
        eprintln!(
            "spin-runner: {method} {path} -> {} in {:.1} ms{}",
            response.status().as_u16(),
            started.elapsed().as_secs_f64() * 1000.0,
            component.map(|c| format!(" ({c})")).unwrap_or_default()
        );
    }
    response
}

async fn call(
    app: &App,
    mut req: Request<Incoming>,
    route: &RouteMatch,
    client: SocketAddr,
    local: Option<SocketAddr>,
) -> Result<Response<HyperOutgoingBody>> {
    let component = app
        .components
        .get(&route.component)
        .ok_or_else(|| anyhow!("component {:?} is not loaded", route.component))?;

    // The authority the guest sees, and the one in `spin-full-url`.
    let host = match req
        .headers()
        .get(http::header::HOST)
        .map(HeaderValue::to_str)
    {
        Some(Ok(host)) => host.to_owned(),
        _ => local.map_or_else(|| "localhost".to_owned(), |a| a.to_string()),
    };
    let path_and_query = req
        .uri()
        .path_and_query()
        .map_or_else(|| "/".to_owned(), |pq| pq.as_str().to_owned());
    for (name, value) in spin_headers(route, &host, &path_and_query, client) {
        // Overwrites any client-sent `spin-*` header, so a client cannot fake them.
        req.headers_mut()
            .insert(name, HeaderValue::from_str(&value)?);
    }
    *req.uri_mut() = Uri::builder()
        .scheme("http")
        .authority(host.as_str())
        .path_and_query(path_and_query.as_str())
        .build()?;

    let mut wasi = WasiCtx::builder();
    // Our stdout carries only the `Serving …` line; component output goes to stderr.
    wasi.stdout(wasmtime_wasi::cli::stderr())
        .stderr(wasmtime_wasi::cli::stderr())
        .envs(&component.environment);
    let mut store = Store::new(
        component.pre.engine(),
        HostState::new(wasi.build(), component.host.clone()),
    );
    let (sender, receiver) = tokio::sync::oneshot::channel();
    let incoming = store
        .data_mut()
        .http()
        .new_incoming_request(Scheme::Http, req)
        .map_err(anyhow::Error::from)?;
    let outparam = store
        .data_mut()
        .http()
        .new_response_outparam(sender)
        .map_err(anyhow::Error::from)?;
    store.epoch_deadline_async_yield_and_update(1);
    let pre = component.pre.clone();

    // The guest runs in its own task so it can keep streaming the body after the headers.
    let task = tokio::spawn(async move {
        let proxy = pre.instantiate_async(&mut store).await?;
        proxy
            .wasi_http_incoming_handler()
            .call_handle(&mut store, incoming, outparam)
            .await
    });

    match receiver.await {
        Ok(Ok(response)) => {
            // The guest may still be streaming the body: a trap now truncates it, and is
            // worth a log line since the status already went out.
            let component = route.component.clone();
            tokio::spawn(async move {
                if let Ok(Err(trap)) = task.await {
                    eprintln!(
                        "spin-runner: component {component:?} failed after responding: {trap:#}"
                    );
                }
            });
            Ok(response)
        }
        Ok(Err(code)) => Err(anyhow!("the component answered with error code {code:?}")),
        Err(_) => match task.await {
            Ok(Ok(())) => Err(anyhow!("the component returned without setting a response")),
            Ok(Err(trap)) => Err(anyhow::Error::from(trap)),
            Err(join) => Err(anyhow!("the request task failed: {join}")),
        },
    }
}

fn text(status: StatusCode, body: &'static str) -> Response<HyperOutgoingBody> {
    let mut response = Response::new(
        Full::new(Bytes::from_static(body.as_bytes()))
            .map_err(|never: Infallible| match never {})
            .boxed_unsync(),
    );
    *response.status_mut() = status;
    response.headers_mut().insert(
        http::header::CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// Binds `listen`, printing nothing; the caller announces the real address.
pub async fn bind(listen: SocketAddr) -> Result<TcpListener> {
    TcpListener::bind(listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))
}
