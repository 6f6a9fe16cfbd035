//! `Idempotency-Key` (draft-ietf-httpapi-idempotency-key-header) as both tiers apply it:
//! which keys are valid, what a request's fingerprint is, and which answers are kept for
//! replay.
//!
//! The edge keeps a key's first answer in shared memory and the backend in its store; a
//! retry through the gateway and a retry sent straight to the backend must get the same
//! decision (replay, 409, 422), so both tiers call [`parse_key`] and [`fingerprint`] and
//! nothing else. `docs/contract.md` explains why there are two layers.

use sha2::{Digest, Sha256};

use crate::body;

/// Longest key accepted, in bytes (without the quotes).
pub const MAX_KEY_LEN: usize = 255;

/// Why a key was refused (400 `invalid-idempotency-key` at either tier).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyError {
    /// The header was sent more than once.
    Repeated,
    /// Empty, or longer than [`MAX_KEY_LEN`].
    Length,
    /// A byte outside visible ASCII, or `"`, `\` or `,` inside the key.
    Characters,
}

impl KeyError {
    /// What the problem says, in English.
    pub fn detail(self) -> &'static str {
        match self {
            Self::Repeated => "Idempotency-Key must be sent at most once",
            Self::Length => "Idempotency-Key must be 1 to 255 characters",
            Self::Characters => {
                "Idempotency-Key must be visible ASCII characters other than '\"', '\\' and ','"
            }
        }
    }
}

/// A key as the client sent it: surrounding whitespace trimmed, optionally wrapped in one
/// pair of double quotes (the draft's RFC 8941 string; a bare UUID, as seed contract 004
/// shows, is accepted too); inside, 1 to 255 bytes, each visible ASCII (0x21–0x7E) other
/// than `"`, `\` and `,`. Those three are refused so that a key has one spelling: an
/// sf-string would escape `"` and `\`, and `,` separates list members in a header.
///
/// ```
/// use edge_contract::idempotency::{parse_key, KeyError};
/// assert_eq!(parse_key(" \"8e03978e-40d5\" "), Ok("8e03978e-40d5"));
/// assert_eq!(parse_key("a\\b"), Err(KeyError::Characters));
/// ```
pub fn parse_key(value: &str) -> Result<&str, KeyError> {
    let value = value.trim();
    let key = value
        .strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(value);
    if key.is_empty() || key.len() > MAX_KEY_LEN {
        return Err(KeyError::Length);
    }
    if !key
        .bytes()
        .all(|b| b.is_ascii_graphic() && !matches!(b, b'"' | b'\\' | b','))
    {
        return Err(KeyError::Characters);
    }
    Ok(key)
}

/// The key from every value of the header the client sent: `None` without one, refused when
/// sent twice.
pub fn key_of<'v>(values: &[&'v str]) -> Result<Option<&'v str>, KeyError> {
    match values {
        [] => Ok(None),
        [one] => parse_key(one).map(Some),
        _ => Err(KeyError::Repeated),
    }
}

/// What a request asks for, as both tiers compare it: a retry with the same key and the same
/// fingerprint is replayed, one with another fingerprint is refused (422).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Fingerprint(pub [u8; 32]);

impl Fingerprint {
    /// Lower-case hex, as the backend stores it.
    pub fn to_hex(&self) -> String {
        self.0.iter().map(|b| format!("{b:02x}")).collect()
    }

    /// The first 16 bytes, as the edge keeps it in its fixed-size entries.
    pub fn prefix(&self) -> [u8; 16] {
        let mut out = [0; 16];
        out.copy_from_slice(&self.0[..16]);
        out
    }
}

/// Written first in the hashed input, so this layout can change without old and new
/// fingerprints ever matching.
const LABEL: &[u8] = b"idempotency-fingerprint/v1";

