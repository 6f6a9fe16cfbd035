//! Remote JWKS: fetched through an Envoy cluster at start, on a schedule, and (rate-limited)
//! when a token names an unknown `kid`.

use std::cell::RefCell;
use std::rc::Rc;

use edge_policy::jwks::JwkSet;

use crate::abi::{self, Buffer, Map};
use crate::host::{self, Level};
use crate::http;
use crate::root::Shared;

/// Fetch bookkeeping of one issuer.
#[derive(Debug, Default, Clone)]
pub struct FetchState {
    /// When the fetch in flight started, if one is.
    pub in_flight_since: Option<u64>,
    /// When the last fetch started.
    pub last_attempt_ms: Option<u64>,
    /// When the next scheduled refresh is due.
    pub next_refresh_ms: u64,
}

/// Starts a fetch of `issuer`'s keys unless one is in flight. Returns whether a fetch is
/// now in flight. `unknown_kid` applies the minimum refresh interval.
pub fn fetch(shared: &mut Shared, issuer: usize, now: u64, unknown_kid: bool) -> bool {
    let Some(remote) = shared
        .worker
        .as_ref()
        .and_then(|w| w.policy.issuers.get(issuer))
        .and_then(|i| i.remote.clone())
    else {
        return false;
    };
    let timeout_ms = u64::try_from(remote.timeout.as_millis()).unwrap_or(u64::MAX);
    let min_interval = u64::try_from(remote.min_refresh_interval.as_millis()).unwrap_or(u64::MAX);
    let Some(state) = shared.fetch.get_mut(issuer) else {
        return false;
    };
    // A fetch whose callback never came (its context went away) stops counting after its timeout.
    if let Some(since) = state.in_flight_since {
        if now < since.saturating_add(timeout_ms).saturating_add(1_000) {
            return true;
        }
        state.in_flight_since = None;
    }
    if unknown_kid
        && state
            .last_attempt_ms
            .is_some_and(|last| now < last.saturating_add(min_interval))
    {
        return false;
    }
    let headers = vec![
        (":method", "GET"),
        (":path", remote.path.as_str()),
        (":authority", remote.authority.as_str()),
        ("accept", "application/json"),
    ];
    // The SDK's call, not `abi`: its dispatcher must record the token to route the response
    // back (it panics on a token it does not know). Envoy answers only Ok, BadArgument or
    // InternalFailure here, which the SDK returns as errors.
    match proxy_wasm::hostcalls::dispatch_http_call(
        &remote.cluster,
        headers,
        None,
        vec![],
        remote.timeout,
    ) {
        Ok(token) => {
            state.in_flight_since = Some(now);
            state.last_attempt_ms = Some(now);
            shared.calls.insert(token, issuer);
            true
        }
        Err(status) => {
            state.last_attempt_ms = Some(now);
            state.next_refresh_ms = now.saturating_add(5_000);
            shared.metrics.count("jwks_fetch.failed");
            host::log(
                Level::Warn,
                &format!("jwks fetch for issuer #{issuer} could not start: {status:?}"),
            );
            false
        }
    }
}

/// Starts the scheduled refreshes that are due (and the first load).
pub fn refresh_due(shared: &Rc<RefCell<Shared>>, now: u64) {
    let mut guard = shared.borrow_mut();
    let shared = &mut *guard;
    let n = shared.fetch.len();
    for issuer in 0..n {
        // `fetch` skips an issuer whose fetch is still in flight, and forgets one whose
        // callback never came (its request context went away), so the schedule never stalls.
        let due = shared
            .fetch
            .get(issuer)
            .is_some_and(|f| now >= f.next_refresh_ms);
        let remote = shared
            .worker
            .as_ref()
            .and_then(|w| w.policy.issuers.get(issuer))
            .is_some_and(|i| i.remote.is_some());
        if due && remote {
            fetch(shared, issuer, now, false);
        }
    }
}

/// Handles a fetch response (delivered to whichever context started the fetch), installs
/// the keys and wakes the requests waiting for them.
pub fn on_response(shared: &Rc<RefCell<Shared>>, token: u32, body_size: usize) {
    let now = host::now_ms();
    let issuer = {
        let mut guard = shared.borrow_mut();
        let s = &mut *guard;
        let Some(issuer) = s.calls.remove(&token) else {
            return;
        };
        let status = abi::header(Map::HttpCallResponse, ":status")
            .ok()
            .flatten()
            .unwrap_or_default();
        let parsed = if status == b"200" {
            // `body_size` is the server's; the key set size is ours to bound.
            let limit = body_size.min(JwkSet::MAX_BYTES.saturating_add(1));
            let body = abi::buffer(Buffer::HttpCallResponseBody, 0, limit).unwrap_or_default();
            JwkSet::from_slice(&body).map_err(|e| e.to_string())
        } else {
            Err(format!("status {}", String::from_utf8_lossy(&status)))
        };
        let (refresh_ms, retry_ms) = s
            .worker
            .as_ref()
            .and_then(|w| w.policy.issuers.get(issuer))
            .and_then(|i| i.remote.as_ref())
            .map(|r| {
                (
                    u64::try_from(r.refresh_interval.as_millis()).unwrap_or(u64::MAX),
                    u64::try_from(r.min_refresh_interval.as_millis()).unwrap_or(u64::MAX),
                )
            })
            .unwrap_or((300_000, 30_000));
        match parsed {
            Ok(set) => {
                if let Some(w) = s.worker.as_mut() {
                    w.set_remote_keys(issuer, set);
                }
                s.metrics.count("jwks_fetch.ok");
                if let Some(f) = s.fetch.get_mut(issuer) {
                    f.in_flight_since = None;
                    f.next_refresh_ms = now.saturating_add(refresh_ms);
                }
            }
            Err(why) => {
                s.metrics.count("jwks_fetch.failed");
                host::log(
                    Level::Warn,
                    &format!("jwks fetch for issuer #{issuer} failed: {why}"),
                );
                if let Some(f) = s.fetch.get_mut(issuer) {
                    f.in_flight_since = None;
                    // Retry sooner than the regular schedule when keys could not be loaded.
                    f.next_refresh_ms = now.saturating_add(retry_ms.min(refresh_ms).min(5_000));
                }
            }
        }
        issuer
    };
    http::wake_waiters(shared, |w| w.issuer == issuer);
}
