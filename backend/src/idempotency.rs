//! Durable idempotency (draft-ietf-httpapi-idempotency-key-header), scoped per user: the
//! user is the caller's principal (issuer and subject), never the subject alone. Which keys
//! are valid and what a request's fingerprint is are the contract's
//! ([`edge_contract::idempotency`]), which the edge applies too.
//!
//! A key is claimed by writing a `pending` record carrying the request's fingerprint, so two
//! backend instances (or two gateway replicas) cannot both run the same create. The winner
//! replaces the record with the response it produced; a retry then gets that response
//! replayed. Records live 24 hours; a `pending` record older than [`PENDING_TIMEOUT_SECS`]
//! is taken to be from a request that died and may be taken over.
//!
//! Who may write the record is decided by operations that are atomic on every host:
//! - record present (expired or released): a compare-and-swap from the value read, which
//!   Spin's stores and the runner both run as a conditional update;
//! - record absent: an election on the counter `<record key>#claims`. A compare-and-swap
//!   from absent cannot decide it: under `spin up`'s SQLite store it overwrites a record
//!   written since (see [`crate::store::Kv::compare_and_swap`]). The counter holds the
//!   generation (a timestamp, strictly increasing) of the last election; a claimant reads it
//!   with `increment(0)` and adds the difference to its own generation, and wins only if
//!   `increment` returns exactly that generation, i.e. nobody added in between. The winner
//!   is then the record's only writer. A loser re-reads: it finds the winner's pending record,
//!   or, if the winner has not written yet, a recent generation, and answers 409. An election
//!   whose winner died before writing is held again once its generation is older than
//!   [`PENDING_TIMEOUT_SECS`], the same bound as for a pending record.
//!
//! Records are forgotten once no retry may replay them: every claim queues its record's
//! key, due [`RETENTION_SECS`] + [`FORGET_MARGIN_SECS`] after the claim, on a queue swept by
//! the requests themselves like the nonces' ([`crate::replay::Queue`]; Spin's key-value
//! store has no expiry). A record still in use then (a newer claim of the key, which queued
//! its own entry) is left alone. Otherwise the sweeper swaps the record for a `forgetting`
//! marker (a conditional swap from what it read, so a claimant that takes the record over
//! at the same moment wins or loses cleanly), deletes the election counter, then the
//! marker. A claimant that finds a fresh marker answers 409 (retry in a second): while the
//! marker is there no election can run, so the counter can go; once both are gone the key
//! is absent and the next claim is elected as for a new key. A marker older than
//! [`PENDING_TIMEOUT_SECS`] is from a sweeper that died and is taken over like an expired
//! record.
//!
//! A claim names the resource its request creates (the workspace ID, drawn before the
//! claim is written). A request that takes over a pending claim whose holder died gets that
//! same ID back, [`Resource::resumed`], so it finishes the workspace the dead request may
//! have begun (stored, perhaps listed) instead of creating a second one.

use edge_contract::headers::{IDEMPOTENT_REPLAYED, RETRY_AFTER};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::http::ApiResponse;
use crate::problem::{Kind, Problem};
use crate::replay::{self, Queue, SKEW_MARGIN_SECS};
use crate::store::{Kv, StoreError};

/// How long a completed response is replayed.
pub const RETENTION_SECS: i64 = 24 * 60 * 60;
/// How long a claim may stay pending before another request may take it over.
pub const PENDING_TIMEOUT_SECS: i64 = 60;
/// How long past [`RETENTION_SECS`] after its claim a record is kept before it is
/// forgotten: past any claim's pending time, and past the retention as seen by a backend
/// instance whose clock is behind.
pub const FORGET_MARGIN_SECS: i64 = PENDING_TIMEOUT_SECS + SKEW_MARGIN_SECS as i64;

/// The queue of records to forget.
pub const RECORDS: Queue = Queue {
    head: "idemq/head",
    tail: "idemq/tail",
    prefix: "idemq/",
    forget: forget_record,
};

