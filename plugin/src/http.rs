//! The request context: runs `edge_policy`'s decisions at request headers, request body
//! (or trailers) and response, and applies them to the stream.

use std::cell::RefCell;
use std::rc::Rc;

use edge_policy::headers;
use edge_policy::problem::Reply;
use edge_policy::{Host, Pending, RequestHead, Step};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::abi::{self, Buffer, Map};
use crate::host::{self, EnvoyStore, Level};
use crate::keys;
use crate::root::{Shared, Waiter};

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Phase {
    /// Headers not decided yet.
    #[default]
    Start,
    /// Paused until keys load.
    WaitingKeys,
    /// Headers passed on to the buffer filter; deciding once the body (or trailers) ends.
    WaitingBody,
    /// Forwarded upstream.
    Forwarded,
    /// Answered locally.
    Replied,
}

/// Per-request state, shared with the root context while the request waits for keys.
#[derive(Default)]
pub struct HttpState {
    /// Decisions carried between callbacks.
    pub pending: Pending,
    /// Phase.
    pub phase: Phase,
    /// Whether the request ended with its headers (no body, no trailers).
    pub headers_eos: bool,
    /// Upstream response status, once known.
    pub response_status: u16,
    /// Upstream response headers worth storing for an idempotent replay.
    pub response_headers: Vec<(String, String)>,
}

/// The request context.
pub struct FilterHttp {
    id: u32,
    shared: Rc<RefCell<Shared>>,
    state: Rc<RefCell<HttpState>>,
}

impl FilterHttp {
    /// A context for request `id`.
    pub fn new(id: u32, shared: Rc<RefCell<Shared>>) -> Self {
        Self {
            id,
            shared,
            state: Rc::new(RefCell::new(HttpState::default())),
        }
    }
}

