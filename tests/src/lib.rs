//! End-to-end test support: the stack harness, HTTP and dev tokens.
//!
//! ```no_run
//! use e2e::{send, dev_token, Stack, StackOptions};
//! let stack = Stack::start(StackOptions::default());
//! let token = dev_token("u-alice", &[("a1b2c3d4-5678-90ef-1234-567890abcdef", &["owner"])]);
//! let auth = format!("Bearer {token}");
//! let r = send("GET", &format!("{}/api/workspaces/w-x", stack.gateway_url()), &[("authorization", &auth)], None);
//! assert_eq!(r.status, 404);
//! ```

use std::time::Duration;

pub mod h2c;
pub mod hostile;
pub mod raw;

pub use xtask::stack::{Stack, StackOptions};
pub use xtask::token::{dev_token, TokenSpec, DEV_AUDIENCE, DEV_ISSUER};

/// The seed 004 example request body (`POST /api/workspaces`).
pub const SEED_004_REQUEST: &str = include_str!("../fixtures/seed-004-request.json");
/// The seed 004 example organization.
pub const SEED_ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";

/// The filter configuration shipped in `envoy/envoy.yaml`.
pub fn shipped_filter_config() -> serde_json::Value {
    match xtask::envoy::shipped_filter_config() {
        Ok(config) => config,
        Err(e) => panic!("{e:#}"),
    }
}

/// The local-only gateway HMAC key (also the dev backend's `gateway_hmac_keys`).
pub fn dev_hmac_key() -> String {
    match xtask::stack::dev_hmac_key() {
        Ok(key) => key,
        Err(e) => panic!("{e:#}"),
    }
}

/// An HTTP response, fully read.
#[derive(Debug, Clone)]
pub struct Response {
    /// The status code.
    pub status: u16,
    /// Every header, names lower-cased, in order.
    pub headers: Vec<(String, String)>,
    /// The body.
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(n, _)| *n == name)
            .map(|(_, v)| v.as_str())
    }

    /// The body as JSON (panics with the body when it is not).
    pub fn json(&self) -> serde_json::Value {
        match serde_json::from_slice(&self.body) {
            Ok(v) => v,
            Err(e) => panic!(
                "status {} body is not JSON ({e}): {}",
                self.status,
                self.text()
            ),
        }
    }

    /// The body as text.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

fn agent() -> &'static ureq::Agent {
    static AGENT: std::sync::OnceLock<ureq::Agent> = std::sync::OnceLock::new();
    AGENT.get_or_init(|| {
        ureq::Agent::config_builder()
            .http_status_as_error(false)
            .allow_non_standard_methods(true)
            .max_idle_connections_per_host(64)
            .timeout_global(Some(Duration::from_secs(30)))
            .build()
            .into()
    })
}

/// Sends one request; `headers` may repeat a name. Panics on transport errors (a refused
/// connection, a timeout), which no test expects.
pub fn send(method: &str, url: &str, headers: &[(&str, &str)], body: Option<&[u8]>) -> Response {
    match try_send(method, url, headers, body) {
        Ok(r) => r,
        Err(e) => panic!("{method} {url}: {e:#}"),
    }
}

/// [`send`], returning transport errors.
pub fn try_send(
    method: &str,
    url: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
) -> anyhow::Result<Response> {
    let mut builder = ureq::http::Request::builder().method(method).uri(url);
    for (name, value) in headers {
        builder = builder.header(*name, *value);
    }
    let request = builder.body(body.map(<[u8]>::to_vec).unwrap_or_default())?;
    let mut response = agent().run(request)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| {
            (
                n.as_str().to_owned(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_vec()?;
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// `send` with a bearer token and a JSON body.
pub fn post_json(url: &str, token: &str, body: &str, extra: &[(&str, &str)]) -> Response {
    let auth = format!("Bearer {token}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/json"),
    ];
    headers.extend_from_slice(extra);
    send("POST", url, &headers, Some(body.as_bytes()))
}