/// What a sweeper leaves at a record's key while it forgets the record.
#[derive(Debug, Serialize, Deserialize)]
struct Forgetting {
    /// When the sweeper began (unix seconds).
    forgetting: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
struct Record {
    fingerprint: String,
    created_at: i64,
    /// The election this claim won, for a claim of an absent record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    generation: Option<i64>,
    /// The ID of what the claimant creates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    resource: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    response: Option<StoredResponse>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
struct StoredResponse {
    status: u16,
    headers: Vec<(String, String)>,
    body: String,
}

/// The resource a request creates: a fresh ID, or the ID of a claim taken over from a
/// request that died holding it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Resource {
    /// The ID to create the resource under.
    pub id: String,
    /// Taken over: a resource with this ID may already be (partly) stored; finish it
    /// rather than create another.
    pub resumed: bool,
}

/// A key this request now holds.
#[derive(Debug)]
pub struct Claim {
    store_key: String,
    record: Vec<u8>,
    fingerprint: String,
    created_at: i64,
    generation: Option<i64>,
    resource: Resource,
}

impl Claim {
    /// What this request creates.
    pub fn resource(&self) -> &Resource {
        &self.resource
    }
}

/// What to do with a request that carries an idempotency key.
#[derive(Debug)]
pub enum Outcome {
    /// Run it, then [`complete`] or [`release`] the claim.
    Proceed(Claim),
    /// Answer with this stored response.
    Replay(ApiResponse),
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn store_key(user: &str, key: &str) -> String {
    // Hashes keep the store key short and free of any character a client chose.
    let user = hex(&Sha256::digest(user.as_bytes())[..16]);
    let key = hex(&Sha256::digest(key.as_bytes())[..16]);
    format!("idem/{user}/{key}")
}

/// The counter that elects the writer of an absent record.
fn claims_key(store_key: &str) -> String {
    format!("{store_key}#claims")
}

/// The result of an election for an absent record.
enum Election {
    /// This request is the record's only writer; the value is its generation.
    Won(i64),
    /// Another request won less than [`PENDING_TIMEOUT_SECS`] ago and may still write.
    Held,
    /// Another request won just now.
    Lost,
}

/// Elects the writer of the absent record whose counter is `claims_key`.
fn elect(kv: &dyn Kv, claims_key: &str, now: i64) -> Result<Election, Problem> {
    // `increment` by 0 is an atomic read (and creates the counter at 0).
    let last = kv.increment(claims_key, 0)?;
    if last > 0 && now - last <= PENDING_TIMEOUT_SECS {
        return Ok(Election::Held);
    }
    // Above `last` (which is below `now` here, unless both are 0), so never 0.
    let generation = now.max(last + 1);
    // Exactly `generation` back means no other claimant added anything since `last`; any
    // claimant that did add something got a different sum.
    let got = kv.increment(claims_key, generation - last)?;
    Ok(if got == generation {
        Election::Won(generation)
    } else {
        Election::Lost
    })
}

fn in_flight() -> Problem {
    Problem::new(Kind::IdempotencyInFlight).with_header(RETRY_AFTER, "1")
}

/// Claims `key` for `user` (a [`edge_contract::Identity::principal`]), or tells why not:
/// 409 while the first request runs, 422 when the key was used for a request with another
/// `fingerprint` ([`edge_contract::idempotency::Fingerprint::to_hex`]), a replay when it
/// completed. `new_id` draws the ID of what the request creates; it is not called when the
/// claim is taken over from a request that died holding it with the same fingerprint, whose
/// ID is reused.
pub fn begin(
    kv: &dyn Kv,
    user: &str,
    key: &str,
    fingerprint: &str,
    now: i64,
    new_id: &mut dyn FnMut() -> Result<String, Problem>,
) -> Result<Outcome, Problem> {
    let store_key = store_key(user, key);
    // Two rounds: a lost race is retried once (to answer from the winner's record), then
    // reported as 409.
    for _ in 0..2 {
        let current = kv.get(&store_key)?;
        let marker = current
            .as_deref()
            .and_then(|b| serde_json::from_slice::<Forgetting>(b).ok());
        if marker.is_some_and(|m| now - m.forgetting <= PENDING_TIMEOUT_SECS) {
            // Being forgotten: absent in a moment, and then claimed like a new key.
            return Err(in_flight());
        }
        let existing: Option<Record> = current
            .as_deref()
            .and_then(|b| serde_json::from_slice(b).ok());
        if let Some(rec) = &existing {
            let expired = match rec.response {
                Some(_) => now - rec.created_at > RETENTION_SECS,
                None => now - rec.created_at > PENDING_TIMEOUT_SECS,
            };
            if !expired {
                if rec.fingerprint != fingerprint {
                    return Err(Problem::new(Kind::IdempotencyMismatch));
                }
                return match &rec.response {
                    Some(r) => Ok(Outcome::Replay(replay(r))),
                    None => Err(in_flight()),
                };
            }
        }
        // A present record (expired or released) is taken over by a conditional swap from
        // what was read; an absent one only by the winner of the election.
        let generation = match current {
            Some(_) => None,
            None => match elect(kv, &claims_key(&store_key), now)? {
                Election::Won(generation) => Some(generation),
                Election::Held => return Err(in_flight()),
                Election::Lost => continue,
            },
        };
        // A pending claim of the same request, abandoned by a holder that died: its
        // resource may exist in part, so this request finishes it under the same ID.
        let resource = match existing.and_then(|rec| match rec {
            Record {
                response: None,
                resource: Some(id),
                fingerprint: f,
                ..
            } if f == fingerprint => Some(id),
            _ => None,
        }) {
            Some(id) => Resource { id, resumed: true },
            None => Resource {
                id: new_id()?,
                resumed: false,
            },
        };
        let fresh = Record {
            fingerprint: fingerprint.to_owned(),
            created_at: now,
            generation,
            resource: Some(resource.id.clone()),
            response: None,
        };
        let fresh_bytes = serde_json::to_vec(&fresh).map_err(|_| Problem::new(Kind::Internal))?;
        // Queued before it is written, so no record is left that nothing will forget.
        let forget_after = now
            .saturating_add(RETENTION_SECS)
            .saturating_add(FORGET_MARGIN_SECS);
        let tail = replay::schedule(kv, &RECORDS, &store_key, forget_after)?;
        if kv.compare_and_swap(&store_key, current.as_deref(), &fresh_bytes)? {
            // Best effort: what this request leaves, the next claims sweep.
            let _ = replay::sweep_due(kv, &RECORDS, tail, now);
            return Ok(Outcome::Proceed(Claim {
                store_key,
                record: fresh_bytes,
                fingerprint: fingerprint.to_owned(),
                created_at: now,
                generation,
                resource,
            }));
        }
    }
    Err(in_flight())
}

fn replay(r: &StoredResponse) -> ApiResponse {
    let mut response = ApiResponse {
        status: r.status,
        headers: r.headers.clone(),
        body: r.body.clone().into_bytes(),
    };
    response
        .headers
        .push((IDEMPOTENT_REPLAYED.into(), "true".into()));
    response
}

/// Stores the response of a successful request so retries replay it.
pub fn complete(
    kv: &dyn Kv,
    claim: Claim,
    response: &ApiResponse,
) -> Result<(), crate::store::StoreError> {
    let headers = response
        .headers
        .iter()
        .filter(|(n, _)| n == "content-type" || n == "location")
        .cloned()
        .collect();
    let done = Record {
        fingerprint: claim.fingerprint,
        created_at: claim.created_at,
        generation: claim.generation,
        resource: Some(claim.resource.id),
        response: Some(StoredResponse {
            status: response.status,
            headers,
            body: String::from_utf8_lossy(&response.body).into_owned(),
        }),
    };
    let bytes = serde_json::to_vec(&done).map_err(|e| crate::store::StoreError(e.to_string()))?;
    // Only the claim's holder writes here, but a CAS keeps a request that outlived its
    // pending timeout from overwriting the request that took over.
    kv.compare_and_swap(&claim.store_key, Some(&claim.record), &bytes)
        .map(|_| ())
}

/// Forgets the record at `key` if it is past use (see the module's documentation), then
/// deletes its queue `slot`.
fn forget_record(kv: &dyn Kv, key: &str, slot: &str, now: i64) -> Result<(), StoreError> {
    forget(kv, key, now)?;
    kv.delete(slot)
}

fn forget(kv: &dyn Kv, key: &str, now: i64) -> Result<(), StoreError> {
    let Some(current) = kv.get(key)? else {
        return Ok(());
    };
    let stale = if let Ok(m) = serde_json::from_slice::<Forgetting>(&current) {
        now - m.forgetting > PENDING_TIMEOUT_SECS
    } else if let Ok(r) = serde_json::from_slice::<Record>(&current) {
        now - r.created_at > RETENTION_SECS
    } else {
        // Released (`{}`): nothing to replay.
        true
    };
    if !stale {
        // Claimed again since: that claim queued its own entry.
        return Ok(());
    }
    let marker = serde_json::to_vec(&Forgetting { forgetting: now })
        .map_err(|e| StoreError(e.to_string()))?;
    if !kv.compare_and_swap(key, Some(&current), &marker)? {
        // A claimant took it over first.
        return Ok(());
    }
    // No election runs while the marker is there: the counter can go, then the marker.
    kv.delete(&claims_key(key))?;
    kv.delete(key)
}

/// Gives the key up after a failure, so a retry can run the request again.
pub fn release(kv: &dyn Kv, claim: Claim) {
    // A tombstone rather than a delete: a plain delete could remove the claim of a request
    // that took this one over. Best effort: if this fails too, the claim times out.
    let _ = kv.compare_and_swap(&claim.store_key, Some(&claim.record), b"{}");
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryKv;

    /// [`begin`] with IDs `r1`, `r2`, … drawn from a counter of the whole test binary.
    fn claim_key(
        kv: &dyn Kv,
        user: &str,
        key: &str,
        f: &str,
        now: i64,
    ) -> Result<Outcome, Problem> {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        begin(kv, user, key, f, now, &mut || {
            Ok(format!(
                "r{}",
                NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
            ))
        })
    }

    fn proceed(o: Result<Outcome, Problem>) -> Claim {
        match o {
            Ok(Outcome::Proceed(c)) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn claim_then_conflict_then_replay_then_mismatch() {
        let kv = MemoryKv::new();
        let claim = proceed(claim_key(&kv, "u", "k", "f1", 100));
        assert_eq!(
            claim_key(&kv, "u", "k", "f1", 101).unwrap_err().kind,
            Kind::IdempotencyInFlight
        );
        assert_eq!(
            claim_key(&kv, "u", "k", "f2", 101).unwrap_err().kind,
            Kind::IdempotencyMismatch
        );
        // Another user's identical key is independent.
        proceed(claim_key(&kv, "v", "k", "f1", 101));
        let resp = ApiResponse::json(201, &serde_json::json!({"ok": true}));
        complete(&kv, claim, &resp).unwrap();
        match claim_key(&kv, "u", "k", "f1", 102).unwrap() {
            Outcome::Replay(r) => {
                assert_eq!(r.status, 201);
                assert_eq!(r.header("idempotent-replayed"), Some("true"));
                assert_eq!(r.json_body(), serde_json::json!({"ok": true}));
            }
            other => panic!("{other:?}"),
        }
        assert_eq!(
            claim_key(&kv, "u", "k", "f2", 102).unwrap_err().kind,
            Kind::IdempotencyMismatch
        );
        // After the retention period the key is free again.
        proceed(claim_key(&kv, "u", "k", "f2", 100 + RETENTION_SECS + 1));
    }

    #[test]
    fn released_or_stale_claims_can_be_taken_over() {
        let kv = MemoryKv::new();
        let claim = proceed(claim_key(&kv, "u", "k", "f", 0));
        release(&kv, claim);
        let _held = proceed(claim_key(&kv, "u", "k", "f", 1));
        proceed(claim_key(&kv, "u", "k", "f", 2 + PENDING_TIMEOUT_SECS));
    }

    #[test]
    fn a_claim_taken_over_from_a_dead_holder_resumes_its_resource() {
        let kv = MemoryKv::spin_sqlite();
        let first = proceed(claim_key(&kv, "u", "k", "f", 0));
        assert!(!first.resource().resumed);
        let id = first.resource().id.clone();
        // The holder dies; past the timeout the same request resumes the same resource…
        let again = proceed(claim_key(&kv, "u", "k", "f", 1 + PENDING_TIMEOUT_SECS));
        assert_eq!(
            again.resource(),
            &Resource {
                id: id.clone(),
                resumed: true
            }
        );
        // …and completing it stores that ID with the response.
        let resp = ApiResponse::json(201, &serde_json::json!({"id": id}));
        complete(&kv, again, &resp).unwrap();
        assert!(matches!(
            claim_key(&kv, "u", "k", "f", 2 + PENDING_TIMEOUT_SECS).unwrap(),
            Outcome::Replay(_)
        ));
        // A released claim was given up cleanly: its retry draws a new resource.
        let released = proceed(claim_key(&kv, "u", "k2", "f", 0));
        let old = released.resource().id.clone();
        release(&kv, released);
        let fresh = proceed(claim_key(&kv, "u", "k2", "f", 1));
        assert!(!fresh.resource().resumed);
        assert_ne!(fresh.resource().id, old);
        // A dead claim of another payload is not resumed by a request that reuses the key.
        let other = proceed(claim_key(&kv, "u", "k3", "f1", 0));
        let taken = proceed(claim_key(&kv, "u", "k3", "f2", 1 + PENDING_TIMEOUT_SECS));
        assert!(!taken.resource().resumed);
        assert_ne!(taken.resource().id, other.resource().id);
    }

    #[test]
    fn an_election_whose_winner_died_is_held_again_after_the_pending_timeout() {
        let kv = MemoryKv::spin_sqlite();
        let store_key = store_key("u", "k");
        // A request won the election at 10, then died before writing its record.
        assert!(matches!(
            elect(&kv, &claims_key(&store_key), 10).unwrap(),
            Election::Won(10)
        ));
        let err = claim_key(&kv, "u", "k", "f", 10 + PENDING_TIMEOUT_SECS).unwrap_err();
        assert_eq!(err.kind, Kind::IdempotencyInFlight);
        let claim = proceed(claim_key(&kv, "u", "k", "f", 11 + PENDING_TIMEOUT_SECS));
        assert_eq!(claim.generation, Some(11 + PENDING_TIMEOUT_SECS));
        // A generation is never 0, the counter's "never elected", even at time 0.
        assert!(matches!(elect(&kv, "c", 0).unwrap(), Election::Won(1)));
    }

    #[test]
    fn store_failure_is_a_503() {
        let kv = MemoryKv::new();
        kv.set_failing(Some("down"));
        assert_eq!(
            claim_key(&kv, "u", "k", "f", 0).unwrap_err().kind,
            Kind::StoreUnavailable
        );
    }

    /// Two claims raced step by step on a store with `spin up`'s semantics.
    mod interleaved {
        use std::sync::mpsc::{channel, Receiver, Sender};
        use std::thread;

        use super::*;
        use crate::store::StoreError;

        /// What one claimant ended with.
        #[derive(Debug)]
        enum Seen {
            Proceed(Claim),
            Replay,
            Refused(Kind),
        }

        fn seen(o: Result<Outcome, Problem>) -> Seen {
            match o {
                Ok(Outcome::Proceed(c)) => Seen::Proceed(c),
                Ok(Outcome::Replay(_)) => Seen::Replay,
                Err(p) => Seen::Refused(p.kind),
            }
        }

        enum Event {
            Ready(usize),
            Done(usize, Seen),
        }

        /// One claimant's view of the shared store: each host call waits for the test's
        /// go-ahead, so the test decides the order of every call of the two claimants.
        struct Stepped<'a> {
            kv: &'a MemoryKv,
            who: usize,
            events: Sender<Event>,
            go: Receiver<()>,
        }

        impl Stepped<'_> {
            fn step(&self) {
                let _ = self.events.send(Event::Ready(self.who));
                let _ = self.go.recv();
            }
        }

        impl Kv for Stepped<'_> {
            fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
                self.step();
                self.kv.get(key)
            }
            fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
                self.step();
                self.kv.set(key, value)
            }
            fn delete(&self, key: &str) -> Result<(), StoreError> {
                self.step();
                self.kv.delete(key)
            }
            fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
                self.step();
                self.kv.increment(key, delta)
            }
            fn compare_and_swap(
                &self,
                key: &str,
                expected: Option<&[u8]>,
                new: &[u8],
            ) -> Result<bool, StoreError> {
                // `SpinKv`'s two host calls, each a step of its own.
                self.step();
                let current = self.kv.cas_current(key)?;
                if current.as_deref() != expected {
                    return Ok(false);
                }
                self.step();
                self.kv.cas_swap(key, current.as_deref(), new)
            }
        }

        /// A claim as one request makes it: (store, time, fingerprint) -> outcome.
        type ClaimFn = fn(&dyn Kv, i64, &str) -> Seen;

        fn claim_now(kv: &dyn Kv, now: i64, fingerprint: &str) -> Seen {
            seen(claim_key(kv, "u", "k", fingerprint, now))
        }

        /// The claim before elections: a compare-and-swap from whatever was read.
        fn claim_by_cas_alone(kv: &dyn Kv, now: i64, fingerprint: &str) -> Seen {
            let key = store_key("u", "k");
            let Ok(current) = kv.get(&key) else {
                return Seen::Refused(Kind::StoreUnavailable);
            };
            if current.is_some() {
                return Seen::Refused(Kind::IdempotencyInFlight);
            }
            let record = format!("{{\"fingerprint\":\"{fingerprint}\",\"createdAt\":{now}}}");
            match kv.compare_and_swap(&key, None, record.as_bytes()) {
                Ok(true) => Seen::Proceed(Claim {
                    store_key: key,
                    record: record.into_bytes(),
                    fingerprint: fingerprint.to_owned(),
                    created_at: now,
                    generation: None,
                    resource: Resource {
                        id: "r".into(),
                        resumed: false,
                    },
                }),
                _ => Seen::Refused(Kind::IdempotencyInFlight),
            }
        }

        /// Runs both claimants on `kv`; wherever both wait for a step, the next entry of
        /// `choices` says which goes (0 past its end). Returns the choices made and the outcomes.
        fn run(
            kv: &MemoryKv,
            claim: ClaimFn,
            claimants: [(i64, &str); 2],
            choices: &[usize],
        ) -> (Vec<usize>, [Seen; 2]) {
            thread::scope(|s| {
                let (events, inbox) = channel();
                let mut gos = Vec::new();
                for (who, (now, fingerprint)) in claimants.into_iter().enumerate() {
                    let (go_tx, go) = channel();
                    gos.push(go_tx);
                    let events = events.clone();
                    s.spawn(move || {
                        let view = Stepped {
                            kv,
                            who,
                            events: events.clone(),
                            go,
                        };
                        let outcome = claim(&view, now, fingerprint);
                        let _ = events.send(Event::Done(who, outcome));
                    });
                }
                drop(events);
                let mut made = Vec::new();
                let mut ready = [false; 2];
                let mut done: [Option<Seen>; 2] = [None, None];
                let mut awaited = 2;
                loop {
                    for _ in 0..awaited {
                        match inbox.recv().unwrap() {
                            Event::Ready(w) => ready[w] = true,
                            Event::Done(w, outcome) => done[w] = Some(outcome),
                        }
                    }
                    let next = match ready {
                        [false, false] => break,
                        [true, true] => {
                            let c = choices.get(made.len()).copied().unwrap_or(0);
                            made.push(c);
                            c
                        }
                        [a, _] => usize::from(!a),
                    };
                    ready[next] = false;
                    gos[next].send(()).unwrap();
                    awaited = 1;
                }
                let [a, b] = done;
                (made, [a.unwrap(), b.unwrap()])
            })
        }

        /// Every interleaving of the two claimants' host calls, each on a fresh store from
        /// `setup`; `check` sees each pair of outcomes and the store after it. Returns how
        /// many interleavings there were.
        fn explore(
            setup: impl Fn() -> MemoryKv,
            claim: ClaimFn,
            claimants: [(i64, &str); 2],
            mut check: impl FnMut(&[Seen; 2], &MemoryKv),
        ) -> usize {
            let mut todo = vec![Vec::new()];
            let mut runs = 0;
            while let Some(prefix) = todo.pop() {
                let kv = setup();
                let (made, outcomes) = run(&kv, claim, claimants, &prefix);
                for i in prefix.len()..made.len() {
                    let mut other = made[..i].to_vec();
                    other.push(1);
                    todo.push(other);
                }
                check(&outcomes, &kv);
                runs += 1;
            }
            runs
        }

        /// Exactly one claimant proceeds, the other is refused as in flight (or, with another
        /// payload, as a mismatch), and the winner's record is the one stored.
        fn one_winner(outcomes: &[Seen; 2], kv: &MemoryKv) {
            let winners: Vec<&Claim> = outcomes
                .iter()
                .filter_map(|o| match o {
                    Seen::Proceed(c) => Some(c),
                    _ => None,
                })
                .collect();
            assert_eq!(winners.len(), 1, "{outcomes:?}");
            for o in outcomes {
                assert!(
                    matches!(
                        o,
                        Seen::Proceed(_)
                            | Seen::Refused(Kind::IdempotencyInFlight | Kind::IdempotencyMismatch)
                    ),
                    "{outcomes:?}"
                );
            }
            let stored = kv.get(&winners[0].store_key).unwrap();
            assert_eq!(stored.as_deref(), Some(winners[0].record.as_slice()));
        }

        #[test]
        fn a_bare_cas_from_absent_lets_both_claims_proceed_on_spin() {
            let mut both = 0;
            let runs = explore(
                MemoryKv::spin_sqlite,
                claim_by_cas_alone,
                [(100, "f"), (100, "f")],
                |outcomes, _| {
                    both += usize::from(matches!(outcomes, [Seen::Proceed(_), Seen::Proceed(_)]));
                },
            );
            assert!(both > 0, "no double claim in {runs} interleavings");
            // The runner's insert-if-absent hid the race.
            explore(
                MemoryKv::new,
                claim_by_cas_alone,
                [(100, "f"), (100, "f")],
                |outcomes, _| {
                    assert!(!matches!(outcomes, [Seen::Proceed(_), Seen::Proceed(_)]));
                },
            );
        }

        #[test]
        fn two_first_claims_of_an_absent_key_never_both_proceed() {
            for claimants in [[(100, "f"), (100, "f")], [(100, "f"), (101, "g")]] {
                for setup in [MemoryKv::spin_sqlite, MemoryKv::new] {
                    let runs = explore(setup, claim_now, claimants, one_winner);
                    assert!(runs > 50, "{runs} interleavings");
                }
            }
        }

        #[test]
        fn two_takeovers_of_an_expired_claim_never_both_proceed() {
            let setup = || {
                let kv = MemoryKv::spin_sqlite();
                proceed(claim_key(&kv, "u", "k", "f", 0));
                kv
            };
            let later = 1 + PENDING_TIMEOUT_SECS;
            let runs = explore(setup, claim_now, [(later, "f"), (later, "f")], one_winner);
            assert!(runs > 10, "{runs} interleavings");
            let setup = || {
                let kv = MemoryKv::spin_sqlite();
                release(&kv, proceed(claim_key(&kv, "u", "k", "f", 0)));
                kv
            };
            explore(setup, claim_now, [(1, "f"), (1, "f")], one_winner);
        }

        #[test]
        fn two_claims_after_a_dead_election_winner_never_both_proceed() {
            let setup = || {
                let kv = MemoryKv::spin_sqlite();
                // The winner of an election at 10 died before writing its record.
                kv.increment(&claims_key(&store_key("u", "k")), 10).unwrap();
                kv
            };
            let later = 11 + PENDING_TIMEOUT_SECS;
            let runs = explore(setup, claim_now, [(later, "f"), (later, "f")], one_winner);
            assert!(runs > 50, "{runs} interleavings");
        }

        #[test]
        fn the_winner_completes_and_the_loser_then_gets_the_replay() {
            let kv = MemoryKv::spin_sqlite();
            // Both read the key absent and the counter at 0 before either increments.
            let (_, [a, b]) = run(&kv, claim_now, [(5, "f"), (5, "f")], &[0, 1, 0, 1, 0, 1]);
            let (winner, loser) = match (a, b) {
                (Seen::Proceed(c), other) | (other, Seen::Proceed(c)) => (c, other),
                other => panic!("{other:?}"),
            };
            assert!(matches!(loser, Seen::Refused(Kind::IdempotencyInFlight)));
            let resp = ApiResponse::json(201, &serde_json::json!({"id": 1}));
            complete(&kv, winner, &resp).unwrap();
            assert!(matches!(claim_now(&kv, 6, "f"), Seen::Replay));
        }
    }

    /// The keys of idempotency records and election counters in the store.
    fn records(kv: &MemoryKv) -> Vec<String> {
        kv.keys()
            .into_iter()
            .filter(|k| k.starts_with("idem/"))
            .collect()
    }

    const FORGOTTEN_AFTER: i64 = RETENTION_SECS + FORGET_MARGIN_SECS;

    fn created(kv: &MemoryKv, user: &str, key: &str, f: &str, now: i64) {
        let claim = proceed(claim_key(kv, user, key, f, now));
        let resp = ApiResponse::json(201, &serde_json::json!({ "f": f }));
        complete(kv, claim, &resp).unwrap();
    }

    #[test]
    fn records_and_their_counters_are_forgotten_after_the_retention() {
        let kv = MemoryKv::spin_sqlite();
        created(&kv, "u", "k1", "f", 0);
        created(&kv, "u", "k2", "f", 10);
        let released = proceed(claim_key(&kv, "u", "k3", "f", 20));
        release(&kv, released);
        // A claim that died pending is forgotten too.
        let _dead = proceed(claim_key(&kv, "u", "k4", "f", 30));
        assert_eq!(records(&kv).len(), 8, "records and counters");
        // Replayed until the retention ends, whatever sweeping happens meanwhile.
        created(&kv, "v", "x", "f", RETENTION_SECS - 1);
        assert!(matches!(
            claim_key(&kv, "u", "k1", "f", RETENTION_SECS - 1),
            Ok(Outcome::Replay(_))
        ));
        // Past it, later claims sweep the old records with their counters.
        for (i, at) in [0, 10, 20, 30].iter().enumerate() {
            created(
                &kv,
                "w",
                &format!("later-{i}"),
                "f",
                at + FORGOTTEN_AFTER + 1,
            );
        }
        let left = records(&kv);
        assert_eq!(left.len(), 10, "{left:?}");
        for gone in ["k1", "k2", "k3", "k4"] {
            let key = store_key("u", gone);
            assert!(
                !left.contains(&key) && !left.contains(&claims_key(&key)),
                "{gone}"
            );
        }
        // A forgotten key is claimed afresh, as a new key.
        let again = proceed(claim_key(&kv, "u", "k1", "f2", FORGOTTEN_AFTER + 100));
        assert!(!again.resource().resumed);
    }

    #[test]
    fn a_key_claimed_again_after_the_retention_is_not_forgotten_early() {
        let kv = MemoryKv::new();
        created(&kv, "u", "k", "f1", 0);
        // Reused past the retention, for another request: a new claim and a new entry.
        created(&kv, "u", "k", "f2", RETENTION_SECS + 1);
        // The first entry falls due: the record is in use, so it stays.
        created(&kv, "w", "a", "f", FORGOTTEN_AFTER + 1);
        assert!(matches!(
            claim_key(&kv, "u", "k", "f2", FORGOTTEN_AFTER + 2),
            Ok(Outcome::Replay(_))
        ));
        // The second entry falls due: forgotten.
        let second_due = RETENTION_SECS + 1 + FORGOTTEN_AFTER;
        created(&kv, "w", "b", "f", second_due + 1);
        created(&kv, "w", "c", "f", second_due + 2);
        assert!(!records(&kv).contains(&store_key("u", "k")));
    }

    #[test]
    fn a_record_being_forgotten_is_in_flight_until_it_is_gone() {
        let kv = MemoryKv::spin_sqlite();
        let key = store_key("u", "k");
        let marker = serde_json::to_vec(&Forgetting { forgetting: 100 }).unwrap();
        kv.set(&key, &marker).unwrap();
        let err = claim_key(&kv, "u", "k", "f", 100 + PENDING_TIMEOUT_SECS).unwrap_err();
        assert_eq!(err.kind, Kind::IdempotencyInFlight);
        // A marker its sweeper left behind when it died is taken over.
        let claim = proceed(claim_key(&kv, "u", "k", "f", 101 + PENDING_TIMEOUT_SECS));
        assert!(!claim.resource().resumed);
    }

    #[test]
    fn a_claim_racing_the_sweeper_wins_or_waits_never_vanishes() {
        let late = FORGOTTEN_AFTER + 1;
        // The claimant swaps first: the sweeper leaves its new record alone.
        let kv = MemoryKv::spin_sqlite();
        created(&kv, "u", "k", "f1", 0);
        kv.before_next_swap(move |kv| created(kv, "u", "k", "f2", late));
        forget(&kv, &store_key("u", "k"), late).unwrap();
        assert!(matches!(
            claim_key(&kv, "u", "k", "f2", late + 1),
            Ok(Outcome::Replay(_))
        ));
        // The sweeper swaps first: the claimant finds the marker and is told to retry; its
        // retry, once the record is gone, is elected and proceeds.
        let kv = MemoryKv::spin_sqlite();
        created(&kv, "u", "k", "f1", 0);
        let key = store_key("u", "k");
        let seen = kv.get(&key).unwrap();
        assert!(kv
            .compare_and_swap(
                &key,
                seen.as_deref(),
                &serde_json::to_vec(&Forgetting { forgetting: late }).unwrap()
            )
            .unwrap());
        let err = claim_key(&kv, "u", "k", "f2", late).unwrap_err();
        assert_eq!(err.kind, Kind::IdempotencyInFlight);
        kv.delete(&claims_key(&key)).unwrap();
        kv.delete(&key).unwrap();
        let claim = proceed(claim_key(&kv, "u", "k", "f2", late + 1));
        assert_eq!(claim.generation, Some(late + 1));
    }
}
