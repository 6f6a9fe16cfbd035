//! Tables of hostile requests and what each must get, sent from several client threads,
//! with one report line per class: how many were sent, how many got something else, and
//! every distinct answer seen (`400 invalid-request-id ×256, 431 ×3`).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::h2c::{self, H2Error, H2Request};
use crate::raw::{RawConn, RawError, RawResponse};

/// Per request: a hung socket fails that request, never the suite.
pub const TIMEOUT: Duration = Duration::from_secs(10);
/// Parallel clients.
const CLIENTS: usize = 4;

/// What a request must get.
#[derive(Debug, Clone, Copy)]
pub enum Expect {
    /// The filter's documented problem+json: this status and `type` slug, the request ID in
    /// the body and in `x-request-id`, and a `Bearer` challenge on a 401.
    Problem(u16, &'static str),
    /// Exactly this status.
    Status(u16),
    /// A complete response that is not 5xx.
    Answered,
    /// A complete response that is not 5xx, or the connection closed without one (the client
    /// cut its own request short). Never a hang.
    AnsweredOrClosed,
    /// HTTP/2: the peer resets the stream (`RST_STREAM`), as RFC 9113 lets a codec refuse
    /// what it will not take.
    Refused,
}

/// How a request goes on the wire.
#[derive(Debug, Clone)]
pub enum Wire {
    /// HTTP/1.1, the whole request.
    H1(Vec<u8>),
    /// HTTP/1.1, these bytes and then end-of-stream from the client.
    H1ThenClose(Vec<u8>),
    /// HTTP/2 with prior knowledge.
    H2(H2Request),
}

/// One request and its expected answer.
#[derive(Debug, Clone)]
pub struct Case {
    /// Names the request in a failure.
    pub label: String,
    /// The request.
    pub wire: Wire,
    /// Its expected answer.
    pub expect: Expect,
}

/// `Case` from its parts.
pub fn case(label: impl Into<String>, wire: Wire, expect: Expect) -> Case {
    Case {
        label: label.into(),
        wire,
        expect,
    }
}

/// A named class of cases: the unit of the report.
pub struct Class {
    /// The report's name for it.
    pub name: &'static str,
    /// Its requests.
    pub cases: Vec<Case>,
}

/// What came back.
#[derive(Debug)]
pub enum Outcome {
    /// A complete response.
    Response(RawResponse),
    /// The connection closed before any byte of a response.
    Closed,
    /// HTTP/2: the peer reset the stream or the connection (the reason).
    Reset(String),
    /// No answer: a timeout, a broken response, an error on the client's side.
    Failed(String),
}

/// The outcome of the class: its report line(s) and whether every answer was as expected.
pub fn run(gateway: SocketAddr, class: &Class) -> (String, bool) {
    let next = AtomicUsize::new(0);
    let seen = Mutex::new(BTreeMap::<String, usize>::new());
    let wrong = Mutex::new(Vec::<String>::new());
    std::thread::scope(|s| {
        for _ in 0..CLIENTS {
            s.spawn(|| {
                while let Some(case) = class.cases.get(next.fetch_add(1, Ordering::Relaxed)) {
                    let outcome = send(gateway, &case.wire);
                    let answer = describe(&outcome);
                    if let Ok(mut seen) = seen.lock() {
                        *seen.entry(answer.clone()).or_default() += 1;
                    }
                    if let Err(why) = verdict(case.expect, &outcome) {
                        if let Ok(mut wrong) = wrong.lock() {
                            wrong.push(format!(
                                "{}: expected {:?}, got {answer} ({why})",
                                case.label, case.expect
                            ));
                        }
                    }
                }
            });
        }
    });
    let seen = seen.into_inner().unwrap_or_default();
    let wrong = wrong.into_inner().unwrap_or_default();
    let answers: Vec<String> = seen.iter().map(|(a, n)| format!("{a} ×{n}")).collect();
    let mut line = format!(
        "{:<6} {:<48} {:>4} sent, {:>4} unexpected; answers: {}\n",
        if wrong.is_empty() { "ok" } else { "FAILED" },
        class.name,
        class.cases.len(),
        wrong.len(),
        answers.join(", ")
    );
    for w in wrong.iter().take(3) {
        let _ = writeln!(line, "       e.g. {w}");
    }
    (line, wrong.is_empty())
}

/// Sends one request on a fresh connection.
pub fn send(gateway: SocketAddr, wire: &Wire) -> Outcome {
    let h1 = |bytes: &[u8], then_close: bool| {
        RawConn::connect(gateway, TIMEOUT).and_then(|mut conn| {
            if then_close {
                conn.send(bytes)?;
                conn.finish_sending()?;
                conn.read_response()
            } else {
                conn.exchange(bytes)
            }
        })
    };
    let result = match wire {
        Wire::H1(bytes) => h1(bytes, false),
        Wire::H1ThenClose(bytes) => h1(bytes, true),
        Wire::H2(request) => {
            return match h2c::exchange(gateway, request, TIMEOUT) {
                Ok(r) => Outcome::Response(r),
                Err(H2Error::Reset(reason)) => Outcome::Reset(reason),
                Err(e) => Outcome::Failed(e.to_string()),
            }
        }
    };
    match result {
        Ok(r) => Outcome::Response(r),
        Err(RawError::Closed { received: 0 }) => Outcome::Closed,
        Err(e) => Outcome::Failed(e.to_string()),
    }
}

/// Waits, at most `limit`, until 8 `probe`s in a row on fresh connections (spread over the
/// workers) get `status`; whether they did.
pub fn settle(gateway: SocketAddr, probe: &Wire, status: u16, limit: Duration) -> bool {
    let deadline = Instant::now() + limit;
    let mut in_a_row = 0;
    while in_a_row < 8 {
        match send(gateway, probe) {
            Outcome::Response(r) if r.status == status => in_a_row += 1,
            _ if Instant::now() > deadline => return false,
            _ => {
                in_a_row = 0;
                std::thread::sleep(Duration::from_millis(100));
            }
        }
    }
    true
}

/// A short name for an answer: `400 invalid-request-id`, `431`, `closed`, `reset (…)`.
pub fn describe(outcome: &Outcome) -> String {
    match outcome {
        Outcome::Response(r) => match problem_slug(r) {
            Some(slug) => format!("{} {slug}", r.status),
            None => r.status.to_string(),
        },
        Outcome::Closed => "closed".into(),
        Outcome::Reset(reason) => format!("reset ({reason})"),
        Outcome::Failed(why) => format!("no answer ({why})"),
    }
}

fn problem_slug(r: &RawResponse) -> Option<String> {
    let json = r.json()?;
    let slug = json["type"]
        .as_str()?
        .strip_prefix("urn:workspace-api:problem:")?;
    Some(slug.to_owned())
}

/// Whether `outcome` is what `expect` says; `Err` tells what differs.
pub fn verdict(expect: Expect, outcome: &Outcome) -> Result<(), String> {
    let response = match (outcome, expect) {
        (Outcome::Response(r), _) => r,
        (Outcome::Closed, Expect::AnsweredOrClosed) | (Outcome::Reset(_), Expect::Refused) => {
            return Ok(())
        }
        _ => return Err("no complete response".into()),
    };
    match expect {
        Expect::Problem(status, slug) => check_problem(response, status, slug),
        Expect::Status(status) if response.status == status => Ok(()),
        Expect::Answered | Expect::AnsweredOrClosed if response.status < 500 => Ok(()),
        _ => Err(response.summary()),
    }
}

fn check_problem(r: &RawResponse, status: u16, slug: &str) -> Result<(), String> {
    let fail = |what: &str| Err(format!("{what}: {}", r.summary()));
    if r.status != status {
        return fail("status");
    }
    if r.header("content-type").as_deref() != Some("application/problem+json") {
        return fail("content-type");
    }
    let Some(body) = r.json() else {
        return fail("body not JSON");
    };
    if body["type"] != format!("urn:workspace-api:problem:{slug}") || body["status"] != status {
        return fail("type or status in the body");
    }
    let rid = r.header("x-request-id").unwrap_or_default();
    if rid.len() != 36 || body["requestId"] != rid.as_str() {
        return fail("request ID");
    }
    let challenge = r.header("www-authenticate").unwrap_or_default();
    if status == 401 && !challenge.starts_with("Bearer") {
        return fail("WWW-Authenticate");
    }
    Ok(())
}
