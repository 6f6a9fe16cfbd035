//! When remote key sets are fetched, and which requests wait for them: a state machine with
//! the clock passed in, in the manner of Envoy's `jwks_async_fetcher`.
//!
//! Events come in ([`KeyFetcher::hold`] a request that needs an issuer's keys,
//! [`KeyFetcher::tick`] of the timer, [`KeyFetcher::fetched`] an answer, [`KeyFetcher::gone`] a
//! request that went away); what the adapter must do comes out as [`Command`]s (install a
//! key set, report a failure, resume a request). Starting a fetch is the one synchronous
//! host effect, through [`KeyServer`], because a request whose fetch cannot start must be
//! decided at once, inside the callback that asked.
//!
//! The schedule of one issuer with `remote_jwks`:
//! - **first load**: at the first tick after configuration, or earlier when a request needs
//!   the keys;
//! - **after a success**: the next fetch `refresh_interval` later;
//! - **after a failure** (the fetch could not start, failed, answered other than 200, or
//!   with an unusable set): the next fetch [`retry_after_failure`] later (1 to 5 s), and the
//!   keys last fetched stay in use;
//! - **unknown `kid`**: a token naming a key the set lacks triggers a fetch at once, at most
//!   once per `min_refresh_interval`;
//! - **lost answer**: a fetch whose answer never comes (the request context that started it
//!   went away, and the host dropped its callback) stops counting as in flight
//!   [`LOST_CALL_GRACE`] after its timeout, so the schedule never stalls behind it.
//! - **OpenID Connect discovery** (`remote_jwks.discovery`): a load or scheduled refresh
//!   reads the discovery document first; when it states the configured issuer and a usable
//!   `jwks_uri`, the key set there is fetched at once. A failure of either counts as the
//!   fetch's failure, and the next attempt reads the discovery document again. An unknown
//!   `kid` refetches the key set where discovery last found it.
//!
//! A request whose issuer's keys are missing (or lack its `kid`) waits for the fetch in
//! flight, at most `limits.key_wait`; at most `limits.max_waiting_for_keys` wait at once.
//! When the fetch ends, well or badly, or the wait is over, the request is resumed: the
//! adapter decides it again, without waiting, with the keys there are.

use std::time::Duration;

use serde::Deserialize;

use crate::config::{Discovery, Policy, RemoteJwks};
use crate::duration;
use crate::jwks::JwkSet;

/// The timer period (ms) the adapter asks for when some issuer has remote keys: the
/// granularity of the schedule and of the wait bound.
pub const TICK_MS: u32 = 200;

/// Bounds of the delay before retrying a failed fetch (see [`retry_after_failure`]).
pub const RETRY_BOUNDS: (Duration, Duration) = (Duration::from_secs(1), Duration::from_secs(5));

/// How long past its timeout a fetch without an answer still counts as in flight.
pub const LOST_CALL_GRACE: Duration = Duration::from_secs(1);

/// How much of an answer's body the adapter reads: one byte more than a key set may have,
/// so an oversized one is recognized and refused.
pub const MAX_BODY_READ: usize = JwkSet::MAX_BYTES + 1;

/// The delay before retrying a failed fetch: `min_refresh_interval` (the operator's floor on
/// how often the key server is asked), within [`RETRY_BOUNDS`], and never later than the
/// regular `refresh_interval`.
pub fn retry_after_failure(remote: &RemoteJwks) -> Duration {
    let (floor, ceiling) = RETRY_BOUNDS;
    remote
        .min_refresh_interval
        .clamp(floor, ceiling)
        .min(remote.refresh_interval)
}

/// One fetch to start: a `GET` of the issuer's JWKS through an Envoy cluster.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Fetch<'a> {
    /// The issuer (index in [`Policy::issuers`]).
    pub issuer: usize,
    /// The cluster that reaches the key server.
    pub cluster: &'a str,
    /// The request headers, pseudo-headers included.
    pub headers: [(&'static str, &'a str); 4],
    /// The call's timeout: the host answers (with a failure) by then.
    pub timeout: Duration,
}

/// An absolute `http(s)` URL, split into what a fetch through a cluster sends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Location<'a> {
    /// `https`.
    pub secure: bool,
    /// The host and port: the fetch's `:authority`.
    pub authority: &'a str,
    /// The path (and query), starting with `/`; the fragment is dropped.
    pub path: &'a str,
}

