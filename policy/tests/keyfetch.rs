//! The key-fetch schedule (`edge_policy::keyfetch`) against a fake clock and a fake key
//! server: when fetches start, what an answer installs, which waiting requests resume.

#![allow(clippy::unwrap_used, clippy::panic)] // test helpers, not the request path

use std::time::Duration;

use edge_policy::keyfetch::{
    retry_after_failure, Command, Fetch, Hold, KeyFetcher, KeyServer, Waiter, LOST_CALL_GRACE,
    MAX_BODY_READ, TICK_MS,
};
use edge_policy::testkit::Keys;
use edge_policy::{Policy, RequestHead, Step, Worker};
use serde_json::{json, Value};

/// Issuer 0 has inline keys only; 1, 2 and 3 fetch theirs (3 with the defaults).
fn policy(limits: Value) -> Policy {
    let keys = Keys::new(1);
    let remote = |name: &str, extra: Value| {
        let mut r = json!({"cluster": format!("{name}-cluster"), "authority": format!("{name}.test"), "path": "/jwks"});
        for (k, v) in extra.as_object().unwrap() {
            r[k] = v.clone();
        }
        json!({"issuer": name, "audiences": ["api"], "algorithms": ["EdDSA"], "remote_jwks": r})
    };
    let cfg = json!({
        "issuers": [
            {"issuer": "inline", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]}},
            remote("idp", json!({"refresh_interval": "60s", "min_refresh_interval": "10s", "timeout": "3s"})),
            remote("other", json!({"refresh_interval": "120s", "min_refresh_interval": "2s", "timeout": "1s"})),
            remote("defaults", json!({})),
        ],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "routes": [],
        "limits": limits,
    });
    Policy::from_json(cfg.to_string().as_bytes()).unwrap()
}

const IDP: usize = 1;
const OTHER: usize = 2;
const DEFAULTS: usize = 3;
/// `limits.key_wait` in [`fetcher`].
const KEY_WAIT: u64 = 5_000;

fn fetcher() -> KeyFetcher<&'static str> {
    KeyFetcher::new(&policy(
        json!({"key_wait": "5s", "max_waiting_for_keys": 3}),
    ))
}

/// Records the fetches it is asked to start; tokens count up from 100.
#[derive(Default)]
struct Server {
    started: Vec<(usize, u32)>,
    /// How many of `started` [`Server::take`] has handed out.
    taken: usize,
    refuse: bool,
}

impl KeyServer for Server {
    fn start(&mut self, fetch: &Fetch<'_>) -> Option<u32> {
        if self.refuse {
            return None;
        }
        let token = 100 + u32::try_from(self.started.len()).unwrap();
        self.started.push((fetch.issuer, token));
        Some(token)
    }
}

impl Server {
    /// The issuers whose fetches started since the last call.
    fn take(&mut self) -> Vec<usize> {
        let new = self.started[self.taken..].iter().map(|(i, _)| *i).collect();
        self.taken = self.started.len();
        new
    }

    /// Whether a fetch of `issuer` started since the last [`Server::take`].
    fn started(&mut self, issuer: usize) -> bool {
        self.take().contains(&issuer)
    }

    /// The token of the last fetch started for `issuer`.
    fn token(&self, issuer: usize) -> u32 {
        self.started
            .iter()
            .rev()
            .find(|(i, _)| *i == issuer)
            .map(|(_, t)| *t)
            .unwrap()
    }
}

fn good_set() -> Vec<u8> {
    json!({"keys": [Keys::new(2).jwk("ed")]})
        .to_string()
        .into_bytes()
}

