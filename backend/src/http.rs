//! Host-independent request and response types: the component adapter converts Spin's
//! types into these, so every handler can be tested natively.

/// Largest request body accepted, in bytes; a larger one gets 413.
pub const MAX_BODY_BYTES: usize = 64 * 1024;

/// The request headers whose values the service reads, other than the gateway identity
/// headers (which [`crate::app`] refuses with 401 when unreadable). A value of one of these
/// that is not text gets 400; any other header is never read.
pub const INTERPRETED_HEADERS: [&str; 5] = edge_contract::headers::READ_BY_BACKEND;

/// A header value that is not UTF-8 text.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotText;

/// An incoming request, body fully read (at most [`MAX_BODY_BYTES`]).
#[derive(Debug, Clone, Default)]
pub struct ApiRequest {
    /// Upper-case method.
    pub method: String,
    /// The path, without the query string.
    pub path: String,
    /// The raw query string, without `?` (empty when none).
    pub query: String,
    /// Header names in lower case, in arrival order, with their values' bytes as received:
    /// HTTP allows bytes that are not UTF-8 in a value, and reading them as text is a
    /// decision ([`ApiRequest::text`], [`ApiRequest::unreadable_header`]), not a conversion.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body bytes.
    pub body: Vec<u8>,
    /// Whether the body exceeded [`MAX_BODY_BYTES`] (then `body` is truncated).
    pub body_too_large: bool,
}

impl ApiRequest {
    /// A request with no headers and no body.
    pub fn new(method: &str, path_and_query: &str) -> Self {
        let (path, query) = path_and_query
            .split_once('?')
            .unwrap_or((path_and_query, ""));
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            query: query.to_owned(),
            ..Self::default()
        }
    }

    /// Adds a header (builder style, for tests and the adapter).
    pub fn with_header(self, name: &str, value: &str) -> Self {
        self.with_header_bytes(name, value.as_bytes())
    }

    /// Adds a header whose value may be any bytes (builder style).
    pub fn with_header_bytes(mut self, name: &str, value: &[u8]) -> Self {
        self.headers
            .push((name.to_ascii_lowercase(), value.to_vec()));
        self
    }

    /// Sets the body (builder style).
    pub fn with_body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = body.into();
        self
    }

    /// The first value of header `name` (lower case) as text: `Ok(None)` when absent,
    /// `Err(NotText)` when its bytes are not UTF-8. Never a lossy conversion: a value read
    /// differently here and at the gateway is a way around the gateway.
    pub fn text(&self, name: &str) -> Result<Option<&str>, NotText> {
        match self.headers.iter().find(|(n, _)| n == name) {
            None => Ok(None),
            Some((_, v)) => std::str::from_utf8(v).map(Some).map_err(|_| NotText),
        }
    }

    /// Every value of header `name` (lower case), in order; `Err(NotText)` when one is not
    /// UTF-8 (for the headers of [`INTERPRETED_HEADERS`] the pipeline has already refused
    /// such a request).
    pub fn header_values(&self, name: &str) -> Result<Vec<&str>, NotText> {
        self.headers
            .iter()
            .filter(|(n, _)| n == name)
            .map(|(_, v)| std::str::from_utf8(v).map_err(|_| NotText))
            .collect()
    }

    /// The first value of header `name` (lower case), `None` when absent or not UTF-8. For
    /// the headers of [`INTERPRETED_HEADERS`] the pipeline has already refused a value that
    /// is not text ([`ApiRequest::unreadable_header`]), so `None` then means absent.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.text(name).ok().flatten()
    }

    /// The first header of [`INTERPRETED_HEADERS`] with a value (any of its values, when
    /// repeated) the service cannot read: bytes that are not UTF-8, or for
    /// `content-length` anything but decimal digits. Such a request is refused, not
    /// reinterpreted. Other headers are ignored whatever they hold.
    pub fn unreadable_header(&self) -> Option<&'static str> {
        INTERPRETED_HEADERS.into_iter().find(|name| {
            self.headers.iter().any(|(n, v)| {
                n == name
                    && match std::str::from_utf8(v) {
                        Err(_) => true,
                        Ok(text) => {
                            *name == "content-length"
                                && (text.trim().is_empty()
                                    || !text.trim().bytes().all(|b| b.is_ascii_digit()))
                        }
                    }
            })
        })
    }

    /// The body length the client declared, when it declared a readable one.
    pub fn declared_length(&self) -> Option<usize> {
        self.header("content-length")?.trim().parse().ok()
    }

    /// The path and query as the host handed them (the gateway signs the same request in
    /// the form [`edge_contract::canonical_path`] gives both).
    pub fn path_and_query(&self) -> String {
        if self.query.is_empty() {
            self.path.clone()
        } else {
            format!("{}?{}", self.path, self.query)
        }
    }

    /// The decoded query parameters.
    pub fn query_pairs(&self) -> Vec<(String, String)> {
        form_urlencoded::parse(self.query.as_bytes())
            .into_owned()
            .collect()
    }
}

