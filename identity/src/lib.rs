//! The trust boundary between the edge filter and the backend.
//!
//! The filter verifies the caller's JWT and forwards what it learned as an [`Identity`],
//! serialized into [`IDENTITY_HEADER`] and authenticated by an HMAC-SHA256 in
//! [`SIGNATURE_HEADER`]. The MAC covers a timestamp, the request ID, the method, the path
//! and the identity, so a captured header set cannot be replayed on another request or
//! after [`Verifier::max_age_secs`]. Several keys may be accepted at once so the shared key
//! can be rotated without downtime: sign with the new key once every backend accepts it.
//!
//! ```
//! use gateway_identity::{Identity, Signer, Verifier, Request};
//! let id = Identity { sub: "u-1".into(), ..Identity::default() };
//! let req = Request { request_id: "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e", method: "POST", path: "/api/workspaces" };
//! let headers = Signer::new(b"a-shared-key-of-at-least-32-bytes!!".to_vec()).sign(&id, &req, 1_700_000_000);
//! let verifier = Verifier::new(vec![b"a-shared-key-of-at-least-32-bytes!!".to_vec()]);
//! let got = verifier.verify(&headers.identity, &headers.signature, &req, 1_700_000_010).unwrap();
//! assert_eq!(got.sub, "u-1");
//! ```

use std::collections::BTreeMap;
use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

/// Header carrying the base64url-encoded JSON [`Identity`].
pub const IDENTITY_HEADER: &str = "x-edge-identity";
/// Header carrying `t=<unix seconds>,v1=<base64url HMAC-SHA256>`.
pub const SIGNATURE_HEADER: &str = "x-edge-signature";
/// Every header a client could use to impersonate the gateway. The filter removes them
/// from incoming requests before it adds its own.
pub const FORWARDED_HEADERS: [&str; 2] = [IDENTITY_HEADER, SIGNATURE_HEADER];
/// Shortest key accepted: HMAC-SHA256 keys shorter than the hash add no strength.
pub const MIN_KEY_LEN: usize = 32;

/// What the gateway verified about the caller.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Identity {
    /// The JWT subject.
    pub sub: String,
    /// The caller's e-mail address, when the token carries one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    /// Whether the issuer verified that e-mail address.
    #[serde(default)]
    pub email_verified: bool,
    /// Organization ID to the caller's roles in it.
    #[serde(default)]
    pub orgs: BTreeMap<String, Vec<String>>,
    /// Permissions granted explicitly by the token, beyond those of the roles.
    #[serde(default)]
    pub perms: Vec<String>,
    /// The caller's home organization ("company"), when the token names one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub company: Option<String>,
}

impl Identity {
    /// The caller's roles in `org`, empty when not a member.
    pub fn roles_in(&self, org: &str) -> &[String] {
        self.orgs.get(org).map(Vec::as_slice).unwrap_or(&[])
    }

    /// Whether the caller is a member of `org`.
    pub fn is_member(&self, org: &str) -> bool {
        self.orgs.contains_key(org)
    }
}

/// The parts of a request the signature is bound to.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    /// The request ID the gateway forwards in `x-request-id`.
    pub request_id: &'a str,
    /// The HTTP method, upper case.
    pub method: &'a str,
    /// The request path as forwarded, query string included.
    pub path: &'a str,
}

/// The two header values that carry a signed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Value of [`IDENTITY_HEADER`].
    pub identity: String,
    /// Value of [`SIGNATURE_HEADER`].
    pub signature: String,
}

/// Signs identities on the gateway side.
#[derive(Clone)]
pub struct Signer {
    key: Vec<u8>,
}

impl fmt::Debug for Signer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Signer { key: <redacted> }")
    }
}

impl Signer {
    /// A signer with the current shared key.
    pub fn new(key: Vec<u8>) -> Self {
        Self { key }
    }

    /// The header values that forward `identity` for `request`, signed at `now` (unix seconds).
    pub fn sign(&self, identity: &Identity, request: &Request<'_>, now: u64) -> SignedHeaders {
        // Serializing a struct of strings, bools and maps of strings cannot fail.
        let json = serde_json::to_vec(identity).unwrap_or_default();
        let identity = URL_SAFE_NO_PAD.encode(json);
        let mac = mac(&self.key, now, request, &identity)
            .finalize()
            .into_bytes();
        let signature = format!("t={now},v1={}", URL_SAFE_NO_PAD.encode(mac));
        SignedHeaders {
            identity,
            signature,
        }
    }
}

/// Why a forwarded identity was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum VerifyError {
    /// One of the two headers is absent.
    Missing,
    /// A header is not in the documented form.
    Malformed,
    /// No accepted key produced this MAC.
    BadSignature,
    /// The timestamp is further than the allowed age from the verifier's clock.
    Stale,
}

impl fmt::Display for VerifyError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Missing => "the request did not come through the gateway",
            Self::Malformed => "the gateway identity headers are malformed",
            Self::BadSignature => "the gateway identity signature is not valid",
            Self::Stale => "the gateway identity signature has expired",
        })
    }
}

impl std::error::Error for VerifyError {}

/// Verifies forwarded identities on the backend side.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Vec<u8>>,
    /// How far (seconds) a signature's timestamp may be from the verifier's clock.
    pub max_age_secs: u64,
}

impl fmt::Debug for Verifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Verifier {{ keys: <{} redacted>, max_age_secs: {} }}",
            self.keys.len(),
            self.max_age_secs
        )
    }
}

