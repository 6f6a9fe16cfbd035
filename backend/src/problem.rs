//! RFC 9457 problem details: every rejection the service makes, and the one place that
//! turns a rejection into a response.

use serde_json::json;

use crate::http::ApiResponse;
use crate::i18n::{Lang, Text};

/// Every kind of problem, each with a stable `type` URI and status.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// 400: one or more fields are invalid (`errors` lists them).
    ValidationFailed,
    /// 400: the body is not parseable in its declared media type.
    MalformedBody,
    /// 400: the `Idempotency-Key` header is malformed.
    InvalidIdempotencyKey,
    /// 400: a query parameter is invalid.
    InvalidQuery,
    /// 400: v3 needs the caller's company and the identity names none unambiguously.
    CompanyRequired,
    /// 400: a header the service reads has a value it cannot read (not UTF-8 text, or a
    /// `Content-Length` that is not a number).
    InvalidHeader,
    /// 401: no valid gateway identity.
    Unauthenticated,
    /// 403: the caller lacks the permission on this organization.
    Forbidden,
    /// 403: the company does not let standard users create workspaces.
    CreationDisabled,
    /// 404: no such resource (or not visible to the caller).
    NotFound,
    /// 405: the resource exists but not with this method.
    MethodNotAllowed,
    /// 409: a request with this idempotency key is still being processed
    /// (`idempotency-key-in-use`, as at the edge).
    IdempotencyInFlight,
    /// 413: the body exceeds the documented limit.
    PayloadTooLarge,
    /// 415: the body's media type is not accepted here.
    UnsupportedMediaType,
    /// 422: the idempotency key was used before with a different request.
    IdempotencyMismatch,
    /// 500: the component is misconfigured (e.g. no gateway key).
    Internal,
    /// 503: the key-value store failed; nothing was acknowledged.
    StoreUnavailable,
}

impl Kind {
    fn spec(self) -> crate::messages::Spec {
        crate::messages::kind(self)
    }

    /// The HTTP status.
    pub fn status(self) -> u16 {
        self.spec().problem.status
    }

    /// The stable `type` URI.
    pub fn type_uri(self) -> String {
        self.spec().problem.type_uri()
    }
}

/// What a field of the wrong type should have been.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expected {
    /// A JSON string.
    String,
    /// A JSON boolean.
    Boolean,
    /// A JSON object.
    Object,
    /// An array of strings.
    StringArray,
    /// A string or `null`.
    StringOrNull,
    /// A `nextCursor` from an earlier page.
    Cursor,
}

/// Why one field was rejected.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    /// A required field is absent.
    Required,
    /// The field is not part of the contract.
    Unknown,
    /// Wrong JSON type.
    WrongType(Expected),
    /// A number outside `min..=max`.
    OutOfRange(i64, i64),
    /// Empty after trimming.
    Empty,
    /// Longer than the maximum (characters, or items for arrays).
    TooLong(usize),
    /// Not a UUID.
    NotUuid,
    /// Not an IANA time zone.
    NotTimezone,
    /// Not a valid BCP 47 language tag.
    NotLanguageTag,
    /// `defaultLanguage` is not among `supportedLanguages`.
    NotSupportedLanguage,
    /// Not one of the allowed values.
    NotOneOf(&'static [&'static str]),
    /// Not a valid DNS name.
    NotDomain,
    /// The field appears twice (form bodies).
    Duplicate,
    /// Contains control characters (line breaks, NUL, …).
    ControlCharacters,
}

impl Reason {
    fn text(&self) -> (Text, Vec<String>) {
        crate::messages::reason(self)
    }

    /// The reason in `lang`.
    pub fn render(&self, lang: Lang) -> String {
        let (text, args) = self.text();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        text.render(lang, &args)
    }
}

/// One offending field: a JSON pointer (`#/settings/timezone`) and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// JSON pointer as a URI fragment.
    pub pointer: String,
    /// The reason.
    pub reason: Reason,
}

impl FieldError {
    /// A field error at `pointer` (without the leading `#`).
    pub fn new(pointer: &str, reason: Reason) -> Self {
        Self {
            pointer: format!("#{pointer}"),
            reason,
        }
    }
}

/// A rejection, ready to be rendered in the caller's language.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// What went wrong.
    pub kind: Kind,
    /// Values for the detail's placeholders.
    pub args: Vec<String>,
    /// The offending fields, for validation failures.
    pub errors: Vec<FieldError>,
    /// Extra response headers (`Allow`, `Retry-After`).
    pub headers: Vec<(String, String)>,
    /// What the operators should know (logged with the request ID, never sent).
    pub cause: Option<String>,
}

