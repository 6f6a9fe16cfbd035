//! The decision pipeline: what the filter does at request headers, request body and
//! response, as pure functions of the request, the per-worker state and the host inputs
//! (clock, randomness, shared store). The proxy-wasm adapter only moves bytes.

use std::sync::Arc;

use edge_contract::headers::{CONTENT_TYPE, IDEMPOTENCY_KEY, IDEMPOTENT_REPLAYED, REQUEST_ID};
use edge_contract::idempotency::{fingerprint, is_replayable, key_of};
use edge_contract::{request_id, Request, Signer, FORWARDED_HEADERS};
use serde_json::Value;

use crate::cache::TokenCache;
use crate::config::{IdempotencyMode, OrgSource, Policy, RouteAuth, TokenSource, Unmatched};
use crate::hash;
use crate::headers::{self, Pair};
use crate::idempotency::{self, Begin, Claim, Records, StoredResponse};
use crate::jwks::JwkSet;
use crate::jwt::Verified;
use crate::permission;
use crate::problem::{catalogue, Problem, Reply};
use crate::ratelimit::{self, Bucket, Decision, Limiter};
use crate::rls::{self, FailureMode};
use crate::route::Route;
use crate::slots::{self, SlotKey, Table};

mod auth;
use crate::store::{SharedStore, StoreError};
use auth::Auth;

/// The filter-state name (Envoy: `wasm.edge_identity`) of the signed identity. A filter
/// cannot change request headers once it has let them continue, and the identity is signed
/// only after the body is read, so the route adds the header from this state:
/// `x-edge-identity: %FILTER_STATE(wasm.edge_identity:PLAIN)%`.
pub const IDENTITY_STATE: &str = "edge_identity";
/// The filter-state name of the identity's signature (`x-edge-signature`).
pub const SIGNATURE_STATE: &str = "edge_signature";

/// What the host provides to one decision.
pub struct Host<'a> {
    /// Shared data across workers.
    pub store: &'a dyn SharedStore,
    /// Envoy's clock, unix milliseconds.
    pub now_ms: u64,
    /// Host randomness.
    pub random: &'a mut dyn FnMut() -> [u8; 16],
}

impl Host<'_> {
    fn now_secs(&self) -> i64 {
        i64::try_from(self.now_ms / 1000).unwrap_or(i64::MAX)
    }
}

/// A request as seen at its headers, as the bytes Envoy holds: nothing is assumed to be
/// UTF-8 until the rule that reads it says so (see [`crate::headers`]).
#[derive(Debug, Clone)]
pub struct RequestHead<'a> {
    /// `:method`.
    pub method: &'a [u8],
    /// `:path`, query included.
    pub path: &'a [u8],
    /// Every header, repeated headers repeated (pseudo-headers may be included).
    pub headers: &'a [Pair<'a>],
    /// Client IP (without port), when known.
    pub client_addr: Option<&'a str>,
    /// Whether a body (or trailers) follows the headers.
    pub has_body: bool,
}

impl<'a> RequestHead<'a> {
    fn values(&self, name: &str) -> Vec<&'a [u8]> {
        headers::values(self.headers, name)
    }

    /// The values of an interpreted header as text; `Err` when one is not ASCII text.
    fn text_values(&self, name: &str) -> Result<Vec<&'a str>, ()> {
        self.values(name)
            .into_iter()
            .map(|v| headers::ascii_text(v).ok_or(()))
            .collect()
    }
}

/// The request line, once known to be text: the path without query or fragment (what
/// routes match) and the path as forwarded.
struct Target<'a> {
    method: &'a str,
    path: &'a str,
    instance: &'a str,
}

impl<'a> Target<'a> {
    /// `None` when the method is not an RFC 9110 token or the path not visible ASCII.
    fn of(req: &RequestHead<'a>) -> Option<Self> {
        let method = std::str::from_utf8(req.method).ok()?;
        let token = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
        if method.is_empty() || !method.bytes().all(token) {
            return None;
        }
        let path = std::str::from_utf8(req.path).ok()?;
        if path.is_empty() || !path.bytes().all(|b| b.is_ascii_graphic()) {
            return None;
        }
        let instance = path.split(['?', '#']).next().unwrap_or(path);
        Some(Self {
            method,
            path,
            instance,
        })
    }
}