/// Summarizes commands: `install 1`, `failed 1: why`, `resume a`.
fn summary(commands: &[Command<&'static str>]) -> Vec<String> {
    commands
        .iter()
        .map(|c| match c {
            Command::Install { issuer, keys } => {
                format!("install {issuer} ({} keys)", keys.keys.len())
            }
            Command::Failed { issuer, why } => format!("failed {issuer}: {why}"),
            Command::Resume(Waiter { request, .. }) => format!("resume {request}"),
        })
        .collect()
}

#[test]
fn the_first_tick_loads_every_remote_issuer_once() {
    let mut f = fetcher();
    let mut server = Server::default();
    assert_eq!(f.tick_period_ms(), Some(TICK_MS));
    assert!(f.tick(0, &mut server).is_empty());
    assert_eq!(
        server.take(),
        [IDP, OTHER, DEFAULTS],
        "inline issuers are never fetched"
    );
    // In flight: later ticks start nothing more.
    for t in [200, 400, 1_800] {
        f.tick(t, &mut server);
        assert!(server.take().is_empty(), "at {t}");
    }
}

#[test]
fn a_fetch_asks_the_cluster_for_the_configured_path() {
    struct Capture(Vec<String>);
    impl KeyServer for Capture {
        fn start(&mut self, fetch: &Fetch<'_>) -> Option<u32> {
            self.0.push(format!("{fetch:?}"));
            None
        }
    }
    let mut f = fetcher();
    let mut capture = Capture(Vec::new());
    f.tick(0, &mut capture);
    let want = Fetch {
        issuer: IDP,
        cluster: "idp-cluster",
        headers: [
            (":method", "GET"),
            (":path", "/jwks"),
            (":authority", "idp.test"),
            ("accept", "application/json"),
        ],
        timeout: Duration::from_secs(3),
    };
    assert_eq!(capture.0.first(), Some(&format!("{want:?}")));
}

#[test]
fn without_remote_issuers_there_is_no_timer() {
    let keys = Keys::new(1);
    let cfg = json!({
        "issuers": [{"issuer": "inline", "audiences": ["api"], "algorithms": ["EdDSA"], "jwks": {"keys": [keys.jwk("ed")]}}],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "routes": [],
    });
    let f: KeyFetcher<()> =
        KeyFetcher::new(&Policy::from_json(cfg.to_string().as_bytes()).unwrap());
    assert_eq!(f.tick_period_ms(), None);
}

#[test]
fn after_a_success_the_next_fetch_is_refresh_interval_later() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.tick(0, &mut server);
    let token = server.token(IDP);
    server.take();
    let got = f.fetched(token, b"200", &good_set(), 700, &mut server);
    assert_eq!(summary(&got), ["install 1 (1 keys)"]);
    // refresh_interval 60s, counted from the answer.
    let mut t = 800;
    while t < 60_700 {
        f.tick(t, &mut server);
        assert!(!server.started(IDP), "refetched early at {t}");
        t += 200;
    }
    f.tick(60_700, &mut server);
    assert!(server.started(IDP));
    // And again after the next success.
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 61_000, &mut server);
    assert_eq!(summary(&got), ["install 1 (1 keys)"]);
    f.tick(120_999, &mut server);
    assert!(!server.started(IDP));
    f.tick(121_000, &mut server);
    assert!(server.started(IDP));
}

#[test]
fn after_a_failure_the_retry_comes_sooner_and_the_keys_stay() {
    let cases: [(&str, &[u8], Vec<u8>, &str); 5] = [
        (
            "server error",
            b"503",
            b"upstream connect error".to_vec(),
            "status 503",
        ),
        ("not found", b"404", Vec::new(), "status 404"),
        (
            "not a key set",
            b"200",
            b"<html>".to_vec(),
            "not a JWKS document",
        ),
        (
            "no usable key",
            b"200",
            br#"{"keys": []}"#.to_vec(),
            "contains no signature verification key",
        ),
        (
            "too large",
            b"200",
            vec![b' '; MAX_BODY_READ],
            "larger than",
        ),
    ];
    for (name, status, body, why) in cases {
        let mut f = fetcher();
        let mut server = Server::default();
        f.tick(0, &mut server);
        f.fetched(server.token(IDP), b"200", &good_set(), 100, &mut server);
        f.tick(60_100, &mut server);
        let got = f.fetched(server.token(IDP), status, &body, 60_200, &mut server);
        let got = summary(&got);
        assert_eq!(got.len(), 1, "{name}: {got:?}");
        assert!(
            got[0].starts_with("failed 1: "),
            "{name}: nothing to install: {got:?}"
        );
        assert!(got[0].contains(why), "{name}: {got:?}");
        // min_refresh_interval 10s clamped to 5s.
        server.take();
        f.tick(65_199, &mut server);
        assert!(!server.started(IDP), "{name}: retried early");
        f.tick(65_200, &mut server);
        assert!(server.started(IDP), "{name}");
    }
}