impl Problem {
    /// A problem of `kind` with no arguments.
    pub fn new(kind: Kind) -> Self {
        Self {
            kind,
            args: vec![],
            errors: vec![],
            headers: vec![],
            cause: None,
        }
    }

    /// A problem whose detail mentions `arg`.
    pub fn with_arg(kind: Kind, arg: impl Into<String>) -> Self {
        Self {
            args: vec![arg.into()],
            ..Self::new(kind)
        }
    }

    /// A 400 listing the offending fields.
    pub fn invalid(kind: Kind, errors: Vec<FieldError>) -> Self {
        Self {
            errors,
            ..Self::new(kind)
        }
    }

    /// Adds a response header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The response: `application/problem+json` in `lang`, with `Content-Language`.
    pub fn to_response(&self, lang: Lang, instance: &str, request_id: &str) -> ApiResponse {
        let spec = self.kind.spec();
        let args: Vec<&str> = self.args.iter().map(String::as_str).collect();
        let mut body = json!({
            "type": self.kind.type_uri(),
            "title": spec.title.render(lang, &[]),
            "status": spec.problem.status,
            "detail": spec.detail.render(lang, &args),
            "instance": instance,
            "requestId": request_id,
        });
        if !self.errors.is_empty() {
            body["errors"] = self
                .errors
                .iter()
                .map(|e| json!({"pointer": e.pointer, "detail": e.reason.render(lang)}))
                .collect();
        }
        let mut response = ApiResponse {
            status: spec.problem.status,
            headers: vec![
                (
                    "content-type".into(),
                    edge_contract::problem::CONTENT_TYPE.into(),
                ),
                ("content-language".into(), lang.tag().into()),
            ],
            body: serde_json::to_vec(&body).unwrap_or_default(),
        };
        response.headers.extend(self.headers.iter().cloned());
        response
    }
}

impl From<crate::store::StoreError> for Problem {
    fn from(e: crate::store::StoreError) -> Self {
        Problem {
            cause: Some(e.to_string()),
            ..Problem::new(Kind::StoreUnavailable)
                .with_header(edge_contract::headers::RETRY_AFTER, "1")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_rfc9457_with_errors_in_the_callers_language() {
        let p = Problem::invalid(
            Kind::ValidationFailed,
            vec![FieldError::new("/settings/timezone", Reason::NotTimezone)],
        );
        let r = p.to_response(Lang::Fr, "/api/workspaces", "rid");
        assert_eq!(r.status, 400);
        assert_eq!(r.header("content-type"), Some("application/problem+json"));
        assert_eq!(r.header("content-language"), Some("fr"));
        let b = r.json_body();
        assert_eq!(b["type"], "urn:workspace-api:problem:validation-failed");
        assert_eq!(b["title"], "Requête invalide");
        assert_eq!(b["requestId"], "rid");
        assert_eq!(b["errors"][0]["pointer"], "#/settings/timezone");
        assert!(b["errors"][0]["detail"]
            .as_str()
            .unwrap()
            .starts_with("Doit être un fuseau"));
    }

    #[test]
    fn field_reasons_are_localized_too() {
        assert_eq!(
            Reason::WrongType(Expected::Boolean).render(Lang::Es),
            "Debe ser un booleano."
        );
        assert_eq!(
            Reason::OutOfRange(1, 100).render(Lang::Fr),
            "Doit être un nombre de 1 à 100."
        );
        assert_eq!(
            Reason::NotOneOf(&["a", "b"]).render(Lang::En),
            "Must be one of: a, b."
        );
    }

    #[test]
    fn every_kind_has_a_distinct_type_and_no_errors_member_unless_listed() {
        use Kind::*;
        let all = [
            ValidationFailed,
            MalformedBody,
            InvalidIdempotencyKey,
            InvalidQuery,
            CompanyRequired,
            InvalidHeader,
            Unauthenticated,
            Forbidden,
            CreationDisabled,
            NotFound,
            MethodNotAllowed,
            IdempotencyInFlight,
            PayloadTooLarge,
            UnsupportedMediaType,
            IdempotencyMismatch,
            Internal,
            StoreUnavailable,
        ];
        let types: std::collections::BTreeSet<_> = all.iter().map(|k| k.type_uri()).collect();
        assert_eq!(types.len(), all.len());
        for kind in all {
            for lang in [Lang::En, Lang::Es, Lang::Fr] {
                let b = Problem::with_arg(kind, "x")
                    .to_response(lang, "/", "r")
                    .json_body();
                assert!(b.get("errors").is_none());
                assert_eq!(b["status"], kind.status());
                assert!(!b["detail"].as_str().unwrap().contains("{}"));
            }
        }
    }
}
