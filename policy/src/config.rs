//! The filter's JSON configuration: the raw serde form (`raw`: every struct refuses unknown
//! fields, every default is there) and its validation into a ready-to-use [`Policy`], one
//! function per section (`issuer` for `issuers`).
//!
//! Validation happens once, when Envoy hands the configuration to the filter; a
//! [`ConfigError`] names the offending field so the one log line that refuses the
//! configuration tells the operator what to fix.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::time::Duration;

use edge_contract::permission::RoleMap;
use serde::Deserialize;

use crate::duration;
use crate::ratelimit::Bucket;
use crate::rls;
use crate::route::{Audiences, Enforce, PathPattern, Route, RouteTable};

mod issuer;
mod raw;
pub use issuer::{media_type, Discovery, Issuer, RemoteJwks, ScopeClaim, TokenSource};
pub use raw::{
    IdempotencyMode, OrgSource, RawAudiences, RawConfig, RawEnforce, RawEnforceEach,
    RawIdempotency, RawIdentity, RawIssuer, RawLimits, RawRateLimit, RawRateLimitService,
    RawRemoteJwks, RawRoute, RawTokenSource, RouteAuth, Unmatched,
};

/// Where a configuration went wrong: the JSON path of the field and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError {
    /// Dotted path of the offending field, e.g. `issuers[0].jwks`.
    pub field: String,
    /// What is wrong with it.
    pub reason: String,
}

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "invalid filter configuration: field `{}`: {}",
            self.field, self.reason
        )
    }
}

impl std::error::Error for ConfigError {}

fn err(field: impl Into<String>, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        field: field.into(),
        reason: reason.into(),
    }
}

/// A validated configuration, ready for the request path: every section checked, every
/// default applied and every duration converted, once, before the first request.
#[derive(Debug)]
pub struct Policy {
    /// Trusted issuers, looked up by `iss`.
    pub issuers: Vec<Issuer>,
    /// The identity-signing key source.
    pub identity_key: KeySource,
    /// Role name to permissions.
    pub roles: RoleMap,
    /// Compiled routes.
    pub routes: RouteTable,
    /// What happens to unmatched requests.
    pub unmatched: Unmatched,
    /// Limits.
    pub limits: Limits,
    /// Idempotency settings.
    pub idempotency: IdempotencySettings,
    /// Whether each request's decision is left in filter state.
    pub decision_state: bool,
    /// Short hash of the configuration text; namespaces shared-data keys so a reloaded
    /// configuration starts from a clean slate without clobbering the old one's state.
    pub generation: String,
}

/// Where the identity HMAC key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Given inline.
    Inline(Vec<u8>),
    /// Read from this environment variable when the filter starts.
    Env(String),
}

impl KeySource {
    /// The key: the inline one, or the value of the environment variable (`env` reads the
    /// VM's environment), trimmed, at least [`edge_contract::MIN_KEY_LEN`] bytes long.
    pub fn resolve(
        &self,
        env: impl FnOnce(&str) -> Option<String>,
    ) -> Result<Vec<u8>, ConfigError> {
        let name = match self {
            Self::Inline(key) => return Ok(key.clone()),
            Self::Env(name) => name,
        };
        let field = "identity.hmac_key_env";
        let value = env(name).ok_or_else(|| {
            err(
                field,
                format!("environment variable {name:?} is not set (expose it with vm_config.environment_variables)"),
            )
        })?;
        let key = value.trim().as_bytes().to_vec();
        if key.len() < edge_contract::MIN_KEY_LEN {
            return Err(err(
                field,
                format!(
                    "the key in {name:?} is shorter than {} bytes",
                    edge_contract::MIN_KEY_LEN
                ),
            ));
        }
        Ok(key)
    }
}

impl fmt::Debug for KeySource {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Inline(_) => f.write_str("Inline(<redacted>)"),
            Self::Env(name) => write!(f, "Env({name:?})"),
        }
    }
}

/// Validated limits.
#[derive(Debug, Clone)]
pub struct Limits {
    /// Longest token.
    pub max_token_bytes: usize,
    /// Largest buffered body.
    pub max_body_bytes: usize,
    /// Unauthenticated per-address bucket.
    pub unauthenticated: Bucket,
    /// Key wait bound in milliseconds.
    pub key_wait_ms: u64,
    /// Slots of per-user buckets.
    pub rate_limit_slots: u32,
    /// Slots of per-address allowances, a table apart from the per-user one.
    pub unauthenticated_slots: u32,
    /// Requests one worker may hold at once while keys load; beyond it they get 503 with
    /// `Retry-After` (see [`crate::keyfetch`]).
    pub max_waiting_for_keys: usize,
    /// Token cache capacity.
    pub token_cache_entries: usize,
}