#[test]
fn the_retry_delay_is_min_refresh_within_one_to_five_seconds_and_never_past_refresh() {
    let issuers = policy(json!({})).issuers;
    let base = issuers[IDP].remote.clone().unwrap();
    let cases = [
        // (min_refresh_interval, refresh_interval) -> retry, in ms
        ((10_000, 60_000), 5_000),
        ((2_000, 60_000), 2_000),
        ((0, 60_000), 1_000),
        ((30_000, 3_000), 3_000),
        ((30_000, 1_000), 1_000),
    ];
    for ((min, refresh), want) in cases {
        let mut remote = base.clone();
        remote.min_refresh_interval = Duration::from_millis(min);
        remote.refresh_interval = Duration::from_millis(refresh);
        assert_eq!(
            retry_after_failure(&remote),
            Duration::from_millis(want),
            "{min} {refresh}"
        );
    }
    // The defaults (refresh 5m, min refresh 30s, timeout 5s) give 5 s.
    let defaults = issuers[DEFAULTS].remote.as_ref().unwrap();
    assert_eq!(
        (
            defaults.refresh_interval,
            defaults.min_refresh_interval,
            defaults.timeout
        ),
        (
            Duration::from_secs(300),
            Duration::from_secs(30),
            Duration::from_secs(5)
        )
    );
    assert_eq!(retry_after_failure(defaults), Duration::from_secs(5));
}

#[test]
fn a_request_waits_for_the_fetch_in_flight_and_resumes_when_it_lands() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.tick(0, &mut server);
    assert_eq!(f.hold(7, IDP, false, "a", 50, &mut server), Hold::Wait);
    assert_eq!(f.hold(8, OTHER, false, "b", 60, &mut server), Hold::Wait);
    assert_eq!(f.hold(9, IDP, false, "c", 70, &mut server), Hold::Wait);
    assert_eq!(
        server.take(),
        [IDP, OTHER, DEFAULTS],
        "they join the fetches in flight"
    );
    assert_eq!(f.waiting(), 3);
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 300, &mut server);
    assert_eq!(
        summary(&got),
        ["install 1 (1 keys)", "resume a", "resume c"]
    );
    // Issuer 2's request keeps waiting for its own keys; a failure resumes it too.
    assert_eq!(f.waiting(), 1);
    let got = f.fetched(server.token(OTHER), b"500", b"", 400, &mut server);
    assert_eq!(summary(&got), ["failed 2: status 500", "resume b"]);
    assert_eq!(f.waiting(), 0);
}

#[test]
fn a_request_that_needs_keys_starts_the_first_load_itself() {
    let mut f = fetcher();
    let mut server = Server::default();
    assert_eq!(f.hold(7, OTHER, false, "a", 10, &mut server), Hold::Wait);
    assert_eq!(server.take(), [OTHER]);
    // The tick loads the others, and leaves the fetch in flight alone.
    f.tick(200, &mut server);
    assert_eq!(server.take(), [IDP, DEFAULTS]);
    let got = f.fetched(100, b"200", &good_set(), 300, &mut server);
    assert_eq!(summary(&got), ["install 2 (1 keys)", "resume a"]);
}

#[test]
fn the_wait_is_bounded_by_key_wait() {
    let mut f = fetcher();
    let mut server = Server::default();
    assert_eq!(f.hold(7, IDP, false, "a", 1_000, &mut server), Hold::Wait);
    assert_eq!(f.hold(8, IDP, false, "b", 1_150, &mut server), Hold::Wait);
    assert!(f.tick(1_000 + KEY_WAIT - 1, &mut server).is_empty());
    assert_eq!(
        summary(&f.tick(1_000 + KEY_WAIT, &mut server)),
        ["resume a"]
    );
    assert_eq!(
        summary(&f.tick(1_150 + KEY_WAIT, &mut server)),
        ["resume b"]
    );
    // Keys that land later resume no one.
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 9_000, &mut server);
    assert_eq!(summary(&got), ["install 1 (1 keys)"]);
}