/// The next step after a decision.
#[derive(Debug)]
pub enum Step {
    /// Answer locally.
    Reject(Reply),
    /// The issuer's keys are not loaded (or the token names an unknown `kid`): fetch them
    /// and run the headers decision again, with `may_wait` false.
    WaitForKeys {
        /// Issuer index.
        issuer: usize,
    },
    /// The route's limit is the rate limit service's: make this call (gRPC `ShouldRateLimit`
    /// through the cluster), put its outcome in [`Pending::rate_limit_answer`] and run the
    /// headers decision again, with `may_wait` false.
    AskRateLimit(RateLimitCall),
    /// Forward, after mutating the request as [`Pending`] says; if
    /// [`Pending::needs_body`], read the whole body and call [`Worker::on_body`] first.
    Forward,
}

/// A `ShouldRateLimit` call to make.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RateLimitCall {
    /// The Envoy cluster.
    pub cluster: String,
    /// The call's timeout.
    pub timeout_ms: u64,
    /// The serialized `RateLimitRequest`.
    pub message: Vec<u8>,
}

/// Per-request state carried from one callback to the next.
#[derive(Debug, Default)]
pub struct Pending {
    /// The request's ID.
    pub request_id: String,
    /// Instance (path without query) for problem bodies.
    pub instance: String,
    /// Request headers to remove before forwarding.
    pub remove_headers: Vec<String>,
    /// Request headers to set before forwarding.
    pub set_headers: Vec<(String, String)>,
    /// The signed identity, as filter state the route turns into the
    /// [`edge_contract::IDENTITY_HEADER`] and [`edge_contract::SIGNATURE_HEADER`]
    /// headers (see [`IDENTITY_STATE`]).
    pub forward_state: Vec<(&'static str, String)>,
    /// Headers to add to the response.
    pub response_headers: Vec<(String, String)>,
    /// Whether the body must be read before forwarding.
    pub needs_body: bool,
    /// The rate limit service's answer (the `RateLimitResponse` bytes) or why there is none,
    /// once [`Step::AskRateLimit`]'s call is over; taken by the next headers decision.
    pub rate_limit_answer: Option<Result<Vec<u8>, rls::Failure>>,
    /// The request passed because the rate limit service did not answer and the route's
    /// `failure_mode` is `allow`.
    pub rate_limit_failed_open: bool,
    method: String,
    path: String,
    route: Option<usize>,
    verified: Option<Arc<Verified>>,
    idempotency_key: Option<String>,
    /// The first `Content-Type`, which decides how the body is read for the fingerprint.
    content_type: Option<String>,
    /// The held idempotency claim, once the body decided.
    pub claim: Option<Claim>,
    /// What checks in dry-run would have refused (their reasons); the request went on.
    pub dry_run: Vec<&'static str>,
}

impl Pending {
    /// The local reply for `problem`, with this request's ID and rate-limit headers.
    fn reply(&self, problem: Problem) -> Reply {
        let mut reply = problem.render(&self.instance, &self.request_id);
        reply.headers.extend(self.response_headers.iter().cloned());
        reply
    }

