//! Bearer token verification: algorithm allow-list, signature, then claims, against a
//! clock the caller passes in (Envoy's, never the VM's).

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;

use edge_contract::permission::{restrict_to_scopes, with_implied, RoleMap};
use edge_contract::Identity;
use jwt_compact::alg::{Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key};
use jwt_compact::{AlgorithmExt, Claims, UntrustedToken};
use serde_json::{Map, Value};

use crate::config::{media_type, Issuer, ScopeClaim};
use crate::jwks::{JwkSet, VerifyingKey};
use crate::verifying::{Ed25519, Es256, Rsa};

/// A signature algorithm this filter can verify. `none` is not one of them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
#[allow(missing_docs)]
pub enum Alg {
    HS256,
    HS384,
    HS512,
    RS256,
    RS384,
    RS512,
    PS256,
    PS384,
    PS512,
    ES256,
    EdDSA,
}

/// The kind of key an algorithm needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Family {
    /// Shared secret.
    Hmac,
    /// RSA public key.
    Rsa,
    /// P-256 public key.
    P256,
    /// Ed25519 public key.
    Ed25519,
}

impl Alg {
    /// The algorithm named by a JOSE `alg` value (case-sensitive, as RFC 7515 says).
    pub fn from_name(name: &str) -> Option<Self> {
        Some(match name {
            "HS256" => Self::HS256,
            "HS384" => Self::HS384,
            "HS512" => Self::HS512,
            "RS256" => Self::RS256,
            "RS384" => Self::RS384,
            "RS512" => Self::RS512,
            "PS256" => Self::PS256,
            "PS384" => Self::PS384,
            "PS512" => Self::PS512,
            "ES256" => Self::ES256,
            "EdDSA" => Self::EdDSA,
            _ => return None,
        })
    }

    /// The key family this algorithm verifies with.
    pub fn family(self) -> Family {
        match self {
            Self::HS256 | Self::HS384 | Self::HS512 => Family::Hmac,
            Self::RS256 | Self::RS384 | Self::RS512 | Self::PS256 | Self::PS384 | Self::PS512 => {
                Family::Rsa
            }
            Self::ES256 => Family::P256,
            Self::EdDSA => Family::Ed25519,
        }
    }
}

/// Why a token was refused. The messages go into problem bodies and logs: they say what
/// was wrong and never contain the token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum TokenError {
    /// Longer than the configured limit.
    TooLarge,
    /// Not three base64url parts with a JSON header.
    Malformed,
    /// `alg` is `none`, unknown, or not allowed for the issuer.
    AlgorithmNotAllowed,
    /// `iss` missing or not a configured issuer.
    UntrustedIssuer,
    /// The issuer's keys have not been loaded yet.
    KeysNotLoaded,
    /// The token names a `kid` the issuer's key set does not contain.
    UnknownKey,
    /// No key verified the signature.
    BadSignature,
    /// Claims are not what a token of this API carries.
    MalformedClaims(&'static str),
    /// `exp` missing.
    NoExpiry,
    /// `exp` in the past.
    Expired,
    /// `nbf` or `iat` in the future.
    NotYetValid,
    /// `exp` too far after `iat`.
    LifetimeTooLong,
    /// `aud` does not intersect the configured audiences.
    WrongAudience,
    /// The header lists critical extensions (`crit`), none of which this filter
    /// implements (RFC 7515 §4.1.11: such a token must be refused).
    CriticalExtension,
    /// The header's `typ` is not the one the issuer's tokens must carry (e.g. an ID token
    /// where an RFC 9068 access token, `at+jwt`, is required).
    WrongType,
}

impl TokenError {
    /// A stable short name, used as the stats reason and in logs.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::TooLarge => "token_too_large",
            Self::Malformed => "token_malformed",
            Self::AlgorithmNotAllowed => "alg_not_allowed",
            Self::UntrustedIssuer => "untrusted_issuer",
            Self::KeysNotLoaded => "keys_not_loaded",
            Self::UnknownKey => "unknown_kid",
            Self::BadSignature => "bad_signature",
            Self::MalformedClaims(_) => "claims_malformed",
            Self::NoExpiry => "no_exp",
            Self::Expired => "expired",
            Self::NotYetValid => "not_yet_valid",
            Self::LifetimeTooLong => "lifetime_too_long",
            Self::WrongAudience => "wrong_audience",
            Self::CriticalExtension => "crit_not_understood",
            Self::WrongType => "wrong_token_type",
        }
    }
}