#[test]
fn at_most_max_waiting_for_keys_wait_at_once() {
    let mut f = fetcher();
    let mut server = Server::default();
    for (id, name) in [(1, "a"), (2, "b"), (3, "c")] {
        assert_eq!(f.hold(id, IDP, false, name, 0, &mut server), Hold::Wait);
    }
    assert_eq!(f.hold(4, OTHER, false, "d", 0, &mut server), Hold::Full);
    assert_eq!(server.take(), [IDP], "a refused request starts no fetch");
    f.gone(2);
    assert_eq!(
        f.hold(5, IDP, false, "e", 0, &mut server),
        Hold::Wait,
        "room again"
    );
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 10, &mut server);
    assert_eq!(summary(&got)[1..], ["resume a", "resume c", "resume e"]);
    assert_eq!(f.hold(6, IDP, true, "f", 20, &mut server), Hold::DecideNow);
}

#[test]
fn a_request_that_went_away_is_never_resumed() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.hold(7, IDP, false, "a", 0, &mut server);
    f.hold(8, IDP, false, "b", 0, &mut server);
    f.gone(7);
    f.gone(99); // never waited: nothing happens
    assert_eq!(f.waiting(), 1);
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 10, &mut server);
    assert_eq!(summary(&got), ["install 1 (1 keys)", "resume b"]);
    f.hold(9, OTHER, false, "c", 20, &mut server);
    f.gone(9);
    assert!(f.tick(20 + KEY_WAIT, &mut server).is_empty());
}

#[test]
fn a_fetch_that_cannot_start_decides_the_request_now_and_is_retried_later() {
    let mut f = fetcher();
    let mut server = Server {
        refuse: true,
        ..Server::default()
    };
    assert_eq!(f.hold(7, IDP, false, "a", 0, &mut server), Hold::DecideNow);
    assert_eq!(f.waiting(), 0);
    // Not every tick (the stall fixed in f37bf5f): the scheduled retry waits 5 s.
    server.refuse = false;
    for t in (200..5_000).step_by(200) {
        f.tick(t, &mut server);
        assert!(!server.started(IDP), "retried at {t}");
    }
    f.tick(5_000, &mut server);
    assert!(server.started(IDP));
}

#[test]
fn a_lost_answer_does_not_stall_the_schedule() {
    // The f37bf5f stall: a fetch started by a request whose context went away never gets an
    // answer; the schedule must start a new one once the first one's timeout (3s) and the
    // grace have passed, at the tick, without any request asking.
    let mut f = fetcher();
    let mut server = Server::default();
    assert_eq!(f.hold(7, IDP, false, "a", 0, &mut server), Hold::Wait);
    let lost = server.token(IDP);
    server.take();
    f.gone(7);
    let lost_at = 3_000 + u64::try_from(LOST_CALL_GRACE.as_millis()).unwrap();
    for t in (200..lost_at).step_by(200) {
        f.tick(t, &mut server);
        assert!(!server.started(IDP), "a second fetch at {t}");
    }
    f.tick(lost_at, &mut server);
    assert!(server.started(IDP));
    // Should the lost answer come after all, it is not the fetch in flight: ignored.
    assert!(f
        .fetched(lost, b"200", &good_set(), lost_at + 1, &mut server)
        .is_empty());
    let got = f.fetched(
        server.token(IDP),
        b"200",
        &good_set(),
        lost_at + 2,
        &mut server,
    );
    assert_eq!(summary(&got), ["install 1 (1 keys)"]);
}

#[test]
fn an_unknown_kid_refreshes_at_most_once_per_min_refresh_interval() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.tick(0, &mut server);
    f.fetched(server.token(IDP), b"200", &good_set(), 100, &mut server);
    server.take();
    // Within min_refresh_interval (10s) of the first load: decided with the keys there are.
    assert_eq!(
        f.hold(7, IDP, true, "a", 9_999, &mut server),
        Hold::DecideNow
    );
    assert!(server.take().is_empty());
    // Later, a token naming a key the set lacks: a fetch at once, and the request waits.
    assert_eq!(f.hold(8, IDP, true, "b", 10_000, &mut server), Hold::Wait);
    assert_eq!(server.take(), [IDP]);
    let got = f.fetched(server.token(IDP), b"200", &good_set(), 10_100, &mut server);
    assert_eq!(summary(&got), ["install 1 (1 keys)", "resume b"]);
    assert_eq!(
        f.hold(9, IDP, true, "c", 19_999, &mut server),
        Hold::DecideNow
    );
    assert_eq!(f.hold(10, IDP, true, "d", 20_000, &mut server), Hold::Wait);
    assert_eq!(server.take(), [IDP]);
}

