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

use crate::config::{Issuer, TokenSource};
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
        let policy = Arc::clone(&self.policy);
        let (token, source) = match find_token(req, &policy.issuers) {
            Ok(found) => found,
            Err(p) => return Err(self.failed(req, host, may_wait, *p)),
        };
        let cache_key = self.cache.key(token);
        if let Some(v) = self.cache.get(&cache_key, host.now_secs()) {
            if !source_allowed(&policy.issuers, &v.identity.iss, source) {
                return Err(self.failed(req, host, may_wait, source_refused()));
            }
            return Ok(Arc::clone(v));
        }
        // Before paying for a signature check, make sure this address has not spent its
        // allowance on failed authentications or on requests held for keys.
        self.allowance(req, host, false)?;
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
            Ok(v) if !source_allowed(&policy.issuers, &v.identity.iss, source) => {
                Err(self.failed(req, host, may_wait, source_refused()))
            }
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

/// The request's token and, unless it came in `Authorization: Bearer`, the configured
/// source it came in. `Authorization` comes first; then the issuers' sources in the order
/// configured; none is 401 `missing_token`.
fn find_token<'h, 'p>(
    req: &RequestHead<'h>,
    issuers: &'p [Issuer],
) -> Result<(&'h str, Option<&'p TokenSource>), Box<Problem>> {
    // `on_headers` refused a non-ASCII Authorization value before this point.
    let values = req.text_values("authorization").unwrap_or_default();
    if !values.is_empty() {
        return bearer(&values).map(|t| (t, None));
    }
    for source in issuers.iter().flat_map(|i| &i.token_sources) {
        let found = match source {
            TokenSource::Header { name, prefix } => from_header(req, name, prefix)?,
            TokenSource::Cookie(name) => from_cookie(req, name)?,
        };
        if let Some(token) = found {
            return token_syntax(token).map(|t| (t, Some(source)));
        }
    }
    Err(Box::new(catalogue::missing_token()))
}

/// Whether the request sends a token anywhere a configured issuer looks (a malformed
/// one counts: it gets its refusal).
pub(super) fn token_sent(req: &RequestHead<'_>, issuers: &[Issuer]) -> bool {
    !req.values("authorization").is_empty()
        || issuers
            .iter()
            .flat_map(|i| &i.token_sources)
            .any(|source| match source {
                TokenSource::Header { name, prefix } => {
                    !matches!(from_header(req, name, prefix), Ok(None))
                }
                TokenSource::Cookie(name) => !matches!(from_cookie(req, name), Ok(None)),
            })
}

fn from_header<'h>(
    req: &RequestHead<'h>,
    name: &str,
    prefix: &str,
) -> Result<Option<&'h str>, Box<Problem>> {
    let values = req.text_values(name).map_err(|()| {
        Box::new(catalogue::bad_authorization(&format!(
            "the {name} header must be ASCII text"
        )))
    })?;
    match values.as_slice() {
        [] => Ok(None),
        [one] => {
            let value = one.trim();
            let token = value
                .get(..prefix.len())
                .filter(|p| p.eq_ignore_ascii_case(prefix))
                .and_then(|_| value.get(prefix.len()..));
            match token {
                Some(t) => Ok(Some(t.trim())),
                None => Err(Box::new(catalogue::bad_authorization(&format!(
                    "the {name} header must be `{prefix}<token>`"
                )))),
            }
        }
        _ => Err(Box::new(catalogue::bad_authorization(&format!(
            "send exactly one {name} header"
        )))),
    }
}

/// The value of cookie `name` (RFC 6265 `cookie-string`s, one or more `Cookie` headers).
fn from_cookie<'h>(req: &RequestHead<'h>, name: &str) -> Result<Option<&'h str>, Box<Problem>> {
    let mut found = None;
    for pair in cookies(req) {
        if let Some((n, v)) = pair.split_once('=') {
            if n.trim() == name {
                if found.is_some() {
                    return Err(Box::new(catalogue::bad_authorization(&format!(
                        "send the {name} cookie once"
                    ))));
                }
                found = Some(v.trim().trim_matches('"'));
            }
        }
    }
    Ok(found)
}

/// Every `name=value` pair of the request's `Cookie` headers that is ASCII text (others
/// are not the filter's business).
pub(super) fn cookies<'h>(req: &RequestHead<'h>) -> impl Iterator<Item = &'h str> {
    req.values("cookie")
        .into_iter()
        .filter_map(|v| std::str::from_utf8(v).ok())
        .flat_map(|v| v.split(';'))
        .map(str::trim)
        .filter(|p| !p.is_empty())
}

/// The `Cookie` header to forward without the cookies named `names`: `None` when the
/// request has none of them (forward it as it is), else the other pairs (maybe none).
pub(super) fn cookies_without(req: &RequestHead<'_>, names: &[&str]) -> Option<String> {
    let named = |pair: &str| names.contains(&pair.split_once('=').map_or(pair, |(n, _)| n).trim());
    if !cookies(req).any(named) {
        return None;
    }
    Some(
        cookies(req)
            .filter(|p| !named(p))
            .collect::<Vec<_>>()
            .join("; "),
    )
}

/// Whether a token from `source` may vouch for a caller of issuer `iss`: `Authorization`
/// always, a configured source only for the issuers that name it.
fn source_allowed(issuers: &[Issuer], iss: &str, source: Option<&TokenSource>) -> bool {
    source.is_none_or(|s| {
        issuers
            .iter()
            .any(|i| i.issuer == iss && i.token_sources.contains(s))
    })
}

fn source_refused() -> Problem {
    catalogue::invalid_token(
        "token_source_not_allowed",
        "the token's issuer does not accept tokens from where this one was sent".into(),
    )
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
    token_syntax(token.trim())
}

/// `token` if it has a JWT's characters (base64url and dots); 401 `token_malformed` if not.
fn token_syntax(token: &str) -> Result<&str, Box<Problem>> {
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
