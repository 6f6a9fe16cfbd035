//! HTTP/1.1 over a bare TCP socket, for requests no well-behaved client sends: any byte in a
//! header value, repeated or oversized headers, broken framing, a body cut short. Every read
//! has a deadline, so a peer that never answers fails one request, never the test run.
//!
//! ```no_run
//! use e2e::raw::{RawRequest, exchange};
//! use std::time::Duration;
//! let addr = "127.0.0.1:8080".parse().unwrap();
//! let request = RawRequest::new("GET", "/api/workspaces/w-1").header("x-note", b"\xff");
//! let response = exchange(addr, &request.to_bytes(), Duration::from_secs(5)).unwrap();
//! assert!(response.status < 500);
//! ```

use std::fmt;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpStream};
use std::time::{Duration, Instant};

/// A request assembled byte by byte. `Host` comes first; `Content-Length` is added for a body
/// unless [`RawRequest::framing`] says the caller frames it.
#[derive(Debug, Clone)]
pub struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, Vec<u8>)>,
    body: Vec<u8>,
    content_length: bool,
}

impl RawRequest {
    /// `method target HTTP/1.1` with `Host: gateway`.
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: vec![("host".to_owned(), b"gateway".to_vec())],
            body: Vec::new(),
            content_length: true,
        }
    }

    /// Adds a header, raw bytes as given (repeat the call to repeat the header).
    pub fn header(mut self, name: &str, value: impl AsRef<[u8]>) -> Self {
        self.headers
            .push((name.to_owned(), value.as_ref().to_vec()));
        self
    }

    /// Sets the body; `Content-Length` follows unless [`RawRequest::framing`] turned it off.
    pub fn body(mut self, body: impl AsRef<[u8]>) -> Self {
        self.body = body.as_ref().to_vec();
        self
    }

    /// `false`: the caller frames the body itself (its own `Content-Length` or
    /// `Transfer-Encoding` header, and a body sent as is).
    pub fn framing(mut self, content_length: bool) -> Self {
        self.content_length = content_length;
        self
    }

    /// The bytes on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut out = format!("{} {} HTTP/1.1\r\n", self.method, self.target).into_bytes();
        for (name, value) in &self.headers {
            out.extend_from_slice(name.as_bytes());
            out.extend_from_slice(b": ");
            out.extend_from_slice(value);
            out.extend_from_slice(b"\r\n");
        }
        if self.content_length && (!self.body.is_empty() || self.method == "POST") {
            out.extend_from_slice(format!("content-length: {}\r\n", self.body.len()).as_bytes());
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(&self.body);
        out
    }
}

/// A complete response.
#[derive(Debug, Clone)]
pub struct RawResponse {
    /// The status code.
    pub status: u16,
    /// Every header, names lower-cased, values as sent.
    pub headers: Vec<(String, Vec<u8>)>,
    /// The body, de-chunked.
    pub body: Vec<u8>,
}

impl RawResponse {
    /// The first value of header `name` (lower-case), lossily as text.
    pub fn header(&self, name: &str) -> Option<String> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| String::from_utf8_lossy(v).into_owned())
    }

    /// The body as JSON, if it is.
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    /// The status and the first 200 bytes of the body, for failure messages.
    pub fn summary(&self) -> String {
        let body = String::from_utf8_lossy(&self.body);
        let cut: String = body.chars().take(200).collect();
        format!("{} {cut}", self.status).trim_end().to_owned()
    }
}

/// Why no complete response arrived.
#[derive(Debug)]
pub enum RawError {
    /// Connecting, writing or reading failed.
    Io(io::Error),
    /// The deadline passed first (`received` bytes so far).
    Timeout {
        /// Bytes of the response received before the deadline.
        received: usize,
    },
    /// The peer closed the connection before a complete response (`received` bytes so far).
    Closed {
        /// Bytes of the response received before the close.
        received: usize,
    },
    /// The bytes are not an HTTP/1.1 response.
    Malformed(String),
}

impl fmt::Display for RawError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(e) => write!(f, "i/o error: {e}"),
            Self::Timeout { received } => {
                write!(f, "no complete response in time ({received} bytes)")
            }
            Self::Closed { received } => {
                write!(
                    f,
                    "connection closed before a complete response ({received} bytes)"
                )
            }
            Self::Malformed(why) => write!(f, "malformed response: {why}"),
        }
    }
}

impl std::error::Error for RawError {}

impl From<io::Error> for RawError {
    fn from(e: io::Error) -> Self {
        match e.kind() {
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut => Self::Timeout { received: 0 },
            _ => Self::Io(e),
        }
    }
}

/// One keep-alive connection.
pub struct RawConn {
    stream: TcpStream,
    buf: Vec<u8>,
    timeout: Duration,
}

impl RawConn {
    /// Connects; every later read and write gives up after `timeout`.
    pub fn connect(addr: SocketAddr, timeout: Duration) -> Result<Self, RawError> {
        let stream = TcpStream::connect_timeout(&addr, timeout)?;
        stream.set_write_timeout(Some(timeout))?;
        stream.set_nodelay(true)?;
        Ok(Self {
            stream,
            buf: Vec::new(),
            timeout,
        })
    }

    /// Writes bytes as they are.
    pub fn send(&mut self, bytes: &[u8]) -> Result<(), RawError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Closes the writing half: the peer reads end-of-stream.
    pub fn finish_sending(&mut self) -> Result<(), RawError> {
        self.stream.shutdown(Shutdown::Write)?;
        Ok(())
    }