/// Runs `f` with the host view of one decision: the shared store, Envoy's clock, randomness.
fn with_host<R>(f: impl FnOnce(&mut Host<'_>) -> R) -> R {
    let mut random = host::random16;
    let mut h = Host {
        store: &EnvoyStore,
        now_ms: host::now_ms(),
        random: &mut random,
    };
    f(&mut h)
}

/// Sends a local reply and records the decision.
fn reply(shared: &mut Shared, state: &mut HttpState, reply: &Reply) {
    host::send_reply(reply, &state.pending.request_id);
    let outcome = if reply.status < 400 {
        "replayed"
    } else {
        "denied"
    };
    shared.metrics.count(&format!("{outcome}.{}", reply.reason));
    host::log(
        Level::Info,
        &format!(
            "request_id={} status={} reason={}",
            state.pending.request_id, reply.status, reply.reason
        ),
    );
    state.phase = Phase::Replied;
}

/// Decides the request's headers. `resumed`: called after a pause (keys arrived or the
/// wait ended), so the request must be resumed explicitly instead of returning `Continue`.
fn decide_headers(
    shared_rc: &Rc<RefCell<Shared>>,
    state_rc: &Rc<RefCell<HttpState>>,
    context_id: u32,
    resumed: bool,
) -> Action {
    let wire = host::header_map(Map::Request);
    let pairs = host::decoded(&wire);
    let client = host::client_addr();
    let mut guard = shared_rc.borrow_mut();
    let shared = &mut *guard;
    let mut state = state_rc.borrow_mut();
    let req = RequestHead {
        method: headers::first(&pairs, ":method").unwrap_or_default(),
        path: headers::first(&pairs, ":path").unwrap_or_default(),
        headers: &pairs,
        client_addr: client.as_deref(),
        has_body: !state.headers_eos,
    };
    // A request resumed after its wait decides without waiting again.
    let mut may_wait = !resumed;
    loop {
        let Some(worker) = shared.worker.as_mut() else {
            // Not configured: Envoy would not have accepted us; fail closed anyway.
            let _ = abi::send_local_response(503, &headers::encode::<&str, &str>(&[]), b"");
            return Action::Pause;
        };
        let step = with_host(|h| worker.on_headers(&req, h, may_wait, &mut state.pending));
        match step {
            Step::Reject(r) => {
                reply(shared, &mut state, &r);
                return Action::Pause;
            }
            Step::WaitForKeys { issuer } => {
                if shared.waiters.len() >= worker.policy.limits.max_waiting_for_keys {
                    // Each held request keeps a stream open: past the bound, answer now.
                    let r = worker.unavailable(&state.pending, "too_many_waiting_for_keys");
                    reply(shared, &mut state, &r);
                    return Action::Pause;
                }
                let now = host::now_ms();
                let unknown_kid = worker.has_keys(issuer);
                let deadline = now.saturating_add(worker.policy.limits.key_wait_ms);
                if keys::fetch(shared, issuer, now, unknown_kid) {
                    shared.metrics.count("waiting_for_keys");
                    state.phase = Phase::WaitingKeys;
                    shared.waiters.push(Waiter {
                        context_id,
                        issuer,
                        deadline_ms: deadline,
                        state: Rc::clone(state_rc),
                    });
                    return Action::Pause;
                }
                // No fetch can start now: decide with the keys there are.
                may_wait = false;
            }
            Step::Forward if state.pending.needs_body && !state.headers_eos => {
                // The body (or trailers) callback decides and signs: the identity covers the
                // body. Proxy-Wasm runs a filter's body callbacks only once its headers
                // continue, and Envoy lets a filter change request headers only until then,
                // so the signed identity travels as filter state that the route turns into
                // headers when the request is finally forwarded (envoy/envoy.yaml,
                // `request_headers_to_add`). Nothing reaches the backend meanwhile: Envoy's
                // buffer filter, placed after this one, holds the headers until the body is
                // complete.
                apply_header_changes(&state.pending);
                state.phase = Phase::WaitingBody;
                if resumed {
                    let _ = abi::resume_request();
                }
                return Action::Continue;
            }
            Step::Forward if state.pending.needs_body => {
                drop(state);
                drop(guard);
                return decide_body(shared_rc, state_rc, &[], resumed);
            }
            Step::Forward => return forward(shared, &mut state, resumed),
        }
    }
}

/// The request-header changes decided at the headers (only possible until they continue).
fn apply_header_changes(pending: &Pending) {
    for name in &pending.remove_headers {
        let _ = abi::remove_header(Map::Request, name);
    }
    for (name, value) in &pending.set_headers {
        let _ = abi::set_header(Map::Request, name, value.as_bytes());
    }
}

/// Hands the signed identity to the route and lets the request go.
fn forward(shared: &mut Shared, state: &mut HttpState, resumed: bool) -> Action {
    if state.phase != Phase::WaitingBody {
        apply_header_changes(&state.pending);
    }
    for (key, value) in &state.pending.forward_state {
        if abi::set_property(&[key], value.as_bytes()).is_err() {
            // Without it the backend refuses the request (401): fail closed, and say why.
            host::log(
                Level::Error,
                &format!(
                    "request_id={} cannot set filter state {key}",
                    state.pending.request_id
                ),
            );
        }
    }
    state.phase = Phase::Forwarded;
    shared.metrics.count("allowed");
    if resumed {
        let _ = abi::resume_request();
    }
    Action::Continue
}

/// Decides on the whole body. `resumed`: as for [`decide_headers`].
fn decide_body(
    shared_rc: &Rc<RefCell<Shared>>,
    state_rc: &Rc<RefCell<HttpState>>,
    body: &[u8],
    resumed: bool,
) -> Action {
    let mut guard = shared_rc.borrow_mut();
    let shared = &mut *guard;
    let mut state = state_rc.borrow_mut();
    let Some(worker) = shared.worker.as_mut() else {
        return Action::Pause;
    };
    match with_host(|h| worker.on_body(body, h, &mut state.pending)) {
        Step::Reject(r) => {
            reply(shared, &mut state, &r);
            Action::Pause
        }
        Step::WaitForKeys { .. } | Step::Forward => forward(shared, &mut state, resumed),
    }
}

/// Resumes the waiters `pick` selects: their keys arrived or their wait is over.
pub fn wake_waiters(shared: &Rc<RefCell<Shared>>, pick: impl Fn(&Waiter) -> bool) {
    let woken: Vec<Waiter> = {
        let mut s = shared.borrow_mut();
        let (woken, kept) = std::mem::take(&mut s.waiters)
            .into_iter()
            .partition(|w| pick(w));
        s.waiters = kept;
        woken
    };
    for w in woken {
        // Host calls made now must act on the waiting request's stream.
        if abi::set_effective_context(w.context_id).is_ok() {
            decide_headers(shared, &w.state, w.context_id, true);
        }
    }
}

/// Ends the wait of requests whose bound passed.
pub fn expire_waiters(shared: &Rc<RefCell<Shared>>, now: u64) {
    wake_waiters(shared, |w| now >= w.deadline_ms);
}

impl Context for FilterHttp {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        keys::on_response(&self.shared, token_id, body_size);
        // Waking other requests moved the effective context; give this one back.
        let _ = abi::set_effective_context(self.id);
    }

    fn on_done(&mut self) -> bool {
        // A request that waited and went away must not be resumed later.
        let id = self.id;
        let mut shared = self.shared.borrow_mut();
        shared.waiters.retain(|w| w.context_id != id);
        true
    }
}

