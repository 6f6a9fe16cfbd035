//! One request's life as a state machine: a [`Phase`], and one step per callback that runs
//! `edge_policy`'s decision for it and applies the outcome to the stream.
//!
//! ```text
//! Headers ──on_headers──► Forwarded ──on_response_headers / on_response_body──► on_log
//!    │  │  │                 ▲
//!    │  │  └──► Body ──on_body / on_trailers
//!    │  └──► WaitingForRateLimit ──rate_limit_answered──► (as at Headers, with the answer)
//!    └──► WaitingForKeys ──resumed──► (as at Headers, without waiting)
//! any refusal ──► Replied (local reply)
//! ```
//!
//! A headers decision that asks the rate limit service pauses the request until the
//! service's answer (or the call's failure) arrives, then runs again with it.
//!
//! A headers decision ends in [`Request::settle_headers`] and a body decision in
//! [`Request::settle_body`], which reply, forward or let the headers on to the body; a
//! request resumed after its wait goes through the same one and is resumed explicitly when
//! it may continue. The phases are described in the crate's README.

use std::cell::RefCell;
use std::rc::Rc;

use edge_policy::headers;
use edge_policy::keyfetch::Hold;
use edge_policy::problem::Reply;
use edge_policy::rls::Failure;
use edge_policy::{Pending, RateLimitCall, RequestHead, Step};
use proxy_wasm::types::Action;

use crate::abi::{self, Buffer, Map};
use crate::host::{self, KeyCalls, Level};
use crate::vm;

/// A request, shared by its context and (while it waits for keys) the key fetcher.
pub type Held = Rc<RefCell<Request>>;

/// The VM state as the request contexts use it.
pub type Vm = vm::Vm<Held>;

/// Where a request is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
enum Phase {
    /// Request headers not decided yet.
    #[default]
    Headers,
    /// Paused in its headers until its issuer's keys load (held by the key fetcher).
    WaitingForKeys,
    /// Paused in its headers until the rate limit service answers (held in the VM's
    /// `rate_limit_calls`).
    WaitingForRateLimit,
    /// Headers passed on to the buffer filter; deciding once the body (or trailers) ends.
    Body,
    /// Forwarded upstream.
    Forwarded,
    /// Answered locally.
    Replied,
}

/// One request's state between callbacks.
#[derive(Default)]
pub struct Request {
    phase: Phase,
    /// The request's context id.
    id: u32,
    /// Decisions carried between callbacks.
    pending: Pending,
    /// Whether a body (or trailers) follows the headers.
    has_body: bool,
    /// The upstream response's status, captured while an idempotency claim is held.
    response_status: u16,
    /// The upstream response's headers worth storing for an idempotent replay.
    response_headers: Vec<(String, String)>,
}

/// Step: the request headers arrived. `this` is the request, `id` its context.
pub fn on_headers(this: &Held, vm: &mut Vm, id: u32, end_of_stream: bool) -> Action {
    let mut request = this.borrow_mut();
    request.id = id;
    request.has_body = !end_of_stream;
    let step = match request.decide_headers(vm, true) {
        Step::WaitForKeys { issuer } => {
            let has_keys = vm.worker.has_keys(issuer);
            let now = host::now_ms();
            let held = Rc::clone(this);
            let mut calls = KeyCalls(&mut vm.metrics);
            match vm.keys.hold(id, issuer, has_keys, held, now, &mut calls) {
                Hold::Wait => {
                    vm.metrics.count("waiting_for_keys");
                    request.phase = Phase::WaitingForKeys;
                    return Action::Pause;
                }
                Hold::Full => Step::Reject(
                    vm.worker
                        .unavailable(&request.pending, "too_many_waiting_for_keys"),
                ),
                // No fetch to wait for: decide with the keys there are.
                Hold::DecideNow => request.decide_headers(vm, false),
            }
        }
        step => step,
    };
    request.settle_or_ask(this, vm, step)
}

/// Step: the wait for keys is over (they arrived, their fetch failed, or `key_wait`
/// passed). Decides the headers again, without waiting, and resumes the paused request
/// unless it was answered or now waits for the rate limit service.
pub fn resumed(this: &Held, vm: &mut Vm) {
    let Ok(mut request) = this.try_borrow_mut() else {
        return;
    };
    if request.phase != Phase::WaitingForKeys {
        return;
    }
    let step = request.decide_headers(vm, false);
    if request.settle_or_ask(this, vm, step) == Action::Continue {
        let _ = abi::resume_request();
    }
}

