//! The signature over a forwarded identity: how the gateway makes it and the backend checks it.

use std::fmt;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::{Digest, Sha256};

use crate::{canonical_path, Identity, Request};

/// Bytes in a nonce.
pub const NONCE_LEN: usize = 16;
/// Seconds a signature stays acceptable on either side of its timestamp, by default.
pub const DEFAULT_MAX_AGE_SECS: u64 = 60;

/// Written first in every MAC input, so a MAC made for another purpose or another version
/// of this layout with the same key can never verify here.
const MAC_LABEL: &[u8] = b"gateway-identity/v1\n";

/// The two header values that carry a signed identity.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SignedHeaders {
    /// Value of [`crate::IDENTITY_HEADER`].
    pub identity: String,
    /// Value of [`crate::SIGNATURE_HEADER`]: `t=<unix seconds>,n=<nonce>,v1=<MAC>`, the
    /// nonce and the MAC in unpadded base64url.
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

    /// The header values that forward `identity` for `request`, signed at `now_secs` (unix
    /// seconds) with `nonce`, which must be fresh randomness for every request: the backend
    /// accepts each nonce once.
    pub fn sign(
        &self,
        identity: &Identity,
        request: &Request<'_>,
        now_secs: u64,
        nonce: [u8; NONCE_LEN],
    ) -> SignedHeaders {
        // Serializing a struct of strings, bools and maps of strings cannot fail.
        let json = serde_json::to_vec(identity).unwrap_or_default();
        let identity = URL_SAFE_NO_PAD.encode(json);
        let input = mac_input(now_secs, &nonce, request, &identity);
        let tag = keyed(&self.key, &input).finalize().into_bytes();
        let signature = format!(
            "t={now_secs},n={},v1={}",
            URL_SAFE_NO_PAD.encode(nonce),
            URL_SAFE_NO_PAD.encode(tag)
        );
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

impl VerifyError {
    /// A short name for logs and metrics.
    pub fn reason(self) -> &'static str {
        match self {
            Self::Missing => "missing",
            Self::Malformed => "malformed",
            Self::BadSignature => "bad_signature",
            Self::Stale => "stale",
        }
    }
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

/// What an authentic, fresh signature tells the backend. The nonce must still be checked
/// against those already accepted: the MAC alone does not stop a replay within the window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verified {
    /// The caller.
    pub identity: Identity,
    /// The gateway's per-request nonce.
    pub nonce: [u8; NONCE_LEN],
    /// When the gateway signed (unix seconds, the gateway's clock).
    pub timestamp: u64,
}

impl Verified {
    /// The nonce as it appeared in the header (unpadded base64url, 22 characters).
    pub fn nonce_text(&self) -> String {
        URL_SAFE_NO_PAD.encode(self.nonce)
    }
}

/// Verifies forwarded identities on the backend side.
#[derive(Clone)]
pub struct Verifier {
    keys: Vec<Vec<u8>>,
    /// How far (seconds) a signature's timestamp may be from the verifier's clock, either way.
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
    /// previous one), with a window of [`DEFAULT_MAX_AGE_SECS`].
    pub fn new(keys: Vec<Vec<u8>>) -> Self {
        Self {
            keys,
            max_age_secs: DEFAULT_MAX_AGE_SECS,
        }
    }

    /// The last second (verifier's clock) at which a signature made at `timestamp` is still
    /// accepted: after it, the signature's nonce need not be remembered any more.
    pub fn accepted_until(&self, timestamp: u64) -> u64 {
        timestamp.saturating_add(self.max_age_secs)
    }

    /// Checks the two header values against `request` at `now` (unix seconds).
    pub fn verify(
        &self,
        identity: &str,
        signature: &str,
        request: &Request<'_>,
        now: u64,
    ) -> Result<Verified, VerifyError> {
        if identity.is_empty() || signature.is_empty() {
            return Err(VerifyError::Missing);
        }
        let parsed = parse_signature(signature).ok_or(VerifyError::Malformed)?;
        let input = mac_input(parsed.timestamp, &parsed.nonce, request, identity);
        let authentic = self
            .keys
            .iter()
            .any(|key| keyed(key, &input).verify_slice(&parsed.tag).is_ok());
        if !authentic {
            return Err(VerifyError::BadSignature);
        }
        if parsed.timestamp.abs_diff(now) > self.max_age_secs {
            return Err(VerifyError::Stale);
        }
        let json = URL_SAFE_NO_PAD
            .decode(identity)
            .map_err(|_| VerifyError::Malformed)?;
        let identity = serde_json::from_slice(&json).map_err(|_| VerifyError::Malformed)?;
        Ok(Verified {
            identity,
            nonce: parsed.nonce,
            timestamp: parsed.timestamp,
        })
    }
}

struct Parsed {
    timestamp: u64,
    nonce: [u8; NONCE_LEN],
    tag: Vec<u8>,
}

