//! The header names both tiers read or write, lower case (HTTP/2 and Envoy's header maps
//! spell them so; HTTP/1.1 compares them case-insensitively).

/// The request's ID: the edge keeps a valid client UUID ([`crate::request_id`]) or makes
/// one, forwards it, and both tiers echo it on every response and in every problem.
pub const REQUEST_ID: &str = "x-request-id";
/// The client's idempotency key ([`crate::idempotency::parse_key`]).
pub const IDEMPOTENCY_KEY: &str = "idempotency-key";
/// `true` on a response replayed for a retry with the same key, from either tier.
pub const IDEMPOTENT_REPLAYED: &str = "idempotent-replayed";
/// The body's media type; it decides how the body is decoded for the fingerprint
/// ([`crate::body::decode`]).
pub const CONTENT_TYPE: &str = "content-type";
/// The caller's languages; the backend answers problems in one of them.
pub const ACCEPT_LANGUAGE: &str = "accept-language";
/// The declared body length, which the backend checks before reading.
pub const CONTENT_LENGTH: &str = "content-length";
/// Seconds to wait before retrying, on 409, 429 and 503 from either tier.
pub const RETRY_AFTER: &str = "retry-after";
/// The base64url-encoded JSON [`crate::Identity`] the edge forwards.
pub const IDENTITY_HEADER: &str = "x-edge-identity";
/// `t=<unix seconds>,n=<base64url nonce>,v1=<base64url HMAC-SHA256>` over the request and
/// the identity ([`crate::Signer`]).
pub const SIGNATURE_HEADER: &str = "x-edge-signature";
/// Every header a client could use to impersonate the gateway. The filter removes them
/// from incoming requests before it adds its own.
pub const FORWARDED_HEADERS: [&str; 2] = [IDENTITY_HEADER, SIGNATURE_HEADER];

/// The request headers whose values the backend reads, besides the identity headers. The
/// edge refuses a value of these that is not ASCII text before anything reads it, and the
/// backend one that is not UTF-8 (it may be called directly), so no value is read one way at
/// the edge and another behind it.
pub const READ_BY_BACKEND: [&str; 5] = [
    REQUEST_ID,
    IDEMPOTENCY_KEY,
    CONTENT_TYPE,
    ACCEPT_LANGUAGE,
    CONTENT_LENGTH,
];

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_lower_case_and_distinct() {
        let all = [
            REQUEST_ID,
            IDEMPOTENCY_KEY,
            IDEMPOTENT_REPLAYED,
            CONTENT_TYPE,
            ACCEPT_LANGUAGE,
            CONTENT_LENGTH,
            RETRY_AFTER,
            IDENTITY_HEADER,
            SIGNATURE_HEADER,
        ];
        for name in all {
            assert_eq!(name, name.to_ascii_lowercase());
        }
        let distinct: std::collections::BTreeSet<_> = all.iter().collect();
        assert_eq!(distinct.len(), all.len());
        assert!(READ_BY_BACKEND
            .iter()
            .all(|h| !FORWARDED_HEADERS.contains(h)));
    }
}