/// The longest rate limit service answer read (a `RateLimitResponse` is tens of bytes).
const MAX_RATE_LIMIT_ANSWER: usize = 64 * 1024;

/// Step: rate limit call `token` is over (delivered to whichever context was current when
/// it started): gRPC status 0 with the answer's `size`, or the call's failure status (4 for
/// the timeout, 14 for an unreachable service). Decides the waiting request's headers again
/// with it, and resumes the request unless it was answered.
pub fn rate_limit_answered(vm: &mut Vm, token: u32, grpc_status: u32, size: usize) {
    let Some((id, held)) = vm.rate_limit_calls.remove(&token) else {
        return;
    };
    let answer = if grpc_status == 0 {
        vm.metrics.count("rate_limit_service.answered");
        Ok(
            abi::buffer(Buffer::GrpcReceive, 0, size.min(MAX_RATE_LIMIT_ANSWER))
                .unwrap_or_default(),
        )
    } else {
        let failure = Failure::Status(grpc_status);
        vm.metrics
            .count(&format!("rate_limit_service.failed.{}", failure.reason()));
        Err(failure)
    };
    let Ok(mut request) = held.try_borrow_mut() else {
        return;
    };
    // Host calls made now must act on the waiting request's stream.
    if request.phase != Phase::WaitingForRateLimit || abi::set_effective_context(id).is_err() {
        return;
    }
    request.pending.rate_limit_answer = Some(answer);
    let step = request.decide_headers(vm, false);
    if request.settle_or_ask(&held, vm, step) == Action::Continue {
        let _ = abi::resume_request();
    }
}

impl Request {
    /// Applies a headers decision; one that asks the rate limit service starts the call and
    /// pauses (or, if the call cannot start, decides again with that failure).
    fn settle_or_ask(&mut self, this: &Held, vm: &mut Vm, step: Step) -> Action {
        let Step::AskRateLimit(call) = step else {
            return self.settle_headers(vm, step);
        };
        match self.ask_rate_limit(vm, &call) {
            Ok(token) => {
                vm.rate_limit_calls
                    .insert(token, (self.id, Rc::clone(this)));
                self.phase = Phase::WaitingForRateLimit;
                Action::Pause
            }
            Err(failure) => {
                self.pending.rate_limit_answer = Some(Err(failure));
                let step = self.decide_headers(vm, false);
                self.settle_headers(vm, step)
            }
        }
    }

    fn ask_rate_limit(&mut self, vm: &mut Vm, call: &RateLimitCall) -> Result<u32, Failure> {
        host::start_rate_limit_call(call).inspect_err(|failure| {
            vm.metrics
                .count(&format!("rate_limit_service.failed.{}", failure.reason()));
            host::log(
                Level::Warn,
                &format!(
                    "request_id={} cannot call the rate limit service through cluster {}",
                    self.pending.request_id, call.cluster
                ),
            );
        })
    }

    /// Step: a part of the request body arrived (the whole of it at `end_of_stream`).
    pub fn on_body(&mut self, vm: &mut Vm, body_size: usize, end_of_stream: bool) -> Action {
        if self.phase != Phase::Body {
            return Action::Continue;
        }
        if body_size > vm.worker.policy.limits.max_body_bytes {
            // Refused as soon as it grows past the limit, without reading the rest.
            return self.too_large(vm);
        }
        if !end_of_stream {
            // Buffer until the whole body is here (or trailers end the stream).
            return Action::Pause;
        }
        let body = abi::buffer(Buffer::RequestBody, 0, body_size).unwrap_or_default();
        self.decide_body(vm, &body)
    }

    /// Step: request trailers arrived. With trailers (HTTP/2, chunked HTTP/1.1) the stream
    /// ends here, not in a body callback: the body decision runs now, on what was buffered.
    pub fn on_trailers(&mut self, vm: &mut Vm) -> Action {
        if self.phase != Phase::Body {
            return Action::Continue;
        }
        let limit = vm.worker.policy.limits.max_body_bytes;
        let body = abi::buffer(Buffer::RequestBody, 0, limit.saturating_add(1)).unwrap_or_default();
        if body.len() > limit {
            return self.too_large(vm);
        }
        self.decide_body(vm, &body)
    }

