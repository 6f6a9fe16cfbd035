//! Public-key signature verification behind jwt-compact's parsing, `alg` match and claim
//! decoding: jwt-compact lets an application supply its own [`Algorithm`], and these
//! verify with faster audited crates than the ones it bundles (`docs/performance.md`,
//! "Signature verification"):
//!
//! - RS* and PS*: `ring` (BoringSSL's RSA verification), which under V8 runs 3.5x faster
//!   than `rsa` 0.9 and 1.6x faster than `rsa` 0.10 (32-bit limbs, no per-token key
//!   re-encoding); its C part is compiled with clang for the wasm targets;
//! - ES256: `p256` 0.14 with its precomputed base-point tables;
//! - EdDSA: `ed25519-dalek` 3, strict verification (no small-order keys or `R`, canonical `S`).
//!
//! Every key is decoded and prepared once, when its key set is installed, never per token.
//! The algorithms here only verify: their signing key type has no value.

use std::borrow::Cow;
use std::num::NonZeroUsize;

use jwt_compact::{Algorithm, AlgorithmSignature};
use ring::signature::{self as ring_sig, RsaParameters};

/// The signing key of a verify-only algorithm: none exists.
#[derive(Debug)]
pub enum NoSigningKey {}

/// An RSA public key: its modulus and exponent, big-endian without leading zeros, checked
/// when the key set is installed against what verification accepts.
#[derive(Clone)]
pub struct RsaKey {
    n: Vec<u8>,
    e: Vec<u8>,
}

/// Largest RSA modulus verified (`ring`'s `RSA_*_2048_8192_*` parameters).
const RSA_MAX_BITS: usize = 8192;

/// A decoded P-256 public key.
pub type P256Key = p256::ecdsa::VerifyingKey;
/// A decoded, validated Ed25519 public key.
pub type Ed25519Key = ed25519_dalek::VerifyingKey;

/// An RSA public key from its JWK parts (`n`, `e`, big-endian) with a modulus of at least
/// `min_bits` (and at most 8192) bits, odd, and an odd public exponent from 3 to 2^33 - 1:
/// a key verification would refuse is refused here, when its set is installed.
pub fn rsa_key(modulus: &[u8], exponent: &[u8], min_bits: usize) -> Result<RsaKey, String> {
    let trim = |b: &[u8]| b[b.iter().take_while(|&&x| x == 0).count()..].to_vec();
    let (n, e) = (trim(modulus), trim(exponent));
    let bits = n
        .first()
        .map_or(0, |top| n.len() * 8 - top.leading_zeros() as usize);
    if bits < min_bits {
        return Err(format!("RSA keys must be at least {min_bits} bits"));
    }
    if bits > RSA_MAX_BITS || n.last().is_none_or(|low| low & 1 == 0) {
        return Err("not an RSA public key (modulus)".into());
    }
    let value = (e.len() <= 5).then(|| e.iter().fold(0u64, |v, &b| v << 8 | u64::from(b)));
    if !value.is_some_and(|v| (3..1 << 33).contains(&v) && v & 1 == 1) {
        return Err("not an RSA public key (exponent)".into());
    }
    Ok(RsaKey { n, e })
}

/// A P-256 public key from its JWK coordinates.
pub fn p256_key(x: &[u8], y: &[u8]) -> Result<P256Key, String> {
    if x.len() != 32 || y.len() != 32 {
        return Err("P-256 coordinates must be 32 bytes each".into());
    }
    let mut sec1 = [0u8; 65];
    sec1[0] = 4; // uncompressed point
    sec1[1..33].copy_from_slice(x);
    sec1[33..].copy_from_slice(y);
    P256Key::from_sec1_bytes(&sec1).map_err(|_| "not a point of P-256".into())
}

/// An Ed25519 public key from its JWK `x`.
pub fn ed25519_key(x: &[u8]) -> Result<Ed25519Key, String> {
    let bytes: &[u8; 32] = x
        .try_into()
        .map_err(|_| String::from("Ed25519 keys must be 32 bytes"))?;
    Ed25519Key::from_bytes(bytes).map_err(|_| "not an Ed25519 public key".into())
}