/// `t=<digits>,n=<22 base64url>,v1=<base64url>`, exactly, in this order.
fn parse_signature(value: &str) -> Option<Parsed> {
    let mut fields = value.split(',');
    let t = fields.next()?.strip_prefix("t=")?;
    let n = fields.next()?.strip_prefix("n=")?;
    let v1 = fields.next()?.strip_prefix("v1=")?;
    if fields.next().is_some() {
        return None;
    }
    // `u64::from_str` also takes a leading `+`; one timestamp has one spelling.
    if t.is_empty() || t.len() > 20 || !t.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    let nonce = URL_SAFE_NO_PAD.decode(n).ok()?.try_into().ok()?;
    Some(Parsed {
        timestamp: t.parse().ok()?,
        nonce,
        tag: URL_SAFE_NO_PAD.decode(v1).ok()?,
    })
}

/// The bytes the MAC covers. Every field is fixed-width or length-prefixed, so no two
/// different requests share an input by moving bytes from one field to the next; the path
/// is canonical ([`canonical_path`]) and the body enters as its SHA-256.
fn mac_input(
    timestamp: u64,
    nonce: &[u8; NONCE_LEN],
    request: &Request<'_>,
    identity: &str,
) -> Vec<u8> {
    let path = canonical_path(request.path);
    let mut input = Vec::with_capacity(160 + identity.len() + path.len());
    input.extend_from_slice(MAC_LABEL);
    input.extend_from_slice(&timestamp.to_be_bytes());
    input.extend_from_slice(nonce);
    for field in [request.request_id, request.method, &path, identity] {
        input.extend_from_slice(&(field.len() as u64).to_be_bytes());
        input.extend_from_slice(field.as_bytes());
    }
    input.extend_from_slice(&Sha256::digest(request.body));
    input
}

