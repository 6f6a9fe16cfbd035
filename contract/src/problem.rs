//! The catalogue of RFC 9457 problem types: every `type` either tier answers, with its
//! status. Titles and details stay with each tier (the backend's speak three languages); the
//! slug, the status and the type URI are defined here only.

use std::fmt;

/// Prefix of every problem `type`: `urn:workspace-api:problem:<slug>`.
pub const TYPE_PREFIX: &str = "urn:workspace-api:problem:";
/// The media type of every problem body.
pub const CONTENT_TYPE: &str = "application/problem+json";

/// One problem type: a stable slug and the status it is always answered with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ProblemType {
    /// The last part of the type URI, e.g. `idempotency-key-in-use`.
    pub slug: &'static str,
    /// The HTTP status.
    pub status: u16,
}

impl ProblemType {
    /// `urn:workspace-api:problem:<slug>`.
    pub fn type_uri(self) -> String {
        format!("{TYPE_PREFIX}{}", self.slug)
    }
}

impl fmt::Display for ProblemType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{TYPE_PREFIX}{}", self.slug)
    }
}

macro_rules! catalogue {
    ($($(#[$doc:meta])* $name:ident = $status:literal $slug:literal;)*) => {
        $($(#[$doc])* pub const $name: ProblemType = ProblemType { slug: $slug, status: $status };)*
        /// Every problem type, for tests and documentation.
        pub const ALL: &[ProblemType] = &[$($name),*];
    };
}

catalogue! {
    /// Both tiers: one or more fields (or, at the edge, the organization field) are invalid;
    /// `errors` lists them.
    VALIDATION_FAILED = 400 "validation-failed";
    /// Both tiers: `Idempotency-Key` is missing where required, repeated or malformed
    /// ([`crate::idempotency::parse_key`]).
    INVALID_IDEMPOTENCY_KEY = 400 "invalid-idempotency-key";
    /// Both tiers: a header either reads is not text (see [`crate::headers::READ_BY_BACKEND`]).
    INVALID_HEADER = 400 "invalid-header";
    /// Edge: `X-Request-ID` is not a UUID or sent twice ([`crate::request_id`]).
    INVALID_REQUEST_ID = 400 "invalid-request-id";
    /// Edge: the method is not an HTTP token or the path not visible ASCII.
    INVALID_REQUEST = 400 "invalid-request";
    /// Edge: the body of a route whose organization is read from it is not JSON.
    INVALID_BODY = 400 "invalid-body";
    /// Backend: the body is not parseable as its declared media type.
    MALFORMED_BODY = 400 "malformed-body";
    /// Backend: a query parameter is invalid.
    INVALID_QUERY = 400 "invalid-query";
    /// Backend: v3 needs the caller's company and the identity names none unambiguously.
    COMPANY_REQUIRED = 400 "company-required";
    /// Edge: no, or no valid, gateway identity; backend: no valid gateway signature.
    UNAUTHENTICATED = 401 "unauthenticated";
    /// Edge: the bearer token is malformed or failed verification.
    INVALID_TOKEN = 401 "invalid-token";
    /// Both tiers: the caller lacks the permission in the target organization (the backend
    /// names it; the edge does not say whether the organization exists).
    FORBIDDEN = 403 "forbidden";
    /// Backend: the company does not let standard users create workspaces.
    WORKSPACE_CREATION_DISABLED = 403 "workspace-creation-disabled";
    /// Both tiers: no such resource (or, at the backend, not visible to the caller).
    NOT_FOUND = 404 "not-found";
    /// Both tiers: the resource exists, not with this method; `Allow` lists the others.
    METHOD_NOT_ALLOWED = 405 "method-not-allowed";
    /// Both tiers: the first request with this `Idempotency-Key` is still in flight.
    IDEMPOTENCY_KEY_IN_USE = 409 "idempotency-key-in-use";
    /// Both tiers: the body is larger than the limit.
    PAYLOAD_TOO_LARGE = 413 "payload-too-large";
    /// Backend: the body's media type is not accepted here.
    UNSUPPORTED_MEDIA_TYPE = 415 "unsupported-media-type";
    /// Both tiers: the `Idempotency-Key` was used before with another fingerprint
    /// ([`crate::idempotency::fingerprint`]).
    IDEMPOTENCY_KEY_REUSED = 422 "idempotency-key-reused";
    /// Edge: a rate limit is exceeded; `Retry-After` says when to come back.
    RATE_LIMITED = 429 "rate-limited";
    /// Backend: the component is misconfigured (no gateway key).
    INTERNAL_ERROR = 500 "internal-error";
    /// Edge: keys or shared state are unavailable; `Retry-After` says when to retry.
    UNAVAILABLE = 503 "unavailable";
    /// Backend: the key-value store failed; nothing was acknowledged.
    STORE_UNAVAILABLE = 503 "store-unavailable";
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn slugs_are_unique_lower_case_words_and_statuses_are_errors() {
        let slugs: std::collections::BTreeSet<_> = ALL.iter().map(|p| p.slug).collect();
        assert_eq!(slugs.len(), ALL.len());
        for p in ALL {
            assert!(
                p.slug.bytes().all(|b| b.is_ascii_lowercase() || b == b'-'),
                "{p}"
            );
            assert!((400..600).contains(&p.status), "{p}");
            assert_eq!(p.type_uri(), p.to_string());
        }
        assert_eq!(
            IDEMPOTENCY_KEY_IN_USE.type_uri(),
            "urn:workspace-api:problem:idempotency-key-in-use"
        );
    }
}