#[test]
fn answers_to_no_fetch_in_flight_are_ignored() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.hold(7, IDP, false, "a", 0, &mut server);
    assert!(f
        .fetched(4_242, b"200", &good_set(), 10, &mut server)
        .is_empty());
    let token = server.token(IDP);
    assert_eq!(
        f.fetched(token, b"200", &good_set(), 20, &mut server).len(),
        2
    );
    assert!(
        f.fetched(token, b"200", &good_set(), 30, &mut server)
            .is_empty(),
        "answered twice"
    );
}

#[test]
fn many_issuers_keep_their_own_schedules() {
    let mut f = fetcher();
    let mut server = Server::default();
    f.tick(0, &mut server);
    let (idp, other, defaults) = (
        server.token(IDP),
        server.token(OTHER),
        server.token(DEFAULTS),
    );
    server.take();
    f.fetched(idp, b"200", &good_set(), 1_000, &mut server); // next at 61 s
    f.fetched(other, b"500", b"", 1_000, &mut server); // retry after 2 s (its min_refresh_interval)
    f.fetched(defaults, b"200", &good_set(), 1_000, &mut server); // next at 301 s
    let mut starts = Vec::new();
    let mut t = 1_000;
    while t <= 301_000 {
        f.tick(t, &mut server);
        for issuer in server.take() {
            starts.push((issuer, t));
            let token = server.token(issuer);
            // `other` keeps failing; the others succeed.
            let status: &[u8] = if issuer == OTHER { b"500" } else { b"200" };
            f.fetched(token, status, &good_set(), t, &mut server);
        }
        t += 200;
    }
    let at = |issuer| -> Vec<u64> {
        starts
            .iter()
            .filter(|(i, _)| *i == issuer)
            .map(|(_, t)| *t)
            .collect()
    };
    assert_eq!(at(IDP), [61_000, 121_000, 181_000, 241_000, 301_000]);
    assert_eq!(at(DEFAULTS), [301_000]);
    let other = at(OTHER);
    assert_eq!(other.len(), 150, "every 2 s: {other:?}");
    assert!(other.windows(2).all(|w| w[1] - w[0] == 2_000));
}

/// The fetcher and the worker together, as the filter runs them: a request for a remote
/// issuer waits, the fetched keys are installed, the request decided again passes, and a
/// failed refresh later leaves the keys in use.
#[test]
fn installed_keys_verify_and_survive_a_failed_refresh() {
    let signer = Keys::new(2);
    let policy = std::sync::Arc::new(policy(json!({})));
    let mut f: KeyFetcher<&str> = KeyFetcher::new(&policy);
    let mut worker = Worker::new(policy, b"0123456789abcdef0123456789abcdef".to_vec());
    let store = edge_policy::store::MemoryStore::default();
    worker.init_shared(&store, [7; 16]).unwrap();
    let now_ms = 1_800_000_000_000;
    let bearer = |sub: &str| {
        let claims = edge_policy::testkit::claims("idp", "api", sub, 1_800_000_000);
        format!(
            "Bearer {}",
            signer.sign(edge_policy::jwt::Alg::EdDSA, Some("ed"), &claims)
        )
    };
    let decide = |worker: &mut Worker, auth: &str, may_wait: bool| {
        let headers: Vec<(&[u8], &[u8])> = vec![(b"authorization", auth.as_bytes())];
        let req = RequestHead {
            method: b"GET",
            path: b"/anything",
            headers: &headers,
            client_addr: None,
            has_body: false,
        };
        let mut random = || [1u8; 16];
        let mut host = edge_policy::Host {
            store: &store,
            now_ms,
            random: &mut random,
        };
        worker.on_headers(&req, &mut host, may_wait, &mut Default::default())
    };
    let mut server = Server::default();
    let first = bearer("u-1");
    let Step::WaitForKeys { issuer } = decide(&mut worker, &first, true) else {
        panic!("the keys are not loaded yet")
    };
    assert_eq!(issuer, IDP);
    let held = f.hold(1, issuer, worker.has_keys(issuer), "r", now_ms, &mut server);
    assert_eq!(held, Hold::Wait);
    let mut resumed = 0;
    for command in f.fetched(
        server.token(IDP),
        b"200",
        &good_set(),
        now_ms + 5,
        &mut server,
    ) {
        match command {
            Command::Install { issuer, keys } => worker.set_remote_keys(issuer, keys),
            Command::Resume(_) => {
                resumed += 1;
                assert!(matches!(decide(&mut worker, &first, false), Step::Forward));
            }
            Command::Failed { .. } => panic!("the fetch succeeded"),
        }
    }
    assert_eq!(resumed, 1);
    f.tick(now_ms + 300_005, &mut server);
    let got = f.fetched(
        server.token(IDP),
        b"500",
        b"",
        now_ms + 300_010,
        &mut server,
    );
    assert!(matches!(got.as_slice(), [Command::Failed { .. }]));
    // A token never seen (not in the worker's cache) still verifies with the kept keys.
    assert!(matches!(
        decide(&mut worker, &bearer("u-2"), true),
        Step::Forward
    ));
}