/// The fingerprint of a request: its method, its path (without the query) and its payload
/// as [`body::decode`] reads it, in one canonical form: object members sorted, no
/// insignificant whitespace. So retries that differ only in JSON whitespace or member order,
/// or that switch between JSON, form and multipart encodings of the same fields, have one
/// fingerprint. A body that does not decode enters as its media type and raw bytes, marked
/// apart so no decoded payload shares its input: the backend refuses such a body before it
/// claims a key, and the edge, which cannot know that, still gets the backend's answer
/// (kept for the same raw retry, refused with 422 for any other).
///
/// ```
/// use edge_contract::idempotency::fingerprint;
/// let json = fingerprint("POST", "/api/v3/workspaces", Some("application/json"), br#"{ "name": "A", "description": "" }"#);
/// let form = fingerprint("POST", "/api/v3/workspaces", Some("application/x-www-form-urlencoded"), b"description=&name=A");
/// assert_eq!(json, form);
/// ```
pub fn fingerprint(
    method: &str,
    path: &str,
    content_type: Option<&str>,
    body: &[u8],
) -> Fingerprint {
    let mut payload = Vec::with_capacity(body.len() + 16);
    match body::decode(content_type, body) {
        Ok(value) => {
            payload.push(b'd');
            canonical(&value, &mut payload);
        }
        Err(_) => {
            let media = content_type.map(body::MediaType::parse);
            payload.push(b'r');
            let essence = media.as_ref().map_or("", |m| m.essence.as_str());
            payload.extend_from_slice(&(essence.len() as u64).to_be_bytes());
            payload.extend_from_slice(essence.as_bytes());
            payload.extend_from_slice(body);
        }
    }
    let mut h = Sha256::new();
    for part in [LABEL, method.as_bytes(), path.as_bytes(), &payload] {
        h.update((part.len() as u64).to_be_bytes());
        h.update(part);
    }
    Fingerprint(h.finalize().into())
}

/// Serializes `value` with object members sorted by key and no whitespace, whatever order
/// serde_json keeps maps in (its `preserve_order` feature may be on in a build).
fn canonical(value: &serde_json::Value, out: &mut Vec<u8>) {
    use serde_json::Value;
    match value {
        Value::Object(map) => {
            let mut members: Vec<_> = map.iter().collect();
            members.sort_unstable_by(|a, b| a.0.cmp(b.0));
            out.push(b'{');
            for (i, (k, v)) in members.into_iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                string(k, out);
                out.push(b':');
                canonical(v, out);
            }
            out.push(b'}');
        }
        Value::Array(items) => {
            out.push(b'[');
            for (i, v) in items.iter().enumerate() {
                if i > 0 {
                    out.push(b',');
                }
                canonical(v, out);
            }
            out.push(b']');
        }
        Value::String(s) => string(s, out),
        scalar => out.extend_from_slice(scalar.to_string().as_bytes()),
    }
}

fn string(s: &str, out: &mut Vec<u8>) {
    // Serializing a string cannot fail.
    out.extend(serde_json::to_vec(s).unwrap_or_default());
}