fn keyed(key: &[u8], input: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this never fails.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).unwrap_or_else(|_| unreachable!());
    mac.update(input);
    mac
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use super::*;

    const KEY: &[u8] = b"0123456789abcdef0123456789abcdef";
    const OLD: &[u8] = b"fedcba9876543210fedcba9876543210";
    const NONCE: [u8; 16] = [7; 16];
    const BODY: &[u8] = br#"{"orgId":"a1b2c3d4-5678-90ef-1234-567890abcdef","name":"CS101"}"#;
    const REQ: Request<'static> = Request {
        request_id: "0b8a3c1e-6d0f-4a34-8f5e-2b7c9d1e0f3a",
        method: "POST",
        path: "/api/workspaces",
        body: BODY,
    };

    fn alice() -> Identity {
        let mut permissions = BTreeMap::new();
        permissions.insert(
            "a1b2c3d4-5678-90ef-1234-567890abcdef".to_owned(),
            ["workspace:create".to_owned()].into(),
        );
        Identity {
            iss: "https://idp.example".into(),
            sub: "u-alice".into(),
            email: Some("alice@university.edu".into()),
            email_verified: true,
            permissions,
            company: None,
        }
    }

    fn signed() -> SignedHeaders {
        Signer::new(KEY.to_vec()).sign(&alice(), &REQ, 1000, NONCE)
    }

    #[test]
    fn round_trip_with_current_or_previous_key_returns_what_the_backend_records() {
        let signed = signed();
        for keys in [vec![KEY.to_vec()], vec![OLD.to_vec(), KEY.to_vec()]] {
            let got = Verifier::new(keys).verify(&signed.identity, &signed.signature, &REQ, 1000);
            let want = Verified {
                identity: alice(),
                nonce: NONCE,
                timestamp: 1000,
            };
            assert_eq!(got, Ok(want));
        }
        assert!(signed
            .signature
            .starts_with("t=1000,n=BwcHBwcHBwcHBwcHBwcHBw,v1="));
    }

    #[test]
    fn refuses_what_the_gateway_did_not_sign() {
        let signed = signed();
        let v = Verifier::new(vec![KEY.to_vec()]);
        let check = |identity: &str, signature: &str, req: &Request<'_>, now: u64| {
            v.verify(identity, signature, req, now).map(|_| ())
        };
        let sig = &signed.signature;
        let tag = sig.rsplit_once("v1=").map_or("", |(_, t)| t);
        let n = "n=BwcHBwcHBwcHBwcHBwcHBw";
        // Header values that are not the gateway's, on the request it signed.
        let headers = [
            (
                "no identity",
                String::new(),
                sig.clone(),
                VerifyError::Missing,
            ),
            (
                "no signature",
                signed.identity.clone(),
                String::new(),
                VerifyError::Missing,
            ),
            (
                "form without nonce",
                signed.identity.clone(),
                format!("t=1000,v1={tag}"),
                VerifyError::Malformed,
            ),
            (
                "fields reordered",
                signed.identity.clone(),
                format!("{n},t=1000,v1={tag}"),
                VerifyError::Malformed,
            ),
            (
                "extra field",
                signed.identity.clone(),
                format!("{sig},x=1"),
                VerifyError::Malformed,
            ),
            (
                "timestamp with sign",
                signed.identity.clone(),
                sig.replace("t=1000", "t=+1000"),
                VerifyError::Malformed,
            ),
            (
                "short nonce",
                signed.identity.clone(),
                sig.replace(n, "n=BwcH"),
                VerifyError::Malformed,
            ),
            (
                "nonce not base64url",
                signed.identity.clone(),
                sig.replace(n, "n=BwcHBwcHBwcHBwcHBwcHB!"),
                VerifyError::Malformed,
            ),
            (
                "tag not base64url",
                signed.identity.clone(),
                format!("t=1000,{n},v1=!!"),
                VerifyError::Malformed,
            ),
            (
                "forged identity",
                URL_SAFE_NO_PAD.encode(br#"{"iss":"x","sub":"u-mallory"}"#),
                sig.clone(),
                VerifyError::BadSignature,
            ),
            (
                "other nonce",
                signed.identity.clone(),
                sig.replace(n, "n=CAgICAgICAgICAgICAgICA"),
                VerifyError::BadSignature,
            ),
            (
                "other timestamp",
                signed.identity.clone(),
                sig.replace("t=1000", "t=1001"),
                VerifyError::BadSignature,
            ),
        ];
        for (name, identity, signature, want) in &headers {
            assert_eq!(check(identity, signature, &REQ, 1000), Err(*want), "{name}");
        }
        // The gateway's header values, on another request or at another time.
        let longer = [BODY, b" "].concat();
        let requests = [
            (
                "other path",
                Request {
                    path: "/api/orgs/x/settings",
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "other query",
                Request {
                    path: "/api/workspaces?x=1",
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "other method",
                Request {
                    method: "PUT",
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "other request ID",
                Request {
                    request_id: "11111111-1111-4111-8111-111111111111",
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "other body",
                Request {
                    body: br#"{"orgId":"b","name":"CS101"}"#,
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "no body",
                Request { body: b"", ..REQ },
                1000,
                VerifyError::BadSignature,
            ),
            (
                "a byte more body",
                Request {
                    body: &longer,
                    ..REQ
                },
                1000,
                VerifyError::BadSignature,
            ),
            ("too late", REQ, 1061, VerifyError::Stale),
            ("too early", REQ, 939, VerifyError::Stale),
        ];
        for (name, req, now, want) in &requests {
            assert_eq!(
                check(&signed.identity, sig, req, *now),
                Err(*want),
                "{name}"
            );
        }
        for edge in [940, 1060] {
            assert_eq!(check(&signed.identity, sig, &REQ, edge), Ok(()), "{edge}");
        }
        let wrong_key = Verifier::new(vec![OLD.to_vec()]);
        assert_eq!(
            wrong_key.verify(&signed.identity, sig, &REQ, 1000),
            Err(VerifyError::BadSignature)
        );
    }

    #[test]
    fn the_signer_and_the_verifier_agree_on_every_spelling_of_a_path() {
        let v = Verifier::new(vec![KEY.to_vec()]);
        let pairs = [
            ("/api/workspaces?", "/api/workspaces"),
            ("/api/workspaces", "/api/workspaces?"),
            ("/api/workspaces?#top", "/api/workspaces"),
            ("/api/workspaces?orgId=a#top", "/api/workspaces?orgId=a"),
        ];
        for (signed_as, received_as) in pairs {
            let s = Signer::new(KEY.to_vec()).sign(
                &alice(),
                &Request {
                    path: signed_as,
                    ..REQ
                },
                1000,
                NONCE,
            );
            let got = v.verify(
                &s.identity,
                &s.signature,
                &Request {
                    path: received_as,
                    ..REQ
                },
                1000,
            );
            assert!(got.is_ok(), "{signed_as} -> {received_as}: {got:?}");
        }
    }

    #[test]
    fn moving_bytes_between_fields_changes_the_mac() {
        // Without length prefixes, ("ab", "c") and ("a", "bc") would be one input.
        let s = |request_id: &'static str, method: &'static str, path: &'static str| {
            let req = Request {
                request_id,
                method,
                path,
                body: b"",
            };
            Signer::new(KEY.to_vec())
                .sign(&alice(), &req, 1000, NONCE)
                .signature
        };
        assert_ne!(s("ab", "c", "/p"), s("a", "bc", "/p"));
        assert_ne!(s("a", "b/", "p"), s("a", "b", "/p"));
        assert_ne!(s("", "POST", "/p"), s("POST", "", "/p"));
    }

    #[test]
    fn the_backend_may_forget_a_nonce_once_its_signature_is_stale() {
        let v = Verifier::new(vec![KEY.to_vec()]);
        let signed = signed();
        let until = v.accepted_until(1000);
        assert!(v
            .verify(&signed.identity, &signed.signature, &REQ, until)
            .is_ok());
        assert_eq!(
            v.verify(&signed.identity, &signed.signature, &REQ, until + 1),
            Err(VerifyError::Stale)
        );
        assert_eq!(v.accepted_until(u64::MAX), u64::MAX);
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