    /// The bearer token stops at the edge: the backend gets the signed identity only. The
    /// client's copies of the identity headers are dropped; the signed ones are added by
    /// the route from `forward_state`. So are tokens sent in configured headers and cookies
    /// (every issuer's, whichever carried this request's token).
    fn strip_credentials(&mut self, policy: &Policy, req: &RequestHead<'_>) {
        let mut token_cookies = Vec::new();
        // Only the headers the client sent: each removal is a host call, and one removes
        // every copy.
        let sent = |name: &str| {
            req.headers
                .iter()
                .any(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        };
        self.remove_headers = std::iter::once("authorization")
            .chain(FORWARDED_HEADERS)
            .filter(|name| sent(name))
            .map(str::to_owned)
            .collect();
        for source in policy.issuers.iter().flat_map(|i| &i.token_sources) {
            match source {
                TokenSource::Header { name, .. } if sent(name) => {
                    self.remove_headers.push(name.clone());
                }
                TokenSource::Header { .. } => {}
                TokenSource::Cookie(name) => token_cookies.push(name.as_str()),
            }
        }
        self.set_headers = vec![(REQUEST_ID.to_owned(), self.request_id.clone())];
        if !token_cookies.is_empty() {
            if let Some(kept) = auth::cookies_without(req, &token_cookies) {
                self.remove_headers.push("cookie".to_owned());
                if !kept.is_empty() {
                    self.set_headers.push(("cookie".to_owned(), kept));
                }
            }
        }
    }

    fn reject(&self, problem: Problem) -> Step {
        Step::Reject(self.reply(problem))
    }

    /// Whether the response must be captured to complete an idempotency claim.
    pub fn holds_claim(&self) -> bool {
        self.claim.is_some()
    }
}

/// One worker's view: the immutable policy plus per-worker state (keys, token cache).
pub struct Worker {
    /// The configuration.
    pub policy: Arc<Policy>,
    signer: Signer,
    keys: Vec<Option<JwkSet>>,
    cache: TokenCache,
    slot_key: SlotKey,
}

impl Worker {
    /// A worker with the identity-signing key; inline keys loaded, remote ones pending.
    pub fn new(policy: Arc<Policy>, hmac_key: Vec<u8>) -> Self {
        let keys = policy
            .issuers
            .iter()
            .map(|i| (!i.inline_keys.keys.is_empty()).then(|| i.inline_keys.clone()))
            .collect();
        // The token cache's hash key, secret as the identity key it is derived from.
        let mut cache_key = [0u8; 16];
        cache_key.copy_from_slice(&hash::digest(&[b"edge-filter:token-cache", &hmac_key])[..16]);
        let cache = TokenCache::new(policy.limits.token_cache_entries, cache_key);
        Self {
            policy,
            signer: Signer::new(hmac_key),
            keys,
            cache,
            slot_key: SlotKey::unset(),
        }
    }

    /// Installs a freshly fetched key set for `issuer` (merged with its inline keys).
    pub fn set_remote_keys(&mut self, issuer: usize, fetched: JwkSet) {
        let Some(config) = self.policy.issuers.get(issuer) else {
            return;
        };
        let mut merged = config.inline_keys.clone();
        merged.keys.extend(fetched.keys);
        if let Some(slot) = self.keys.get_mut(issuer) {
            *slot = Some(merged);
        }
    }

    /// Whether `issuer`'s keys are loaded.
    pub fn has_keys(&self, issuer: usize) -> bool {
        self.keys.get(issuer).is_some_and(Option::is_some)
    }

    /// Agrees with the other workers on the process's slot key (`fresh`: 16 bytes of the
    /// host's randomness, used if this worker is the first), then writes the empty slots
    /// of the shared state, once per configuration generation. Until this succeeds, every
    /// decision that needs shared state fails closed.
    pub fn init_shared(
        &mut self,
        store: &dyn SharedStore,
        fresh: [u8; 16],
    ) -> Result<(), StoreError> {
        self.slot_key = SlotKey::agree(store, fresh)?;
        let marker = format!("{}:{}:init", self.policy.generation, slots::LAYOUT);
        if store.get(&marker)?.is_some() {
            return Ok(());
        }
        self.limiter(store).init()?;
        self.address_limiter(store).init()?;
        Records {
            store,
            namespace: &self.policy.generation,
            settings: &self.policy.idempotency,
            key: &self.slot_key,
        }
        .init()?;
        store.set(&marker, b"1", None)
    }

