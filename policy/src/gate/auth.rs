//! Authentication: the bearer token of a request, checked against the token cache, the
//! per-address allowance for failures, and the issuer's keys.

use std::sync::Arc;

use crate::cache::TokenCache;
use crate::jwt::{TokenError, Verified, Verifier};
use crate::problem::{catalogue, Problem};

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
    ) -> Result<Verified, Auth> {
        // `on_headers` refused a non-ASCII Authorization value before this point.
        let values = req.text_values("authorization").unwrap_or_default();
        let token = match bearer(&values) {
            Ok(t) => t,
            Err(p) => return Err(self.failed(req, host, *p)),
        };
        let cache_key = TokenCache::key(token);
        if let Some(v) = self.cache.get(&cache_key, host.now_secs()) {
            return Ok(v.clone());
        }
        // Before paying for a signature check, make sure this address has not been
        // failing authentication beyond its allowance.
        if let Some(addr) = req.client_addr {
            let bucket = self.policy.limits.unauthenticated;
            let who: [&[u8]; 2] = [b"~unauthenticated", addr.as_bytes()];
            if let Ok(d) = self
                .limiter(host.store)
                .check(bucket, &who, host.now_ms, false)
            {
                if !d.allowed {
                    return Err(Auth::Reject(Box::new(catalogue::rate_limited(
                        "unauthenticated_rate_limited",
                        d.retry_after_secs,
                    ))));
                }
            }
        }
        let policy = Arc::clone(&self.policy);
        let outcome = {
            let keys = &self.keys;
            let lookup = |i: usize| keys.get(i).and_then(Option::as_ref);
            let verifier = Verifier {
                issuers: &policy.issuers,
                keys: &lookup,
                max_token_bytes: policy.limits.max_token_bytes,
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
                self.cache.put(cache_key, v.clone());
                Ok(v)
            }
            Err((TokenError::KeysNotLoaded | TokenError::UnknownKey, Some(issuer)))
                if may_wait
                    && policy
                        .issuers
                        .get(issuer)
                        .is_some_and(|c| c.remote.is_some()) =>
            {
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
                catalogue::invalid_token(e.reason(), e.to_string()),
            )),
        }
    }

    /// Counts an authentication failure against the client address and returns the
    /// rejection.
    fn failed(&self, req: &RequestHead<'_>, host: &Host<'_>, problem: Problem) -> Auth {
        if let Some(addr) = req.client_addr {
            let who: [&[u8]; 2] = [b"~unauthenticated", addr.as_bytes()];
            let _ = self.limiter(host.store).check(
                self.policy.limits.unauthenticated,
                &who,
                host.now_ms,
                true,
            );
        }
        Auth::Reject(Box::new(problem))
    }
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
