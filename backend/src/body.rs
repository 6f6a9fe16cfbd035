//! Request bodies: media-type checks, and the problem for a body that does not decode. The
//! decoding itself is the contract's ([`edge_contract::body`]), the same parser the
//! idempotency fingerprint reads bodies with at both tiers.

use edge_contract::body::{decode, DecodeError, MediaType, JSON};
use edge_contract::headers::CONTENT_TYPE;
use serde_json::{Map, Value};

use crate::http::ApiRequest;
use crate::problem::{Expected, FieldError, Kind, Problem, Reason};

/// Media types the JSON endpoints accept.
pub const JSON_ONLY: &str = JSON;
/// Media types `POST /api/v3/workspaces` accepts.
pub const V3_TYPES: &str =
    "application/json, application/x-www-form-urlencoded, multipart/form-data";

/// The body as JSON, or 415 when it is declared as something else, or 400 when unparseable.
pub fn json(req: &ApiRequest) -> Result<Value, Problem> {
    let content_type = req.header(CONTENT_TYPE);
    if content_type
        .map(|ct| MediaType::parse(ct).essence)
        .as_deref()
        != Some(JSON)
    {
        return Err(Problem::with_arg(Kind::UnsupportedMediaType, JSON_ONLY));
    }
    decode(content_type, &req.body).map_err(|e| refused(e, JSON_ONLY))
}

/// The fields of a v3 body, whatever its encoding, as one JSON object. Form and multipart
/// values are strings; a field sent twice is reported rather than silently overwritten.
pub fn v3_fields(req: &ApiRequest) -> Result<Map<String, Value>, Problem> {
    match decode(req.header(CONTENT_TYPE), &req.body).map_err(|e| refused(e, V3_TYPES))? {
        Value::Object(map) => Ok(map),
        _ => Err(Problem::invalid(
            Kind::ValidationFailed,
            vec![FieldError::new("", Reason::WrongType(Expected::Object))],
        )),
    }
}

/// The problem for a body that does not decode; `accepted` lists the media types of the
/// endpoint, for a 415.
fn refused(e: DecodeError, accepted: &str) -> Problem {
    match e {
        DecodeError::Unsupported => Problem::with_arg(Kind::UnsupportedMediaType, accepted),
        DecodeError::Malformed(media) => Problem::with_arg(Kind::MalformedBody, media),
        DecodeError::Duplicate(names) => Problem::invalid(
            Kind::ValidationFailed,
            names
                .iter()
                .map(|name| FieldError::new(&format!("/{name}"), Reason::Duplicate))
                .collect(),
        ),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(
            json(&form).unwrap_err().args,
            vec![JSON_ONLY.to_owned()],
            "a form body on a JSON endpoint is 415"
        );
        let bad = ApiRequest::new("POST", "/")
            .with_header("content-type", "application/json; charset=utf-8")
            .with_body("{");
        assert_eq!(json(&bad).unwrap_err().kind, Kind::MalformedBody);
        let list = ApiRequest::new("POST", "/")
            .with_header("content-type", "application/json")
            .with_body("[]");
        assert_eq!(
            v3_fields(&list).unwrap_err().errors[0].reason,
            Reason::WrongType(Expected::Object)
        );
        let multipart = ApiRequest::new("POST", "/")
            .with_header("content-type", "multipart/form-data; boundary=b")
            .with_body(
                "--b\r\nContent-Disposition: form-data; name=a; filename=f\r\n\r\nx\r\n--b--",
            );
        assert_eq!(
            v3_fields(&multipart).unwrap_err().args,
            vec!["multipart/form-data".to_owned()]
        );
    }
}
