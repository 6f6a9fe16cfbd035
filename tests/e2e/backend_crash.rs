//! The backend killed under load loses nothing it acknowledged and duplicates nothing.
//!
//! Several clients create workspaces, each create with its own `Idempotency-Key` and its own
//! name; the runner is killed with SIGKILL while creates are in flight (three times) and
//! restarted on the same state folder; every create that got no answer (or a 5xx) is then
//! retried with the same key and body, as a client following the idempotency draft would.
//! Afterwards:
//!
//! | what | expected |
//! |---|---|
//! | a create answered 201 during the load | readable, with identical content |
//! | a retried key | 201 (the create completed now, or its earlier completion replayed), or 409 while the killed request still holds it |
//! | every key with a workspace, sent once more | the replay of that one workspace |
//! | the organization's listing | every created workspace, each name once; nothing else but what a killed request holding its key wrote |
//! | idempotency records left pending | only those of held keys |
//!
//! The `…past_the_in_flight_timeout…` tests go on where the others stop: a held key, retried
//! after the in-flight timeout, must give 201 and, all keys settled, the listing must be
//! exactly the created workspaces with nothing left pending. Waiting out the backend's 60 s
//! would make them minutes long, so they age what killed requests left behind (a pending
//! record's `createdAt`, an election counter's generation) by an hour in the SQLite file, as
//! the clock would. A held key taken over resumes the workspace its killed holder began
//! (the claim names the workspace ID; the record names its index slot), so nothing is
//! created or listed twice.
//!
//! Each runs straight against the runner, and with Envoy and the filter in front.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::{BTreeMap, BTreeSet};
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::thread;
use std::time::{Duration, Instant};

use crate::support::*;
use e2e::{Response, Stack, StackOptions, SEED_004_REQUEST};
use serde_json::Value;

/// Clients creating at the same time.
const CLIENTS: usize = 6;
/// Kills per test.
const KILLS: usize = 3;
/// Creates acknowledged before each kill (and after the last restart).
const CREATES_PER_ROUND: usize = 40;
/// How far the records of killed requests are aged: past the backend's in-flight timeout
/// (60 s), well within its retention (24 h).
const AGE_SECS: i64 = 3600;

/// Who the load goes through.
enum Via {
    /// Straight to the runner, with the identity signed as the gateway signs it.
    Runner,
    /// Through Envoy and the filter, with a bearer token.
    Gateway { token: String },
}

impl Via {
    /// `POST /api/workspaces` with `key`; `None` when no HTTP answer came back.
    fn create(&self, stack: &Stack, key: &str, body: &str) -> Option<Response> {
        match self {
            // `post_json` signs as the gateway does and panics on a transport error (the
            // killed runner resets the connection): that panic is the "no answer".
            Via::Runner => catch_unwind(AssertUnwindSafe(|| {
                post_json(
                    stack,
                    &owner(),
                    "/api/workspaces",
                    body,
                    &[("idempotency-key", key)],
                )
            }))
            .ok(),
            Via::Gateway { token } => e2e::try_send(
                "POST",
                &format!("{}/api/workspaces", stack.gateway_url()),
                &[
                    ("authorization", &format!("Bearer {token}")),
                    ("content-type", "application/json"),
                    ("idempotency-key", key),
                ],
                Some(body.as_bytes()),
            )
            .ok(),
        }
    }
}

/// One create of the load.
#[derive(Debug, Clone)]
struct Attempt {
    key: String,
    name: String,
    body: String,
    /// Its 201 during the load; `None`: no answer, or a server error.
    acknowledged: Option<Value>,
    /// The workspace it created, once known.
    workspace: Option<Value>,
    /// How that became known: `acknowledged`, `completed on retry`, `replayed on retry`,
    /// `after the in-flight timeout`.
    settled_by: &'static str,
}

impl Attempt {
    fn new(variant: &str, round: usize, client: usize, n: usize) -> Self {
        let name = format!("Crash {variant} {round}-{client}-{n}");
        Self {
            key: uuid::Uuid::new_v4().to_string(),
            body: SEED_004_REQUEST.replace("CS101: Introduction to AI", &name),
            name,
            acknowledged: None,
            workspace: None,
            settled_by: "",
        }
    }
}

/// The workspace of a 201; `None` for a 5xx or no answer (the create may or may not have
/// run); anything else fails the test.
fn created(answer: Option<Response>, what: &str) -> Option<Value> {
    let r = answer?;
    match r.status {
        201 => Some(r.json()["data"].clone()),
        500..=599 => None,
        other => panic!("{what}: unexpected {other}: {}", r.text()),
    }
}

