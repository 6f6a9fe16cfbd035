//! Header maps as Envoy hands them to a proxy-wasm module, decided on as bytes.
//!
//! A header value is whatever the client sent: HTTP/1.1 and HTTP/2 both allow bytes
//! 0x80-0xFF in values (RFC 9110 §5.5 `obs-text`), so nothing here assumes UTF-8. The
//! proxy-wasm SDK's `String` helpers panic on such a byte and take the whole VM down; the
//! adapter reads the serialized map instead and [`decode`] parses it with every length
//! checked, so a malformed map is refused, never a panic or an out-of-range slice.

use edge_contract::headers::{ACCEPT_LANGUAGE, CONTENT_TYPE, IDEMPOTENCY_KEY, REQUEST_ID};

/// The request headers the gateway or the backend interpret. A value of one of these that is
/// not ASCII text is refused at the edge (400, or 401 for `authorization`), so no tier
/// reads it differently; every other header passes untouched, whatever its bytes. (The
/// backend also reads `content-length`, which Envoy has already checked.)
pub const INTERPRETED: [&str; 5] = [
    REQUEST_ID,
    "authorization",
    IDEMPOTENCY_KEY,
    CONTENT_TYPE,
    ACCEPT_LANGUAGE,
];

/// One header: name and value as bytes.
pub type Pair<'a> = (&'a [u8], &'a [u8]);

/// Parses proxy-wasm's serialized header map: a little-endian `u32` count, then per pair
/// two `u32` lengths (name, value), then the names and values, each followed by a NUL.
/// `None` when the buffer is not in that form.
pub fn decode(buf: &[u8]) -> Option<Vec<Pair<'_>>> {
    if buf.is_empty() {
        return Some(Vec::new());
    }
    let count = usize::try_from(read_u32(buf, 0)?).ok()?;
    // Each pair takes at least 8 bytes of sizes and 2 NULs: bound the count before
    // allocating for it.
    let sizes_end = count.checked_mul(8)?.checked_add(4)?;
    if sizes_end > buf.len() || count.checked_mul(10)? > buf.len() {
        return None;
    }
    let mut pairs = Vec::with_capacity(count);
    let mut at = sizes_end;
    for n in 0..count {
        let sizes = 4 + n * 8;
        let name_len = usize::try_from(read_u32(buf, sizes)?).ok()?;
        let value_len = usize::try_from(read_u32(buf, sizes + 4)?).ok()?;
        let name = buf.get(at..at.checked_add(name_len)?)?;
        at = at.checked_add(name_len)?.checked_add(1)?;
        let value = buf.get(at..at.checked_add(value_len)?)?;
        at = at.checked_add(value_len)?.checked_add(1)?;
        pairs.push((name, value));
    }
    (at <= buf.len()).then_some(pairs)
}

/// Serializes pairs in the form [`decode`] reads (and the host's `send_local_response` and
/// `http_call` take).
pub fn encode<N: AsRef<[u8]>, V: AsRef<[u8]>>(pairs: &[(N, V)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(n, v)| n.as_ref().len() + v.as_ref().len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    out.extend_from_slice(&len32(pairs.len()).to_le_bytes());
    for (n, v) in pairs {
        out.extend_from_slice(&len32(n.as_ref().len()).to_le_bytes());
        out.extend_from_slice(&len32(v.as_ref().len()).to_le_bytes());
    }
    for (n, v) in pairs {
        out.extend_from_slice(n.as_ref());
        out.push(0);
        out.extend_from_slice(v.as_ref());
        out.push(0);
    }
    out
}

fn len32(n: usize) -> u32 {
    // Header maps are bounded by Envoy's header limits (at most 8 MiB), far below 4 GiB.
    u32::try_from(n).unwrap_or(u32::MAX)
}

fn read_u32(buf: &[u8], at: usize) -> Option<u32> {
    let bytes: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
    Some(u32::from_le_bytes(bytes))
}

/// Every value of header `name` (ASCII case-insensitive), in order.
pub fn values<'h>(headers: &[Pair<'h>], name: &str) -> Vec<&'h [u8]> {
    headers
        .iter()
        .filter(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
        .collect()
}

/// The first value of header `name`.
pub fn first<'h>(headers: &[Pair<'h>], name: &str) -> Option<&'h [u8]> {
    headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case(name.as_bytes()))
        .map(|(_, v)| *v)
}

/// A header value the gateway interprets, as text: visible ASCII, spaces and tabs only
/// (RFC 9110 §5.5 without `obs-text`), so the filter and the backend cannot read one value
/// two ways. `None` for anything else.
pub fn ascii_text(value: &[u8]) -> Option<&str> {
    value
        .iter()
        .all(|b| matches!(b, 0x20..=0x7e | b'\t'))
        .then(|| std::str::from_utf8(value).ok())
        .flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_any_bytes() {
        let pairs: Vec<(&[u8], &[u8])> = vec![
            (b":method", b"POST"),
            (b"x-note", b"caf\xe9"),
            (b"", b""),
            (b"x-nul", b"a\0b"),
        ];
        let wire = encode(&pairs);
        assert_eq!(decode(&wire), Some(pairs));
        assert_eq!(decode(&[]), Some(vec![]));
    }

    #[test]
    fn refuses_malformed_maps() {
        let wire = encode(&[(b"a".as_slice(), b"bc".as_slice())]);
        for cut in 1..wire.len() {
            assert_eq!(decode(&wire[..cut]), None, "cut at {cut}");
        }
        // A count far larger than the buffer could hold.
        assert_eq!(decode(&u32::MAX.to_le_bytes()), None);
        let mut huge = encode(&[(b"a".as_slice(), b"b".as_slice())]);
        huge[4..8].copy_from_slice(&u32::MAX.to_le_bytes());
        assert_eq!(decode(&huge), None);
    }

    #[test]
    fn interpreted_values_must_be_ascii_text() {
        assert_eq!(ascii_text(b"Bearer abc"), Some("Bearer abc"));
        assert_eq!(ascii_text(b"a\tb"), Some("a\tb"));
        assert_eq!(ascii_text(b"caf\xc3\xa9"), None);
        assert_eq!(ascii_text(b"caf\xe9"), None);
        assert_eq!(ascii_text(b"a\x7fb"), None);
        assert_eq!(ascii_text(b"a\rb"), None);
    }

    #[test]
    fn names_match_case_insensitively() {
        let h: Vec<Pair<'_>> = vec![(b"X-A", b"1"), (b"x-a", b"2"), (b"x-b", b"3")];
        assert_eq!(values(&h, "x-a"), vec![b"1".as_slice(), b"2".as_slice()]);
        assert_eq!(first(&h, "X-B"), Some(b"3".as_slice()));
        assert_eq!(first(&h, "x-c"), None);
    }
}
