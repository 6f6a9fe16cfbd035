//! RFC 9457 problem details: the one place a rejection becomes a response. The types and
//! their statuses are the contract's catalogue ([`edge_contract::problem`]), shared with
//! the backend; the titles and details here are the edge's.

use edge_contract::headers::{REQUEST_ID, RETRY_AFTER};
use edge_contract::problem::ProblemType;
use serde::Serialize;

pub use edge_contract::problem::CONTENT_TYPE;

/// A local reply the filter sends instead of forwarding the request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    /// HTTP status.
    pub status: u16,
    /// Headers, `x-request-id` included.
    pub headers: Vec<(String, String)>,
    /// Body bytes.
    pub body: Vec<u8>,
    /// Stats reason (`jwt_expired`, `rate_limited`...), also logged.
    pub reason: &'static str,
}

/// One field-level validation error.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FieldError {
    /// JSON pointer in URI fragment form, e.g. `#/orgId`.
    pub pointer: String,
    /// What is wrong.
    pub detail: String,
}

/// A problem about to be rendered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    /// The type and its status.
    pub kind: ProblemType,
    /// Short human summary, the same for every occurrence of this type.
    pub title: &'static str,
    /// This occurrence.
    pub detail: String,
    /// Stats reason.
    pub reason: &'static str,
    /// Validation errors, if any.
    pub errors: Vec<FieldError>,
    /// Extra response headers (`WWW-Authenticate`, `Retry-After`...).
    pub headers: Vec<(String, String)>,
}

#[derive(Serialize)]
#[serde(rename_all = "camelCase")]
struct Body<'a> {
    #[serde(rename = "type")]
    kind: String,
    title: &'a str,
    status: u16,
    detail: &'a str,
    instance: &'a str,
    request_id: &'a str,
    #[serde(skip_serializing_if = "<[_]>::is_empty")]
    errors: &'a [FieldError],
}

