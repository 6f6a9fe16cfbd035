//! JSON Web Key Sets: the verifying keys of an issuer, decoded once.

use std::fmt;

use jwt_compact::jwk::JsonWebKey;
use serde_json::Value;

use crate::jwt::{Alg, Family};
use crate::verifying::{self, Ed25519Key, P256Key, RsaKey};

/// A decoded verifying key, prepared for verification when its set is installed.
#[derive(Clone)]
pub enum VerifyingKey {
    /// An `oct` key for HS256/384/512.
    Hmac(Vec<u8>),
    /// An RSA public key for RS* and PS*.
    Rsa(Box<RsaKey>),
    /// A P-256 public key for ES256.
    P256(Box<P256Key>),
    /// An Ed25519 public key for EdDSA.
    Ed25519(Box<Ed25519Key>),
}

impl fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        // Never print key material, not even public keys: logs are not the place.
        f.write_str(match self {
            Self::Hmac(_) => "Hmac(<redacted>)",
            Self::Rsa(_) => "Rsa(..)",
            Self::P256(_) => "P256(..)",
            Self::Ed25519(_) => "Ed25519(..)",
        })
    }
}

impl VerifyingKey {
    fn family(&self) -> Family {
        match self {
            Self::Hmac(_) => Family::Hmac,
            Self::Rsa(_) => Family::Rsa,
            Self::P256(_) => Family::P256,
            Self::Ed25519(_) => Family::Ed25519,
        }
    }
}

/// One key of a set.
#[derive(Debug, Clone)]
pub struct Key {
    /// `kid`, if the set names it.
    pub kid: Option<String>,
    /// `alg`, if the set pins it.
    pub alg: Option<Alg>,
    /// The key.
    pub key: VerifyingKey,
}

impl Key {
    /// Whether this key may verify a token signed with `alg`: the key type must be the
    /// algorithm's (so a public key is never used as an HMAC secret) and a pinned `alg`
    /// must be this one.
    pub fn fits(&self, alg: Alg) -> bool {
        self.key.family() == alg.family() && self.alg.is_none_or(|pinned| pinned == alg)
    }
}

/// An issuer's keys.
#[derive(Debug, Clone, Default)]
pub struct JwkSet {
    /// Keys usable for signature verification.
    pub keys: Vec<Key>,
}

/// Why a JWKS document was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JwksError {
    /// Not `{"keys": [...]}`.
    NotAKeySet,
    /// A key could not be decoded.
    BadKey {
        /// Index in `keys`.
        index: usize,
        /// Why.
        reason: String,
    },
    /// No usable key at all.
    Empty,
    /// Larger than [`JwkSet::MAX_BYTES`].
    TooLarge,
}

impl fmt::Display for JwksError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::NotAKeySet => f.write_str("not a JWKS document ({\"keys\": [...]})"),
            Self::BadKey { index, reason } => write!(f, "keys[{index}]: {reason}"),
            Self::Empty => f.write_str("contains no signature verification key"),
            Self::TooLarge => write!(f, "larger than {} bytes", JwkSet::MAX_BYTES),
        }
    }
}

impl std::error::Error for JwksError {}

impl JwkSet {
    /// Largest fetched key set read. Identity providers publish a few keys (a few KiB); the
    /// bound keeps a misbehaving key server from costing the VM memory.
    pub const MAX_BYTES: usize = 256 * 1024;

    /// Parses a JWKS document fetched from an issuer. Keys this filter cannot use (other
    /// algorithms, key types or sizes) are skipped rather than failing the whole set: an
    /// identity provider may publish keys for other consumers. At least one must be usable.
    pub fn from_slice(bytes: &[u8]) -> Result<Self, JwksError> {
        if bytes.len() > Self::MAX_BYTES {
            return Err(JwksError::TooLarge);
        }
        let doc: Value = serde_json::from_slice(bytes).map_err(|_| JwksError::NotAKeySet)?;
        Self::parse(&doc, false)
    }

    /// Decodes every signature key of a configured (inline) JWKS document. Keys marked
    /// `"use": "enc"` are skipped; a key that cannot be decoded makes the whole set
    /// invalid, so a typo in the configuration is noticed instead of silently dropping a key.
    pub fn from_value(doc: &Value) -> Result<Self, JwksError> {
        Self::parse(doc, true)
    }

    fn parse(doc: &Value, strict: bool) -> Result<Self, JwksError> {
        let list = doc
            .get("keys")
            .and_then(Value::as_array)
            .ok_or(JwksError::NotAKeySet)?;
        let mut keys = Vec::new();
        for (index, jwk) in list.iter().enumerate() {
            if jwk.get("use").and_then(Value::as_str) == Some("enc") {
                continue;
            }
            match decode_entry(jwk) {
                Ok(key) => keys.push(key),
                Err(reason) if strict => return Err(JwksError::BadKey { index, reason }),
                Err(_) => {}
            }
        }
        if keys.is_empty() {
            return Err(JwksError::Empty);
        }
        Ok(Self { keys })
    }