impl Verifier {
    /// A verifier accepting any of `keys` (the current key and, during rotation, the next or
    /// previous one), with a 300-second window.
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self {
            keys,
            max_age_secs: 300,
        }
    }

    /// Checks the two header values against `request` at `now` (unix seconds).
    pub fn verify(
        &self,
        identity: &str,
        signature: &str,
        request: &Request<'_>,
        now: u64,
    ) -> Result<Identity, VerifyError> {
        if identity.is_empty() || signature.is_empty() {
            return Err(VerifyError::Missing);
        }
        let (ts, tag) = parse_signature(signature).ok_or(VerifyError::Malformed)?;
        let tag = URL_SAFE_NO_PAD
            .decode(tag)
            .map_err(|_| VerifyError::Malformed)?;
        let authentic = self
            .keys
            .iter()
            .any(|key| mac(key, ts, request, identity).verify_slice(&tag).is_ok());
        if !authentic {
            return Err(VerifyError::BadSignature);
        }
        if ts.abs_diff(now) > self.max_age_secs {
            return Err(VerifyError::Stale);
        }
        let json = URL_SAFE_NO_PAD
            .decode(identity)
            .map_err(|_| VerifyError::Malformed)?;
        serde_json::from_slice(&json).map_err(|_| VerifyError::Malformed)
    }
}

fn parse_signature(value: &str) -> Option<(u64, &str)> {
    let (t, v1) = value.split_once(',')?;
    let ts = t.strip_prefix("t=")?.parse().ok()?;
    Some((ts, v1.strip_prefix("v1=")?))
}

fn mac(key: &[u8], ts: u64, request: &Request<'_>, identity: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    for part in [
        ts.to_string().as_str(),
        request.request_id,
        request.method,
        request.path,
    ] {
        mac.update(part.as_bytes());
        mac.update(b"\n");
    }
    mac.update(identity.as_bytes());
    mac
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD: &[u8] = b"fedcba9876543210fedcba9876543210";
    const REQ: Request<'static> = Request {
        request_id: "0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a",
        method: "POST",
        path: "/api/workspaces",
    };

    fn alice() -> Identity {
        let mut orgs = BTreeMap::new();
        orgs.insert(
            "a1b2c3d4-5678-90ef-1234-567890abcdef".to_owned(),
            vec!["admin".to_owned()],
        );
        Identity {
            sub: "u-alice".into(),
            email: Some("alice@university.edu".into()),
            email_verified: true,
            orgs,
            perms: vec![],
            company: None,
        }
    }

    #[test]
    fn round_trip_with_current_or_previous_key() {
        let signed = Signer::new(KEY.to_vec()).sign(&alice(), &REQ, 1000);
        for keys in [vec![KEY.to_vec()], vec![OLD.to_vec(), KEY.to_vec()]] {
            let got = Verifier::new(keys).verify(&signed.identity, &signed.signature, &REQ, 1000);
            assert_eq!(got, Ok(alice()));
        }
    }

    #[test]
    fn refuses_what_the_gateway_did_not_sign() {
        let signed = Signer::new(KEY.to_vec()).sign(&alice(), &REQ, 1000);
        let v = Verifier::new(vec![KEY.to_vec()]);
        let other_path = Request {
            path: "/api/orgs/x/settings",
            ..REQ
        };
        let other_id = Request {
            request_id: "11111111-1111-4111-8111-111111111111",
            ..REQ
        };
        let forged = URL_SAFE_NO_PAD.encode(br#"{"sub":"u-mallory"}"#);
        let cases: Vec<(&str, &str, Request<'_>, u64, VerifyError)> = vec![
            ("", &signed.signature, REQ, 1000, VerifyError::Missing),
            (&signed.identity, "", REQ, 1000, VerifyError::Missing),
            (
                &signed.identity,
                "v1=abc",
                REQ,
                1000,
                VerifyError::Malformed,
            ),
            (
                &signed.identity,
                "t=x,v1=abc",
                REQ,
                1000,
                VerifyError::Malformed,
            ),
            (
                &signed.identity,
                "t=1000,v1=!!",
                REQ,
                1000,
                VerifyError::Malformed,
            ),
            (
                &forged,
                &signed.signature,
                REQ,
                1000,
                VerifyError::BadSignature,
            ),
            (
                &signed.identity,
                &signed.signature,
                other_path,
                1000,
                VerifyError::BadSignature,
            ),
            (
                &signed.identity,
                &signed.signature,
                other_id,
                1000,
                VerifyError::BadSignature,
            ),
            (
                &signed.identity,
                &signed.signature,
                REQ,
                1301,
                VerifyError::Stale,
            ),
            (
                &signed.identity,
                &signed.signature,
                REQ,
                699,
                VerifyError::Stale,
            ),
        ];
        for (identity, signature, req, now, want) in cases {
            assert_eq!(
                v.verify(identity, signature, &req, now),
                Err(want),
                "{identity} {signature}"
            );
        }
        let wrong_key = Verifier::new(vec![OLD.to_vec()]);
        assert_eq!(
            wrong_key.verify(&signed.identity, &signed.signature, &REQ, 1000),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn debug_output_never_shows_keys() {
        let shown = format!(
            "{:?} {:?}",
            Signer::new(KEY.to_vec()),
            Verifier::new(vec![KEY.to_vec()])
        );
        assert!(!shown.contains("0123456789abcdef"), "{shown}");
    }
}