/// Clients create until [`CREATES_PER_ROUND`] are acknowledged; then, if `kill`, the runner
/// is killed with SIGKILL while their requests are in flight. Returns the round's attempts.
fn round(stack: &Stack, via: &Via, variant: &str, round: usize, kill: bool) -> Vec<Attempt> {
    let stop = AtomicBool::new(false);
    let acknowledged = AtomicUsize::new(0);
    let started = Instant::now();
    thread::scope(|s| {
        let clients: Vec<_> = (0..CLIENTS)
            .map(|client| {
                let (stop, acknowledged) = (&stop, &acknowledged);
                s.spawn(move || {
                    let mut mine = Vec::new();
                    for n in 1.. {
                        if stop.load(Ordering::Relaxed) {
                            break;
                        }
                        let mut a = Attempt::new(variant, round, client, n);
                        a.acknowledged = created(via.create(stack, &a.key, &a.body), &a.name);
                        if a.acknowledged.is_some() {
                            acknowledged.fetch_add(1, Ordering::Relaxed);
                        }
                        mine.push(a);
                    }
                    mine
                })
            })
            .collect();
        while acknowledged.load(Ordering::Relaxed) < CREATES_PER_ROUND {
            if started.elapsed() > Duration::from_secs(60)
                || clients.iter().any(|c| c.is_finished())
            {
                stop.store(true, Ordering::Relaxed);
                break;
            }
            thread::sleep(Duration::from_millis(1));
        }
        if kill {
            let status = Command::new("kill")
                .args(["-s", "KILL", &stack.backend_pid().to_string()])
                .status()
                .unwrap();
            assert!(status.success());
        }
        stop.store(true, Ordering::Relaxed);
        let attempts: Vec<Attempt> = clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect();
        let acked = attempts.iter().filter(|a| a.acknowledged.is_some()).count();
        assert!(
            acked >= CREATES_PER_ROUND,
            "round {round}: only {acked} creates acknowledged in {:?}:\n{}",
            started.elapsed(),
            stack.backend_log()
        );
        attempts
    })
}

/// What retrying the unanswered creates gave.
#[derive(Debug, Default)]
struct Settled {
    /// Completed by the retry (the killed request had not created it).
    completed: usize,
    /// Replayed: the killed request had completed it.
    replayed: usize,
    /// Answered 409 at first, then completed once the in-flight timeout had passed.
    after_timeout: usize,
    /// Answered 409, and left so: the killed request holds the key until the timeout.
    held: usize,
}

/// Retries every unanswered create; a key still held by its killed request (409) is retried
/// again once the in-flight timeout has passed if `past_timeout`, else left held.
fn settle(stack: &Stack, via: &Via, attempts: &mut [Attempt], past_timeout: bool) -> Settled {
    let mut settled = Settled::default();
    let mut in_flight = Vec::new();
    for (i, a) in attempts.iter_mut().enumerate() {
        if let Some(ws) = &a.acknowledged {
            a.workspace = Some(ws.clone());
            a.settled_by = "acknowledged";
            continue;
        }
        let r = via
            .create(stack, &a.key, &a.body)
            .unwrap_or_else(|| panic!("{}: no answer after the restart", a.name));
        match (r.status, r.header("idempotent-replayed")) {
            (201, None) => {
                settled.completed += 1;
                a.settled_by = "completed on retry";
            }
            (201, Some("true")) => {
                settled.replayed += 1;
                a.settled_by = "replayed on retry";
            }
            (409, _) => {
                in_flight.push(i);
                continue;
            }
            (status, _) => panic!("{}: retry answered {status}: {}", a.name, r.text()),
        }
        a.workspace = Some(r.json()["data"].clone());
    }
    if in_flight.is_empty() {
        return settled;
    }
    if !past_timeout {
        for i in in_flight {
            attempts[i].settled_by = "held by the killed request";
            settled.held += 1;
        }
        return settled;
    }
    age_idempotency_records(stack, AGE_SECS);
    for i in in_flight {
        let a = &mut attempts[i];
        let r = via.create(stack, &a.key, &a.body).unwrap();
        assert_eq!(
            r.status,
            201,
            "{}: still refused past the in-flight timeout: {} {:?}",
            a.name,
            r.text(),
            r.headers
        );
        a.workspace = Some(r.json()["data"].clone());
        a.settled_by = "after the in-flight timeout";
        settled.after_timeout += 1;
    }
    settled
}

