//! Request bodies as both tiers read them: the media type, and the three encodings a body
//! may come in (`application/json`, `application/x-www-form-urlencoded`,
//! `multipart/form-data`), each decoded into one JSON value.
//!
//! The backend reads its payloads with [`decode`] and the idempotency fingerprint
//! ([`crate::idempotency::fingerprint`]) hashes what [`decode`] returns, at the edge and
//! at the backend alike: one parser, so no body means one thing to one tier and another to
//! the other.
//!
//! `multipart/form-data` is parsed here rather than with `multer`: that crate is async
//! (streams, an executor) and pulls `encoding_rs` in, while the API takes a few short text
//! fields from bodies capped at 64 KiB, and this crate must build for every wasm target
//! without a host. The parser follows RFC 7578/RFC 2046 and is tested below, including on
//! the bodies `curl -F` produces.

use serde_json::{Map, Value};

/// `application/json`.
pub const JSON: &str = "application/json";
/// `application/x-www-form-urlencoded`.
pub const FORM: &str = "application/x-www-form-urlencoded";
/// `multipart/form-data`.
pub const MULTIPART: &str = "multipart/form-data";

/// A `Content-Type` value, read leniently: the essence (`type/subtype`) lower-cased, and
/// the parameters with their names lower-cased and one pair of quotes removed from values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MediaType {
    /// `type/subtype`, lower case, e.g. `multipart/form-data`.
    pub essence: String,
    /// `(name, value)` in order, e.g. `("boundary", "XyZ")`.
    pub params: Vec<(String, String)>,
}

impl MediaType {
    /// Reads a `Content-Type` header value.
    pub fn parse(value: &str) -> Self {
        let mut parts = value.split(';');
        let essence = parts.next().unwrap_or("").trim().to_ascii_lowercase();
        let params = parts
            .filter_map(|p| {
                let (k, v) = p.split_once('=')?;
                Some((k.trim().to_ascii_lowercase(), unquote(v.trim()).to_owned()))
            })
            .collect();
        Self { essence, params }
    }

