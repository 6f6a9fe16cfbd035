//! The filter's JSON configuration: the raw serde form (every struct refuses unknown
//! fields) and its validation into a ready-to-use [`Policy`].
//!
//! Validation happens once, when Envoy hands the configuration to the filter; a
//! [`ConfigError`] names the offending field so the one log line that refuses the
//! configuration tells the operator what to fix.

use std::collections::BTreeSet;
use std::fmt;
use std::time::Duration;

use edge_contract::permission::RoleMap;
use serde::Deserialize;

use crate::jwks::{JwkSet, JwksError};
use crate::jwt::Alg;
use crate::route::{PathPattern, RouteTable};

mod raw;
pub use raw::{
    IdempotencyMode, RawConfig, RawIdempotency, RawIdentity, RawIssuer, RawLimits, RawOrgSource,
    RawRateLimit, RawRemoteJwks, RawRoute, Unmatched,
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

/// A validated configuration, ready for the request path.
#[derive(Debug)]
pub struct Policy {
    /// Trusted issuers, looked up by `iss`.
    pub issuers: Vec<Issuer>,
    /// The identity-signing key source.
    pub identity_key: KeySource,
    /// Role name to permissions: applied to each verified token, and forwarded to the
    /// backend as the identity's effective permissions.
    pub roles: RoleMap,
    /// Compiled routes.
    pub routes: RouteTable,
    /// What happens to unmatched requests.
    pub unmatched: Unmatched,
    /// Limits.
    pub limits: Limits,
    /// Idempotency settings.
    pub idempotency: IdempotencySettings,
    /// Short hash of the configuration text; namespaces shared-data keys so a reloaded
    /// configuration starts from a clean slate without clobbering the old one's state.
    pub generation: String,
}

/// A trusted issuer, validated.
#[derive(Debug)]
pub struct Issuer {
    /// `iss`.
    pub issuer: String,
    /// Accepted audiences.
    pub audiences: BTreeSet<String>,
    /// Allowed algorithms.
    pub algorithms: BTreeSet<Alg>,
    /// Inline keys (empty when only remote keys are configured).
    pub inline_keys: JwkSet,
    /// The remote JWKS, if any.
    pub remote: Option<RawRemoteJwks>,
    /// Clock skew in seconds.
    pub skew_secs: i64,
    /// Longest lifetime in seconds.
    pub max_lifetime_secs: i64,
}

/// Where the identity HMAC key comes from.
#[derive(Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Given inline.
    Inline(Vec<u8>),
    /// Read from this environment variable when the filter starts.
    Env(String),
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
    pub unauthenticated: crate::ratelimit::Bucket,
    /// Key wait bound in milliseconds.
    pub key_wait_ms: u64,
    /// Slots of per-user buckets.
    pub rate_limit_slots: u32,
    /// Slots of per-address allowances, a table apart from the per-user one.
    pub unauthenticated_slots: u32,
    /// Requests one worker may hold at once while keys load; the adapter answers 503
    /// with `Retry-After` beyond it.
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

    /// Validates a parsed configuration.
    pub fn validate(raw: RawConfig, generation: String) -> Result<Self, ConfigError> {
        if raw.issuers.is_empty() {
            return Err(err("issuers", "at least one issuer is required"));
        }
        let mut issuers = Vec::new();
        let mut seen = BTreeSet::new();
        for (i, iss) in raw.issuers.into_iter().enumerate() {
            let at = |f: &str| format!("issuers[{i}].{f}");
            if iss.issuer.is_empty() || !seen.insert(iss.issuer.clone()) {
                return Err(err(at("issuer"), "must be non-empty and unique"));
            }
            if iss.audiences.is_empty() {
                return Err(err(at("audiences"), "at least one audience is required"));
            }
            if iss.algorithms.is_empty() {
                return Err(err(at("algorithms"), "at least one algorithm is required"));
            }
            let mut algorithms = BTreeSet::new();
            for name in &iss.algorithms {
                let alg = Alg::from_name(name).ok_or_else(|| {
                    err(
                        at("algorithms"),
                        format!("unsupported algorithm {name:?} (none is never accepted)"),
                    )
                })?;
                algorithms.insert(alg);
            }
            let inline_keys = match &iss.jwks {
                Some(doc) => JwkSet::from_value(doc)
                    .map_err(|e: JwksError| err(at("jwks"), e.to_string()))?,
                None => JwkSet::default(),
            };
            if iss.jwks.is_none() && iss.remote_jwks.is_none() {
                return Err(err(
                    at("jwks"),
                    "one of `jwks` or `remote_jwks` is required",
                ));
            }
            if let Some(remote) = &iss.remote_jwks {
                if remote.cluster.is_empty() {
                    return Err(err(at("remote_jwks.cluster"), "must not be empty"));
                }
                if !remote.path.starts_with('/') {
                    return Err(err(at("remote_jwks.path"), "must start with `/`"));
                }
                if remote.refresh_interval < Duration::from_secs(1) {
                    return Err(err(
                        at("remote_jwks.refresh_interval"),
                        "must be at least 1s",
                    ));
                }
            }
            if let Some(bad) = inline_keys
                .keys
                .iter()
                .find(|k| !algorithms.iter().any(|a| k.fits(*a)))
            {
                return Err(err(
                    at("jwks"),
                    format!(
                        "key {:?} fits none of the allowed algorithms",
                        bad.kid.as_deref().unwrap_or("")
                    ),
                ));
            }
            issuers.push(Issuer {
                issuer: iss.issuer,
                audiences: iss.audiences.into_iter().collect(),
                algorithms,
                inline_keys,
                remote: iss.remote_jwks,
                skew_secs: secs(iss.clock_skew),
                max_lifetime_secs: secs(iss.max_lifetime),
            });
        }

        let identity_key = match (raw.identity.hmac_key, raw.identity.hmac_key_env) {
            (Some(key), None) => {
                let key = key.trim().as_bytes().to_vec();
                if key.len() < edge_contract::MIN_KEY_LEN {
                    return Err(err(
                        "identity.hmac_key",
                        format!("must be at least {} bytes", edge_contract::MIN_KEY_LEN),
                    ));
                }
                KeySource::Inline(key)
            }
            (None, Some(name)) if !name.is_empty() => KeySource::Env(name),
            _ => {
                return Err(err(
                    "identity",
                    "exactly one of `hmac_key` or `hmac_key_env` is required",
                ))
            }
        };

        for (role, perms) in &raw.roles {
            if role.is_empty() || perms.iter().any(String::is_empty) {
                return Err(err(
                    format!("roles.{role}"),
                    "role and permission names must not be empty",
                ));
            }
        }
        let roles = RoleMap::new(raw.roles);

        let mut routes = Vec::new();
        let mut names = BTreeSet::new();
        for (i, r) in raw.routes.into_iter().enumerate() {
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
            match &r.org {
                Some(RawOrgSource::BodyField(f) | RawOrgSource::Claim(f)) if f.is_empty() => {
                    return Err(err(at("org"), "names an empty field"));
                }
                Some(RawOrgSource::PathParam(p)) if !path.has_param(p) => {
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
            let rate_limit = match r.rate_limit {
                Some(rl) => Some(bucket(&rl).map_err(|why| err(at("rate_limit"), why))?),
                None => None,
            };
            routes.push(crate::route::Route {
                name: r.name,
                method,
                path,
                permission: r.permission,
                org: r.org,
                conditions: r.conditions,
                rate_limit,
                idempotency: r.idempotency,
            });
        }

        let l = raw.limits;
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
        let limits = Limits {
            max_token_bytes: l.max_token_bytes,
            max_body_bytes: l.max_body_bytes,
            unauthenticated: bucket(&l.unauthenticated)
                .map_err(|why| err("limits.unauthenticated", why))?,
            key_wait_ms: millis(l.key_wait),
            rate_limit_slots: l.rate_limit_slots,
            unauthenticated_slots: l.unauthenticated_slots,
            max_waiting_for_keys: usize::try_from(l.max_waiting_for_keys).unwrap_or(usize::MAX),
            token_cache_entries: l.token_cache_entries,
        };
        let im = raw.idempotency;
        if im.slots == 0 {
            return Err(err("idempotency.slots", "must be at least 1"));
        }
        let idempotency = IdempotencySettings {
            ttl_ms: millis(im.ttl),
            in_flight_ms: millis(im.in_flight_timeout),
            max_response_bytes: im.max_response_bytes,
            slots: im.slots,
        };
        Ok(Self {
            issuers,
            identity_key,
            roles,
            routes: RouteTable::new(routes),
            unmatched: raw.unmatched,
            limits,
            idempotency,
            generation,
        })
    }

    /// The issuer configured for `iss`.
    pub fn issuer(&self, iss: &str) -> Option<(usize, &Issuer)> {
        self.issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.issuer == iss)
    }
}

/// Upper bound of `limits.max_waiting_for_keys`.
pub const MAX_WAITING_FOR_KEYS: u32 = 10_000;

fn bucket(raw: &RawRateLimit) -> Result<crate::ratelimit::Bucket, String> {
    if raw.requests == 0 {
        return Err("`requests` must be at least 1".into());
    }
    if raw.per < Duration::from_secs(1) {
        return Err("`per` must be at least 1s".into());
    }
    Ok(crate::ratelimit::Bucket {
        capacity: raw.requests,
        window_ms: millis(raw.per),
    })
}

fn secs(d: Duration) -> i64 {
    i64::try_from(d.as_secs()).unwrap_or(i64::MAX)
}

fn millis(d: Duration) -> u64 {
    u64::try_from(d.as_millis()).unwrap_or(u64::MAX)
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