impl<'a> Location<'a> {
    /// Splits `url`; `None` unless it is `https://` or `http://`, a host without user
    /// information, and printable ASCII.
    pub fn parse(url: &'a str) -> Option<Self> {
        let (secure, rest) = match url.strip_prefix("https://") {
            Some(rest) => (true, rest),
            None => (false, url.strip_prefix("http://")?),
        };
        let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
        let (authority, tail) = rest.split_at(end);
        let tail = tail.split('#').next().unwrap_or_default();
        let printable = |t: &str| t.bytes().all(|b| b.is_ascii_graphic());
        if authority.is_empty() || authority.contains('@') || !printable(authority) {
            return None;
        }
        let path = match tail {
            "" => "/",
            t if t.starts_with('/') && printable(t) => t,
            _ => return None,
        };
        Some(Self {
            secure,
            authority,
            path,
        })
    }
}

/// The part of an OpenID Connect discovery document the fetcher reads.
#[derive(Deserialize)]
struct DiscoveryDocument {
    issuer: String,
    jwks_uri: String,
}

/// Where a key set is fetched from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Target {
    cluster: String,
    authority: String,
    path: String,
}

/// Reads a discovery document's answer: where the key set is, or why it cannot be used.
fn discovered(
    discovery: &Discovery,
    remote: &RemoteJwks,
    status: &[u8],
    body: &[u8],
) -> Result<Target, String> {
    if status != b"200" {
        return Err(format!(
            "discovery: status {}",
            String::from_utf8_lossy(status)
        ));
    }
    if body.len() > JwkSet::MAX_BYTES {
        return Err(format!(
            "discovery: document larger than {} bytes",
            JwkSet::MAX_BYTES
        ));
    }
    let doc: DiscoveryDocument = serde_json::from_slice(body)
        .map_err(|e| format!("discovery: not a discovery document ({e})"))?;
    if doc.issuer != discovery.issuer {
        return Err(format!(
            "discovery: the document states issuer {:?}, not the configured one",
            doc.issuer
        ));
    }
    let Some(at) = Location::parse(&doc.jwks_uri) else {
        return Err("discovery: `jwks_uri` is not an absolute http(s) URL".into());
    };
    if discovery.secure && !at.secure {
        return Err("discovery: `jwks_uri` is not https".into());
    }
    let cluster = if at.authority == remote.authority {
        remote.cluster.clone()
    } else {
        discovery.jwks_cluster.clone().ok_or_else(|| {
            format!(
                "discovery: `jwks_uri` is on host {:?}; name a cluster that reaches it in `remote_jwks.jwks_cluster`",
                at.authority
            )
        })?
    };
    Ok(Target {
        cluster,
        authority: at.authority.to_owned(),
        path: at.path.to_owned(),
    })
}

/// Starts fetches: the host's HTTP call.
pub trait KeyServer {
    /// Starts `fetch`; the call's token, which comes back with the answer, or `None` when the
    /// host refused to start it (the implementation reports why).
    fn start(&mut self, fetch: &Fetch<'_>) -> Option<u32>;
}

/// What became of a request that needs keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Hold {
    /// Held until a [`Command::Resume`] for it: the adapter pauses it.
    Wait,
    /// No fetch can be waited for (none may start now): decide at once with the keys there are.
    DecideNow,
    /// Too many requests wait already: answer 503 `too_many_waiting_for_keys`.
    Full,
}

/// A held request, handed back when it stops waiting.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Waiter<W> {
    /// The host's id of the request (its context).
    pub id: u32,
    /// What the adapter keeps of it.
    pub request: W,
}

/// What the adapter must do, in order.
#[derive(Debug)]
pub enum Command<W> {
    /// A fetch succeeded: these keys replace the issuer's previously fetched ones.
    Install {
        /// The issuer.
        issuer: usize,
        /// The fetched set.
        keys: JwkSet,
    },
    /// A fetch failed: count it and log `why`. The issuer's keys stay as they were.
    Failed {
        /// The issuer.
        issuer: usize,
        /// Why, for the log (no key material).
        why: String,
    },
    /// The request stops waiting: decide it again, without waiting, and resume it.
    Resume(Waiter<W>),
}

/// Which document a fetch reads.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Document {
    Keys,
    Discovery,
}

/// A fetch in flight.
#[derive(Debug)]
struct Call {
    token: u32,
    since_ms: u64,
    document: Document,
}