/// Records every fetch as `cluster authority path`; tokens count up from 1.
#[derive(Default)]
struct Recorder(Vec<String>);

impl KeyServer for Recorder {
    fn start(&mut self, fetch: &Fetch<'_>) -> Option<u32> {
        let header = |name: &str| {
            fetch
                .headers
                .iter()
                .find(|(n, _)| *n == name)
                .map(|(_, v)| *v)
                .unwrap()
        };
        self.0.push(format!(
            "{} {} {}",
            fetch.cluster,
            header(":authority"),
            header(":path")
        ));
        Some(u32::try_from(self.0.len()).unwrap())
    }
}

impl Recorder {
    fn last(&self) -> (u32, &str) {
        (
            u32::try_from(self.0.len()).unwrap(),
            self.0.last().unwrap().as_str(),
        )
    }
}

/// One issuer, `idp`, whose keys are found through the discovery document.
fn discovering(extra: Value) -> KeyFetcher<&'static str> {
    let mut remote = json!({
        "cluster": "idp-cluster",
        "discovery": "https://idp.test/.well-known/openid-configuration",
        "refresh_interval": "60s",
        "min_refresh_interval": "10s",
    });
    for (k, v) in extra.as_object().unwrap() {
        remote[k] = v.clone();
    }
    let cfg = json!({
        "issuers": [{"issuer": "https://idp.test", "audiences": ["api"], "algorithms": ["EdDSA"], "remote_jwks": remote}],
        "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
        "routes": [],
        "limits": {"key_wait": "5s"},
    });
    KeyFetcher::new(&Policy::from_json(cfg.to_string().as_bytes()).unwrap())
}

fn discovery_doc(issuer: &str, jwks_uri: &str) -> Vec<u8> {
    json!({"issuer": issuer, "jwks_uri": jwks_uri, "id_token_signing_alg_values_supported": ["EdDSA"]})
        .to_string()
        .into_bytes()
}

#[test]
fn discovery_is_read_first_and_its_jwks_uri_fetched_at_once() {
    let mut f = discovering(json!({}));
    let mut server = Recorder::default();
    assert_eq!(f.hold(7, 0, false, "r", 0, &mut server), Hold::Wait);
    let (token, fetch) = server.last();
    assert_eq!(
        fetch,
        "idp-cluster idp.test /.well-known/openid-configuration"
    );
    // The document names the key set: fetched at once, the request still waits for it.
    let doc = discovery_doc("https://idp.test", "https://idp.test/oauth/keys?v=2#frag");
    assert!(f.fetched(token, b"200", &doc, 50, &mut server).is_empty());
    let (token, fetch) = server.last();
    assert_eq!(fetch, "idp-cluster idp.test /oauth/keys?v=2");
    assert_eq!(f.waiting(), 1);
    let got = f.fetched(token, b"200", &good_set(), 80, &mut server);
    assert_eq!(summary(&got), ["install 0 (1 keys)", "resume r"]);
    // An unknown `kid` refetches the key set where discovery found it...
    f.hold(8, 0, true, "kid", 20_000, &mut server);
    assert_eq!(server.last().1, "idp-cluster idp.test /oauth/keys?v=2");
    f.fetched(server.last().0, b"200", &good_set(), 20_010, &mut server);
    // ...and the scheduled refresh reads the discovery document again.
    f.tick(20_010 + 60_000, &mut server);
    assert_eq!(
        server.last().1,
        "idp-cluster idp.test /.well-known/openid-configuration"
    );
}