/// Validated idempotency settings.
#[derive(Debug, Clone)]
pub struct IdempotencySettings {
    /// Replay lifetime, ms.
    pub ttl_ms: u64,
    /// In-flight timeout, ms.
    pub in_flight_ms: u64,
    /// Largest stored body.
    pub max_response_bytes: usize,
    /// Record slots.
    pub slots: u32,
}

impl Policy {
    /// Parses and validates the configuration text.
    pub fn from_json(text: &[u8]) -> Result<Self, ConfigError> {
        let de = &mut serde_json::Deserializer::from_slice(text);
        let raw: RawConfig = parse_with_path(de)?;
        let generation = crate::hash::short_hex(text);
        Self::validate(raw, generation)
    }

    /// Validates a parsed configuration, section by section, in the order of the document.
    pub fn validate(raw: RawConfig, generation: String) -> Result<Self, ConfigError> {
        let issuers = issuer::issuers(raw.issuers)?;
        let identity_key = identity(raw.identity)?;
        let roles = roles(raw.roles)?;
        let routes = routes(raw.routes, &issuers)?;
        Ok(Self {
            issuers,
            identity_key,
            roles,
            routes,
            unmatched: raw.unmatched,
            limits: limits(raw.limits)?,
            idempotency: idempotency(raw.idempotency)?,
            decision_state: raw.decision_state,
            generation,
        })
    }
}

/// Upper bound of `limits.max_waiting_for_keys`.
pub const MAX_WAITING_FOR_KEYS: u32 = 10_000;

/// `identity`: exactly one key source; an inline key long enough to sign with.
fn identity(raw: RawIdentity) -> Result<KeySource, ConfigError> {
    match (raw.hmac_key, raw.hmac_key_env) {
        (Some(key), None) => {
            let key = key.trim().as_bytes().to_vec();
            if key.len() < edge_contract::MIN_KEY_LEN {
                return Err(err(
                    "identity.hmac_key",
                    format!("must be at least {} bytes", edge_contract::MIN_KEY_LEN),
                ));
            }
            Ok(KeySource::Inline(key))
        }
        (None, Some(name)) if !name.is_empty() => Ok(KeySource::Env(name)),
        _ => Err(err(
            "identity",
            "exactly one of `hmac_key` or `hmac_key_env` is required",
        )),
    }
}

/// `roles`: non-empty role and permission names. Applied to each verified token, and
/// forwarded to the backend as the identity's effective permissions.
fn roles(raw: BTreeMap<String, Vec<String>>) -> Result<RoleMap, ConfigError> {
    for (role, perms) in &raw {
        if role.is_empty() || perms.iter().any(String::is_empty) {
            return Err(err(
                format!("roles.{role}"),
                "role and permission names must not be empty",
            ));
        }
    }
    Ok(RoleMap::new(raw))
}

