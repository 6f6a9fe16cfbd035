//! The `issuers` section: trusted token issuers, their keys and where remote keys come from.

use std::collections::BTreeSet;
use std::time::Duration;

use super::raw::{RawIssuer, RawRemoteJwks, RawTokenSource};
use super::{err, ConfigError};
use crate::duration;
use crate::jwks::JwkSet;
use crate::jwt::Alg;
use crate::keyfetch;

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
    pub remote: Option<RemoteJwks>,
    /// Where else than `Authorization: Bearer` its tokens may come from.
    pub token_sources: Vec<TokenSource>,
    /// The claim holding OAuth scopes that narrow the token's permissions, if any.
    pub scope_claim: Option<ScopeClaim>,
    /// The `typ` every token must carry (lower case, without `application/`), if any.
    pub typ: Option<String>,
    /// Clock skew in seconds.
    pub skew_secs: i64,
    /// Longest lifetime in seconds.
    pub max_lifetime_secs: i64,
}

/// A place other than `Authorization: Bearer` a token may be sent in. Never the query
/// string: a URL ends up in access logs, browser history and `Referer` headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenSource {
    /// A request header (lower case); its value is the token after `prefix`.
    Header {
        /// The header's name.
        name: String,
        /// What the value starts with before the token (compared ignoring case).
        prefix: String,
    },
    /// A cookie of this name.
    Cookie(String),
}

/// Headers a token source may not name: the ones the filter reads or writes itself.
const RESERVED_HEADERS: [&str; 8] = [
    "authorization",
    "cookie",
    "host",
    "x-request-id",
    "idempotency-key",
    "content-type",
    "content-length",
    "transfer-encoding",
];

fn token_source(
    raw: &RawTokenSource,
    at: &dyn Fn(&str) -> String,
) -> Result<TokenSource, ConfigError> {
    let tchar = |b: u8| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b);
    match (&raw.header, &raw.cookie) {
        (Some(name), None) => {
            let name = name.to_ascii_lowercase();
            if name.is_empty() || !name.bytes().all(tchar) {
                return Err(err(at("header"), "must be a header name"));
            }
            if RESERVED_HEADERS.contains(&name.as_str())
                || edge_contract::FORWARDED_HEADERS.contains(&name.as_str())
            {
                return Err(err(
                    at("header"),
                    format!("{name:?} is read or written by the filter itself"),
                ));
            }
            let prefix = raw.prefix.clone().unwrap_or_default();
            if !prefix.bytes().all(|b| b == b' ' || b.is_ascii_graphic()) {
                return Err(err(at("prefix"), "must be printable ASCII"));
            }
            Ok(TokenSource::Header { name, prefix })
        }
        (None, Some(name)) if raw.prefix.is_none() => {
            if name.is_empty() || !name.bytes().all(tchar) {
                return Err(err(
                    at("cookie"),
                    "must be a cookie name (an RFC 6265 token)",
                ));
            }
            Ok(TokenSource::Cookie(name.clone()))
        }
        (None, Some(_)) => Err(err(at("prefix"), "applies to `header` sources only")),
        _ => Err(err(
            at(""),
            "exactly one of `header` and `cookie` is required",
        )),
    }
}

/// Where a token's OAuth scopes are: `scope` (RFC 8693, RFC 9068: one space-separated
/// string) or `scp` (a list, or a space-separated string, as identity providers issue it).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ScopeClaim {
    /// `scope`.
    Scope,
    /// `scp`.
    Scp,
}

impl ScopeClaim {
    /// The claim's name.
    pub fn name(self) -> &'static str {
        match self {
            Self::Scope => "scope",
            Self::Scp => "scp",
        }
    }
}

/// A media type as `typ` compares it: lower case, without the `application/` prefix
/// (RFC 7515 section 4.1.9).
pub fn media_type(typ: &str) -> String {
    let lower = typ.to_ascii_lowercase();
    match lower.strip_prefix("application/") {
        Some(rest) => rest.to_owned(),
        None => lower,
    }
}

/// A remote JWKS endpoint reached through an Envoy cluster, validated, its defaults applied.
/// When it is fetched is [`crate::keyfetch`]'s decision.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemoteJwks {
    /// The Envoy cluster that reaches the key server.
    pub cluster: String,
    /// The `:authority` sent to it.
    pub authority: String,
    /// The path of the document fetched first, starting with `/`: the JWKS, or with
    /// `discovery` the OpenID Connect discovery document.
    pub path: String,
    /// Present when the key set is found through OpenID Connect discovery.
    pub discovery: Option<Discovery>,
    /// Delay from a successful fetch to the next one (at least 1 s).
    pub refresh_interval: Duration,
    /// Shortest interval between fetches a token naming an unknown `kid` may trigger.
    pub min_refresh_interval: Duration,
    /// Timeout of one fetch.
    pub timeout: Duration,
}

/// OpenID Connect discovery (OpenID Connect Discovery 1.0, section 4): the document at
/// [`RemoteJwks::path`] must state the configured `issuer` exactly, and its `jwks_uri`
/// names the key set that is then fetched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Discovery {
    /// The `issuer` the document must state.
    pub issuer: String,
    /// The document is fetched over `https`: its `jwks_uri` must be `https` too.
    pub secure: bool,
    /// The cluster for a `jwks_uri` on another host than the document's; without it such a
    /// `jwks_uri` is refused.
    pub jwks_cluster: Option<String>,
}