/// RS256/384/512 (PKCS#1 v1.5) and PS256/384/512 (PSS, salt as long as the hash, as RFC
/// 7518 §3.5 requires).
#[derive(Debug, Clone, Copy)]
pub struct Rsa {
    name: &'static str,
    params: &'static RsaParameters,
}

impl Rsa {
    /// RS256.
    pub const RS256: Self = Self::new("RS256", &ring_sig::RSA_PKCS1_2048_8192_SHA256);
    /// RS384.
    pub const RS384: Self = Self::new("RS384", &ring_sig::RSA_PKCS1_2048_8192_SHA384);
    /// RS512.
    pub const RS512: Self = Self::new("RS512", &ring_sig::RSA_PKCS1_2048_8192_SHA512);
    /// PS256.
    pub const PS256: Self = Self::new("PS256", &ring_sig::RSA_PSS_2048_8192_SHA256);
    /// PS384.
    pub const PS384: Self = Self::new("PS384", &ring_sig::RSA_PSS_2048_8192_SHA384);
    /// PS512.
    pub const PS512: Self = Self::new("PS512", &ring_sig::RSA_PSS_2048_8192_SHA512);

    const fn new(name: &'static str, params: &'static RsaParameters) -> Self {
        Self { name, params }
    }
}

/// Signature bytes of any length (an RSA signature is as long as the modulus, which the
/// verification checks).
#[derive(Debug)]
pub struct RsaSignature(Vec<u8>);

impl AlgorithmSignature for RsaSignature {
    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        Ok(Self(slice.to_vec()))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.0)
    }
}

impl Algorithm for Rsa {
    type SigningKey = NoSigningKey;
    type VerifyingKey = RsaKey;
    type Signature = RsaSignature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed(self.name)
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> RsaSignature {
        match *signing_key {}
    }

    fn verify_signature(&self, signature: &RsaSignature, key: &RsaKey, message: &[u8]) -> bool {
        ring_sig::RsaPublicKeyComponents {
            n: &key.n,
            e: &key.e,
        }
        .verify(self.params, message, &signature.0)
        .is_ok()
    }
}

/// ES256: ECDSA on P-256 with SHA-256.
#[derive(Debug, Clone, Copy)]
pub struct Es256;

/// An ES256 signature (`r || s`, 64 bytes).
#[derive(Debug)]
pub struct Es256Signature(p256::ecdsa::Signature);

impl AlgorithmSignature for Es256Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(64);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        p256::ecdsa::Signature::from_slice(slice)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("not an ES256 signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Es256 {
    type SigningKey = NoSigningKey;
    type VerifyingKey = P256Key;
    type Signature = Es256Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("ES256")
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> Es256Signature {
        match *signing_key {}
    }

    fn verify_signature(&self, signature: &Es256Signature, key: &P256Key, message: &[u8]) -> bool {
        use p256::ecdsa::signature::Verifier;
        key.verify(message, &signature.0).is_ok()
    }
}

/// EdDSA with Ed25519.
#[derive(Debug, Clone, Copy)]
pub struct Ed25519;

/// An Ed25519 signature (64 bytes).
#[derive(Debug)]
pub struct Ed25519Signature(ed25519_dalek::Signature);

impl AlgorithmSignature for Ed25519Signature {
    const LENGTH: Option<NonZeroUsize> = NonZeroUsize::new(64);

    fn try_from_slice(slice: &[u8]) -> anyhow::Result<Self> {
        ed25519_dalek::Signature::from_slice(slice)
            .map(Self)
            .map_err(|_| anyhow::anyhow!("not an Ed25519 signature"))
    }

    fn as_bytes(&self) -> Cow<'_, [u8]> {
        Cow::Owned(self.0.to_bytes().to_vec())
    }
}

impl Algorithm for Ed25519 {
    type SigningKey = NoSigningKey;
    type VerifyingKey = Ed25519Key;
    type Signature = Ed25519Signature;

    fn name(&self) -> Cow<'static, str> {
        Cow::Borrowed("EdDSA")
    }

    fn sign(&self, signing_key: &NoSigningKey, _message: &[u8]) -> Ed25519Signature {
        match *signing_key {}
    }

    fn verify_signature(
        &self,
        signature: &Ed25519Signature,
        key: &Ed25519Key,
        message: &[u8],
    ) -> bool {
        key.verify_strict(message, &signature.0).is_ok()
    }
}