#[test]
fn a_discovery_document_that_cannot_be_followed_fails_the_fetch() {
    let big = vec![b' '; MAX_BODY_READ];
    let cases: [(&[u8], Vec<u8>, &str); 6] = [
        (b"404", Vec::new(), "discovery: status 404"),
        (
            b"200",
            b"<html>".to_vec(),
            "discovery: not a discovery document",
        ),
        (b"200", big, "discovery: document larger than"),
        (
            b"200",
            discovery_doc("https://evil.test", "https://idp.test/keys"),
            "discovery: the document states issuer \"https://evil.test\"",
        ),
        (
            b"200",
            discovery_doc("https://idp.test", "http://idp.test/keys"),
            "discovery: `jwks_uri` is not https",
        ),
        (
            b"200",
            discovery_doc("https://idp.test", "https://keys.idp.test/keys"),
            "discovery: `jwks_uri` is on host \"keys.idp.test\"",
        ),
    ];
    for (status, body, why) in cases {
        let mut f = discovering(json!({}));
        let mut server = Recorder::default();
        f.hold(7, 0, false, "r", 0, &mut server);
        let got = summary(&f.fetched(server.last().0, status, &body, 10, &mut server));
        assert_eq!(got.len(), 2, "{got:?}");
        assert!(got[0].starts_with(&format!("failed 0: {why}")), "{got:?}");
        assert_eq!(got[1], "resume r");
        assert_eq!(server.0.len(), 1, "nothing followed");
        // The retry reads the discovery document again.
        f.tick(10 + 5_000, &mut server);
        assert_eq!(server.0.len(), 2);
        assert!(server
            .last()
            .1
            .ends_with("/.well-known/openid-configuration"));
    }
}

#[test]
fn a_jwks_uri_on_another_host_goes_through_jwks_cluster() {
    let mut f = discovering(json!({"jwks_cluster": "keys-cluster"}));
    let mut server = Recorder::default();
    f.tick(0, &mut server);
    let doc = discovery_doc("https://idp.test", "https://keys.idp.test:8443/jwks");
    f.fetched(server.last().0, b"200", &doc, 10, &mut server);
    assert_eq!(server.last().1, "keys-cluster keys.idp.test:8443 /jwks");
}

#[test]
fn discovery_configuration_is_checked_field_by_field() {
    let check = |remote: Value, field: &str| {
        let cfg = json!({
            "issuers": [{"issuer": "https://idp.test", "audiences": ["api"], "algorithms": ["EdDSA"], "remote_jwks": remote}],
            "identity": {"hmac_key": "0123456789abcdef0123456789abcdef"},
            "routes": [],
        });
        let e = Policy::from_json(cfg.to_string().as_bytes()).unwrap_err();
        assert!(e.to_string().contains(field), "{e} (want {field})");
    };
    let url = "https://idp.test/.well-known/openid-configuration";
    check(
        json!({"cluster": "c", "authority": "a", "path": "/jwks", "discovery": url}),
        "`issuers[0].remote_jwks`: exactly one",
    );
    check(
        json!({"cluster": "c", "authority": "a"}),
        "`issuers[0].remote_jwks`: exactly one",
    );
    check(
        json!({"cluster": "c", "discovery": "idp.test/.well-known/openid-configuration"}),
        "`issuers[0].remote_jwks.discovery`",
    );
    check(
        json!({"cluster": "c", "discovery": "https://user@idp.test/x"}),
        "`issuers[0].remote_jwks.discovery`",
    );
    check(
        json!({"cluster": "c", "authority": "a", "path": "/jwks", "jwks_cluster": "k"}),
        "`issuers[0].remote_jwks.jwks_cluster`",
    );
    check(
        json!({"cluster": "c", "path": "/jwks"}),
        "`issuers[0].remote_jwks.authority`",
    );
    // The authority defaults to the URL's host; another may be given.
    let mut f = discovering(json!({"authority": "idp.internal"}));
    let mut server = Recorder::default();
    f.tick(0, &mut server);
    assert_eq!(
        server.last().1,
        "idp-cluster idp.internal /.well-known/openid-configuration"
    );
}