    /// The value of parameter `name` (lower case).
    pub fn param(&self, name: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

fn unquote(v: &str) -> &str {
    v.strip_prefix('"')
        .and_then(|v| v.strip_suffix('"'))
        .unwrap_or(v)
}

/// Why a body could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DecodeError {
    /// No `Content-Type`, or one that is none of [`JSON`], [`FORM`], [`MULTIPART`].
    Unsupported,
    /// Not parseable as its media type, which this names ([`JSON`] is named `"JSON"`).
    Malformed(&'static str),
    /// Form or multipart fields sent more than once: each repetition's name, in order. A
    /// field sent twice is refused rather than one of its values silently dropped.
    Duplicate(Vec<String>),
}

/// The body as one JSON value: a JSON body as parsed; form and multipart bodies as an object
/// of their fields, every value a string. So `{"name":"A"}`, `name=A` and a multipart body
/// with a part `name` holding `A` decode to the same value.
pub fn decode(content_type: Option<&str>, body: &[u8]) -> Result<Value, DecodeError> {
    let media = MediaType::parse(content_type.ok_or(DecodeError::Unsupported)?);
    let pairs = match media.essence.as_str() {
        JSON => return serde_json::from_slice(body).map_err(|_| DecodeError::Malformed("JSON")),
        FORM => {
            std::str::from_utf8(body).map_err(|_| DecodeError::Malformed(FORM))?;
            form_urlencoded::parse(body).into_owned().collect()
        }
        MULTIPART => multipart(body, media.param("boundary").unwrap_or(""))
            .map_err(|_| DecodeError::Malformed(MULTIPART))?,
        _ => return Err(DecodeError::Unsupported),
    };
    let mut fields = Map::new();
    let mut repeated = Vec::new();
    for (name, value) in pairs {
        if fields.insert(name.clone(), Value::String(value)).is_some() {
            repeated.push(name);
        }
    }
    if repeated.is_empty() {
        Ok(Value::Object(fields))
    } else {
        Err(DecodeError::Duplicate(repeated))
    }
}

/// Why a multipart body was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MultipartError(pub &'static str);

/// The text fields of a `multipart/form-data` body. File parts (with a `filename`) and parts
/// of another type than `text/plain` are refused.
pub fn multipart(body: &[u8], boundary: &str) -> Result<Vec<(String, String)>, MultipartError> {
    if boundary.is_empty() || boundary.len() > 70 {
        return Err(MultipartError("bad boundary"));
    }
    let delimiter = format!("--{boundary}");
    let text = std::str::from_utf8(body).map_err(|_| MultipartError("not UTF-8"))?;
    // The first delimiter may start the body; later ones always follow a CRLF.
    let start = if text.starts_with(&delimiter) {
        delimiter.len()
    } else {
        text.find(&format!("\r\n{delimiter}"))
            .ok_or(MultipartError("no delimiter"))?
            + 2
            + delimiter.len()
    };
    let mut rest = text.get(start..).unwrap_or("");
    let separator = format!("\r\n{delimiter}");
    let mut fields = Vec::new();
    loop {
        if rest.starts_with("--") {
            return Ok(fields);
        }
        // Transport padding, then the CRLF that ends the delimiter line.
        let (padding, after) = rest
            .split_once("\r\n")
            .ok_or(MultipartError("unterminated delimiter"))?;
        if !padding.trim_matches([' ', '\t']).is_empty() {
            return Err(MultipartError("garbage after delimiter"));
        }
        let (part, after) = after
            .split_once(separator.as_str())
            .ok_or(MultipartError("no closing delimiter"))?;
        rest = after;
        let (head, content) = part
            .split_once("\r\n\r\n")
            .ok_or(MultipartError("part without headers"))?;
        let name = part_name(head)?.ok_or(MultipartError("part without a name"))?;
        fields.push((name, content.to_owned()));
    }
}

/// The field name a part's headers give it; refuses what is not a text form field.
fn part_name(head: &str) -> Result<Option<String>, MultipartError> {
    let mut name = None;
    for line in head.split("\r\n") {
        let (header, value) = line
            .split_once(':')
            .ok_or(MultipartError("bad part header"))?;
        match header.trim().to_ascii_lowercase().as_str() {
            "content-disposition" => {
                let mut params = value.split(';');
                if !params
                    .next()
                    .unwrap_or("")
                    .trim()
                    .eq_ignore_ascii_case("form-data")
                {
                    return Err(MultipartError("not form-data"));
                }
                for param in params {
                    let (k, v) = param
                        .split_once('=')
                        .ok_or(MultipartError("bad disposition"))?;
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => name = Some(unquote(v.trim()).replace("%22", "\"")),
                        "filename" | "filename*" => {
                            return Err(MultipartError("file parts are not accepted"))
                        }
                        _ => {}
                    }
                }
            }
            "content-type" if MediaType::parse(value).essence != "text/plain" => {
                return Err(MultipartError("only text parts are accepted"));
            }
            _ => {}
        }
    }
    Ok(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CURL: &str = "--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nEngineering Team Workspace\r\n--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nline one\r\nline two\r\n--------------------------d74496d66958873e--\r\n";

    #[test]
    fn parses_what_curl_sends() {
        let got = multipart(CURL.as_bytes(), "------------------------d74496d66958873e").unwrap();
        assert_eq!(
            got,
            vec![
                ("name".into(), "Engineering Team Workspace".into()),
                ("description".into(), "line one\r\nline two".into())
            ]
        );
    }

    #[test]
    fn accepts_preamble_empty_values_and_text_parts() {
        let body = "preamble\r\n--b\r\ncontent-disposition: form-data; name=description\r\nContent-Type: text/plain; charset=utf-8\r\n\r\n\r\n--b--";
        assert_eq!(
            multipart(body.as_bytes(), "b").unwrap(),
            vec![("description".into(), String::new())]
        );
    }

    #[test]
    fn refuses_malformed_bodies_and_files() {
        let cases = [
            ("--b\r\nContent-Disposition: form-data; name=\"a\"\r\n\r\nx", "b"),
            ("--b\r\nContent-Disposition: form-data; name=\"a\"; filename=\"f.txt\"\r\n\r\nx\r\n--b--", "b"),
            ("--b\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n--b--", "b"),
            ("--b\r\nContent-Disposition: form-data\r\n\r\nx\r\n--b--", "b"),
            ("--b\r\nContent-Type: application/octet-stream\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--", "b"),
            ("--b  x\r\nContent-Disposition: form-data; name=a\r\n\r\nx\r\n--b--", "b"),
            ("--b\r\nno colon\r\n\r\nx\r\n--b--", "b"),
            ("no delimiter", "b"),
            ("--b\r\n\r\n--b--", ""),
        ];
        for (body, boundary) in cases {
            assert!(multipart(body.as_bytes(), boundary).is_err(), "{body:?}");
        }
        assert_eq!(
            multipart(b"--b\r\n\xff\r\n\r\nx\r\n--b--", "b"),
            Err(MultipartError("not UTF-8"))
        );
    }

    #[test]
    fn media_types_are_read_leniently() {
        let m = MediaType::parse(" Multipart/Form-Data ; Boundary=\"a b\"; charset=utf-8");
        assert_eq!(m.essence, MULTIPART);
        assert_eq!(m.param("boundary"), Some("a b"));
        assert_eq!(m.param("charset"), Some("utf-8"));
        assert_eq!(m.param("x"), None);
        assert_eq!(MediaType::parse("").essence, "");
    }

    #[test]
    fn the_three_encodings_of_the_same_fields_decode_alike() {
        let want =
            json!({"name": "Engineering Team Workspace", "description": "line one\r\nline two"});
        let cases = [
            (
                "application/json; charset=utf-8",
                r#"{"description":"line one\r\nline two","name":"Engineering Team Workspace"}"#,
            ),
            (
                "application/x-www-form-urlencoded",
                "name=Engineering+Team+Workspace&description=line%20one%0D%0Aline%20two",
            ),
            (
                "multipart/form-data; boundary=------------------------d74496d66958873e",
                CURL,
            ),
        ];
        for (ct, body) in cases {
            assert_eq!(decode(Some(ct), body.as_bytes()), Ok(want.clone()), "{ct}");
        }
    }

    #[test]
    fn what_does_not_decode_says_why() {
        let cases: [(Option<&str>, &[u8], DecodeError); 7] = [
            (None, b"{}", DecodeError::Unsupported),
            (Some("text/plain"), b"x", DecodeError::Unsupported),
            (Some("application/xml"), b"<x/>", DecodeError::Unsupported),
            (Some(JSON), b"{", DecodeError::Malformed("JSON")),
            (Some(FORM), b"name=\xff", DecodeError::Malformed(FORM)),
            (
                Some("multipart/form-data"),
                b"--b--",
                DecodeError::Malformed(MULTIPART),
            ),
            (
                Some(FORM),
                b"name=a&name=b&x=1&name=c",
                DecodeError::Duplicate(vec!["name".into(), "name".into()]),
            ),
        ];
        for (ct, body, want) in cases {
            assert_eq!(decode(ct, body), Err(want), "{ct:?}");
        }
        assert_eq!(decode(Some(JSON), b" [1, 2] "), Ok(json!([1, 2])));
        assert_eq!(decode(Some(FORM), b""), Ok(json!({})));
    }
}
