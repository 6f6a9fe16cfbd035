//! The trust boundary between the edge filter and the backend.
//!
//! The filter verifies the caller's JWT and forwards what it learned as an [`Identity`],
//! serialized into [`IDENTITY_HEADER`] and authenticated by an HMAC-SHA256 in
//! [`SIGNATURE_HEADER`]. The MAC covers a timestamp, a nonce the gateway draws for every
//! request, the request ID, the method, the [canonical path](canonical_path), the SHA-256 of
//! the body and the identity, so a captured header set verifies for no other request, and
//! for none at all after [`Verifier::max_age_secs`]. Within that window the same request can
//! still be sent again: the backend must also refuse a nonce it has already accepted
//! ([`Verified::nonce`]). Several keys may be accepted at once so the shared key can be
//! rotated without downtime: sign with the new key once every backend accepts it.
//!
//! ```
//! use edge_contract::{Identity, Signer, Verifier, Request};
//! let id = Identity { iss: "https://idp.example".into(), sub: "u-1".into(), ..Identity::default() };
//! let req = Request {
//!     request_id: "6f1c2a7e-1c7e-4d1a-9a55-0d3d0f1c2a7e",
//!     method: "POST",
//!     path: "/api/workspaces",
//!     body: br#"{"name":"CS101"}"#,
//! };
//! let nonce = [42; 16]; // the gateway draws 16 random bytes per request
//! let headers = Signer::new(b"a-shared-key-of-at-least-32-bytes!!".to_vec()).sign(&id, &req, 1_700_000_000, nonce);
//! let verifier = Verifier::new(vec![b"a-shared-key-of-at-least-32-bytes!!".to_vec()]);
//! let got = verifier.verify(&headers.identity, &headers.signature, &req, 1_700_000_010).unwrap();
//! assert_eq!(got.identity.principal(), "19:https://idp.example:u-1");
//! assert_eq!((got.nonce, got.timestamp), (nonce, 1_700_000_000));
//! ```

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

mod path;
mod sign;

pub use path::canonical_path;
pub use sign::{
    SignedHeaders, Signer, Verified, Verifier, VerifyError, DEFAULT_MAX_AGE_SECS, NONCE_LEN,
};

/// Header carrying the base64url-encoded JSON [`Identity`].
pub const IDENTITY_HEADER: &str = "x-edge-identity";
/// Header carrying `t=<unix seconds>,n=<base64url nonce>,v1=<base64url HMAC-SHA256>`.
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
    /// The issuer that vouched for the caller (the JWT `iss`). Required: without it two
    /// trusted issuers' users with the same `sub` would be one person.
    pub iss: String,
    /// The JWT subject, unique only within its issuer.
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
    /// Who the caller is, as one string: `<byte length of iss>:<iss>:<sub>`. The length makes
    /// it unambiguous whatever either part contains (`("a:b", "c")` and `("a", "b:c")` differ).
    /// Everything the backend keeps per user is keyed by this, never by `sub` alone.
    pub fn principal(&self) -> String {
        format!("{}:{}:{}", self.iss.len(), self.iss, self.sub)
    }

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
    /// The request path, query string included, in any spelling [`canonical_path`] maps to
    /// the same canonical form.
    pub path: &'a str,
    /// The whole request body as forwarded (empty when there is none).
    pub body: &'a [u8],
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(iss: &str, sub: &str) -> Identity {
        Identity {
            iss: iss.into(),
            sub: sub.into(),
            ..Identity::default()
        }
    }

    #[test]
    fn the_principal_tells_issuers_apart_whatever_their_characters() {
        let cases = [
            (id("https://a.example", "u-1"), "17:https://a.example:u-1"),
            (id("", "u-1"), "0::u-1"),
            (id("a:b", "c"), "3:a:b:c"),
            (id("a", "b:c"), "1:a:b:c"),
        ];
        for (identity, want) in &cases {
            assert_eq!(identity.principal(), *want);
        }
        let distinct: std::collections::BTreeSet<String> =
            cases.iter().map(|(i, _)| i.principal()).collect();
        assert_eq!(distinct.len(), cases.len());
        assert_ne!(
            id("https://a.example", "u-1").principal(),
            id("https://b.example", "u-1").principal()
        );
    }

    #[test]
    fn an_identity_without_its_issuer_is_refused() {
        assert!(serde_json::from_str::<Identity>(r#"{"sub":"u-1"}"#).is_err());
        let ok: Identity = serde_json::from_str(r#"{"iss":"i","sub":"u-1"}"#).unwrap();
        assert_eq!(ok, id("i", "u-1"));
    }
}
