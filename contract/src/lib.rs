//! The contract both tiers share: the signed identity the edge forwards and the backend
//! verifies, and every rule the edge filter and the backend must state alike, each in one
//! module (`docs/contract.md` lists them, and says why there are two idempotency layers):
//!
//! | rule | module |
//! |---|---|
//! | header names | [`headers`] |
//! | `X-Request-ID` parsing and normalization | [`request_id`] |
//! | `Idempotency-Key` syntax, the request fingerprint, what is not replayed | [`idempotency`] |
//! | body decoding (JSON, form, multipart) the fingerprint and the backend read | [`body`] |
//! | problem types: slug, status, type URI | [`problem`] |
//! | permission names, role map → effective permissions | [`permission`] |
//! | the signed identity, its canonical path | this module, `sign`, `path` |
//!
//! Everything here is pure Rust without host calls: it builds for `wasm32-wasip1` (the
//! filter), `wasm32-wasip2` (the backend) and `wasm32-unknown-unknown` (the policy tests).
//!
//! # The signed identity
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

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

pub mod body;
pub mod headers;
pub mod idempotency;
mod path;
pub mod permission;
pub mod problem;
pub mod request_id;
mod sign;
#[cfg(any(test, feature = "testkit"))]
pub mod testkit;

pub use headers::{FORWARDED_HEADERS, IDENTITY_HEADER, SIGNATURE_HEADER};
pub use path::canonical_path;
pub use permission::Denial;
pub use sign::{
    SignedHeaders, Signer, Verified, Verifier, VerifyError, DEFAULT_MAX_AGE_SECS, NONCE_LEN,
};
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
    /// Organization ID to the caller's effective permissions in it: what the filter's role
    /// map gives the caller's roles there, plus the token's explicit grants
    /// ([`permission::RoleMap::effective`]). The caller is a member of exactly the
    /// organizations listed, with or without permissions. Roles themselves are not
    /// forwarded: the backend decides on permissions only.
    #[serde(default)]
    pub permissions: BTreeMap<String, BTreeSet<String>>,
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

    /// Whether the caller is a member of `org`.
    pub fn is_member(&self, org: &str) -> bool {
        self.permissions.contains_key(org)
    }

    /// Whether the caller may use `permission` in `org`: the rule both tiers apply.
    pub fn may(&self, org: &str, permission: &str) -> Result<(), Denial> {
        match self.permissions.get(org) {
            None => Err(Denial::NotMember),
            Some(perms) if perms.contains(permission) => Ok(()),
            Some(_) => Err(Denial::MissingPermission),
        }
    }

    /// The organizations the caller belongs to, in order.
    pub fn orgs(&self) -> impl Iterator<Item = &str> {
        self.permissions.keys().map(String::as_str)
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
    fn membership_and_permissions_come_from_the_identity_alone() {
        let mut who = id("i", "u-1");
        who.permissions
            .insert("o-1".into(), [permission::WORKSPACE_READ.to_owned()].into());
        who.permissions.insert("o-2".into(), BTreeSet::new());
        assert_eq!(who.may("o-1", permission::WORKSPACE_READ), Ok(()));
        assert_eq!(
            who.may("o-1", permission::WORKSPACE_CREATE),
            Err(Denial::MissingPermission)
        );
        assert_eq!(
            who.may("o-2", permission::WORKSPACE_READ),
            Err(Denial::MissingPermission)
        );
        assert_eq!(
            who.may("o-3", permission::WORKSPACE_READ),
            Err(Denial::NotMember)
        );
        assert!(who.is_member("o-2") && !who.is_member("o-3"));
        assert_eq!(who.orgs().collect::<Vec<_>>(), ["o-1", "o-2"]);
    }

    #[test]
    fn an_identity_without_its_issuer_is_refused() {
        assert!(serde_json::from_str::<Identity>(r#"{"sub":"u-1"}"#).is_err());
        let ok: Identity = serde_json::from_str(r#"{"iss":"i","sub":"u-1"}"#).unwrap();
        assert_eq!(ok, id("i", "u-1"));
    }
}
