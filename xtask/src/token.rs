//! Dev tokens: JWTs signed with the local-only key in `dev/`, trusted by the local gateway.

use std::fs;

use anyhow::{Context, Result};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{Duration, Utc};
use jwt_compact::alg::Ed25519;
use jwt_compact::{AlgorithmExt, Claims, Header};
use serde_json::{Map, Value};

use crate::paths;

/// The issuer of dev tokens.
pub const DEV_ISSUER: &str = "dev-local";
/// The audience of dev tokens.
pub const DEV_AUDIENCE: &str = "workspace-api";

/// What a dev token says.
#[derive(Debug, Clone)]
pub struct TokenSpec {
    /// The subject (`sub`).
    pub sub: String,
    /// Organization ID to roles (`orgs`).
    pub orgs: Vec<(String, Vec<String>)>,
    /// Explicitly granted permissions (`perms`).
    pub perms: Vec<String>,
    /// Seconds until `exp` (negative for an expired token).
    pub ttl_secs: i64,
    /// Seconds from now until `nbf` (positive for a not-yet-valid token).
    pub not_before_secs: i64,
    /// `email`; `<sub>@dev.local` when `None`.
    pub email: Option<String>,
    /// `email_verified`.
    pub email_verified: bool,
    /// `company`; the first organization when `None`.
    pub company: Option<String>,
    /// `iss`.
    pub issuer: String,
    /// `aud`.
    pub audience: String,
    /// Further claims, merged last (they may override the ones above).
    pub extra: Map<String, Value>,
}

impl Default for TokenSpec {
    fn default() -> Self {
        Self {
            sub: "u-dev".into(),
            orgs: Vec::new(),
            perms: Vec::new(),
            ttl_secs: 3600,
            not_before_secs: 0,
            email: None,
            email_verified: true,
            company: None,
            issuer: DEV_ISSUER.into(),
            audience: DEV_AUDIENCE.into(),
            extra: Map::new(),
        }
    }
}

impl TokenSpec {
    /// A spec for `sub` with `orgs` as `(organization, roles)`.
    pub fn new(sub: &str, orgs: &[(&str, &[&str])]) -> Self {
        Self {
            sub: sub.into(),
            orgs: orgs
                .iter()
                .map(|(o, r)| ((*o).to_owned(), r.iter().map(|s| (*s).to_owned()).collect()))
                .collect(),
            ..Self::default()
        }
    }

    /// The claims other than `exp`, `nbf` and `iat`.
    pub fn custom_claims(&self) -> Map<String, Value> {
        let mut claims = Map::new();
        claims.insert("iss".into(), self.issuer.clone().into());
        claims.insert("aud".into(), self.audience.clone().into());
        claims.insert("sub".into(), self.sub.clone().into());
        let email = self
            .email
            .clone()
            .unwrap_or_else(|| format!("{}@dev.local", self.sub));
        claims.insert("email".into(), email.into());
        claims.insert("email_verified".into(), self.email_verified.into());
        let orgs: Map<String, Value> = self
            .orgs
            .iter()
            .map(|(o, roles)| (o.clone(), Value::from(roles.clone())))
            .collect();
        claims.insert("orgs".into(), orgs.into());
        claims.insert("perms".into(), Value::from(self.perms.clone()));
        if let Some(company) = self
            .company
            .clone()
            .or_else(|| self.orgs.first().map(|(o, _)| o.clone()))
        {
            claims.insert("company".into(), company.into());
        }
        claims.extend(self.extra.clone());
        claims
    }

    /// Signs the token with the dev key (EdDSA, `kid` `dev-ed25519-1`).
    pub fn mint(&self) -> Result<String> {
        let key = DevKey::load()?;
        let now = Utc::now();
        let mut claims = Claims::new(self.custom_claims());
        claims.issued_at = Some(now);
        claims.not_before = Some(now + Duration::seconds(self.not_before_secs));
        claims.expiration = Some(now + Duration::seconds(self.ttl_secs));
        let header = Header::empty()
            .with_key_id(key.kid.clone())
            .with_token_type("JWT");
        Ed25519
            .token(&header, &claims, &key.secret)
            .context("signing the dev token")
    }
}

/// A dev token for `sub`, member of `orgs` with the given roles, valid for an hour.
pub fn dev_token(sub: &str, orgs: &[(&str, &[&str])]) -> String {
    match TokenSpec::new(sub, orgs).mint() {
        Ok(token) => token,
        Err(e) => panic!("minting a dev token: {e:#}"),
    }
}

/// The local-only Ed25519 key from `dev/signing-key.jwk.json`.
pub struct DevKey {
    /// Its key ID.
    pub kid: String,
    /// The private key.
    pub secret: ed25519_compact::SecretKey,
}

impl DevKey {
    /// Reads the JWK.
    pub fn load() -> Result<Self> {
        let path = paths::dev_signing_key();
        let jwk: Value = serde_json::from_str(
            &fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?,
        )?;
        let field = |name: &str| {
            jwk[name]
                .as_str()
                .with_context(|| format!("{}: no `{name}`", path.display()))
        };
        let seed = URL_SAFE_NO_PAD.decode(field("d")?)?;
        let seed = ed25519_compact::Seed::from_slice(&seed)
            .context("the dev key's `d` is not a 32-byte seed")?;
        Ok(Self {
            kid: field("kid")?.to_owned(),
            secret: ed25519_compact::KeyPair::from_seed(seed).sk,
        })
    }
}