impl Problem {
    /// A problem without field errors or extra headers.
    pub fn new(
        kind: ProblemType,
        title: &'static str,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            kind,
            title,
            detail: detail.into(),
            reason,
            errors: Vec::new(),
            headers: Vec::new(),
        }
    }

    /// Adds a response header.
    pub fn with_header(mut self, name: &str, value: impl Into<String>) -> Self {
        self.headers.push((name.to_owned(), value.into()));
        self
    }

    /// Adds a field error.
    pub fn with_error(mut self, pointer: impl Into<String>, detail: impl Into<String>) -> Self {
        self.errors.push(FieldError {
            pointer: pointer.into(),
            detail: detail.into(),
        });
        self
    }

    /// Renders for the request at `instance` (its path, without query) with `request_id`.
    pub fn render(self, instance: &str, request_id: &str) -> Reply {
        let body = Body {
            kind: self.kind.type_uri(),
            title: self.title,
            status: self.kind.status,
            detail: &self.detail,
            instance,
            request_id,
            errors: &self.errors,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut headers = vec![
            ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
            (REQUEST_ID.to_owned(), request_id.to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        headers.extend(self.headers);
        Reply {
            status: self.kind.status,
            headers,
            body,
            reason: self.reason,
        }
    }
}

/// The catalogue of problems the edge answers, one constructor per cause.
pub mod catalogue {
    use edge_contract::headers::{IDEMPOTENCY_KEY, REQUEST_ID};
    use edge_contract::problem as types;

    use super::{Problem, RETRY_AFTER};
    use crate::permission::Denial;

    /// 400: the request ID is malformed.
    pub fn bad_request_id(detail: &str) -> Problem {
        Problem::new(
            types::INVALID_REQUEST_ID,
            "Invalid request ID",
            "bad_request_id",
            detail,
        )
        .with_error(format!("#/headers/{REQUEST_ID}"), detail)
    }

    /// 400 for a request line the edge cannot read as text: a method that is not an
    /// RFC 9110 token, a path with bytes outside visible ASCII.
    pub fn bad_request_target() -> Problem {
        Problem::new(
            types::INVALID_REQUEST,
            "Invalid request",
            "bad_request_target",
            "the method must be an HTTP token and the path visible ASCII (percent-encode other bytes)",
        )
    }

    /// 400 (401 for `authorization`) for an interpreted header whose value is not ASCII
    /// text (see `headers::INTERPRETED`).
    pub fn bad_header(name: &str) -> Problem {
        let detail = format!("the {name} header must be ASCII text");
        if name == "authorization" {
            return bad_authorization(&detail);
        }
        let problem = match name {
            REQUEST_ID => return bad_request_id(&detail),
            IDEMPOTENCY_KEY => return bad_idempotency_key(&detail),
            _ => Problem::new(
                types::INVALID_HEADER,
                "Invalid header",
                "bad_header",
                detail.clone(),
            ),
        };
        problem.with_error(format!("#/headers/{name}"), detail)
    }

    /// 405 for a path a route serves with other methods (when unmatched requests are
    /// rejected), with `Allow` listing them.
    pub fn method_not_allowed(allowed: &[&str]) -> Problem {
        let mut methods: Vec<&str> = allowed.to_vec();
        methods.sort_unstable();
        methods.dedup();
        Problem::new(
            types::METHOD_NOT_ALLOWED,
            "Method not allowed",
            "method_not_allowed",
            format!("this resource accepts {}", methods.join(", ")),
        )
        .with_header("allow", methods.join(", "))
    }

    /// 401 without credentials (RFC 6750 §3.1: no error code when none was sent).
    pub fn missing_token() -> Problem {
        Problem::new(
            types::UNAUTHENTICATED,
            "Authentication required",
            "missing_token",
            "send a bearer token in the Authorization header",
        )
        .with_header("www-authenticate", "Bearer realm=\"workspace-api\"")
    }

    /// 401 for a malformed Authorization header (duplicated, other scheme).
    pub fn bad_authorization(detail: &str) -> Problem {
        Problem::new(
            types::INVALID_TOKEN,
            "Invalid bearer token",
            "bad_authorization",
            detail,
        )
        .with_header(
            "www-authenticate",
            "Bearer realm=\"workspace-api\", error=\"invalid_request\"",
        )
    }

    /// 401 for a token that failed verification.
    pub fn invalid_token(reason: &'static str, detail: String) -> Problem {
        Problem::new(types::INVALID_TOKEN, "Invalid bearer token", reason, detail).with_header(
            "www-authenticate",
            "Bearer realm=\"workspace-api\", error=\"invalid_token\"",
        )
    }

    /// 403, the same whether or not the organization exists.
    pub fn forbidden(reason: &'static str) -> Problem {
        Problem::new(
            types::FORBIDDEN,
            "Forbidden",
            reason,
            "you are not allowed to perform this action on the target organization",
        )
    }

    /// 403 for `denial`; one for a scope the token lacks says which (RFC 6750 §3.1), so
    /// the client can ask its authorization server for a token with it.
    pub fn denied(denial: Denial, permission: Option<&str>) -> Problem {
        let problem = forbidden(denial.reason());
        match (denial, permission) {
            (Denial::InsufficientScope, Some(scope)) => problem.with_header(
                "www-authenticate",
                format!(
                    "Bearer realm=\"workspace-api\", error=\"insufficient_scope\", scope=\"{scope}\""
                ),
            ),
            _ => problem,
        }
    }

    /// 404 for a path no route matches, when unmatched requests are rejected.
    pub fn no_route() -> Problem {
        Problem::new(
            types::NOT_FOUND,
            "Not found",
            "no_route",
            "no such resource",
        )
    }

    /// 400 for a body that is not valid JSON.
    pub fn invalid_json() -> Problem {
        Problem::new(
            types::INVALID_BODY,
            "Invalid request body",
            "invalid_json",
            "the request body is not valid JSON",
        )
    }

    /// 400 for a missing or non-string organization field.
    pub fn missing_org(field: &str) -> Problem {
        Problem::new(
            types::VALIDATION_FAILED,
            "Validation failed",
            "missing_org",
            "the request is invalid",
        )
        .with_error(format!("#/{field}"), "is required and must be a string")
    }

    /// 413 beyond the body limit.
    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            types::PAYLOAD_TOO_LARGE,
            "Payload too large",
            "body_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 400 for a missing or malformed Idempotency-Key.
    pub fn bad_idempotency_key(detail: &str) -> Problem {
        Problem::new(
            types::INVALID_IDEMPOTENCY_KEY,
            "Invalid Idempotency-Key",
            "bad_idempotency_key",
            detail,
        )
        .with_error(format!("#/headers/{IDEMPOTENCY_KEY}"), detail)
    }

    /// 409 while the first request with this key is in flight.
    pub fn idempotency_in_flight() -> Problem {
        Problem::new(
            types::IDEMPOTENCY_KEY_IN_USE,
            "Request in progress",
            "idempotency_in_flight",
            "a request with this Idempotency-Key is still being processed; retry later",
        )
        .with_header(RETRY_AFTER, "1")
    }

    /// 422 when a key is reused with another payload.
    pub fn idempotency_mismatch() -> Problem {
        Problem::new(
            types::IDEMPOTENCY_KEY_REUSED,
            "Idempotency-Key reused",
            "idempotency_mismatch",
            "this Idempotency-Key was already used with a different request",
        )
    }

    /// 503 while keys or shared state are unavailable.
    pub fn unavailable(reason: &'static str, detail: &str, retry_after: u64) -> Problem {
        Problem::new(types::UNAVAILABLE, "Service unavailable", reason, detail)
            .with_header(RETRY_AFTER, retry_after.to_string())
    }

    /// 429 with Retry-After.
    pub fn rate_limited(reason: &'static str, retry_after: u64) -> Problem {
        Problem::new(
            types::RATE_LIMITED,
            "Too many requests",
            reason,
            format!("rate limit exceeded; retry in {retry_after} s"),
        )
        .with_header(RETRY_AFTER, retry_after.to_string())
    }
}
