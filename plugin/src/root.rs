//! The root context: one per worker VM. Reads and validates the configuration, owns the
//! per-worker state, fetches remote key sets and runs the timer.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;
use std::sync::Arc;

use edge_policy::config::KeySource;
use edge_policy::{Policy, Worker};
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::abi::{self, Buffer};
use crate::host::{self, EnvoyStore, Level};
use crate::http::{self, FilterHttp, HttpState};
use crate::keys::{self, FetchState};
use crate::metrics::Metrics;

/// State shared by the root context and the request contexts of one worker (one VM:
/// single-threaded, hence `Rc<RefCell<..>>`).
#[derive(Default)]
pub struct Shared {
    /// The configured policy and per-worker caches; `None` until configured.
    pub worker: Option<Worker>,
    /// Counters.
    pub metrics: Metrics,
    /// Remote key fetching, per issuer.
    pub fetch: Vec<FetchState>,
    /// In-flight key fetches: call token to issuer.
    pub calls: HashMap<u32, usize>,
    /// Requests paused until their issuer's keys arrive.
    pub waiters: Vec<Waiter>,
}

/// A request paused for keys.
pub struct Waiter {
    /// Its context id.
    pub context_id: u32,
    /// The issuer whose keys it needs.
    pub issuer: usize,
    /// When it stops waiting (Envoy clock, ms).
    pub deadline_ms: u64,
    /// Its state.
    pub state: Rc<RefCell<HttpState>>,
}

/// The root context.
pub struct FilterRoot {
    shared: Rc<RefCell<Shared>>,
}

impl FilterRoot {
    /// A root context, unconfigured.
    pub fn new(_context_id: u32) -> Self {
        Self {
            shared: Rc::new(RefCell::new(Shared::default())),
        }
    }

    fn configure(&self) -> Result<(), String> {
        let text = abi::buffer(Buffer::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| format!("cannot read the plugin configuration: {s:?}"))?;
        let policy = Policy::from_json(&text).map_err(|e| e.to_string())?;
        let hmac_key = match &policy.identity_key {
            KeySource::Inline(key) => key.clone(),
            KeySource::Env(name) => {
                let value = std::env::var(name).map_err(|_| {
                    format!(
                        "invalid filter configuration: field `identity.hmac_key_env`: environment variable {name:?} is not set (expose it with vm_config.environment_variables)"
                    )
                })?;
                let key = value.trim().as_bytes().to_vec();
                if key.len() < edge_contract::MIN_KEY_LEN {
                    return Err(format!(
                        "invalid filter configuration: field `identity.hmac_key_env`: the key in {name:?} is shorter than {} bytes",
                        edge_contract::MIN_KEY_LEN
                    ));
                }
                key
            }
        };
        let remote = policy.issuers.iter().any(|i| i.remote.is_some());
        let fetch = policy
            .issuers
            .iter()
            .map(|_| FetchState::default())
            .collect();
        let mut worker = Worker::new(Arc::new(policy), hmac_key);
        // The slot-hash key must be secret: no clock-derived fallback, refuse instead.
        let mut fresh = [0u8; 16];
        getrandom::getrandom(&mut fresh)
            .map_err(|e| format!("cannot draw the shared-state key from the host: {e}"))?;
        worker
            .init_shared(&EnvoyStore, fresh)
            .map_err(|e| format!("cannot initialize shared data: {e:?}"))?;
        let mut shared = self.shared.borrow_mut();
        shared.worker = Some(worker);
        shared.fetch = fetch;
        // The timer drives scheduled key refreshes and the bound on requests waiting for keys.
        let period_ms = if remote { 200 } else { 5_000 };
        abi::set_tick_period_ms(period_ms)
            .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        Ok(())
    }
}

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        keys::on_response(&self.shared, token_id, body_size);
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match self.configure() {
            Ok(()) => true,
            Err(message) => {
                // One line naming the field; Envoy then refuses the configuration.
                host::log(Level::Error, &message);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        let now = host::now_ms();
        keys::refresh_due(&self.shared, now);
        http::expire_waiters(&self.shared, now);
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(FilterHttp::new(
            context_id,
            Rc::clone(&self.shared),
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
