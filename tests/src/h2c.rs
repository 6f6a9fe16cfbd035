//! HTTP/2 in cleartext with prior knowledge (h2c), one stream per connection, for the
//! hostile-client tests: header values as raw bytes, a deadline on every exchange. Envoy's
//! `http_connection_manager` (codec `AUTO`) recognizes the HTTP/2 preface on the plain
//! listener. Built on the `h2` crate, already in the lock file through hyper.

use std::net::SocketAddr;
use std::time::Duration;

use crate::raw::RawResponse;

/// One HTTP/2 request.
#[derive(Debug, Clone)]
pub struct H2Request {
    /// The method.
    pub method: String,
    /// The path (`:path`).
    pub path: String,
    /// Header names (lower-case) and raw values; a name may repeat.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body (DATA frames), empty for none.
    pub body: Vec<u8>,
    /// Trailers ending the stream (a HEADERS frame after the body), empty for none.
    pub trailers: Vec<(String, Vec<u8>)>,
}

impl H2Request {
    /// `method path` with no headers and no body.
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            body: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Adds a trailer: the stream then ends with trailers rather than with the body.
    pub fn trailer(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.trailers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Adds a header.
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }
}

/// Why no response arrived: the peer reset the stream or the connection, the deadline
/// passed, or the request could not be sent.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum H2Error {
    /// The peer reset the stream (`RST_STREAM`) or the connection (`GOAWAY`), with the
    /// reason.
    Reset(String),
    /// No response within the deadline.
    Timeout,
    /// Anything else (connecting, the handshake, a header the client refuses to send).
    Other(String),
}

impl std::fmt::Display for H2Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Reset(reason) => write!(f, "reset by the peer ({reason})"),
            Self::Timeout => write!(f, "no response in time"),
            Self::Other(why) => write!(f, "{why}"),
        }
    }
}

/// Sends `request` on a fresh h2c connection and reads the whole response.
pub fn exchange(
    addr: SocketAddr,
    request: &H2Request,
    timeout: Duration,
) -> Result<RawResponse, H2Error> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| H2Error::Other(format!("tokio runtime: {e}")))?;
    runtime.block_on(async {
        tokio::time::timeout(timeout, exchange_async(addr, request))
            .await
            .unwrap_or(Err(H2Error::Timeout))
    })
}

async fn exchange_async(addr: SocketAddr, request: &H2Request) -> Result<RawResponse, H2Error> {
    let tcp = tokio::net::TcpStream::connect(addr)
        .await
        .map_err(|e| H2Error::Other(format!("connect: {e}")))?;
    let (client, connection) = h2::client::handshake(tcp).await.map_err(from_h2)?;
    // The connection task drives the socket; it ends when the exchange's handles drop.
    tokio::spawn(async move {
        let _ = connection.await;
    });
    let mut client = client.ready().await.map_err(from_h2)?;
    let mut builder = ureq::http::Request::builder()
        .method(request.method.as_str())
        .uri(format!("http://gateway{}", request.path));
    for (name, value) in &request.headers {
        let value = ureq::http::HeaderValue::from_bytes(value)
            .map_err(|e| H2Error::Other(format!("header {name}: {e}")))?;
        builder = builder.header(name.as_str(), value);
    }
    let head = builder
        .body(())
        .map_err(|e| H2Error::Other(format!("request: {e}")))?;
    let headers_only = request.body.is_empty() && request.trailers.is_empty();
    let (response, mut stream) = client.send_request(head, headers_only).map_err(from_h2)?;
    if !request.body.is_empty() {
        stream
            .send_data(
                bytes::Bytes::from(request.body.clone()),
                request.trailers.is_empty(),
            )
            .map_err(from_h2)?;
    }
    if !request.trailers.is_empty() {
        let mut trailers = ureq::http::HeaderMap::new();
        for (name, value) in &request.trailers {
            let name = ureq::http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|e| H2Error::Other(format!("trailer {name}: {e}")))?;
            let value = ureq::http::HeaderValue::from_bytes(value)
                .map_err(|e| H2Error::Other(format!("trailer value: {e}")))?;
            trailers.append(name, value);
        }
        stream.send_trailers(trailers).map_err(from_h2)?;
    }
    let response = response.await.map_err(from_h2)?;
    let status = response.status().as_u16();
    let headers = response
        .headers()
        .iter()
        .map(|(n, v)| (n.as_str().to_owned(), v.as_bytes().to_vec()))
        .collect();
    let mut recv = response.into_body();
    let mut body = Vec::new();
    while let Some(chunk) = recv.data().await {
        let chunk = chunk.map_err(from_h2)?;
        body.extend_from_slice(&chunk);
        let _ = recv.flow_control().release_capacity(chunk.len());
    }
    Ok(RawResponse {
        status,
        headers,
        body,
    })
}

fn from_h2(e: h2::Error) -> H2Error {
    match e.reason() {
        // Only the peer's frames count as its answer; a reset of the client's own making
        // is the client failing.
        Some(reason) if e.is_remote() => H2Error::Reset(format!("{reason:?}")),
        _ => H2Error::Other(format!("h2: {e}")),
    }
}