    /// Step: the response headers (upstream's or Envoy's own) arrived.
    pub fn on_response_headers(&mut self, vm: &mut Vm, end_of_stream: bool) -> Action {
        if self.phase == Phase::Replied {
            return Action::Continue;
        }
        for (name, value) in vm.worker.response_headers(&self.pending) {
            let _ = abi::set_header(Map::Response, &name, value.as_bytes());
        }
        if self.pending.holds_claim() {
            let wire = host::header_map(Map::Response);
            let pairs = host::decoded(&wire);
            self.response_status = headers::first(&pairs, ":status")
                .and_then(|s| std::str::from_utf8(s).ok())
                .and_then(|s| s.parse().ok())
                .unwrap_or(502);
            // Only text values can be replayed as they were; the backend sends no others.
            self.response_headers = pairs
                .iter()
                .filter_map(|(n, v)| {
                    Some((
                        std::str::from_utf8(n).ok()?.to_owned(),
                        headers::ascii_text(v)?.to_owned(),
                    ))
                })
                .collect();
            if end_of_stream {
                self.finish(vm, Some(&[]));
            }
        }
        Action::Continue
    }

    /// Step: a part of the response body arrived. Buffered only while an idempotency claim
    /// waits for the response to store.
    pub fn on_response_body(
        &mut self,
        vm: &mut Vm,
        body_size: usize,
        end_of_stream: bool,
    ) -> Action {
        if !self.pending.holds_claim() {
            return Action::Continue;
        }
        if body_size > vm.worker.policy.idempotency.max_response_bytes {
            // Too large to replay: release the key and stop buffering.
            self.finish(vm, None);
            return Action::Continue;
        }
        if !end_of_stream {
            // Buffer until the whole response is here, so it can be stored for replay.
            return Action::Pause;
        }
        let body = abi::buffer(Buffer::ResponseBody, 0, body_size).unwrap_or_default();
        self.finish(vm, Some(&body));
        Action::Continue
    }

    /// Step: the stream (context `id`) is over. A claim still held (no complete response)
    /// is released; a request still waiting for keys stops waiting.
    pub fn on_log(&mut self, vm: &mut Vm, id: u32) {
        if self.phase == Phase::WaitingForKeys {
            vm.keys.gone(id);
        }
        if self.phase == Phase::WaitingForRateLimit {
            vm.rate_limit_calls.retain(|_, (waiting, _)| *waiting != id);
        }
        if !self.pending.holds_claim() {
            return;
        }
        if host::decide(|h| vm.worker.abandon(&mut self.pending, h)).is_err() {
            host::log(
                Level::Warn,
                &format!(
                    "request_id={} cannot release idempotency key",
                    self.pending.request_id
                ),
            );
        }
    }

    /// The headers decision, on the request headers as Envoy holds them.
    fn decide_headers(&mut self, vm: &mut Vm, may_wait: bool) -> Step {
        let wire = host::header_map(Map::Request);
        let pairs = host::decoded(&wire);
        let client = host::client_addr();
        let req = RequestHead {
            method: headers::first(&pairs, ":method").unwrap_or_default(),
            path: headers::first(&pairs, ":path").unwrap_or_default(),
            headers: &pairs,
            client_addr: client.as_deref(),
            has_body: self.has_body,
        };
        host::decide(|h| vm.worker.on_headers(&req, h, may_wait, &mut self.pending))
    }

    /// Applies the headers decision: reply, forward, or let the headers go on to wait for
    /// the body.
    fn settle_headers(&mut self, vm: &mut Vm, step: Step) -> Action {
        match step {
            Step::Reject(reply) => self.reply(vm, &reply),
            // Only a decision that may wait asks to; answered as a wait that came to nothing.
            Step::WaitForKeys { .. } => {
                let reply = vm.worker.unavailable(&self.pending, "keys_not_loaded");
                self.reply(vm, &reply)
            }
            // Asked only before an answer is in `pending`; settled by `settle_or_ask`.
            Step::AskRateLimit(_) => {
                let reply = vm
                    .worker
                    .unavailable(&self.pending, "rate_limit_unavailable");
                self.reply(vm, &reply)
            }
            Step::Forward if self.pending.needs_body && self.has_body => {
                // The body (or trailers) callback decides and signs: the identity covers the
                // body. Proxy-Wasm runs a filter's body callbacks only once its headers
                // continue, and Envoy lets a filter change request headers only until then,
                // so the signed identity travels as filter state that the route turns into
                // headers when the request is finally forwarded (envoy/envoy.yaml,
                // `request_headers_to_add`). Nothing reaches the backend meanwhile: Envoy's
                // buffer filter, placed after this one, holds the headers until the body is
                // complete.
                self.apply_header_changes();
                self.phase = Phase::Body;
                Action::Continue
            }
            Step::Forward if self.pending.needs_body => self.decide_body(vm, &[]),
            Step::Forward => self.forward(vm),
        }
    }

