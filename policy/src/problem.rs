//! RFC 9457 problem details: the one place a rejection becomes a response.

use serde::Serialize;

/// Content type of every error the edge answers.
pub const CONTENT_TYPE: &str = "application/problem+json";

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
    /// HTTP status.
    pub status: u16,
    /// Last part of the type URN, e.g. `invalid-token`.
    pub slug: &'static str,
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
        status: u16,
        slug: &'static str,
        title: &'static str,
        reason: &'static str,
        detail: impl Into<String>,
    ) -> Self {
        Self {
            status,
            slug,
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
            kind: format!("urn:workspace-api:problem:{}", self.slug),
            title: self.title,
            status: self.status,
            detail: &self.detail,
            instance,
            request_id,
            errors: &self.errors,
        };
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let mut headers = vec![
            ("content-type".to_owned(), CONTENT_TYPE.to_owned()),
            (crate::request_id::HEADER.to_owned(), request_id.to_owned()),
            ("cache-control".to_owned(), "no-store".to_owned()),
        ];
        headers.extend(self.headers);
        Reply {
            status: self.status,
            headers,
            body,
            reason: self.reason,
        }
    }
}

/// The catalogue of problems the edge answers, one constructor per cause.
pub mod catalogue {
    use super::Problem;

    /// 400: the request ID is malformed.
    pub fn bad_request_id(detail: &str) -> Problem {
        Problem::new(
            400,
            "invalid-request-id",
            "Invalid request ID",
            "bad_request_id",
            detail,
        )
        .with_error("#/headers/x-request-id", detail)
    }

    /// 400 for a request line the edge cannot read as text: a method that is not an
    /// RFC 9110 token, a path with bytes outside visible ASCII.
    pub fn bad_request_target() -> Problem {
        Problem::new(
            400,
            "invalid-request",
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
            "x-request-id" => return bad_request_id(&detail),
            "idempotency-key" => return bad_idempotency_key(&detail),
            _ => Problem::new(
                400,
                "invalid-header",
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
            405,
            "method-not-allowed",
            "Method not allowed",
            "method_not_allowed",
            format!("this resource accepts {}", methods.join(", ")),
        )
        .with_header("allow", methods.join(", "))
    }

    /// 401 without credentials (RFC 6750 §3.1: no error code when none was sent).
    pub fn missing_token() -> Problem {
        Problem::new(
            401,
            "unauthenticated",
            "Authentication required",
            "missing_token",
            "send a bearer token in the Authorization header",
        )
        .with_header("www-authenticate", "Bearer realm=\"workspace-api\"")
    }

    /// 401 for a malformed Authorization header (duplicated, other scheme).
    pub fn bad_authorization(detail: &str) -> Problem {
        Problem::new(
            401,
            "invalid-token",
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
        Problem::new(401, "invalid-token", "Invalid bearer token", reason, detail).with_header(
            "www-authenticate",
            "Bearer realm=\"workspace-api\", error=\"invalid_token\"",
        )
    }

    /// 403, the same whether or not the organization exists.
    pub fn forbidden(reason: &'static str) -> Problem {
        Problem::new(
            403,
            "forbidden",
            "Forbidden",
            reason,
            "you are not allowed to perform this action on the target organization",
        )
    }

    /// 404 for a path no route matches, when unmatched requests are rejected.
    pub fn no_route() -> Problem {
        Problem::new(
            404,
            "not-found",
            "Not found",
            "no_route",
            "no such resource",
        )
    }

    /// 400 for a body that is not valid JSON.
    pub fn invalid_json() -> Problem {
        Problem::new(
            400,
            "invalid-body",
            "Invalid request body",
            "invalid_json",
            "the request body is not valid JSON",
        )
    }

    /// 400 for a missing or non-string organization field.
    pub fn missing_org(field: &str) -> Problem {
        Problem::new(
            400,
            "validation-failed",
            "Validation failed",
            "missing_org",
            "the request is invalid",
        )
        .with_error(format!("#/{field}"), "is required and must be a string")
    }

    /// 413 beyond the body limit.
    pub fn too_large(limit: usize) -> Problem {
        Problem::new(
            413,
            "payload-too-large",
            "Payload too large",
            "body_too_large",
            format!("the request body exceeds {limit} bytes"),
        )
    }

    /// 400 for a missing or malformed Idempotency-Key.
    pub fn bad_idempotency_key(detail: &str) -> Problem {
        Problem::new(
            400,
            "invalid-idempotency-key",
            "Invalid Idempotency-Key",
            "bad_idempotency_key",
            detail,
        )
        .with_error("#/headers/idempotency-key", detail)
    }

    /// 409 while the first request with this key is in flight.
    pub fn idempotency_in_flight() -> Problem {
        Problem::new(
            409,
            "idempotency-key-in-use",
            "Request in progress",
            "idempotency_in_flight",
            "a request with this Idempotency-Key is still being processed; retry later",
        )
        .with_header("retry-after", "1")
    }

    /// 422 when a key is reused with another payload.
    pub fn idempotency_mismatch() -> Problem {
        Problem::new(
            422,
            "idempotency-key-reused",
            "Idempotency-Key reused",
            "idempotency_mismatch",
            "this Idempotency-Key was already used with a different request",
        )
    }

    /// 503 while keys or shared state are unavailable.
    pub fn unavailable(reason: &'static str, detail: &str, retry_after: u64) -> Problem {
        Problem::new(503, "unavailable", "Service unavailable", reason, detail)
            .with_header("retry-after", retry_after.to_string())
    }

    /// 429 with Retry-After.
    pub fn rate_limited(reason: &'static str, retry_after: u64) -> Problem {
        Problem::new(
            429,
            "rate-limited",
            "Too many requests",
            reason,
            format!("rate limit exceeded; retry in {retry_after} s"),
        )
        .with_header("retry-after", retry_after.to_string())
    }
}