/// Validates `issuers`: at least one, each with a unique non-empty `iss`, an audience, a
/// known algorithm, and keys (inline, remote or both) that fit those algorithms.
pub(super) fn issuers(raw: Vec<RawIssuer>) -> Result<Vec<Issuer>, ConfigError> {
    if raw.is_empty() {
        return Err(err("issuers", "at least one issuer is required"));
    }
    let mut seen = BTreeSet::new();
    raw.into_iter()
        .enumerate()
        .map(|(i, iss)| {
            if iss.issuer.is_empty() || !seen.insert(iss.issuer.clone()) {
                return Err(err(
                    format!("issuers[{i}].issuer"),
                    "must be non-empty and unique",
                ));
            }
            issuer(iss, &|f: &str| format!("issuers[{i}].{f}"))
        })
        .collect()
}

/// One issuer; `at` names a field of it.
fn issuer(iss: RawIssuer, at: &dyn Fn(&str) -> String) -> Result<Issuer, ConfigError> {
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
        Some(doc) => JwkSet::from_value(doc).map_err(|e| err(at("jwks"), e.to_string()))?,
        None => JwkSet::default(),
    };
    if iss.jwks.is_none() && iss.remote_jwks.is_none() {
        return Err(err(
            at("jwks"),
            "one of `jwks` or `remote_jwks` is required",
        ));
    }
    let remote = match iss.remote_jwks {
        Some(raw) => Some(remote_jwks(raw, &iss.issuer, at)?),
        None => None,
    };
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
    let scope_claim = match iss.scope_claim.as_deref() {
        None => None,
        Some("scope") => Some(ScopeClaim::Scope),
        Some("scp") => Some(ScopeClaim::Scp),
        Some(other) => {
            return Err(err(
                at("scope_claim"),
                format!("unknown scope claim {other:?}: expected \"scope\" or \"scp\""),
            ))
        }
    };
    let token_sources = iss
        .token_sources
        .iter()
        .enumerate()
        .map(|(n, raw)| {
            token_source(raw, &|f: &str| {
                let field = format!("token_sources[{n}]");
                at(&if f.is_empty() {
                    field
                } else {
                    format!("{field}.{f}")
                })
            })
        })
        .collect::<Result<Vec<_>, _>>()?;
    if iss.typ.as_deref().is_some_and(|t| media_type(t).is_empty()) {
        return Err(err(at("typ"), "must not be empty"));
    }
    Ok(Issuer {
        token_sources,
        scope_claim,
        typ: iss.typ.as_deref().map(media_type),
        issuer: iss.issuer,
        audiences: iss.audiences.into_iter().collect(),
        algorithms,
        inline_keys,
        remote,
        skew_secs: duration::secs(iss.clock_skew),
        max_lifetime_secs: duration::secs(iss.max_lifetime),
    })
}

fn remote_jwks(
    raw: RawRemoteJwks,
    issuer: &str,
    at: &dyn Fn(&str) -> String,
) -> Result<RemoteJwks, ConfigError> {
    if raw.cluster.is_empty() {
        return Err(err(at("remote_jwks.cluster"), "must not be empty"));
    }
    let (authority, path, discovery) = match (raw.path, raw.discovery) {
        (Some(path), None) => {
            if !path.starts_with('/') {
                return Err(err(at("remote_jwks.path"), "must start with `/`"));
            }
            if raw.jwks_cluster.is_some() {
                return Err(err(
                    at("remote_jwks.jwks_cluster"),
                    "applies only with `discovery`",
                ));
            }
            let Some(authority) = raw.authority else {
                return Err(err(at("remote_jwks.authority"), "is required with `path`"));
            };
            (authority, path, None)
        }
        (None, Some(url)) => {
            let Some(found) = keyfetch::Location::parse(&url) else {
                return Err(err(
                    at("remote_jwks.discovery"),
                    "must be an absolute `https://` (or `http://`) URL with a host",
                ));
            };
            if raw.jwks_cluster.as_deref() == Some("") {
                return Err(err(at("remote_jwks.jwks_cluster"), "must not be empty"));
            }
            let discovery = Discovery {
                issuer: issuer.to_owned(),
                secure: found.secure,
                jwks_cluster: raw.jwks_cluster,
            };
            let authority = raw.authority.unwrap_or_else(|| found.authority.to_owned());
            (authority, found.path.to_owned(), Some(discovery))
        }
        _ => {
            return Err(err(
                at("remote_jwks"),
                "exactly one of `path` and `discovery` is required",
            ))
        }
    };
    if raw.refresh_interval < Duration::from_secs(1) {
        return Err(err(
            at("remote_jwks.refresh_interval"),
            "must be at least 1s",
        ));
    }
    Ok(RemoteJwks {
        cluster: raw.cluster,
        authority,
        path,
        discovery,
        refresh_interval: raw.refresh_interval,
        min_refresh_interval: raw.min_refresh_interval,
        timeout: raw.timeout,
    })
}
