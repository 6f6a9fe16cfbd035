//! Test support (feature `testkit`): signing keys of every supported algorithm and a
//! token builder that can also forge what attackers send. Never used by the filter.

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use jwt_compact::alg::{
    Ed25519, Es256, Hs256, Hs256Key, Hs384, Hs384Key, Hs512, Hs512Key, Rsa, RsaPrivateKey,
    RsaPublicKey, SigningKey as _,
};
use jwt_compact::jwk::JsonWebKey;
use jwt_compact::{Algorithm, AlgorithmSignature};
use serde_json::{json, Value};

use crate::jwt::Alg;

pub mod request_path;

/// Private keys for every algorithm family, with the public JWKS that trusts them.
pub struct Keys {
    hmac: Vec<u8>,
    rsa: RsaPrivateKey,
    p256: <Es256 as Algorithm>::SigningKey,
    ed: <Ed25519 as Algorithm>::SigningKey,
}

/// Key IDs in [`Keys::jwks`].
pub const KIDS: [(&str, &str); 4] = [
    ("hmac", "oct"),
    ("rsa", "RSA"),
    ("p256", "EC"),
    ("ed", "OKP"),
];

impl Keys {
    /// The fixed test keys; `ed_seed` picks the Ed25519 key (for rotation tests).
    pub fn new(ed_seed: u8) -> Self {
        let private: Value =
            serde_json::from_str(include_str!("testkit-keys.json")).unwrap_or(Value::Null);
        let rsa_jwk: JsonWebKey<'_> =
            serde_json::from_value(private["rsa"].clone()).unwrap_or_else(|e| panic!("{e}"));
        let p256_jwk: JsonWebKey<'_> =
            serde_json::from_value(private["p256"].clone()).unwrap_or_else(|e| panic!("{e}"));
        Self {
            hmac: b"testkit-hmac-secret-of-32-bytes-or-more!".to_vec(),
            rsa: RsaPrivateKey::try_from(&rsa_jwk).unwrap_or_else(|e| panic!("{e}")),
            p256: <Es256 as Algorithm>::SigningKey::try_from(&p256_jwk)
                .unwrap_or_else(|e| panic!("{e}")),
            ed: ed25519_compact::KeyPair::from_seed(ed25519_compact::Seed::new([ed_seed; 32])).sk,
        }
    }

    /// The shared secret behind the `hmac` key.
    pub fn hmac_secret(&self) -> &[u8] {
        &self.hmac
    }

    /// The public JWKS (and the HMAC secret as an `oct` key), kids as in [`KIDS`].
    pub fn jwks(&self) -> Value {
        json!({"keys": [self.jwk("hmac"), self.jwk("rsa"), self.jwk("p256"), self.jwk("ed")]})
    }

    /// One key of [`Keys::jwks`] by kid, with `kid` set.
    pub fn jwk(&self, kid: &str) -> Value {
        let mut v = match kid {
            "hmac" => json!({"kty": "oct", "k": URL_SAFE_NO_PAD.encode(&self.hmac)}),
            "rsa" => serde_json::to_value(JsonWebKey::from(&RsaPublicKey::from(&self.rsa)))
                .unwrap_or_default(),
            "p256" => serde_json::to_value(JsonWebKey::from(&self.p256.to_verifying_key()))
                .unwrap_or_default(),
            _ => serde_json::to_value(JsonWebKey::from(&self.ed.to_verifying_key()))
                .unwrap_or_default(),
        };
        v["kid"] = json!(kid);
        v
    }

    /// The raw bytes of the public key of `kid` as an attacker would take them from the
    /// JWKS (for the HMAC-with-public-key confusion attack).
    pub fn public_bytes(&self, kid: &str) -> Vec<u8> {
        serde_json::to_vec(&self.jwk(kid)).unwrap_or_default()
    }

    /// A token signed with `alg` by the matching key, header `kid` as given.
    pub fn sign(&self, alg: Alg, kid: Option<&str>, claims: &Value) -> String {
        let input = signing_input(alg_name(alg), kid, claims);
        let m = input.as_bytes();
        let sig: Vec<u8> = match alg {
            Alg::HS256 => Hs256
                .sign(&Hs256Key::new(&self.hmac), m)
                .as_bytes()
                .to_vec(),
            Alg::HS384 => Hs384
                .sign(&Hs384Key::new(&self.hmac), m)
                .as_bytes()
                .to_vec(),
            Alg::HS512 => Hs512
                .sign(&Hs512Key::new(&self.hmac), m)
                .as_bytes()
                .to_vec(),
            Alg::RS256 => Rsa::rs256().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::RS384 => Rsa::rs384().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::RS512 => Rsa::rs512().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::PS256 => Rsa::ps256().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::PS384 => Rsa::ps384().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::PS512 => Rsa::ps512().sign(&self.rsa, m).as_bytes().to_vec(),
            Alg::ES256 => Es256.sign(&self.p256, m).as_bytes().to_vec(),
            Alg::EdDSA => Ed25519.sign(&self.ed, m).as_bytes().to_vec(),
        };
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig))
    }
}

/// The JOSE name of `alg`.
pub fn alg_name(alg: Alg) -> &'static str {
    match alg {
        Alg::HS256 => "HS256",
        Alg::HS384 => "HS384",
        Alg::HS512 => "HS512",
        Alg::RS256 => "RS256",
        Alg::RS384 => "RS384",
        Alg::RS512 => "RS512",
        Alg::PS256 => "PS256",
        Alg::PS384 => "PS384",
        Alg::PS512 => "PS512",
        Alg::ES256 => "ES256",
        Alg::EdDSA => "EdDSA",
    }
}

fn signing_input(alg: &str, kid: Option<&str>, claims: &Value) -> String {
    let mut header = json!({"alg": alg, "typ": "JWT"});
    if let Some(kid) = kid {
        header["kid"] = json!(kid);
    }
    format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    )
}

/// An unsigned `alg: none` token.
pub fn forge_none(claims: &Value) -> String {
    format!("{}.", signing_input("none", None, claims))
}

/// An HS256 token whose HMAC key is `key` (e.g. a public key's bytes).
pub fn forge_hs256(key: &[u8], kid: Option<&str>, claims: &Value) -> String {
    let input = signing_input("HS256", kid, claims);
    let sig = Hs256.sign(&Hs256Key::new(key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_bytes()))
}

/// An HS256 token with exactly `header` (e.g. one with `crit`), signed with `key`.
pub fn forge_hs256_with_header(key: &[u8], header: &Value, claims: &Value) -> String {
    let input = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header.to_string()),
        URL_SAFE_NO_PAD.encode(claims.to_string())
    );
    let sig = Hs256.sign(&Hs256Key::new(key), input.as_bytes());
    format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_bytes()))
}

/// Standard claims of a valid token from `iss` for `aud`, issued at `now`, valid 10 minutes.
pub fn claims(iss: &str, aud: &str, sub: &str, now: i64) -> Value {
    json!({
        "iss": iss, "aud": aud, "sub": sub, "iat": now, "nbf": now, "exp": now + 600,
        "email": format!("{sub}@university.edu"), "email_verified": true,
        "orgs": {"org-1": ["owner"], "org-2": ["member"]}, "perms": [], "company": "org-1"
    })
}