/// `routes`: unique names, HTTP methods, path patterns, a permission with its organization,
/// sound conditions and rate limits.
fn routes(raw: Vec<RawRoute>, issuers: &[Issuer]) -> Result<RouteTable, ConfigError> {
    let mut names = BTreeSet::new();
    let mut routes = Vec::new();
    for (i, r) in raw.into_iter().enumerate() {
        let at = |f: &str| format!("routes[{i}].{f}");
        if r.name.is_empty() || !names.insert(r.name.clone()) {
            return Err(err(at("name"), "must be non-empty and unique"));
        }
        let method = r.method.to_ascii_uppercase();
        if method.is_empty() || !method.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(err(at("method"), "must be an HTTP method such as POST"));
        }
        let path = PathPattern::parse(&r.path).map_err(|why| err(at("path"), why))?;
        if r.permission.is_some() != r.org.is_some() {
            return Err(err(at("permission"), "`permission` and `org` go together"));
        }
        // Named in `WWW-Authenticate: … scope="…"` when a token's scopes lack it.
        let scope_token = |p: &str| {
            !p.is_empty()
                && p.bytes()
                    .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\')
        };
        if r.permission.as_deref().is_some_and(|p| !scope_token(p)) {
            return Err(err(
                at("permission"),
                "must be printable ASCII without spaces, `\"` or `\\` (an OAuth scope token)",
            ));
        }
        match &r.org {
            Some(OrgSource::BodyField(f) | OrgSource::Claim(f)) if f.is_empty() => {
                return Err(err(at("org"), "names an empty field"));
            }
            Some(OrgSource::PathParam(p)) if !path.has_param(p) => {
                return Err(err(
                    at("org.path_param"),
                    format!("the path has no segment `{{{p}}}`"),
                ));
            }
            _ => {}
        }
        for (c, cond) in r.conditions.iter().enumerate() {
            cond.validate()
                .map_err(|why| err(at(&format!("conditions[{c}]")), why))?;
        }
        let rate_limit = match &r.rate_limit {
            Some(rl) => Some(bucket(rl).map_err(|why| err(at("rate_limit"), why))?),
            None => None,
        };
        let rate_limit_service = match r.rate_limit.and_then(|rl| rl.service) {
            Some(s) => Some(
                rls_service(s)
                    .map_err(|(field, why)| err(at(&format!("rate_limit.service.{field}")), why))?,
            ),
            None => None,
        };
        let route_issuers = r.issuers.clone().unwrap_or_default();
        if r.issuers.as_ref().is_some_and(Vec::is_empty) {
            return Err(err(
                at("issuers"),
                "must name at least one issuer (omit it for all)",
            ));
        }
        if let Some(unknown) = route_issuers
            .iter()
            .find(|name| !issuers.iter().any(|i| &&i.issuer == name))
        {
            return Err(err(
                at("issuers"),
                format!("{unknown:?} is not a configured issuer"),
            ));
        }
        if r.audiences
            .as_ref()
            .is_some_and(|a| a.any_of.iter().chain(&a.all_of).any(String::is_empty))
        {
            return Err(err(at("audiences"), "audiences must not be empty strings"));
        }
        if r.auth == RouteAuth::Anonymous && method != "GET" && method != "HEAD" {
            return Err(err(at("auth"), "`none` is for GET and HEAD routes only"));
        }
        if r.auth == RouteAuth::Anonymous && (r.issuers.is_some() || r.audiences.is_some()) {
            return Err(err(
                at("auth"),
                "a route without a token has no issuers or audiences",
            ));
        }
        if r.auth != RouteAuth::Token
            && (r.permission.is_some()
                || !r.conditions.is_empty()
                || rate_limit.is_some()
                || r.idempotency != IdempotencyMode::Off)
        {
            return Err(err(
                at("auth"),
                "a route that may have no token has no permission, conditions, rate limit or idempotency",
            ));
        }
        routes.push(Route {
            name: r.name,
            method,
            path,
            permission: r.permission,
            org: r.org,
            conditions: r.conditions,
            rate_limit,
            rate_limit_service,
            idempotency: r.idempotency,
            issuers: route_issuers,
            audiences: Audiences {
                any_of: r
                    .audiences
                    .as_ref()
                    .map(|a| a.any_of.clone())
                    .unwrap_or_default(),
                all_of: r.audiences.map(|a| a.all_of).unwrap_or_default(),
            },
            enforce: match r.enforce {
                None => Enforce::default(),
                Some(RawEnforce::All(on)) => Enforce::all(on),
                Some(RawEnforce::Each(e)) => Enforce {
                    permission: e.permission,
                    conditions: e.conditions,
                    rate_limit: e.rate_limit,
                },
            },
            auth: r.auth,
        });
    }
    Ok(RouteTable::new(routes))
}

/// `limits`: sizes, slot counts and the bound on requests waiting for keys.
fn limits(l: RawLimits) -> Result<Limits, ConfigError> {
    if l.max_token_bytes < 64 {
        return Err(err("limits.max_token_bytes", "must be at least 64"));
    }
    if l.rate_limit_slots == 0 {
        return Err(err("limits.rate_limit_slots", "must be at least 1"));
    }
    if l.unauthenticated_slots == 0 {
        return Err(err("limits.unauthenticated_slots", "must be at least 1"));
    }
    // Each held request keeps its stream and its state in the worker: the bound is
    // what keeps a flood of tokens naming a slow issuer from holding memory.
    if !(1..=MAX_WAITING_FOR_KEYS).contains(&l.max_waiting_for_keys) {
        return Err(err(
            "limits.max_waiting_for_keys",
            format!("must be between 1 and {MAX_WAITING_FOR_KEYS}"),
        ));
    }
    if l.unauthenticated.service.is_some() {
        return Err(err(
            "limits.unauthenticated.service",
            "the per-address allowance is always local",
        ));
    }
    Ok(Limits {
        max_token_bytes: l.max_token_bytes,
        max_body_bytes: l.max_body_bytes,
        unauthenticated: bucket(&l.unauthenticated)
            .map_err(|why| err("limits.unauthenticated", why))?,
        key_wait_ms: duration::millis(l.key_wait),
        rate_limit_slots: l.rate_limit_slots,
        unauthenticated_slots: l.unauthenticated_slots,
        max_waiting_for_keys: usize::try_from(l.max_waiting_for_keys).unwrap_or(usize::MAX),
        token_cache_entries: l.token_cache_entries,
    })
}