/// Whether an answer is kept for replay to later retries with the key: a success only. The
/// backend keeps the outcome of the create it ran and nothing else: it refuses a request
/// (4xx) before it claims the key, and releases the key when the create fails (5xx) or
/// another request holds it (409). The edge, which claims before it forwards, keeps what the
/// backend would and releases its claim on any other answer, so a corrected retry is
/// answered afresh through the gateway as it is straight at the backend, and a passing
/// state (a 409, a 429, a 503) is never replayed for the key's lifetime.
pub fn is_replayable(status: u16) -> bool {
    (200..300).contains(&status)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys() {
        let long = "k".repeat(256);
        let max = "k".repeat(255);
        let cases: Vec<(&str, Result<&str, KeyError>)> = vec![
            (
                "8e03978e-40d5-43e8-bc93-6894a57f9324",
                Ok("8e03978e-40d5-43e8-bc93-6894a57f9324"),
            ),
            ("\"8e03978e\"", Ok("8e03978e")),
            ("  k-1\t", Ok("k-1")),
            (" \"k-1\" ", Ok("k-1")),
            (&max, Ok(&max)),
            (
                "!#$%&'()*+-./:;<=>?@[]^_`{|}~",
                Ok("!#$%&'()*+-./:;<=>?@[]^_`{|}~"),
            ),
            ("\"a", Err(KeyError::Characters)),
            ("a\"", Err(KeyError::Characters)),
            ("\"\"a\"\"", Err(KeyError::Characters)),
            ("a\\b", Err(KeyError::Characters)),
            ("\"a\\b\"", Err(KeyError::Characters)),
            ("a,b", Err(KeyError::Characters)),
            ("a b", Err(KeyError::Characters)),
            ("a\tb", Err(KeyError::Characters)),
            ("caf\u{e9}", Err(KeyError::Characters)),
            ("a\u{7f}", Err(KeyError::Characters)),
            ("", Err(KeyError::Length)),
            ("  ", Err(KeyError::Length)),
            ("\"\"", Err(KeyError::Length)),
            (&long, Err(KeyError::Length)),
        ];
        for (value, want) in cases {
            assert_eq!(parse_key(value), want, "{value:?}");
        }
        assert_eq!(key_of(&[]), Ok(None));
        assert_eq!(key_of(&["\"k\""]), Ok(Some("k")));
        assert_eq!(key_of(&["k", "k"]), Err(KeyError::Repeated));
        assert!(KeyError::Characters.detail().contains('\\'));
    }

    const V3: &str = "/api/v3/workspaces";

    fn fp(ct: Option<&str>, body: &str) -> Fingerprint {
        fingerprint("POST", V3, ct, body.as_bytes())
    }

    #[test]
    fn one_payload_in_any_encoding_or_spelling_is_one_fingerprint() {
        let json = Some("application/json");
        let want = fp(json, r#"{"name":"Reading group","description":"x y"}"#);
        let same = [
            (json, r#"{ "description" : "x y", "name": "Reading group" }"#),
            (Some("Application/JSON; charset=utf-8"), "\n{\"name\":\"Reading group\",\n \"description\":\"x\\u0020y\"}"),
            (Some("application/x-www-form-urlencoded"), "name=Reading+group&description=x%20y"),
            (Some("application/x-www-form-urlencoded"), "description=x+y&name=Reading%20group"),
            (
                Some("multipart/form-data; boundary=b"),
                "--b\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nReading group\r\n--b\r\nContent-Disposition: form-data; name=description\r\n\r\nx y\r\n--b--\r\n",
            ),
        ];
        for (ct, body) in same {
            assert_eq!(fp(ct, body), want, "{ct:?} {body}");
        }
        let different = [
            (json, r#"{"name":"Reading group","description":"x  y"}"#),
            (json, r#"{"name":"Reading group"}"#),
            (
                json,
                r#"{"name":"Reading group","description":"x y","extra":null}"#,
            ),
            (json, r#"[{"name":"Reading group","description":"x y"}]"#),
            (
                Some("application/x-www-form-urlencoded"),
                "name=Reading+group&description=x+y&description=x+y",
            ),
            (
                Some("text/plain"),
                r#"{"name":"Reading group","description":"x y"}"#,
            ),
            (None, r#"{"name":"Reading group","description":"x y"}"#),
        ];
        for (ct, body) in different {
            assert_ne!(fp(ct, body), want, "{ct:?} {body}");
        }
        assert_ne!(
            fingerprint(
                "PUT",
                V3,
                json,
                br#"{"name":"Reading group","description":"x y"}"#
            ),
            want
        );
        assert_ne!(
            fingerprint(
                "POST",
                "/api/workspaces",
                json,
                br#"{"name":"Reading group","description":"x y"}"#
            ),
            want
        );
    }

    #[test]
    fn json_values_keep_their_types_and_nesting_is_canonical_too() {
        let json = Some("application/json");
        assert_eq!(
            fp(json, r#"{"a":{"y":1,"x":[true,null]}}"#),
            fp(json, r#"{"a":{"x":[true,null],"y":1}}"#)
        );
        assert_ne!(fp(json, r#"{"a":1}"#), fp(json, r#"{"a":"1"}"#));
        assert_ne!(fp(json, r#"{"a":[1,2]}"#), fp(json, r#"{"a":[2,1]}"#));
        // A form value is a string, so it matches a JSON string, never a number.
        assert_eq!(
            fp(Some("application/x-www-form-urlencoded"), "a=1"),
            fp(json, r#"{"a":"1"}"#)
        );
    }

    #[test]
    fn an_undecodable_body_is_its_raw_bytes_and_media_type() {
        let json = Some("application/json");
        assert_eq!(
            fp(json, "{"),
            fp(Some("application/json; charset=utf-8"), "{")
        );
        assert_ne!(fp(json, "{"), fp(json, "{ "));
        assert_ne!(fp(json, "{"), fp(Some("text/plain"), "{"));
        assert_ne!(fp(None, ""), fp(json, ""));
        // Raw bytes that spell a canonical payload still differ from it.
        assert_ne!(
            fp(Some("text/plain"), r#"{"a":"1"}"#),
            fp(json, r#"{"a":"1"}"#)
        );
        let d = fp(None, "");
        assert_eq!(d.to_hex().len(), 64);
        assert_eq!(d.prefix(), d.0[..16]);
    }

    #[test]
    fn only_successes_are_kept_for_replay() {
        for status in [200, 201, 204] {
            assert!(is_replayable(status), "{status}");
        }
        for status in [302, 400, 403, 404, 409, 413, 415, 422, 429, 500, 503] {
            assert!(!is_replayable(status), "{status}");
        }
    }

    /// Arbitrary inputs, native only (proptest has no wasm32-unknown-unknown support).
    #[cfg(not(target_arch = "wasm32"))]
    mod properties {
        use std::collections::BTreeMap;

        use proptest::prelude::*;

        use super::super::*;
        use crate::testkit::spell;

        fn fields() -> impl Strategy<Value = BTreeMap<String, String>> {
            proptest::collection::btree_map(
                "[a-zA-Z][a-zA-Z0-9_]{0,7}",
                "[ -~\t\r\né日€]{0,24}",
                0..4,
            )
        }

        proptest! {
            #[test]
            fn one_payload_is_one_fingerprint_in_every_spelling(
                fields in fields(),
                a in 0u8..4,
                b in 0u8..4,
            ) {
                let (ct_a, body_a) = spell(&fields, a);
                let (ct_b, body_b) = spell(&fields, b);
                prop_assert_eq!(
                    fingerprint("POST", "/p", Some(ct_a), &body_a),
                    fingerprint("POST", "/p", Some(ct_b), &body_b)
                );
            }

            #[test]
            fn different_payloads_are_different_fingerprints(
                one in fields(),
                other in fields(),
                a in 0u8..4,
                b in 0u8..4,
            ) {
                prop_assume!(one != other);
                let (ct_a, body_a) = spell(&one, a);
                let (ct_b, body_b) = spell(&other, b);
                prop_assert_ne!(
                    fingerprint("POST", "/p", Some(ct_a), &body_a),
                    fingerprint("POST", "/p", Some(ct_b), &body_b)
                );
            }

            /// The rule as the OpenAPI document states it: optional whitespace, an optional
            /// pair of quotes, then `[!#-+--\[\]-~]{1,255}` (0x21-0x7E without `"`, `,`, `\`).
            #[test]
            fn keys_are_exactly_the_documented_pattern(value in "[ \t]?\"?[ -~\t\u{e9}]{0,6}\"?[ \t]?") {
                let trimmed = value.trim_matches([' ', '\t']);
                let inner = trimmed
                    .strip_prefix('"')
                    .and_then(|t| t.strip_suffix('"'))
                    .unwrap_or(trimmed);
                let documented = !inner.is_empty()
                    && inner.len() <= MAX_KEY_LEN
                    && inner.bytes().all(|b| matches!(b, b'!' | b'#'..=b'+' | b'-'..=b'[' | b']'..=b'~'));
                prop_assert_eq!(parse_key(&value).is_ok(), documented, "{:?}", value);
                if documented {
                    prop_assert_eq!(parse_key(&value), Ok(inner));
                }
            }
        }
    }
}