impl fmt::Display for TokenError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::TooLarge => f.write_str("the bearer token is larger than this gateway accepts"),
            Self::Malformed => f.write_str("the bearer token is not a well-formed JWT"),
            Self::AlgorithmNotAllowed => {
                f.write_str("the token's signature algorithm is not accepted")
            }
            Self::UntrustedIssuer => f.write_str("the token's issuer is not trusted"),
            Self::KeysNotLoaded => f.write_str("the issuer's signing keys are not available yet"),
            Self::UnknownKey => f.write_str("the token was signed with an unknown key"),
            Self::BadSignature => f.write_str("the token's signature is not valid"),
            Self::MalformedClaims(what) => write!(f, "the token's claims are malformed: {what}"),
            Self::NoExpiry => f.write_str("the token has no expiry (exp)"),
            Self::Expired => f.write_str("the token has expired"),
            Self::NotYetValid => f.write_str("the token is not valid yet"),
            Self::LifetimeTooLong => {
                f.write_str("the token's lifetime exceeds the allowed maximum")
            }
            Self::WrongAudience => f.write_str("the token is not meant for this API (aud)"),
            Self::CriticalExtension => f.write_str(
                "the token requires header extensions (crit) this gateway does not implement",
            ),
            Self::WrongType => f.write_str("the token is not of the type this API accepts (typ)"),
        }
    }
}

/// A verified token.
#[derive(Debug, Clone, PartialEq)]
pub struct Verified {
    /// Who the caller is, with the effective permissions of the token's roles and grants
    /// per organization: computed once here, cached with the token, forwarded signed.
    pub identity: Identity,
    /// Every claim, for ABAC conditions.
    pub claims: Map<String, Value>,
    /// `exp`, unix seconds.
    pub expires_at: i64,
    /// The token's OAuth scopes (with what they imply), when its issuer narrows
    /// permissions to them (`scope_claim`): a permission its roles give but its scopes
    /// lack is refused as `insufficient_scope` (RFC 6750 §3.1).
    pub scopes: Option<BTreeSet<String>>,
}

impl Verified {
    /// Who the caller is across issuers: [`Identity::principal`], the one definition both
    /// tiers key per-user state on. Two trusted issuers may each have a user `u-1`; they
    /// are different principals for rate limits and idempotency keys.
    pub fn principal(&self) -> String {
        self.identity.principal()
    }
}

/// What to check a token against.
pub struct Verifier<'a> {
    /// Configured issuers.
    pub issuers: &'a [Issuer],
    /// Keys per issuer index (inline keys merged with the latest remote fetch); `None`
    /// while a remote set has not loaded.
    pub keys: &'a dyn Fn(usize) -> Option<&'a JwkSet>,
    /// Longest accepted token.
    pub max_token_bytes: usize,
    /// What each role may do, applied to the token's `orgs` and `perms`.
    pub roles: &'a RoleMap,
}

/// Header parameters jwt-compact leaves to the application. Only their presence matters:
/// this filter implements no JWS extension, so any `crit` refuses the token.
#[derive(Debug, Clone, Default, serde::Deserialize)]
struct HeaderExtensions {
    #[serde(default)]
    crit: Option<serde::de::IgnoredAny>,
}

/// The header and unverified claims of a token, read before any key is chosen.
#[derive(Debug)]
pub struct Peeked<'t> {
    token: UntrustedToken<'t, HeaderExtensions>,
    alg: Alg,
    /// Index of the issuer the token claims.
    pub issuer: usize,
    /// `kid`, if any.
    pub kid: Option<String>,
}