#[derive(Debug)]
struct Schedule {
    remote: RemoteJwks,
    /// The fetch in flight.
    call: Option<Call>,
    /// When a fetch last started (or failed to start).
    last_attempt_ms: Option<u64>,
    /// When the next scheduled fetch is due.
    next_due_ms: u64,
    /// Where discovery last found the key set.
    found: Option<Target>,
    /// The next load or scheduled refresh reads the discovery document first.
    rediscover: bool,
}

#[derive(Debug)]
struct Parked<W> {
    waiter: Waiter<W>,
    issuer: usize,
    deadline_ms: u64,
}

/// The key-fetch schedule of every issuer of one worker and the requests waiting for keys.
/// `W` is what the adapter needs to resume a request.
#[derive(Debug)]
pub struct KeyFetcher<W> {
    /// Per issuer, in [`Policy::issuers`] order; `None` for inline-only issuers.
    issuers: Vec<Option<Schedule>>,
    waiting: Vec<Parked<W>>,
    key_wait_ms: u64,
    max_waiting: usize,
}

impl<W> KeyFetcher<W> {
    /// The schedule of `policy`'s remote issuers, each due for its first load.
    pub fn new(policy: &Policy) -> Self {
        let issuers = policy
            .issuers
            .iter()
            .map(|i| {
                i.remote.clone().map(|remote| Schedule {
                    rediscover: remote.discovery.is_some(),
                    remote,
                    call: None,
                    last_attempt_ms: None,
                    next_due_ms: 0,
                    found: None,
                })
            })
            .collect();
        Self {
            issuers,
            waiting: Vec::new(),
            key_wait_ms: policy.limits.key_wait_ms,
            max_waiting: policy.limits.max_waiting_for_keys,
        }
    }

    /// The timer period the adapter needs, in ms: [`TICK_MS`] when some issuer has remote
    /// keys, `None` (no timer) otherwise.
    pub fn tick_period_ms(&self) -> Option<u32> {
        self.issuers.iter().any(Option::is_some).then_some(TICK_MS)
    }

    /// How many requests wait for keys.
    pub fn waiting(&self) -> usize {
        self.waiting.len()
    }

    /// A request (`id`) needs `issuer`'s keys: they are not loaded, or (`has_keys`) they lack
    /// the token's `kid`, which may start a fetch at most once per `min_refresh_interval`.
    /// On [`Hold::Wait`] the fetcher keeps `request` until it hands it back in a
    /// [`Command::Resume`].
    pub fn hold(
        &mut self,
        id: u32,
        issuer: usize,
        has_keys: bool,
        request: W,
        now_ms: u64,
        server: &mut dyn KeyServer,
    ) -> Hold {
        // Each held request keeps a stream open: past the bound, answer now.
        if self.waiting.len() >= self.max_waiting {
            return Hold::Full;
        }
        if !self.in_flight(issuer, now_ms, has_keys, server) {
            return Hold::DecideNow;
        }
        self.waiting.push(Parked {
            waiter: Waiter { id, request },
            issuer,
            deadline_ms: now_ms.saturating_add(self.key_wait_ms),
        });
        Hold::Wait
    }

    /// The timer: starts the fetches that are due, then resumes the requests whose wait is over.
    pub fn tick(&mut self, now_ms: u64, server: &mut dyn KeyServer) -> Vec<Command<W>> {
        for issuer in 0..self.issuers.len() {
            let due = self
                .issuers
                .get(issuer)
                .and_then(Option::as_ref)
                .is_some_and(|s| now_ms >= s.next_due_ms);
            if due {
                // Skips an issuer whose fetch is in flight, unless its answer is lost.
                self.in_flight(issuer, now_ms, false, server);
            }
        }
        self.resume(|p| now_ms >= p.deadline_ms)
    }