    /// Keys that may verify a token with this `alg` and `kid`. A token that names a `kid`
    /// is only checked against that key.
    pub fn candidates<'a>(
        &'a self,
        alg: Alg,
        kid: Option<&'a str>,
    ) -> impl Iterator<Item = &'a Key> + 'a {
        self.keys
            .iter()
            .filter(move |k| k.fits(alg) && (kid.is_none() || k.kid.as_deref() == kid))
    }

    /// Whether any key carries this `kid`.
    pub fn has_kid(&self, kid: &str) -> bool {
        self.keys.iter().any(|k| k.kid.as_deref() == Some(kid))
    }
}

fn decode_entry(jwk: &Value) -> Result<Key, String> {
    let kid = match jwk.get("kid") {
        None => None,
        Some(Value::String(s)) => Some(s.clone()),
        Some(_) => return Err("`kid` must be a string".into()),
    };
    let alg = match jwk.get("alg") {
        None => None,
        Some(Value::String(s)) => {
            Some(Alg::from_name(s).ok_or_else(|| format!("unsupported `alg` {s:?}"))?)
        }
        Some(_) => return Err("`alg` must be a string".into()),
    };
    let parsed: JsonWebKey<'_> =
        serde_json::from_value(jwk.clone()).map_err(|e| format!("not a JWK: {e}"))?;
    Ok(Key {
        kid,
        alg,
        key: decode(&parsed)?,
    })
}

fn decode(jwk: &JsonWebKey<'_>) -> Result<VerifyingKey, String> {
    match jwk {
        JsonWebKey::Symmetric { secret } => {
            if secret.len() < 32 {
                return Err("HMAC keys must be at least 32 bytes".into());
            }
            Ok(VerifyingKey::Hmac(secret.to_vec()))
        }
        JsonWebKey::Rsa {
            modulus,
            public_exponent,
            private_parts,
        } => {
            if private_parts.is_some() {
                return Err("private RSA key in a verification key set".into());
            }
            verifying::rsa_key(modulus, public_exponent, 2048)
                .map(|k| VerifyingKey::Rsa(Box::new(k)))
        }
        JsonWebKey::EllipticCurve {
            curve,
            x,
            y,
            secret,
        } => {
            if secret.is_some() {
                return Err("private EC key in a verification key set".into());
            }
            if curve != "P-256" {
                return Err(format!("unsupported curve {curve:?}"));
            }
            verifying::p256_key(x, y).map(|k| VerifyingKey::P256(Box::new(k)))
        }
        JsonWebKey::KeyPair { curve, x, secret } => {
            if secret.is_some() {
                return Err("private OKP key in a verification key set".into());
            }
            if curve != "Ed25519" {
                return Err(format!("unsupported curve {curve:?}"));
            }
            verifying::ed25519_key(x).map(|k| VerifyingKey::Ed25519(Box::new(k)))
        }
        _ => Err("unsupported key type".into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const ED: &str = "zlw7q-JCyvpgBO8u_pQs2adwsRBbIvHf7oHTgj61grQ";

    #[test]
    fn configured_sets_are_strict_fetched_sets_skip_what_they_cannot_use() {
        let ed = json!({"kty": "OKP", "crv": "Ed25519", "kid": "ed", "x": ED});
        let odd = json!({"kty": "EC", "crv": "P-384", "kid": "p384", "x": "AA", "y": "AA"});
        let enc = json!({"kty": "RSA", "use": "enc", "n": "AQAB", "e": "AQAB"});
        let doc = json!({"keys": [odd, ed, enc]});
        assert!(matches!(
            JwkSet::from_value(&doc),
            Err(JwksError::BadKey { index: 0, .. })
        ));
        let fetched = JwkSet::from_slice(doc.to_string().as_bytes()).unwrap();
        assert_eq!(fetched.keys.len(), 1);
        assert!(fetched.has_kid("ed"));
        let cases = [
            (json!({"keys": []}), JwksError::Empty),
            (json!({"keys": [odd_only()]}), JwksError::Empty),
            (json!([1]), JwksError::NotAKeySet),
        ];
        for (doc, want) in cases {
            assert_eq!(
                JwkSet::from_slice(doc.to_string().as_bytes()).unwrap_err(),
                want,
                "{doc}"
            );
        }
        let private = json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": ED, "d": ED}]});
        assert!(
            JwkSet::from_value(&private).is_err(),
            "private keys are refused"
        );
    }

    fn odd_only() -> serde_json::Value {
        json!({"kty": "OKP", "crv": "X25519", "x": ED})
    }
}