impl<'a> Verifier<'a> {
    /// Reads the header and `iss` without trusting them, and applies the issuer's
    /// algorithm allow-list. Cheap: no signature check.
    pub fn peek<'t>(&self, token: &'t str) -> Result<Peeked<'t>, TokenError> {
        if token.len() > self.max_token_bytes {
            return Err(TokenError::TooLarge);
        }
        let untrusted = UntrustedToken::<HeaderExtensions>::try_from(token)
            .map_err(|_| TokenError::Malformed)?;
        if untrusted.header().other_fields.crit.is_some() {
            return Err(TokenError::CriticalExtension);
        }
        let alg = Alg::from_name(untrusted.algorithm()).ok_or(TokenError::AlgorithmNotAllowed)?;
        let unchecked: Claims<Map<String, Value>> = untrusted
            .deserialize_claims_unchecked()
            .map_err(|_| TokenError::MalformedClaims("not a JSON object"))?;
        let iss = unchecked
            .custom
            .get("iss")
            .and_then(Value::as_str)
            .ok_or(TokenError::UntrustedIssuer)?;
        let (issuer, config) = self
            .issuers
            .iter()
            .enumerate()
            .find(|(_, i)| i.issuer == iss)
            .ok_or(TokenError::UntrustedIssuer)?;
        if !config.algorithms.contains(&alg) {
            return Err(TokenError::AlgorithmNotAllowed);
        }
        if let Some(want) = &config.typ {
            let typ = untrusted.header().token_type.as_deref().map(media_type);
            if typ.as_ref() != Some(want) {
                return Err(TokenError::WrongType);
            }
        }
        let kid = untrusted.header().key_id.clone();
        Ok(Peeked {
            token: untrusted,
            alg,
            issuer,
            kid,
        })
    }

    /// Verifies signature and claims at `now` (unix seconds).
    pub fn verify(&self, peeked: &Peeked<'_>, now: i64) -> Result<Verified, TokenError> {
        let config = self
            .issuers
            .get(peeked.issuer)
            .ok_or(TokenError::UntrustedIssuer)?;
        let keys = (self.keys)(peeked.issuer).ok_or(TokenError::KeysNotLoaded)?;
        if let Some(kid) = &peeked.kid {
            if !keys.has_kid(kid) {
                return Err(TokenError::UnknownKey);
            }
        }
        let mut claims = None;
        for key in keys.candidates(peeked.alg, peeked.kid.as_deref()) {
            if let Some(c) = check_signature(&peeked.token, peeked.alg, &key.key) {
                claims = Some(c);
                break;
            }
        }
        let claims = claims.ok_or(TokenError::BadSignature)?;
        check_claims(config, self.roles, claims, now)
    }
}

type AnyClaims = Claims<Map<String, Value>>;

fn check_signature(
    token: &UntrustedToken<'_, HeaderExtensions>,
    alg: Alg,
    key: &VerifyingKey,
) -> Option<AnyClaims> {
    let result = match (alg, key) {
        (Alg::HS256, VerifyingKey::Hmac(k)) => Hs256.validator(&Hs256Key::new(k)).validate(token),
        (Alg::HS384, VerifyingKey::Hmac(k)) => Hs384.validator(&Hs384Key::new(k)).validate(token),
        (Alg::HS512, VerifyingKey::Hmac(k)) => Hs512.validator(&Hs512Key::new(k)).validate(token),
        (Alg::RS256, VerifyingKey::Rsa(k)) => Rsa::RS256.validator(k.as_ref()).validate(token),
        (Alg::RS384, VerifyingKey::Rsa(k)) => Rsa::RS384.validator(k.as_ref()).validate(token),
        (Alg::RS512, VerifyingKey::Rsa(k)) => Rsa::RS512.validator(k.as_ref()).validate(token),
        (Alg::PS256, VerifyingKey::Rsa(k)) => Rsa::PS256.validator(k.as_ref()).validate(token),
        (Alg::PS384, VerifyingKey::Rsa(k)) => Rsa::PS384.validator(k.as_ref()).validate(token),
        (Alg::PS512, VerifyingKey::Rsa(k)) => Rsa::PS512.validator(k.as_ref()).validate(token),
        (Alg::ES256, VerifyingKey::P256(k)) => Es256.validator(k.as_ref()).validate(token),
        (Alg::EdDSA, VerifyingKey::Ed25519(k)) => Ed25519.validator(k.as_ref()).validate(token),
        // A key of another family never verifies: no HMAC over public-key bytes.
        _ => return None,
    };
    result.ok().map(|t| t.claims().clone())
}

