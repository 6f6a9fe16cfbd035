//! What one worker VM keeps between callbacks: the configured policy and its per-worker
//! caches, the key-fetch schedule with the requests waiting for keys, the requests waiting
//! for the rate limit service, and the counters.

use std::collections::HashMap;
use std::sync::Arc;

use edge_policy::keyfetch::KeyFetcher;
use edge_policy::{Policy, Worker};

use crate::host::EnvoyStore;
use crate::metrics::Metrics;

/// One VM's state. `W` is what a request waiting for keys is resumed through (the request
/// module's handle; generic so that this module need not know it). Single-threaded: the
/// contexts share it as `Rc<RefCell<Vm<W>>>`.
pub struct Vm<W> {
    /// The configured policy, keys and token cache.
    pub worker: Worker,
    /// When keys are fetched, and who waits for them.
    pub keys: KeyFetcher<W>,
    /// Counters.
    pub metrics: Metrics,
    /// Requests waiting for the rate limit service, by call token (with their context id).
    pub rate_limit_calls: HashMap<u32, (u32, W)>,
}

impl<W> Vm<W> {
    /// A VM configured by `text` (the plugin configuration), its shared state initialized;
    /// the error is the one line that tells the operator why Envoy refuses it.
    pub fn configure(text: &[u8]) -> Result<Self, String> {
        let policy = Policy::from_json(text).map_err(|e| e.to_string())?;
        let hmac_key = policy
            .identity_key
            .resolve(|name| std::env::var(name).ok())
            .map_err(|e| e.to_string())?;
        let keys = KeyFetcher::new(&policy);
        let mut worker = Worker::new(Arc::new(policy), hmac_key);
        // The slot-hash key must be secret: no clock-derived fallback, refuse instead.
        let mut fresh = [0u8; 16];
        getrandom::getrandom(&mut fresh)
            .map_err(|e| format!("cannot draw the shared-state key from the host: {e}"))?;
        worker
            .init_shared(&EnvoyStore, fresh)
            .map_err(|e| format!("cannot initialize shared data: {e:?}"))?;
        Ok(Self {
            worker,
            keys,
            metrics: Metrics::default(),
            rate_limit_calls: HashMap::new(),
        })
    }
}
