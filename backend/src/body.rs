//! Request bodies: media-type checks and the three encodings `POST /api/v3/workspaces`
//! accepts, all reduced to one JSON object of fields.
//!
//! `multipart/form-data` is parsed here rather than with `multer`: that crate is async
//! (streams, an executor) and pulls `encoding_rs` into the component, while this endpoint
//! takes two short text fields from a body already capped at `MAX_BODY_BYTES`. The parser
//! follows RFC 7578/RFC 2046 and is tested below, including against the bodies `curl -F`
//! produces.

use serde_json::{Map, Value};

use crate::http::ApiRequest;
use crate::problem::{Expected, FieldError, Kind, Problem, Reason};

/// Media types the JSON endpoints accept.
pub const JSON_ONLY: &str = "application/json";
/// Media types `POST /api/v3/workspaces` accepts.
pub const V3_TYPES: &str =
    "application/json, application/x-www-form-urlencoded, multipart/form-data";

/// The lower-case essence (`type/subtype`) of the request's `Content-Type`, and its parameters.
fn media_type(req: &ApiRequest) -> Option<(String, Vec<(String, String)>)> {
    let value = req.header("content-type")?;
    let mut parts = value.split(';');
    let essence = parts.next()?.trim().to_ascii_lowercase();
    let params = parts
        .filter_map(|p| {
            let (k, v) = p.split_once('=')?;
            let v = v.trim();
            let v = v
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(v);
            Some((k.trim().to_ascii_lowercase(), v.to_owned()))
        })
        .collect();
    Some((essence, params))
}

/// The body as JSON, or 415 when it is declared as something else, or 400 when unparseable.
pub fn json(req: &ApiRequest) -> Result<Value, Problem> {
    match media_type(req) {
        Some((essence, _)) if essence == "application/json" => parse_json(&req.body),
        _ => Err(Problem::with_arg(Kind::UnsupportedMediaType, JSON_ONLY)),
    }
}

fn parse_json(body: &[u8]) -> Result<Value, Problem> {
    serde_json::from_slice(body).map_err(|_| Problem::with_arg(Kind::MalformedBody, "JSON"))
}

/// The fields of a v3 body, whatever its encoding, as one JSON object. Form and multipart
/// values are strings; a field sent twice is reported rather than silently overwritten.
pub fn v3_fields(req: &ApiRequest) -> Result<Map<String, Value>, Problem> {
    let (essence, params) =
        media_type(req).ok_or_else(|| Problem::with_arg(Kind::UnsupportedMediaType, V3_TYPES))?;
    let pairs = match essence.as_str() {
        "application/json" => {
            return match parse_json(&req.body)? {
                Value::Object(map) => Ok(map),
                _ => Err(Problem::invalid(
                    Kind::ValidationFailed,
                    vec![FieldError::new("", Reason::WrongType(Expected::Object))],
                )),
            }
        }
        "application/x-www-form-urlencoded" => {
            let text = std::str::from_utf8(&req.body).map_err(|_| {
                Problem::with_arg(Kind::MalformedBody, "application/x-www-form-urlencoded")
            })?;
            form_urlencoded::parse(text.as_bytes())
                .into_owned()
                .collect()
        }
        "multipart/form-data" => {
            let boundary = params
                .iter()
                .find(|(k, _)| k == "boundary")
                .map(|(_, v)| v.as_str())
                .unwrap_or("");
            multipart(&req.body, boundary)
                .map_err(|_| Problem::with_arg(Kind::MalformedBody, "multipart/form-data"))?
        }
        _ => return Err(Problem::with_arg(Kind::UnsupportedMediaType, V3_TYPES)),
    };
    let mut map = Map::new();
    let mut errors = Vec::new();
    for (name, value) in pairs {
        if map.insert(name.clone(), Value::String(value)).is_some() {
            errors.push(FieldError::new(&format!("/{name}"), Reason::Duplicate));
        }
    }
    if errors.is_empty() {
        Ok(map)
    } else {
        Err(Problem::invalid(Kind::ValidationFailed, errors))
    }
}