/// An outgoing response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiResponse {
    /// The status code.
    pub status: u16,
    /// Headers, names in lower case.
    pub headers: Vec<(String, String)>,
    /// The body bytes.
    pub body: Vec<u8>,
}

impl ApiResponse {
    /// A JSON response.
    pub fn json(status: u16, value: &serde_json::Value) -> Self {
        Self {
            status,
            headers: vec![("content-type".into(), "application/json".into())],
            body: serde_json::to_vec(value).unwrap_or_default(),
        }
    }

    /// Adds a header (builder style).
    pub fn with_header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// The first value of header `name`.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body parsed as JSON (`Null` when it is not JSON).
    pub fn json_body(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn interpreted_headers_must_be_text_others_are_never_read() {
        let base = || ApiRequest::new("POST", "/api/workspaces");
        let cases: Vec<(&str, ApiRequest, Option<&str>)> = vec![
            (
                "all text",
                base()
                    .with_header("x-request-id", "r")
                    .with_header("accept-language", "fr"),
                None,
            ),
            (
                "latin-1 request ID",
                base().with_header_bytes("x-request-id", b"r\xe9"),
                Some("x-request-id"),
            ),
            (
                "invalid key byte",
                base().with_header_bytes("idempotency-key", b"k\xff"),
                Some("idempotency-key"),
            ),
            (
                "content type",
                base().with_header_bytes("content-type", b"application/json; charset=\xff"),
                Some("content-type"),
            ),
            (
                "language",
                base().with_header_bytes("accept-language", b"fr-\xc3"),
                Some("accept-language"),
            ),
            (
                "length bytes",
                base().with_header_bytes("content-length", b"1\xa00"),
                Some("content-length"),
            ),
            (
                "length words",
                base().with_header("content-length", "ten"),
                Some("content-length"),
            ),
            (
                "length signed",
                base().with_header("content-length", "+10"),
                Some("content-length"),
            ),
            (
                "length empty",
                base().with_header("content-length", ""),
                Some("content-length"),
            ),
            (
                "length digits",
                base().with_header("content-length", "10"),
                None,
            ),
            (
                "second value",
                base()
                    .with_header("accept-language", "fr")
                    .with_header_bytes("accept-language", b"\xff"),
                Some("accept-language"),
            ),
            (
                "uninterpreted",
                base().with_header_bytes("x-note", b"\xff\xfe"),
                None,
            ),
            (
                "identity headers are authentication's",
                base().with_header_bytes("x-edge-identity", b"\xff"),
                None,
            ),
        ];
        for (name, req, want) in cases {
            assert_eq!(req.unreadable_header(), want, "{name}");
        }
    }

    #[test]
    fn text_is_never_a_lossy_conversion() {
        let req = ApiRequest::new("GET", "/")
            .with_header_bytes("x-edge-signature", b"t=1,\xff")
            .with_header("x-request-id", "r-1");
        assert_eq!(req.text("x-edge-signature"), Err(NotText));
        assert_eq!(req.header("x-edge-signature"), None);
        assert_eq!(req.text("x-request-id"), Ok(Some("r-1")));
        assert_eq!(req.text("absent"), Ok(None));
        let twice = req.clone().with_header("x-request-id", "r-2");
        assert_eq!(twice.header_values("x-request-id"), Ok(vec!["r-1", "r-2"]));
        assert_eq!(twice.header_values("x-edge-signature"), Err(NotText));
        assert_eq!(
            req.with_header("content-length", " 12 ").declared_length(),
            Some(12)
        );
    }
}