/// Moves what in-flight requests left behind `secs` into the past, as if that much time had
/// passed: pending idempotency records (`createdAt`) and election counters (a generation,
/// 8 little-endian bytes, is a timestamp). Completed records stay as they are.
fn age_idempotency_records(stack: &Stack, secs: i64) {
    let db = rusqlite::Connection::open(stack.state_dir().join("sqlite_key_value.db")).unwrap();
    db.busy_timeout(Duration::from_secs(10)).unwrap();
    let rows: Vec<(String, Vec<u8>)> = db
        .prepare(
            "SELECT key, value FROM spin_key_value WHERE store = 'default' AND key LIKE 'idem/%'",
        )
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    for (key, value) in rows {
        let aged = if key.ends_with("#claims") {
            let generation = i64::from_le_bytes(value.as_slice().try_into().unwrap());
            (generation > 0).then(|| (generation - secs).to_le_bytes().to_vec())
        } else {
            let mut record: Value = serde_json::from_slice(&value).unwrap();
            match (record.get("response"), record["createdAt"].as_i64()) {
                (None, Some(created)) => {
                    record["createdAt"] = Value::from(created - secs);
                    Some(serde_json::to_vec(&record).unwrap())
                }
                _ => None,
            }
        };
        if let Some(aged) = aged {
            db.execute(
                "UPDATE spin_key_value SET value = ?1 WHERE store = 'default' AND key = ?2",
                rusqlite::params![aged, key],
            )
            .unwrap();
        }
    }
}

/// Idempotency records that are claimed and not completed.
fn pending_records(stack: &Stack) -> Vec<String> {
    let db = rusqlite::Connection::open(stack.state_dir().join("sqlite_key_value.db")).unwrap();
    let rows: Vec<(String, Vec<u8>)> = db
        .prepare("SELECT key, value FROM spin_key_value WHERE store = 'default' AND key LIKE 'idem/%' AND key NOT LIKE '%#claims'")
        .unwrap()
        .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    rows.into_iter()
        .filter(|(_, value)| {
            let record: Value = serde_json::from_slice(value).unwrap();
            record.get("fingerprint").is_some() && record.get("response").is_none()
        })
        .map(|(key, _)| key)
        .collect()
}

/// Every workspace of the organization, page by page, as listed.
fn listing(stack: &Stack) -> Vec<Value> {
    let mut items = Vec::new();
    let mut cursor = String::new();
    loop {
        let r = get(
            stack,
            &owner(),
            &format!("/api/workspaces?orgId={ORG}&limit=100{cursor}"),
        );
        assert_eq!(r.status, 200, "{}", r.text());
        let body = r.json();
        items.extend(body["data"].as_array().unwrap().iter().cloned());
        match body["nextCursor"].as_str() {
            Some(c) => cursor = format!("&cursor={c}"),
            None => return items,
        }
    }
}