    /// The answer to the fetch `token`: its `:status` and (up to [`MAX_BODY_READ`]) body.
    /// Installs the keys or reports the failure, schedules the next fetch, and resumes the
    /// requests that waited for them; a discovery document's answer starts the key set's
    /// fetch instead, through `server`. An answer to no fetch in flight is ignored.
    pub fn fetched(
        &mut self,
        token: u32,
        status: &[u8],
        body: &[u8],
        now_ms: u64,
        server: &mut dyn KeyServer,
    ) -> Vec<Command<W>> {
        let Some((issuer, schedule)) = self.issuers.iter_mut().enumerate().find_map(|(i, s)| {
            s.as_mut()
                .filter(|s| s.call.as_ref().is_some_and(|c| c.token == token))
                .map(|s| (i, s))
        }) else {
            return Vec::new();
        };
        let document = schedule.call.take().map_or(Document::Keys, |c| c.document);
        let parsed = match (document, &schedule.remote.discovery) {
            (Document::Discovery, Some(discovery)) => {
                match discovered(discovery, &schedule.remote, status, body) {
                    Ok(target) => {
                        schedule.found = Some(target);
                        schedule.rediscover = false;
                        // The key set now; the requests keep waiting for it. One that
                        // cannot start is retried later and has already been reported.
                        if self.in_flight(issuer, now_ms, false, server) {
                            return Vec::new();
                        }
                        return self.resume(|p| p.issuer == issuer);
                    }
                    Err(why) => Err(why),
                }
            }
            _ if status == b"200" => JwkSet::from_slice(body).map_err(|e| e.to_string()),
            _ => Err(format!("status {}", String::from_utf8_lossy(status))),
        };
        // Every load and scheduled refresh after this one reads the discovery document again.
        schedule.rediscover = schedule.remote.discovery.is_some();
        let first = match parsed {
            Ok(keys) => {
                schedule.next_due_ms =
                    now_ms.saturating_add(duration::millis(schedule.remote.refresh_interval));
                Command::Install { issuer, keys }
            }
            Err(why) => {
                schedule.next_due_ms =
                    now_ms.saturating_add(duration::millis(retry_after_failure(&schedule.remote)));
                Command::Failed { issuer, why }
            }
        };
        let mut commands = vec![first];
        commands.extend(self.resume(|p| p.issuer == issuer));
        commands
    }

    /// The request `id` went away: it is no longer waiting.
    pub fn gone(&mut self, id: u32) {
        self.waiting.retain(|p| p.waiter.id != id);
    }

    /// Whether a fetch of `issuer` is in flight, starting one if none is and one may start.
    fn in_flight(
        &mut self,
        issuer: usize,
        now_ms: u64,
        unknown_kid: bool,
        server: &mut dyn KeyServer,
    ) -> bool {
        let Some(Some(s)) = self.issuers.get_mut(issuer) else {
            return false;
        };
        if let Some(since) = s.call.as_ref().map(|c| c.since_ms) {
            let lost_at = since
                .saturating_add(duration::millis(s.remote.timeout))
                .saturating_add(duration::millis(LOST_CALL_GRACE));
            if now_ms < lost_at {
                return true;
            }
            s.call = None;
        }
        let min_interval = duration::millis(s.remote.min_refresh_interval);
        if unknown_kid
            && s.last_attempt_ms
                .is_some_and(|last| now_ms < last.saturating_add(min_interval))
        {
            return false;
        }
        s.last_attempt_ms = Some(now_ms);
        // An unknown `kid` refetches the key set where discovery last found it.
        let discover =
            s.remote.discovery.is_some() && (s.found.is_none() || (s.rediscover && !unknown_kid));
        let (document, cluster, authority, path) = match &s.found {
            Some(t) if !discover => (Document::Keys, &t.cluster, &t.authority, &t.path),
            _ => {
                let document = if discover {
                    Document::Discovery
                } else {
                    Document::Keys
                };
                let r = &s.remote;
                (document, &r.cluster, &r.authority, &r.path)
            }
        };
        let fetch = Fetch {
            issuer,
            cluster,
            headers: [
                (":method", "GET"),
                (":path", path),
                (":authority", authority),
                ("accept", "application/json"),
            ],
            timeout: s.remote.timeout,
        };
        match server.start(&fetch) {
            Some(token) => {
                s.call = Some(Call {
                    token,
                    since_ms: now_ms,
                    document,
                });
                true
            }
            None => {
                s.next_due_ms =
                    now_ms.saturating_add(duration::millis(retry_after_failure(&s.remote)));
                false
            }
        }
    }

    /// Hands back the waiting requests `pick` selects, in the order they came.
    fn resume(&mut self, pick: impl Fn(&Parked<W>) -> bool) -> Vec<Command<W>> {
        let (resumed, kept) = std::mem::take(&mut self.waiting)
            .into_iter()
            .partition(|p| pick(p));
        self.waiting = kept;
        resumed
            .into_iter()
            .map(|p: Parked<W>| Command::Resume(p.waiter))
            .collect()
    }
}