fn check_claims(
    config: &Issuer,
    roles: &RoleMap,
    claims: AnyClaims,
    now: i64,
) -> Result<Verified, TokenError> {
    let skew = config.skew_secs;
    let exp = claims.expiration.ok_or(TokenError::NoExpiry)?.timestamp();
    if now > exp.saturating_add(skew) {
        return Err(TokenError::Expired);
    }
    if let Some(nbf) = claims.not_before {
        if nbf.timestamp() > now.saturating_add(skew) {
            return Err(TokenError::NotYetValid);
        }
    }
    let start = match claims.issued_at {
        Some(iat) if iat.timestamp() > now.saturating_add(skew) => {
            return Err(TokenError::NotYetValid)
        }
        Some(iat) => iat.timestamp(),
        None => now,
    };
    if exp.saturating_sub(start) > config.max_lifetime_secs {
        return Err(TokenError::LifetimeTooLong);
    }
    let custom = claims.custom;
    let audience_ok = match custom.get("aud") {
        Some(Value::String(a)) => config.audiences.contains(a),
        Some(Value::Array(list)) => list
            .iter()
            .filter_map(Value::as_str)
            .any(|a| config.audiences.contains(a)),
        _ => false,
    };
    if !audience_ok {
        return Err(TokenError::WrongAudience);
    }
    // The issuer the token was verified against (its `iss` selected `config`), so the
    // backend can tell two issuers' equal `sub`s apart.
    let mut identity = identity_from(&config.issuer, &custom, roles)?;
    let scopes = match config.scope_claim {
        Some(claim) => {
            let scopes = with_implied(scopes_in(&custom, claim)?);
            restrict_to_scopes(&mut identity.permissions, &scopes);
            Some(scopes)
        }
        None => None,
    };
    let mut all = custom;
    all.insert("exp".into(), Value::from(exp));
    Ok(Verified {
        identity,
        claims: all,
        expires_at: exp,
        scopes,
    })
}

/// The token's scopes: a space-separated string, or a list of strings. A token without
/// the claim has none, so its issuer's narrowing leaves it no permission (fail closed).
fn scopes_in(c: &Map<String, Value>, claim: ScopeClaim) -> Result<BTreeSet<String>, TokenError> {
    let malformed = TokenError::MalformedClaims(claim.name());
    match c.get(claim.name()) {
        None | Some(Value::Null) => Ok(BTreeSet::new()),
        Some(Value::String(s)) => Ok(s.split_ascii_whitespace().map(str::to_owned).collect()),
        Some(v) => Ok(strings(v).ok_or(malformed)?.into_iter().collect()),
    }
}

fn identity_from(
    iss: &str,
    c: &Map<String, Value>,
    roles: &RoleMap,
) -> Result<Identity, TokenError> {
    let text = |name: &'static str| -> Result<Option<String>, TokenError> {
        match c.get(name) {
            None | Some(Value::Null) => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(_) => Err(TokenError::MalformedClaims(name)),
        }
    };
    let sub = text("sub")?
        .filter(|s| !s.is_empty())
        .ok_or(TokenError::MalformedClaims("sub"))?;
    let email_verified = match c.get("email_verified") {
        None | Some(Value::Null) => false,
        Some(Value::Bool(b)) => *b,
        Some(_) => return Err(TokenError::MalformedClaims("email_verified")),
    };
    let mut orgs = BTreeMap::new();
    match c.get("orgs") {
        None | Some(Value::Null) => {}
        Some(Value::Object(map)) => {
            for (org, roles) in map {
                orgs.insert(
                    org.clone(),
                    strings(roles).ok_or(TokenError::MalformedClaims("orgs"))?,
                );
            }
        }
        Some(_) => return Err(TokenError::MalformedClaims("orgs")),
    }
    let perms = match c.get("perms") {
        None | Some(Value::Null) => Vec::new(),
        Some(v) => strings(v).ok_or(TokenError::MalformedClaims("perms"))?,
    };
    Ok(Identity {
        iss: iss.to_owned(),
        sub,
        email: text("email")?,
        email_verified,
        permissions: roles.effective(&orgs, &perms),
        company: text("company")?,
    })
}

fn strings(v: &Value) -> Option<Vec<String>> {
    v.as_array()?
        .iter()
        .map(|s| s.as_str().map(str::to_owned))
        .collect()
}