/// Why a multipart body was refused.
#[derive(Debug, PartialEq, Eq)]
pub struct MultipartError(&'static str);

/// The text fields of a `multipart/form-data` body. File parts (with a `filename`) are refused.
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
    let mut rest = &text[start..];
    let separator = format!("\r\n{delimiter}");
    let mut fields = Vec::new();
    loop {
        if rest.starts_with("--") {
            return Ok(fields);
        }
        // Transport padding, then the CRLF that ends the delimiter line.
        let line_end = rest
            .find("\r\n")
            .ok_or(MultipartError("unterminated delimiter"))?;
        if !rest[..line_end].trim_matches([' ', '\t']).is_empty() {
            return Err(MultipartError("garbage after delimiter"));
        }
        rest = &rest[line_end + 2..];
        let end = rest
            .find(&separator)
            .ok_or(MultipartError("no closing delimiter"))?;
        let part = &rest[..end];
        rest = &rest[end + separator.len()..];
        let (head, content) = part
            .split_once("\r\n\r\n")
            .ok_or(MultipartError("part without headers"))?;
        let mut name = None;
        for line in head.split("\r\n") {
            let (header, value) = line
                .split_once(':')
                .ok_or(MultipartError("bad part header"))?;
            let header = header.trim().to_ascii_lowercase();
            if header == "content-disposition" {
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
                    let v = v.trim();
                    let v = v
                        .strip_prefix('"')
                        .and_then(|v| v.strip_suffix('"'))
                        .unwrap_or(v);
                    match k.trim().to_ascii_lowercase().as_str() {
                        "name" => name = Some(v.replace("%22", "\"")),
                        "filename" | "filename*" => {
                            return Err(MultipartError("file parts are not accepted"))
                        }
                        _ => {}
                    }
                }
            } else if header == "content-type" {
                let essence = value
                    .split(';')
                    .next()
                    .unwrap_or("")
                    .trim()
                    .to_ascii_lowercase();
                if essence != "text/plain" {
                    return Err(MultipartError("only text parts are accepted"));
                }
            }
        }
        fields.push((
            name.ok_or(MultipartError("part without a name"))?,
            content.to_owned(),
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_what_curl_sends() {
        let body = "--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name=\"name\"\r\n\r\nEngineering Team Workspace\r\n--------------------------d74496d66958873e\r\nContent-Disposition: form-data; name=\"description\"\r\n\r\nline one\r\nline two\r\n--------------------------d74496d66958873e--\r\n";
        let got = multipart(body.as_bytes(), "------------------------d74496d66958873e").unwrap();
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
            ("no delimiter", "b"),
            ("--b\r\n\r\n--b--", ""),
        ];
        for (body, boundary) in cases {
            assert!(multipart(body.as_bytes(), boundary).is_err(), "{body:?}");
        }
    }

    #[test]
    fn media_types_are_checked() {
        let form = ApiRequest::new("POST", "/")
            .with_header("content-type", "application/x-www-form-urlencoded")
            .with_body("name=A%20B&description=x");
        let fields = v3_fields(&form).unwrap();
        assert_eq!(fields["name"], "A B");
        let dup = form.clone().with_body("name=a&name=b");
        assert_eq!(
            v3_fields(&dup).unwrap_err().errors[0].reason,
            Reason::Duplicate
        );
        let xml = ApiRequest::new("POST", "/").with_header("content-type", "application/xml");
        assert_eq!(
            v3_fields(&xml).unwrap_err().kind,
            Kind::UnsupportedMediaType
        );
        assert_eq!(
            json(&ApiRequest::new("POST", "/")).unwrap_err().kind,
            Kind::UnsupportedMediaType
        );
        let bad = ApiRequest::new("POST", "/")
            .with_header("content-type", "application/json; charset=utf-8")
            .with_body("{");
        assert_eq!(json(&bad).unwrap_err().kind, Kind::MalformedBody);
    }
}