    /// The body decision on the whole body, applied.
    fn decide_body(&mut self, vm: &mut Vm, body: &[u8]) -> Action {
        let step = host::decide(|h| vm.worker.on_body(body, h, &mut self.pending));
        self.settle_body(vm, step)
    }

    /// Applies the body decision: reply or forward.
    fn settle_body(&mut self, vm: &mut Vm, step: Step) -> Action {
        match step {
            Step::Reject(reply) => self.reply(vm, &reply),
            Step::WaitForKeys { .. } | Step::AskRateLimit(_) | Step::Forward => self.forward(vm),
        }
    }

    /// The request-header changes decided at the headers (only possible until they continue).
    fn apply_header_changes(&self) {
        for name in &self.pending.remove_headers {
            let _ = abi::remove_header(Map::Request, name);
        }
        for (name, value) in &self.pending.set_headers {
            let _ = abi::set_header(Map::Request, name, value.as_bytes());
        }
    }

    /// Hands the signed identity to the route and lets the request go.
    fn forward(&mut self, vm: &mut Vm) -> Action {
        if self.phase != Phase::Body {
            self.apply_header_changes();
        }
        for (key, value) in &self.pending.forward_state {
            if abi::set_property(&[key], value.as_bytes()).is_err() {
                // Without it the backend refuses the request (401): fail closed, and say why.
                host::log(
                    Level::Error,
                    &format!(
                        "request_id={} cannot set filter state {key}",
                        self.pending.request_id
                    ),
                );
            }
        }
        self.phase = Phase::Forwarded;
        vm.metrics.count("allowed");
        self.leave_decision(vm, "allowed", "allowed");
        // Checks in dry-run: what they would have refused, counted and logged, not applied.
        for reason in &self.pending.dry_run {
            vm.metrics.count(&format!("dry_run.{reason}"));
            host::log(
                Level::Info,
                &format!(
                    "request_id={} dry_run reason={reason}",
                    self.pending.request_id
                ),
            );
        }
        if self.pending.rate_limit_failed_open {
            vm.metrics.count("rate_limit_service.failed_open");
        }
        Action::Continue
    }

    /// Sends a local reply and records the decision.
    fn reply(&mut self, vm: &mut Vm, reply: &Reply) -> Action {
        let outcome = if reply.status < 400 {
            "replayed"
        } else {
            "denied"
        };
        // Before the reply, which may end the stream and write its access log.
        self.leave_decision(vm, outcome, reply.reason);
        host::send_reply(reply, &self.pending.request_id);
        vm.metrics.count(&format!("{outcome}.{}", reply.reason));
        host::log(
            Level::Info,
            &format!(
                "request_id={} status={} reason={}",
                self.pending.request_id, reply.status, reply.reason
            ),
        );
        self.phase = Phase::Replied;
        Action::Pause
    }

    /// With `decision_state`, leaves the decision in filter state (`wasm.edge_decision`:
    /// `allowed`, `denied` or `replayed`; `wasm.edge_reason`; `wasm.edge_dry_run`: what
    /// checks in dry-run would have refused, comma-separated) for access logs
    /// (`%FILTER_STATE(wasm.edge_decision:PLAIN)%`) and later filters. Envoy lets a Wasm
    /// filter write filter state, not dynamic metadata (envoyproxy/envoy#15148).
    fn leave_decision(&self, vm: &Vm, decision: &str, reason: &str) {
        if !vm.worker.policy.decision_state {
            return;
        }
        let _ = abi::set_property(&["edge_decision"], decision.as_bytes());
        let _ = abi::set_property(&["edge_reason"], reason.as_bytes());
        if !self.pending.dry_run.is_empty() {
            let _ = abi::set_property(&["edge_dry_run"], self.pending.dry_run.join(",").as_bytes());
        }
    }

    /// The 413 for a body that grew past the limit while being buffered.
    fn too_large(&mut self, vm: &mut Vm) -> Action {
        let reply = vm.worker.body_too_large(&self.pending);
        self.reply(vm, &reply)
    }

    /// Completes the idempotency claim with the response (`None`: too large to store).
    fn finish(&mut self, vm: &mut Vm, body: Option<&[u8]>) {
        let status = self.response_status;
        let headers = std::mem::take(&mut self.response_headers);
        let stored = host::decide(|h| {
            vm.worker
                .finish(&mut self.pending, status, &headers, body, h)
        });
        if let Err(e) = stored {
            host::log(
                Level::Warn,
                &format!(
                    "request_id={} cannot store idempotent response: {e:?}",
                    self.pending.request_id
                ),
            );
        }
    }
}
