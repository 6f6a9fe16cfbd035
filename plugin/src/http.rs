//! The request context: runs `edge_policy`'s decisions at request headers, request body
//! and response, and applies them to the stream.

use std::cell::RefCell;
use std::rc::Rc;

use edge_policy::problem::Reply;
use edge_policy::{Host, Pending, RequestHead, Step};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::host::{self, EnvoyStore};
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
    /// Paused until the whole body is buffered.
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
    /// Whether the request ended with its headers (no body).
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

fn header<'h>(headers: &'h [(String, String)], name: &str) -> &'h str {
    headers
        .iter()
        .find(|(n, _)| n == name)
        .map_or("", |(_, v)| v.as_str())
}

/// Sends a local reply and records the decision.
fn reply(shared: &mut Shared, state: &mut HttpState, reply: Reply) {
    let headers: Vec<(&str, &str)> = reply
        .headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    if let Err(status) =
        hostcalls::send_http_response(u32::from(reply.status), headers, Some(&reply.body))
    {
        host::log(
            LogLevel::Error,
            &format!(
                "request_id={} cannot send local reply: {status:?}",
                state.pending.request_id
            ),
        );
    }
    let outcome = if reply.status < 400 {
        "replayed"
    } else {
        "denied"
    };
    shared.metrics.count(&format!("{outcome}.{}", reply.reason));
    host::log(
        LogLevel::Info,
        &format!(
            "request_id={} status={} reason={}",
            state.pending.request_id, reply.status, reply.reason
        ),
    );
    state.phase = Phase::Replied;
}

/// Runs the headers decision. `resumed`: called after a pause (keys arrived), so the
/// request must be resumed explicitly instead of returning `Continue`.
fn run_headers(
    shared_rc: &Rc<RefCell<Shared>>,
    state_rc: &Rc<RefCell<HttpState>>,
    context_id: u32,
    may_wait: bool,
    resumed: bool,
) -> Action {
    let headers = host::request_headers();
    let client = host::client_addr();
    let now = host::now_ms();
    let mut random = host::random16;
    let mut guard = shared_rc.borrow_mut();
    let shared = &mut *guard;
    let mut state = state_rc.borrow_mut();
    let Some(worker) = shared.worker.as_mut() else {
        // Not configured: Envoy would not have accepted us; fail closed anyway.
        let _ = hostcalls::send_http_response(
            503,
            vec![("content-type", "application/problem+json")],
            Some(b"{}"),
        );
        return Action::Pause;
    };
    let req = RequestHead {
        method: header(&headers, ":method"),
        path: header(&headers, ":path"),
        headers: &headers,
        client_addr: client.as_deref(),
    };
    let mut h = Host {
        store: &EnvoyStore,
        now_ms: now,
        random: &mut random,
    };
    let step = worker.on_headers(&req, &mut h, may_wait, &mut state.pending);
    match step {
        Step::Reject(r) => {
            reply(shared, &mut state, r);
            Action::Pause
        }
        Step::WaitForKeys { issuer } => {
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
                Action::Pause
            } else {
                drop(state);
                drop(guard);
                run_headers(shared_rc, state_rc, context_id, false, resumed)
            }
        }
        Step::Forward => {
            for name in &state.pending.remove_headers {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, None);
            }
            for (name, value) in &state.pending.set_headers {
                let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, Some(value));
            }
            if state.pending.needs_body && !state.headers_eos {
                // Proxy-Wasm never calls the body callbacks of a request whose headers it
                // paused, so the headers continue here and the body callback buffers and
                // decides. Nothing reaches the backend meanwhile: Envoy's buffer filter,
                // placed after this one, holds the headers until the body is complete.
                state.phase = Phase::WaitingBody;
                if resumed {
                    let _ = hostcalls::resume_http_request();
                }
                return Action::Continue;
            }
            if state.pending.needs_body {
                drop(state);
                drop(guard);
                return run_body(shared_rc, state_rc, &[], resumed);
            }
            forwarded(shared, &mut state, resumed)
        }
    }
}

fn forwarded(shared: &mut Shared, state: &mut HttpState, resumed: bool) -> Action {
    state.phase = Phase::Forwarded;
    shared.metrics.count("allowed");
    if resumed {
        let _ = hostcalls::resume_http_request();
    }
    Action::Continue
}

fn read_body(size: usize) -> Vec<u8> {
    hostcalls::get_buffer(BufferType::HttpRequestBody, 0, size)
        .ok()
        .flatten()
        .unwrap_or_default()
}