    fn limiter<'s>(&'s self, store: &'s dyn SharedStore) -> Limiter<'s> {
        Limiter {
            table: Table {
                store,
                namespace: &self.policy.generation,
                name: ratelimit::USERS,
                slots: self.policy.limits.rate_limit_slots,
                key: &self.slot_key,
            },
        }
    }

    /// Decides at request headers. `pending` is filled in for the later callbacks.
    pub fn on_headers(
        &mut self,
        req: &RequestHead<'_>,
        host: &mut Host<'_>,
        may_wait: bool,
        pending: &mut Pending,
    ) -> Step {
        // A decision run again (after a wait for keys or a rate-limit answer) starts afresh.
        pending.dry_run.clear();
        // The request ID first: every reply below carries it.
        let decided = match req.text_values(REQUEST_ID) {
            Ok(ids) => request_id::decide(&ids, &mut *host.random),
            Err(()) => Err(request_id::RequestIdError::NotUuid),
        };
        match decided {
            Ok(id) => pending.request_id = id,
            Err(e) => {
                let random = (host.random)();
                pending.request_id = request_id::generate(random);
                return pending.reject(catalogue::bad_request_id(e.detail()));
            }
        }
        let Some(target) = Target::of(req) else {
            return pending.reject(catalogue::bad_request_target());
        };
        pending.instance = target.instance.to_owned();
        pending.method = target.method.to_owned();
        pending.path = target.path.to_owned();
        for name in headers::INTERPRETED {
            if req.text_values(name).is_err() {
                return pending.reject(catalogue::bad_header(name));
            }
        }
        let policy = Arc::clone(&self.policy);
        let route_index = policy.routes.position(target.method, target.instance);
        if route_index.is_none() && policy.unmatched == Unmatched::Reject {
            let allowed = policy.routes.methods(target.instance);
            if allowed.is_empty() {
                return pending.reject(catalogue::no_route());
            }
            return pending.reject(catalogue::method_not_allowed(&allowed));
        }
        pending.route = route_index;
        let route = route_index.and_then(|i| policy.routes.get(i));
        let anonymous = route.is_some_and(|r| match r.auth {
            RouteAuth::Token => false,
            RouteAuth::Anonymous => true,
            RouteAuth::Optional => !auth::token_sent(req, &policy.issuers),
        });
        if anonymous {
            // No token is read and no identity signed; a body is still read, for the
            // same size limit as everywhere.
            pending.strip_credentials(&policy, req);
            pending.needs_body = req.has_body;
            return Step::Forward;
        }

        let verified = match self.authenticate(req, host, may_wait) {
            Ok(v) => v,
            Err(Auth::Wait(issuer)) => return Step::WaitForKeys { issuer },
            Err(Auth::Reject(p)) => return pending.reject(*p),
        };

        if let Some(route) = route {
            // The route's own requirements of an otherwise valid token.
            if !route.issuers.is_empty() && !route.issuers.contains(&verified.identity.iss) {
                return pending.reject(catalogue::invalid_token(
                    "issuer_not_accepted",
                    "this resource does not accept tokens of the token's issuer".into(),
                ));
            }
            if !route.audiences.met_by(verified.claims.get("aud")) {
                return pending.reject(catalogue::invalid_token(
                    "audience_not_accepted",
                    "the token is not meant for this resource (aud)".into(),
                ));
            }
            // An organization known from the headers is decided now; one in the body later.
            let org = match &route.org {
                Some(OrgSource::Claim(claim)) => Some(
                    verified
                        .claims
                        .get(claim)
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
                Some(OrgSource::PathParam(name)) => {
                    Some(route.path.param(target.instance, name).unwrap_or(""))
                }
                Some(OrgSource::BodyField(_)) | None => None,
            };
            if org.is_some() || route.org.is_none() {
                if let Err(p) = decide_access(route, &verified, org, &mut pending.dry_run) {
                    return pending.reject(*p);
                }
            }
            if let Some(bucket) = route.rate_limit {
                let limited = match self.rate_limit(route, bucket, &verified, host, pending) {
                    Limited::Decided(decision, shape) => Some((decision, shape)),
                    Limited::PassedOpen => None,
                    Limited::Step(step) => return step,
                };
                if let Some((decision, shape)) = limited {
                    if !route.enforce.rate_limit {
                        // Dry-run: no headers for a limit that is not in force.
                        if !decision.allowed {
                            pending.dry_run.push("rate_limited");
                        }
                    } else {
                        pending
                            .response_headers
                            .push(("ratelimit-policy".into(), shape.policy_header(&route.name)));
                        pending
                            .response_headers
                            .push(("ratelimit".into(), decision.header(&route.name)));
                        if !decision.allowed {
                            return pending.reject(catalogue::rate_limited(
                                "rate_limited",
                                decision.retry_after_secs,
                            ));
                        }
                    }
                }
            }
            if route.idempotency != IdempotencyMode::Off {
                // INTERPRETED covers both headers, so their values are text here.
                let values = req.text_values(IDEMPOTENCY_KEY).unwrap_or_default();
                match key_of(&values) {
                    Ok(None) if route.idempotency == IdempotencyMode::Required => {
                        return pending.reject(catalogue::bad_idempotency_key(
                            "Idempotency-Key is required on this endpoint",
                        ));
                    }
                    Ok(key) => pending.idempotency_key = key.map(str::to_owned),
                    Err(why) => {
                        return pending.reject(catalogue::bad_idempotency_key(why.detail()))
                    }
                }
                let content_type = req.text_values(CONTENT_TYPE).unwrap_or_default();
                pending.content_type = content_type.first().map(|v| (*v).to_owned());
            }
            pending.needs_body = matches!(route.org, Some(OrgSource::BodyField(_)))
                || pending.idempotency_key.is_some();
        }
        // The signed identity covers the body, so a request with one is signed once it is read.
        pending.needs_body |= req.has_body;
        pending.strip_credentials(&policy, req);
        pending.verified = Some(verified);
        if !pending.needs_body {
            self.sign(pending, &[], host);
        }
        Step::Forward
    }

    /// The route's limit for this user: the local buckets' decision, or the rate limit
    /// service's (asked for first, then read from [`Pending::rate_limit_answer`]).
    fn rate_limit(
        &self,
        route: &Route,
        bucket: Bucket,
        verified: &Verified,
        host: &Host<'_>,
        pending: &mut Pending,
    ) -> Limited {
        let principal = verified.principal();
        let Some(service) = &route.rate_limit_service else {
            let who: [&[u8]; 2] = [route.name.as_bytes(), principal.as_bytes()];
            return match self
                .limiter(host.store)
                .check(bucket, &who, host.now_ms, true)
            {
                Ok(d) => Limited::Decided(d, bucket),
                Err(_) => Limited::Step(pending.reject(catalogue::unavailable(
                    "store_error",
                    "rate-limit state is unavailable",
                    1,
                ))),
            };
        };
        let Some(answer) = pending.rate_limit_answer.take() else {
            return Limited::Step(Step::AskRateLimit(RateLimitCall {
                cluster: service.cluster.clone(),
                timeout_ms: service.timeout_ms,
                message: rls::request(&service.domain, &route.name, &principal),
            }));
        };
        match answer.and_then(|bytes| rls::decide(&bytes, bucket)) {
            Ok((decision, shape)) => Limited::Decided(decision, shape),
            Err(_) if service.failure_mode == FailureMode::Allow => {
                pending.rate_limit_failed_open = true;
                Limited::PassedOpen
            }
            Err(_) => Limited::Step(pending.reject(catalogue::unavailable(
                "rate_limit_unavailable",
                "the rate-limit service did not answer",
                1,
            ))),
        }
    }

    /// Decides once the whole body is read (only when [`Pending::needs_body`]), then signs
    /// the identity over it.
    pub fn on_body(&mut self, body: &[u8], host: &mut Host<'_>, pending: &mut Pending) -> Step {
        let step = self.check_body(body, host, pending);
        if matches!(step, Step::Forward) {
            self.sign(pending, body, host);
        }
        step
    }

    /// The headers that forward the verified identity, bound to this request and its body.
    fn sign(&self, pending: &mut Pending, body: &[u8], host: &mut Host<'_>) {
        let Some(verified) = pending.verified.as_ref() else {
            return;
        };
        let signed = self.signer.sign(
            &verified.identity,
            &Request {
                request_id: &pending.request_id,
                method: &pending.method,
                path: &pending.path,
                body,
            },
            host.now_ms / 1000,
            (host.random)(),
        );
        pending.forward_state = vec![
            (IDENTITY_STATE, signed.identity),
            (SIGNATURE_STATE, signed.signature),
        ];
    }

    fn check_body(&mut self, body: &[u8], host: &mut Host<'_>, pending: &mut Pending) -> Step {
        let policy = Arc::clone(&self.policy);
        if body.len() > policy.limits.max_body_bytes {
            return pending.reject(catalogue::too_large(policy.limits.max_body_bytes));
        }
        let Some(route) = pending.route.and_then(|i| policy.routes.get(i)) else {
            return Step::Forward;
        };
        let Some(verified) = pending.verified.as_ref() else {
            return Step::Forward;
        };
        if let Some(OrgSource::BodyField(field)) = &route.org {
            let Ok(json) = serde_json::from_slice::<Value>(body) else {
                return pending.reject(catalogue::invalid_json());
            };
            let Some(org) = json
                .get(field)
                .and_then(Value::as_str)
                .filter(|o| !o.is_empty())
            else {
                return pending.reject(catalogue::missing_org(field));
            };
            let mut dry_run = std::mem::take(&mut pending.dry_run);
            let decided = decide_access(route, verified, Some(org), &mut dry_run);
            pending.dry_run = dry_run;
            if let Err(p) = decided {
                return pending.reject(*p);
            }
        }
        if let Some(key) = pending.idempotency_key.clone() {
            // The contract's fingerprint, as the backend computes it: the decoded payload.
            let payload = fingerprint(
                &pending.method,
                &pending.instance,
                pending.content_type.as_deref(),
                body,
            )
            .prefix();
            let generation = u64::from_be_bytes(first8((host.random)()));
            let records = Records {
                store: host.store,
                namespace: &policy.generation,
                settings: &policy.idempotency,
                key: &self.slot_key,
            };
            let principal = verified.principal();
            match records.begin(&principal, &key, payload, host.now_ms, generation) {
                Ok(Begin::Proceed(claim)) => pending.claim = Some(claim),
                Ok(Begin::InFlight) => return pending.reject(catalogue::idempotency_in_flight()),
                Ok(Begin::Mismatch) => return pending.reject(catalogue::idempotency_mismatch()),
                Ok(Begin::Busy) => {
                    return pending.reject(catalogue::unavailable(
                        "idempotency_busy",
                        "too many requests in flight; retry shortly",
                        1,
                    ))
                }
                Ok(Begin::Replay(stored)) => {
                    let mut headers = stored.headers;
                    headers.push((REQUEST_ID.into(), pending.request_id.clone()));
                    headers.push((IDEMPOTENT_REPLAYED.into(), "true".into()));
                    headers.extend(pending.response_headers.iter().cloned());
                    return Step::Reject(Reply {
                        status: stored.status,
                        headers,
                        body: stored.body,
                        reason: "idempotent_replay",
                    });
                }
                Err(_) => {
                    return pending.reject(catalogue::unavailable(
                        "store_error",
                        "idempotency state is unavailable",
                        1,
                    ))
                }
            }
        }
        Step::Forward
    }

    /// A 503 for a request the gateway cannot carry on with (a host facility failed).
    pub fn unavailable(&self, pending: &Pending, reason: &'static str) -> Reply {
        pending.reply(catalogue::unavailable(
            reason,
            "the gateway cannot process this request right now; retry shortly",
            1,
        ))
    }

    /// The 413 for a body that grew past the limit while being buffered.
    pub fn body_too_large(&self, pending: &Pending) -> Reply {
        pending.reply(catalogue::too_large(self.policy.limits.max_body_bytes))
    }

    /// Headers to add to the upstream response.
    pub fn response_headers(&self, pending: &Pending) -> Vec<(String, String)> {
        let mut out = vec![(REQUEST_ID.to_owned(), pending.request_id.clone())];
        out.extend(pending.response_headers.iter().cloned());
        out
    }

    /// Completes the request's idempotency claim with the upstream response when the
    /// backend would keep it too (a success), releases it otherwise. `None` body: the
    /// response was too large or aborted — release.
    pub fn finish(
        &self,
        pending: &mut Pending,
        status: u16,
        headers: &[(String, String)],
        body: Option<&[u8]>,
        host: &Host<'_>,
    ) -> Result<(), StoreError> {
        let Some(claim) = pending.claim.take() else {
            return Ok(());
        };
        let records = Records {
            store: host.store,
            namespace: &self.policy.generation,
            settings: &self.policy.idempotency,
            key: &self.slot_key,
        };
        match body {
            // Only what the backend keeps: a refusal did not consume the key behind the
            // gateway, a server error (gateway-generated ones included: unreachable
            // backend, timeout) is safe to retry, and the backend's 409 or 429 is a passing
            // state; replaying any of them for a day would answer a retry the backend
            // would answer afresh.
            Some(body) if is_replayable(status) => {
                let headers = headers
                    .iter()
                    .filter(|(n, _)| idempotency::replayable_header(n))
                    .cloned()
                    .collect();
                records.complete(
                    claim,
                    &StoredResponse {
                        status,
                        headers,
                        body: body.to_vec(),
                    },
                    host.now_ms,
                )
            }
            _ => records.release(claim),
        }
    }

    /// Releases a claim of a request that ended without a response (client gone).
    pub fn abandon(&self, pending: &mut Pending, host: &Host<'_>) -> Result<(), StoreError> {
        let Some(claim) = pending.claim.take() else {
            return Ok(());
        };
        Records {
            store: host.store,
            namespace: &self.policy.generation,
            settings: &self.policy.idempotency,
            key: &self.slot_key,
        }
        .release(claim)
    }
}

/// Decides `route`'s permission in `org` (when the route has one and `org` is known) and
/// its conditions: `Err` with the refusal to send for an enforced check that fails; what a
/// dry-run check would have refused goes into `dry_run` and the request goes on.
fn decide_access(
    route: &Route,
    verified: &Verified,
    org: Option<&str>,
    dry_run: &mut Vec<&'static str>,
) -> Result<(), Box<Problem>> {
    let mut denials = Vec::new();
    if let (Some(perm), Some(org)) = (&route.permission, org) {
        if let Err(d) = verified.identity.may(org, perm) {
            let d = match permission::Denial::from(d) {
                // Narrowed away by the token's scopes: a token with the scope may pass.
                permission::Denial::MissingPermission
                    if verified
                        .scopes
                        .as_ref()
                        .is_some_and(|s| !s.contains(perm.as_str())) =>
                {
                    permission::Denial::InsufficientScope
                }
                d => d,
            };
            denials.push(d);
        }
    }
    if let Err(d) = permission::check_conditions(&verified.claims, &route.conditions) {
        denials.push(d);
    }
    for d in denials {
        if route.enforce.applies(d) {
            return Err(Box::new(catalogue::denied(d, route.permission.as_deref())));
        }
        dry_run.push(d.reason());
    }
    Ok(())
}

/// What a route's limit decided.
enum Limited {
    /// Counted: the decision and the limit's shape (for `RateLimit-Policy`).
    Decided(Decision, Bucket),
    /// Not counted: the service did not answer and the route fails open.
    PassedOpen,
    /// Answer now, or ask the service first.
    Step(Step),
}

fn first8(b: [u8; 16]) -> [u8; 8] {
    let mut out = [0u8; 8];
    out.copy_from_slice(&b[..8]);
    out
}