    /// Sends `request` and reads one response.
    pub fn exchange(&mut self, request: &[u8]) -> Result<RawResponse, RawError> {
        if request.len() <= 64 * 1024 {
            self.send(request)?;
            return self.read_response();
        }
        // A peer may answer a large request (413, 431) before reading it whole and then stop
        // reading: write from a second thread so that the answer is read meanwhile.
        let mut writer = self.stream.try_clone()?;
        std::thread::scope(|s| {
            let sending = s.spawn(move || writer.write_all(request));
            let response = self.read_response();
            // A write cut short by the peer's answer is the point, not a failure.
            let _ = sending.join();
            response
        })
    }

    /// Reads the next final response (skipping `1xx`), within the timeout.
    pub fn read_response(&mut self) -> Result<RawResponse, RawError> {
        let deadline = Instant::now() + self.timeout;
        loop {
            let response = self.read_one(deadline)?;
            if !(100..200).contains(&response.status) {
                return Ok(response);
            }
        }
    }

    fn read_one(&mut self, deadline: Instant) -> Result<RawResponse, RawError> {
        let head_end = loop {
            if let Some(i) = find(&self.buf, b"\r\n\r\n") {
                break i;
            }
            self.fill(deadline)?;
        };
        let head = self.buf[..head_end].to_vec();
        self.buf.drain(..head_end + 4);
        let (status, headers) = parse_head(&head)?;
        let value = |name: &str| {
            headers
                .iter()
                .find(|(n, _)| n == name)
                .map(|(_, v)| String::from_utf8_lossy(v).trim().to_ascii_lowercase())
        };
        let body = if (100..200).contains(&status) || status == 204 || status == 304 {
            Vec::new()
        } else if value("transfer-encoding").is_some_and(|te| te.ends_with("chunked")) {
            self.read_chunked(deadline)?
        } else if let Some(length) = value("content-length") {
            let length: usize = length
                .parse()
                .map_err(|_| RawError::Malformed(format!("content-length {length:?}")))?;
            while self.buf.len() < length {
                self.fill(deadline)?;
            }
            self.buf.drain(..length).collect()
        } else {
            // Delimited by the close.
            loop {
                match self.fill(deadline) {
                    Ok(()) => {}
                    Err(RawError::Closed { .. }) => break std::mem::take(&mut self.buf),
                    Err(e) => return Err(e),
                }
            }
        };
        Ok(RawResponse {
            status,
            headers,
            body,
        })
    }

    fn read_chunked(&mut self, deadline: Instant) -> Result<Vec<u8>, RawError> {
        let mut body = Vec::new();
        loop {
            let line_end = loop {
                if let Some(i) = find(&self.buf, b"\r\n") {
                    break i;
                }
                self.fill(deadline)?;
            };
            let line = String::from_utf8_lossy(&self.buf[..line_end]).into_owned();
            self.buf.drain(..line_end + 2);
            let size_text = line.split(';').next().unwrap_or("").trim();
            let size = usize::from_str_radix(size_text, 16)
                .map_err(|_| RawError::Malformed(format!("chunk size {line:?}")))?;
            if size == 0 {
                // Trailers, then the blank line.
                loop {
                    if let Some(i) = find(&self.buf, b"\r\n") {
                        let blank = i == 0;
                        self.buf.drain(..i + 2);
                        if blank {
                            return Ok(body);
                        }
                    } else {
                        self.fill(deadline)?;
                    }
                }
            }
            while self.buf.len() < size + 2 {
                self.fill(deadline)?;
            }
            body.extend(self.buf.drain(..size));
            self.buf.drain(..2);
        }
    }

    /// Reads more bytes into the buffer, or says why it could not.
    fn fill(&mut self, deadline: Instant) -> Result<(), RawError> {
        let received = self.buf.len();
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() {
            return Err(RawError::Timeout { received });
        }
        self.stream.set_read_timeout(Some(left))?;
        let mut chunk = [0u8; 16 * 1024];
        match self.stream.read(&mut chunk) {
            Ok(0) => Err(RawError::Closed { received }),
            Ok(n) => {
                self.buf.extend_from_slice(&chunk[..n]);
                Ok(())
            }
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) =>
            {
                Err(RawError::Timeout { received })
            }
            Err(e) if e.kind() == io::ErrorKind::ConnectionReset => {
                Err(RawError::Closed { received })
            }
            Err(e) => Err(RawError::Io(e)),
        }
    }
}

/// One request on a fresh connection.
pub fn exchange(
    addr: SocketAddr,
    request: &[u8],
    timeout: Duration,
) -> Result<RawResponse, RawError> {
    RawConn::connect(addr, timeout)?.exchange(request)
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

type Head = (u16, Vec<(String, Vec<u8>)>);

fn parse_head(head: &[u8]) -> Result<Head, RawError> {
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = String::from_utf8_lossy(lines.next().unwrap_or_default()).into_owned();
    let status = status_line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| status_line.strip_prefix("HTTP/1.0 "))
        .and_then(|rest| rest.get(..3))
        .and_then(|code| code.parse().ok())
        .ok_or_else(|| RawError::Malformed(format!("status line {status_line:?}")))?;
    let headers = lines
        .filter(|l| !l.is_empty())
        .map(|line| {
            let colon = line.iter().position(|&b| b == b':').unwrap_or(line.len());
            let name = String::from_utf8_lossy(&line[..colon]).to_ascii_lowercase();
            let value = line
                .get(colon + 1..)
                .unwrap_or_default()
                .trim_ascii()
                .to_vec();
            (name, value)
        })
        .collect();
    Ok((status, headers))
}
