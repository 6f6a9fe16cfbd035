//! Authentication: the bearer token of a request, checked against the token cache, the
//! per-address allowance for failures, and the issuer's keys.
//!
//! The per-address allowance is spent by every failed authentication and by every
//! request held while its issuer's keys load (its token is not verified yet, and holding
//! it costs the worker). Once spent, an address gets 429 before any signature check. A
//! request the adapter runs again after its wait (`may_wait` false) already paid. The
//! allowance lives in its own table ([`ratelimit::ADDRESSES`]), so no amount of failing
//! traffic can displace a user's buckets; if its state cannot be read or written, the
//! request gets 503 rather than pass unlimited.

use std::sync::Arc;

use crate::jwt::{TokenError, Verified, Verifier};
use crate::problem::{catalogue, Problem};
use crate::ratelimit::{self, Decision, Limiter};
use crate::slots::Table;
use crate::store::{SharedStore, StoreError};

use super::{Host, RequestHead, Worker};

/// Why a request is not authenticated (yet).
pub(super) enum Auth {
    /// The issuer's keys must be (re)loaded first.
    Wait(usize),
    /// Refused.
    Reject(Box<Problem>),
}

impl Worker {
    pub(super) fn authenticate(
        &mut self,
        req: &RequestHead<'_>,
        host: &mut Host<'_>,
        may_wait: bool,
    ) -> Result<Arc<Verified>, Auth> {
        // `on_headers` refused a non-ASCII Authorization value before this point.
        let values = req.text_values("authorization").unwrap_or_default();
        let token = match bearer(&values) {
            Ok(t) => t,
            Err(p) => return Err(self.failed(req, host, may_wait, *p)),
        };
        let cache_key = self.cache.key(token);
        if let Some(v) = self.cache.get(&cache_key, host.now_secs()) {
            return Ok(Arc::clone(v));
        }
        // Before paying for a signature check, make sure this address has not spent its
        // allowance on failed authentications or on requests held for keys.
        self.allowance(req, host, false)?;
        let policy = Arc::clone(&self.policy);
        let outcome = {
            let keys = &self.keys;
            let lookup = |i: usize| keys.get(i).and_then(Option::as_ref);
            let verifier = Verifier {
                issuers: &policy.issuers,
                keys: &lookup,
                max_token_bytes: policy.limits.max_token_bytes,
                roles: &policy.roles,
            };
            match verifier.peek(token) {
                Ok(p) => verifier
                    .verify(&p, host.now_secs())
                    .map_err(|e| (e, Some(p.issuer))),
                Err(e) => Err((e, None)),
            }
        };
        match outcome {
            Ok(v) => {
                let v = Arc::new(v);
                self.cache.put(cache_key, Arc::clone(&v));
                Ok(v)
            }
            Err((TokenError::KeysNotLoaded | TokenError::UnknownKey, Some(issuer)))
                if may_wait
                    && policy
                        .issuers
                        .get(issuer)
                        .is_some_and(|c| c.remote.is_some()) =>
            {
                // Held without being verified: the address pays for it now.
                self.allowance(req, host, true)?;
                Err(Auth::Wait(issuer))
            }
            Err((TokenError::KeysNotLoaded, _)) => {
                Err(Auth::Reject(Box::new(catalogue::unavailable(
                    "keys_not_loaded",
                    "the token issuer's keys could not be loaded; retry shortly",
                    5,
                ))))
            }
            Err((e, _)) => Err(self.failed(
                req,
                host,
                may_wait,
                catalogue::invalid_token(e.reason(), e.to_string()),
            )),
        }
    }

    /// Counts an authentication failure against the client address (unless the request
    /// already paid when it was held for keys) and returns the rejection.
    fn failed(
        &self,
        req: &RequestHead<'_>,
        host: &Host<'_>,
        charge: bool,
        problem: Problem,
    ) -> Auth {
        if charge && self.address_check(req, host, true).is_err() {
            // 503 (fail closed, counted) rather than a 401 that cost the address nothing.
            return Auth::Reject(Box::new(store_unavailable()));
        }
        Auth::Reject(Box::new(problem))
    }

    /// Checks (and with `spend`, spends one unit of) the client address's allowance:
    /// 429 once it is spent, 503 when its state is unavailable.
    fn allowance(&self, req: &RequestHead<'_>, host: &Host<'_>, spend: bool) -> Result<(), Auth> {
        match self.address_check(req, host, spend) {
            Ok(Some(d)) if !d.allowed => Err(Auth::Reject(Box::new(catalogue::rate_limited(
                "unauthenticated_rate_limited",
                d.retry_after_secs,
            )))),
            Ok(_) => Ok(()),
            Err(_) => Err(Auth::Reject(Box::new(store_unavailable()))),
        }
    }

    /// The address's allowance; `None` for a request without a known address, which has
    /// none to check.
    fn address_check(
        &self,
        req: &RequestHead<'_>,
        host: &Host<'_>,
        spend: bool,
    ) -> Result<Option<Decision>, StoreError> {
        let Some(addr) = req.client_addr else {
            return Ok(None);
        };
        self.address_limiter(host.store)
            .check(
                self.policy.limits.unauthenticated,
                &[addr.as_bytes()],
                host.now_ms,
                spend,
            )
            .map(Some)
    }

    pub(super) fn address_limiter<'s>(&'s self, store: &'s dyn SharedStore) -> Limiter<'s> {
        Limiter {
            table: Table {
                store,
                namespace: &self.policy.generation,
                name: ratelimit::ADDRESSES,
                slots: self.policy.limits.unauthenticated_slots,
                key: &self.slot_key,
            },
        }
    }
}

fn store_unavailable() -> Problem {
    catalogue::unavailable("store_error", "rate-limit state is unavailable", 1)
}

/// The token of the single `Authorization: Bearer` header.
fn bearer<'h>(values: &[&'h str]) -> Result<&'h str, Box<Problem>> {
    let value = match values {
        [] => return Err(Box::new(catalogue::missing_token())),
        [one] => one.trim(),
        _ => {
            return Err(Box::new(catalogue::bad_authorization(
                "send exactly one Authorization header",
            )))
        }
    };
    let Some((scheme, token)) = value.split_once(' ') else {
        return Err(Box::new(catalogue::bad_authorization(
            "the Authorization header must be `Bearer <token>`",
        )));
    };
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Err(Box::new(catalogue::bad_authorization(
            "the Authorization scheme must be Bearer",
        )));
    }
    let token = token.trim();
    if token.is_empty()
        || !token
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b'='))
    {
        return Err(Box::new(catalogue::invalid_token(
            "token_malformed",
            TokenError::Malformed.to_string(),
        )));
    }
    Ok(token)
}