impl FilterHttp {
    fn max_body_bytes(&self) -> usize {
        self.shared
            .borrow()
            .worker
            .as_ref()
            .map_or(0, |w| w.policy.limits.max_body_bytes)
    }

    fn too_large(&self) -> Action {
        let mut guard = self.shared.borrow_mut();
        let mut st = self.state.borrow_mut();
        if let Some(r) = guard.worker.as_ref().map(|w| w.body_too_large(&st.pending)) {
            reply(&mut guard, &mut st, &r);
        }
        Action::Pause
    }

    fn finish(&self, body: Option<&[u8]>) {
        let guard = self.shared.borrow();
        let mut st = self.state.borrow_mut();
        let Some(w) = guard.worker.as_ref() else {
            return;
        };
        let status = st.response_status;
        let headers = std::mem::take(&mut st.response_headers);
        if let Err(e) = with_host(|h| w.finish(&mut st.pending, status, &headers, body, h)) {
            host::log(
                Level::Warn,
                &format!(
                    "request_id={} cannot store idempotent response: {e:?}",
                    st.pending.request_id
                ),
            );
        }
    }
}

impl HttpContext for FilterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        crate::trap::check();
        self.state.borrow_mut().headers_eos = end_of_stream;
        decide_headers(&self.shared, &self.state, self.id, false)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if self.state.borrow().phase != Phase::WaitingBody {
            return Action::Continue;
        }
        if body_size > self.max_body_bytes() {
            // Refused as soon as it grows past the limit, without reading the rest.
            return self.too_large();
        }
        if !end_of_stream {
            // Buffer until the whole body is here (or trailers end the stream).
            return Action::Pause;
        }
        let body = abi::buffer(Buffer::RequestBody, 0, body_size).unwrap_or_default();
        decide_body(&self.shared, &self.state, &body, false)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        // With trailers (HTTP/2, chunked HTTP/1.1) the stream ends here, not in a body
        // callback: the body decision runs now, on what was buffered.
        if self.state.borrow().phase != Phase::WaitingBody {
            return Action::Continue;
        }
        let limit = self.max_body_bytes();
        let body = abi::buffer(Buffer::RequestBody, 0, limit.saturating_add(1)).unwrap_or_default();
        if body.len() > limit {
            return self.too_large();
        }
        decide_body(&self.shared, &self.state, &body, false)
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let (extra, holds_claim) = {
            let shared = self.shared.borrow();
            let st = self.state.borrow();
            if st.phase == Phase::Replied {
                return Action::Continue;
            }
            let extra = shared
                .worker
                .as_ref()
                .map(|w| w.response_headers(&st.pending))
                .unwrap_or_default();
            (extra, st.pending.holds_claim())
        };
        for (name, value) in &extra {
            let _ = abi::set_header(Map::Response, name, value.as_bytes());
        }
        if holds_claim {
            let wire = host::header_map(Map::Response);
            let pairs = host::decoded(&wire);
            let status = headers::first(&pairs, ":status")
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(502);
            // Only text values can be replayed as they were; the backend sends no others.
            let kept = pairs
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        std::str::from_utf8(n).ok()?.to_owned(),
                        headers::ascii_text(v)?.to_owned(),
                    ))
                })
                .collect();
            {
                let mut st = self.state.borrow_mut();
                st.response_status = status;
                st.response_headers = kept;
            }
            if end_of_stream {
                self.finish(Some(&[]));
            }
        }
        Action::Continue
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !self.state.borrow().pending.holds_claim() {
            return Action::Continue;
        }
        let limit = self
            .shared
            .borrow()
            .worker
            .as_ref()
            .map_or(0, |w| w.policy.idempotency.max_response_bytes);
        if body_size > limit {
            // Too large to replay: release the key and stop buffering.
            self.finish(None);
            return Action::Continue;
        }
        if !end_of_stream {
            // Buffer until the whole response is here, so it can be stored for replay.
            return Action::Pause;
        }
        let body = abi::buffer(Buffer::ResponseBody, 0, body_size).unwrap_or_default();
        self.finish(Some(&body));
        Action::Continue
    }

    fn on_log(&mut self) {
        let id = self.id;
        if self.state.borrow().pending.holds_claim() {
            let guard = self.shared.borrow();
            let mut st = self.state.borrow_mut();
            if let Some(w) = guard.worker.as_ref() {
                if with_host(|h| w.abandon(&mut st.pending, h)).is_err() {
                    host::log(
                        Level::Warn,
                        &format!(
                            "request_id={} cannot release idempotency key",
                            st.pending.request_id
                        ),
                    );
                }
            }
        }
        if self.state.borrow().phase == Phase::WaitingKeys {
            self.shared
                .borrow_mut()
                .waiters
                .retain(|w| w.context_id != id);
        }
    }
}