fn run_body(
    shared_rc: &Rc<RefCell<Shared>>,
    state_rc: &Rc<RefCell<HttpState>>,
    body: &[u8],
    resumed: bool,
) -> Action {
    let now = host::now_ms();
    let mut random = host::random16;
    let mut guard = shared_rc.borrow_mut();
    let shared = &mut *guard;
    let mut state = state_rc.borrow_mut();
    let Some(worker) = shared.worker.as_mut() else {
        return Action::Pause;
    };
    let mut h = Host {
        store: &EnvoyStore,
        now_ms: now,
        random: &mut random,
    };
    match worker.on_body(body, &mut h, &mut state.pending) {
        Step::Reject(r) => {
            reply(shared, &mut state, r);
            Action::Pause
        }
        Step::WaitForKeys { .. } | Step::Forward => forwarded(shared, &mut state, resumed),
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
        if hostcalls::set_effective_context(w.context_id).is_ok() {
            run_headers(shared, &w.state, w.context_id, false, true);
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
        let _ = hostcalls::set_effective_context(self.id);
    }

    fn on_done(&mut self) -> bool {
        // A request that waited for keys and went away must not be resumed later.
        let id = self.id;
        self.shared
            .borrow_mut()
            .waiters
            .retain(|w| w.context_id != id);
        true
    }
}

impl HttpContext for FilterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        crate::trap::check();
        self.state.borrow_mut().headers_eos = end_of_stream;
        run_headers(&self.shared, &self.state, self.id, true, false)
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let phase = self.state.borrow().phase;
        if phase != Phase::WaitingBody {
            return Action::Continue;
        }
        let limit = self
            .shared
            .borrow()
            .worker
            .as_ref()
            .map_or(0, |w| w.policy.limits.max_body_bytes);
        if body_size > limit {
            // Refused as soon as it grows past the limit, without reading the rest.
            let mut guard = self.shared.borrow_mut();
            let mut st = self.state.borrow_mut();
            if let Some(r) = guard.worker.as_ref().map(|w| w.body_too_large(&st.pending)) {
                reply(&mut guard, &mut st, r);
            }
            return Action::Pause;
        }
        if !end_of_stream {
            // Buffer until the whole body is here.
            return Action::Pause;
        }
        let body = read_body(body_size);
        run_body(&self.shared, &self.state, &body, false)
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
            let _ = hostcalls::set_map_value(MapType::HttpResponseHeaders, name, Some(value));
        }
        if holds_claim {
            let headers = hostcalls::get_map(MapType::HttpResponseHeaders).unwrap_or_default();
            let status = header(&headers, ":status").parse().unwrap_or(502);
            {
                let mut st = self.state.borrow_mut();
                st.response_status = status;
                st.response_headers = headers;
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
        let body = hostcalls::get_buffer(BufferType::HttpResponseBody, 0, body_size)
            .ok()
            .flatten()
            .unwrap_or_default();
        self.finish(Some(&body));
        Action::Continue
    }

    fn on_log(&mut self) {
        let mut guard = self.shared.borrow_mut();
        let mut st = self.state.borrow_mut();
        if let Some(w) = guard.worker.as_ref() {
            let mut random = host::random16;
            let h = Host {
                store: &EnvoyStore,
                now_ms: host::now_ms(),
                random: &mut random,
            };
            if w.abandon(&mut st.pending, &h).is_err() {
                host::log(
                    LogLevel::Warn,
                    &format!(
                        "request_id={} cannot release idempotency key",
                        st.pending.request_id
                    ),
                );
            }
        }
        let id = self.id;
        guard.waiters.retain(|w| w.context_id != id);
    }
}

impl FilterHttp {
    fn finish(&self, body: Option<&[u8]>) {
        let guard = self.shared.borrow();
        let mut st = self.state.borrow_mut();
        let Some(w) = guard.worker.as_ref() else {
            return;
        };
        let mut random = host::random16;
        let h = Host {
            store: &EnvoyStore,
            now_ms: host::now_ms(),
            random: &mut random,
        };
        let status = st.response_status;
        let headers = std::mem::take(&mut st.response_headers);
        if let Err(e) = w.finish(&mut st.pending, status, &headers, body, &h) {
            host::log(
                LogLevel::Warn,
                &format!(
                    "request_id={} cannot store idempotent response: {e:?}",
                    st.pending.request_id
                ),
            );
        }
    }
}