#[cfg(test)]
mod tests {
    use base64::engine::general_purpose::URL_SAFE_NO_PAD;
    use base64::Engine;
    use serde_json::json;

    use super::*;
    use crate::jwks::{JwkSet, VerifyingKey};
    use crate::jwt::Alg;
    use crate::testkit::Keys;

    #[test]
    fn rsa_keys_verification_would_refuse_are_refused_when_installed() {
        let n = vec![0xff; 256];
        assert!(rsa_key(&n, &[1, 0, 1], 2048).is_ok());
        let padded = [&[0, 0][..], &n].concat();
        assert!(
            rsa_key(&padded, &[0, 1, 0, 1], 2048).is_ok(),
            "leading zeros are not bits"
        );
        assert!(rsa_key(&n[1..], &[1, 0, 1], 2048).is_err(), "2040 bits");
        assert!(rsa_key(&[0xff; 1025], &[3], 2048).is_err(), "8200 bits");
        let even = [&n[..255], &[0xfe]].concat();
        assert!(rsa_key(&even, &[1, 0, 1], 2048).is_err(), "even modulus");
        let exponents: [&[u8]; 5] = [&[], &[1], &[2], &[4, 0, 0, 0, 1], &[1, 0, 0, 0, 0, 1]];
        for e in exponents {
            assert!(rsa_key(&n, e, 2048).is_err(), "exponent {e:?}");
        }
    }

    /// Each algorithm verifies its own signature over the signed bytes and nothing else:
    /// not another scheme's or hash's signature, not altered bytes.
    #[test]
    fn signatures_verify_only_for_their_algorithm_and_bytes() {
        let keys = Keys::new(1);
        let set = JwkSet::from_value(&keys.jwks()).unwrap();
        let key = |kid: &str| {
            set.keys
                .iter()
                .find(|k| k.kid.as_deref() == Some(kid))
                .map(|k| k.key.clone())
                .unwrap()
        };
        let signed = |alg: Alg, kid: &str| {
            let token = keys.sign(alg, Some(kid), &json!({"sub": "u-1"}));
            let (input, sig) = token.rsplit_once('.').unwrap();
            (input.to_owned(), URL_SAFE_NO_PAD.decode(sig).unwrap())
        };
        let VerifyingKey::Rsa(rsa) = key("rsa") else {
            panic!("rsa")
        };
        let schemes = [
            (Alg::RS256, Rsa::RS256),
            (Alg::RS384, Rsa::RS384),
            (Alg::RS512, Rsa::RS512),
            (Alg::PS256, Rsa::PS256),
            (Alg::PS384, Rsa::PS384),
            (Alg::PS512, Rsa::PS512),
        ];
        for (alg, _) in schemes {
            let (input, sig) = signed(alg, "rsa");
            let sig = RsaSignature(sig);
            for (other, scheme) in schemes {
                let ok = scheme.verify_signature(&sig, &rsa, input.as_bytes());
                assert_eq!(ok, alg == other, "{alg:?} signature under {other:?}");
            }
            let altered = input.replace('.', ",");
            assert!(!schemes[0]
                .1
                .verify_signature(&sig, &rsa, altered.as_bytes()));
        }
        let VerifyingKey::P256(p256) = key("p256") else {
            panic!("p256")
        };
        let (input, sig) = signed(Alg::ES256, "p256");
        let sig = Es256Signature::try_from_slice(&sig).unwrap();
        assert!(Es256.verify_signature(&sig, &p256, input.as_bytes()));
        assert!(!Es256.verify_signature(&sig, &p256, &input.as_bytes()[1..]));
        let VerifyingKey::Ed25519(ed) = key("ed") else {
            panic!("ed")
        };
        let (input, sig) = signed(Alg::EdDSA, "ed");
        let sig = Ed25519Signature::try_from_slice(&sig).unwrap();
        assert!(Ed25519.verify_signature(&sig, &ed, input.as_bytes()));
        assert!(!Ed25519.verify_signature(&sig, &ed, &input.as_bytes()[1..]));
    }
}