/// `idempotency`: record lifetimes and slots.
fn idempotency(im: RawIdempotency) -> Result<IdempotencySettings, ConfigError> {
    if im.slots == 0 {
        return Err(err("idempotency.slots", "must be at least 1"));
    }
    Ok(IdempotencySettings {
        ttl_ms: duration::millis(im.ttl),
        in_flight_ms: duration::millis(im.in_flight_timeout),
        max_response_bytes: im.max_response_bytes,
        slots: im.slots,
    })
}

/// A token bucket: at least one request per window of at least one second.
fn bucket(raw: &RawRateLimit) -> Result<Bucket, String> {
    if raw.requests == 0 {
        return Err("`requests` must be at least 1".into());
    }
    if raw.per < Duration::from_secs(1) {
        return Err("`per` must be at least 1s".into());
    }
    Ok(Bucket {
        capacity: raw.requests,
        window_ms: duration::millis(raw.per),
    })
}

/// A route's rate limit service: a cluster and a domain, and a timeout Envoy can keep
/// (1ms to 60s). The error names the field.
fn rls_service(raw: RawRateLimitService) -> Result<rls::Service, (&'static str, String)> {
    if raw.cluster.is_empty() {
        return Err(("cluster", "must not be empty".into()));
    }
    if raw.domain.is_empty() {
        return Err(("domain", "must not be empty".into()));
    }
    let timeout_ms = duration::millis(raw.timeout);
    if !(1..=60_000).contains(&timeout_ms) {
        return Err(("timeout", "must be between 1ms and 60s".into()));
    }
    Ok(rls::Service {
        cluster: raw.cluster,
        domain: raw.domain,
        timeout_ms,
        failure_mode: raw.failure_mode,
    })
}

/// Deserializes with `serde_path_to_error`, so the error names the field's full path
/// (`routes[1].rate_limit.per`), including the name of an unknown field.
fn parse_with_path<'de, T: Deserialize<'de>>(
    de: &mut serde_json::Deserializer<serde_json::de::SliceRead<'de>>,
) -> Result<T, ConfigError> {
    serde_path_to_error::deserialize(de).map_err(|e| {
        let mut field = e.path().to_string();
        let reason = e.inner().to_string();
        // serde_path_to_error's path already ends with an unknown field's name; other
        // errors point at the field whose value is wrong.
        if let Some(unknown) = reason
            .strip_prefix("unknown field `")
            .and_then(|r| r.split('`').next())
        {
            if field == "." {
                unknown.clone_into(&mut field);
            } else if !field.ends_with(unknown) {
                field = format!("{field}.{unknown}");
            }
        }
        if field == "." {
            field = "(document)".to_owned();
        }
        err(field, reason)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_identity_key_comes_inline_or_from_the_environment() {
        let key = "0123456789abcdef0123456789abcdef";
        let from_env = KeySource::Env("GATEWAY_HMAC_KEY".into());
        // (source, the variable's value) -> the key, or the start of the error's reason
        type Case<'a> = (&'a KeySource, Option<&'a str>, Result<&'a [u8], &'a str>);
        let cases: [Case<'_>; 4] = [
            (&KeySource::Inline(b"inline".to_vec()), None, Ok(b"inline")),
            (&from_env, Some(&format!(" {key}\n")), Ok(key.as_bytes())),
            (
                &from_env,
                None,
                Err("environment variable \"GATEWAY_HMAC_KEY\" is not set"),
            ),
            (
                &from_env,
                Some("short"),
                Err("the key in \"GATEWAY_HMAC_KEY\" is shorter than"),
            ),
        ];
        for (source, value, want) in cases {
            let got = source.resolve(|name| {
                assert_eq!(name, "GATEWAY_HMAC_KEY");
                value.map(str::to_owned)
            });
            match (got, want) {
                (Ok(got), Ok(want)) => assert_eq!(got, want),
                (Err(e), Err(want)) => {
                    assert_eq!(e.field, "identity.hmac_key_env");
                    assert!(e.reason.starts_with(want), "{e}");
                }
                (got, want) => panic!("{source:?} {value:?}: {got:?}, want {want:?}"),
            }
        }
    }
}