/// The load with kills, the retries, and every check of the module's table. Without
/// `past_timeout`, keys still held by a killed request are left as they are, and so is
/// whatever that request wrote: at most one listed workspace of that name.
fn survives_kills(mut stack: Stack, via: &Via, variant: &str, past_timeout: bool) {
    let started = Instant::now();
    let mut attempts = Vec::new();
    for r in 0..=KILLS {
        let kill = r < KILLS;
        attempts.extend(round(&stack, via, variant, r, kill));
        if kill {
            stack.restart_backend().unwrap();
        }
    }
    let acknowledged = attempts.iter().filter(|a| a.acknowledged.is_some()).count();
    let unanswered = attempts.len() - acknowledged;
    assert!(
        unanswered > 0,
        "no create was cut off by a kill: the test proved nothing"
    );
    let settled = settle(&stack, via, &mut attempts, past_timeout);

    // Every key names one workspace, with the name it was sent, and replays it.
    let mut by_id = BTreeMap::new();
    for a in &attempts {
        let Some(ws) = a.workspace.as_ref() else {
            continue;
        };
        assert_eq!(ws["name"], a.name.as_str(), "{ws}");
        let id = ws["workspaceId"].as_str().unwrap().to_owned();
        let again = via.create(&stack, &a.key, &a.body).unwrap();
        assert_eq!(
            (again.status, again.header("idempotent-replayed")),
            (201, Some("true")),
            "{}: {}",
            a.name,
            again.text()
        );
        assert_eq!(
            &again.json()["data"],
            ws,
            "{}: replayed another workspace",
            a.name
        );
        assert!(
            by_id.insert(id, a).is_none(),
            "two keys created one workspace"
        );
    }
    // Nothing acknowledged is lost: each reads back as it was answered.
    for a in attempts.iter().filter(|a| a.acknowledged.is_some()) {
        let ws = a.acknowledged.as_ref().unwrap();
        let id = ws["workspaceId"].as_str().unwrap();
        let r = get(&stack, &owner(), &format!("/api/workspaces/{id}"));
        assert_eq!(
            r.status,
            200,
            "acknowledged {} is lost: {}",
            a.name,
            r.text()
        );
        assert_eq!(&r.json()["data"], ws, "acknowledged {} changed", a.name);
    }
    // Nothing is duplicated: the listing holds exactly the created workspaces.
    let listed = listing(&stack);
    let mut names: BTreeMap<&str, usize> = BTreeMap::new();
    for ws in &listed {
        *names.entry(ws["name"].as_str().unwrap()).or_default() += 1;
    }
    let twice: Vec<String> = names
        .iter()
        .filter(|(_, n)| **n > 1)
        .map(|(name, n)| {
            let how = attempts
                .iter()
                .find(|a| a.name == *name)
                .map_or("?", |a| a.settled_by);
            format!("{name} ({n} times; its key settled {how})")
        })
        .collect();
    assert!(twice.is_empty(), "listed more than once: {twice:?}");
    let listed_ids: BTreeSet<&str> = listed
        .iter()
        .map(|ws| ws["workspaceId"].as_str().unwrap())
        .collect();
    let created_ids: BTreeSet<&str> = by_id.keys().map(String::as_str).collect();
    assert_eq!(listed.len(), listed_ids.len(), "an ID is listed twice");
    let missing: Vec<_> = created_ids.difference(&listed_ids).collect();
    assert!(missing.is_empty(), "created, not listed: {missing:?}");
    // Anything else listed was written by a killed request whose key is still held.
    let held: BTreeSet<&str> = attempts
        .iter()
        .filter(|a| a.workspace.is_none())
        .map(|a| a.name.as_str())
        .collect();
    let strangers: Vec<&Value> = listed
        .iter()
        .filter(|ws| {
            !created_ids.contains(ws["workspaceId"].as_str().unwrap())
                && !held.contains(ws["name"].as_str().unwrap())
        })
        .collect();
    assert!(strangers.is_empty(), "listed, never created: {strangers:?}");
    let pending = pending_records(&stack);
    assert!(
        pending.len() <= settled.held,
        "left pending: {pending:?} ({} keys held)",
        settled.held
    );
    println!(
        "{variant}: {KILLS} kills, {} creates: {acknowledged} acknowledged, {unanswered} cut off \
         ({} completed on retry, {} replayed, {} after the in-flight timeout, {} held); {} listed; \
         {:.1} s",
        attempts.len(),
        settled.completed,
        settled.replayed,
        settled.after_timeout,
        settled.held,
        listed.len(),
        started.elapsed().as_secs_f64()
    );
}

/// The gateway of `envoy/envoy.yaml`, its per-user rate limit (20 creates a minute) lifted
/// as the bench does, and a token of the seed organization's owner.
fn gateway() -> (Stack, Via) {
    let mut filter = e2e::shipped_filter_config();
    for route in filter["routes"].as_array_mut().unwrap() {
        if route.get("rate_limit").is_some() {
            route["rate_limit"] = serde_json::json!({"requests": 1_000_000, "per": "1s"});
        }
    }
    let stack = Stack::start(StackOptions {
        filter_config: Some(filter),
        envoy_log_level: "warn",
        ..StackOptions::default()
    });
    let token = e2e::dev_token("u-crash", &[(ORG, &["owner"])]);
    (stack, Via::Gateway { token })
}

#[test]
fn killed_runner_loses_nothing_acknowledged_and_duplicates_nothing() {
    survives_kills(backend(), &Via::Runner, "runner", false);
}

#[test]
fn killed_runner_behind_the_gateway_loses_nothing_and_duplicates_nothing() {
    let (stack, via) = gateway();
    survives_kills(stack, &via, "gateway", false);
}

/// Past the in-flight timeout the retry takes over a key its killed request held; when that
/// request had already listed its workspace, the retry creates and lists a second one (the
/// backend's idempotency record does not carry the workspace it is creating), so this fails
/// until the backend fixes that.
#[test]
fn killed_runner_keys_held_past_the_in_flight_timeout_create_once() {
    survives_kills(backend(), &Via::Runner, "runner-timeout", true);
}

/// As above, through the gateway; fails also because the filter stores the backend's 409
/// ("still in flight") as the key's final answer and replays it.
#[test]
fn killed_runner_behind_the_gateway_keys_held_past_the_in_flight_timeout_create_once() {
    let (stack, via) = gateway();
    survives_kills(stack, &via, "gateway-timeout", true);
}
