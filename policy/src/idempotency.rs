//! Idempotency-Key at the edge (draft-ietf-httpapi-idempotency-key-header): claim a key
//! while its first request is in flight, replay the stored response to a retry with the
//! same payload, refuse a different payload. Which keys are valid and what "the same
//! payload" means are the contract's ([`edge_contract::idempotency`]), so the backend's
//! durable layer decides every retry as this one does.
//!
//! State lives in a bounded table of shared data ([`crate::slots`], `idempotency.slots`
//! slots of [`WAYS`] entries, like the rate limiter). Each entry keeps its position for
//! life, so its stored response lives under a key derived from the slot and position; the
//! entry's generation number ties the two together. Every transition is a
//! compare-and-swap on the slot.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::IdempotencySettings;
use crate::slots::{be_u64, Record, SlotKey, Table, Ways};
use crate::store::{SharedStore, StoreError};

pub use crate::slots::WAYS;

/// The table's name in shared data.
pub const TABLE: &str = "idem";

/// A response kept for replay.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StoredResponse {
    /// Status.
    pub status: u16,
    /// Headers worth replaying.
    pub headers: Vec<(String, String)>,
    /// Body, base64 in storage.
    #[serde(with = "b64")]
    pub body: Vec<u8>,
}

mod b64 {
    use super::{Engine, STANDARD};
    use serde::{Deserialize, Deserializer, Serializer};
    pub fn serialize<S: Serializer>(v: &[u8], s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&STANDARD.encode(v))
    }
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
        let s = String::deserialize(d)?;
        STANDARD.decode(s).map_err(serde::de::Error::custom)
    }
}

/// Response headers not replayed: they describe the original exchange, not the resource.
pub fn replayable_header(name: &str) -> bool {
    use edge_contract::headers::{REQUEST_ID, RETRY_AFTER};
    let name = name.to_ascii_lowercase();
    !(name.starts_with(':')
        || name.starts_with("x-envoy")
        || name.starts_with("ratelimit")
        || matches!(
            name.as_str(),
            REQUEST_ID
                | "date"
                | "server"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | RETRY_AFTER
                | "set-cookie"
                | "keep-alive"
        ))
}

/// A held claim on a key, needed to complete or release it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Claim {
    slot: u64,
    way: usize,
    generation: u64,
}

/// What to do with a request carrying a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Begin {
    /// First use: forward it, then complete or release the claim.
    Proceed(Claim),
    /// The first request is still in flight: 409.
    InFlight,
    /// Used before with another payload: 422.
    Mismatch,
    /// Completed before with this payload: replay.
    Replay(StoredResponse),
    /// Every entry of the slot is held by a request in flight: 503, retry shortly.
    Busy,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    fp: u64,
    payload: [u8; 16],
    done: bool,
    expires_ms: u64,
    generation: u64,
}

impl Record for Entry {
    /// Payload hash, completion flag, expiry, generation.
    const SIZE: usize = 16 + 1 + 8 + 8;

    fn fingerprint(&self) -> u64 {
        self.fp
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.payload);
        out.push(u8::from(self.done));
        out.extend_from_slice(&self.expires_ms.to_be_bytes());
        out.extend_from_slice(&self.generation.to_be_bytes());
    }

    fn read(fp: u64, bytes: &[u8]) -> Self {
        let mut payload = [0u8; 16];
        if let Some(p) = bytes.get(..16) {
            payload.copy_from_slice(p);
        }
        let at = |i: usize| bytes.get(i..).unwrap_or_default();
        Self {
            fp,
            payload,
            done: bytes.get(16).is_some_and(|b| *b != 0),
            expires_ms: be_u64(at(17)),
            generation: be_u64(at(25)),
        }
    }
}

/// Idempotency records of one configuration generation.
pub struct Records<'a> {
    /// The store.
    pub store: &'a dyn SharedStore,
    /// Key prefix.
    pub namespace: &'a str,
    /// Settings.
    pub settings: &'a IdempotencySettings,
    /// The process's slot key.
    pub key: &'a SlotKey,
}

impl Records<'_> {
    fn table(&self) -> Table<'_> {
        Table {
            store: self.store,
            namespace: self.namespace,
            name: TABLE,
            slots: self.settings.slots,
            key: self.key,
        }
    }

    fn response_key(&self, slot: u64, way: usize) -> String {
        format!("{}:{way}", self.table().slot_key(slot))
    }

    /// Writes every slot's empty value once (see [`Table::init`]).
    pub fn init(&self) -> Result<(), StoreError> {
        self.table().init::<Entry>()
    }

    /// Looks up `key` of `user` for a request with `payload`, claiming it when new.
    /// `generation` is a fresh random number identifying the claim.
    pub fn begin(
        &self,
        user: &str,
        key: &str,
        payload: [u8; 16],
        now_ms: u64,
        generation: u64,
    ) -> Result<Begin, StoreError> {
        let table = self.table();
        let place = table.place(&[user.as_bytes(), key.as_bytes()])?;
        let (slot, fp) = (place.slot, place.fingerprint);
        let found = table.update(slot, |entries: &mut Ways<Entry>| {
            let live = |e: &Entry| e.expires_ms > now_ms;
            if let Some((way, e)) = entries
                .iter()
                .enumerate()
                .find_map(|(i, e)| e.filter(|e| e.fp == fp && live(e)).map(|e| (i, e)))
            {
                let outcome = if e.payload != payload {
                    Err(Begin::Mismatch)
                } else if !e.done {
                    Err(Begin::InFlight)
                } else {
                    Ok((way, e.generation, false))
                };
                return (false, outcome);
            }
            let way = entries
                .iter()
                .position(|e| e.is_none_or(|e| !live(&e)))
                .or_else(|| {
                    // Evict the completed record closest to expiry; never an in-flight one.
                    entries
                        .iter()
                        .enumerate()
                        .filter(|(_, e)| e.is_some_and(|e| e.done))
                        .min_by_key(|(_, e)| e.map_or(0, |e| e.expires_ms))
                        .map(|(i, _)| i)
                });
            let Some(way) = way else {
                return (false, Err(Begin::Busy));
            };
            entries[way] = Some(Entry {
                fp,
                payload,
                done: false,
                expires_ms: now_ms.saturating_add(self.settings.in_flight_ms),
                generation,
            });
            (true, Ok((way, generation, true)))
        })?;
        match found {
            Err(outcome) => Ok(outcome),
            Ok((way, generation, true)) => Ok(Begin::Proceed(Claim {
                slot,
                way,
                generation,
            })),
            Ok((way, generation, false)) => {
                // Completed: the response was written before the entry was marked done.
                let stored = self.store.get(&self.response_key(slot, way))?;
                match stored.and_then(|(bytes, _)| split_response(&bytes, generation)) {
                    Some(response) => Ok(Begin::Replay(response)),
                    None => Err(StoreError::Host(
                        "stored idempotent response is missing".into(),
                    )),
                }
            }
        }
    }

    /// Stores the response of a claimed request and marks the key completed. A response
    /// larger than the configured limit releases the key instead.
    pub fn complete(
        &self,
        claim: Claim,
        response: &StoredResponse,
        now_ms: u64,
    ) -> Result<(), StoreError> {
        if response.body.len() > self.settings.max_response_bytes {
            return self.release(claim);
        }
        let mut bytes = claim.generation.to_be_bytes().to_vec();
        bytes.extend(serde_json::to_vec(response).unwrap_or_default());
        self.store
            .set(&self.response_key(claim.slot, claim.way), &bytes, None)?;
        let expires = now_ms.saturating_add(self.settings.ttl_ms);
        self.transition(claim, |e| {
            e.done = true;
            e.expires_ms = expires;
        })
    }

    /// Forgets a claim, so a retry is processed anew (gateway-generated failures).
    pub fn release(&self, claim: Claim) -> Result<(), StoreError> {
        self.transition(claim, |e| e.expires_ms = 0)
    }

    fn transition(&self, claim: Claim, f: impl Fn(&mut Entry)) -> Result<(), StoreError> {
        self.table()
            .update(claim.slot, |entries: &mut Ways<Entry>| {
                match entries.get_mut(claim.way).and_then(Option::as_mut) {
                    Some(e) if e.generation == claim.generation && !e.done => {
                        f(e);
                        (true, ())
                    }
                    // Expired and taken over by another key meanwhile: nothing to do.
                    _ => (false, ()),
                }
            })
    }
}

fn split_response(bytes: &[u8], generation: u64) -> Option<StoredResponse> {
    let (head, json) = bytes.split_at_checked(8)?;
    let mut g = [0u8; 8];
    g.copy_from_slice(head);
    if u64::from_be_bytes(g) != generation {
        return None;
    }
    serde_json::from_slice(json).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    fn payload_hash(method: &str, path: &str, body: &[u8]) -> [u8; 16] {
        edge_contract::idempotency::fingerprint(method, path, Some("application/json"), body)
            .prefix()
    }

    const KEY: SlotKey = SlotKey::new([5; 16]);

    fn settings() -> IdempotencySettings {
        IdempotencySettings {
            ttl_ms: 60_000,
            in_flight_ms: 5_000,
            max_response_bytes: 1024,
            slots: 8,
        }
    }

    fn created() -> StoredResponse {
        StoredResponse {
            status: 201,
            headers: vec![("content-type".into(), "application/json".into())],
            body: b"{\"id\":1}".to_vec(),
        }
    }

    #[test]
    fn lifecycle() {
        let store = MemoryStore::new();
        let s = settings();
        let r = Records {
            store: &store,
            namespace: "t",
            settings: &s,
            key: &KEY,
        };
        r.init().unwrap();
        let p = payload_hash("POST", "/api/workspaces", b"{}");
        let other = payload_hash("POST", "/api/workspaces", b"{\"x\":1}");
        let Begin::Proceed(claim) = r.begin("u-a", "k1", p, 0, 7).unwrap() else {
            panic!("first use proceeds")
        };
        assert_eq!(r.begin("u-a", "k1", p, 1, 8).unwrap(), Begin::InFlight);
        assert_eq!(r.begin("u-a", "k1", other, 1, 8).unwrap(), Begin::Mismatch);
        assert!(
            matches!(r.begin("u-b", "k1", p, 1, 9).unwrap(), Begin::Proceed(_)),
            "keys are per user"
        );
        r.complete(claim, &created(), 2).unwrap();
        assert_eq!(
            r.begin("u-a", "k1", p, 3, 10).unwrap(),
            Begin::Replay(created())
        );
        assert_eq!(r.begin("u-a", "k1", other, 3, 10).unwrap(), Begin::Mismatch);
        // After the replay lifetime the key is new again.
        assert!(matches!(
            r.begin("u-a", "k1", p, 60_003, 11).unwrap(),
            Begin::Proceed(_)
        ));
    }

    #[test]
    fn release_and_in_flight_timeout() {
        let store = MemoryStore::new();
        let s = settings();
        let r = Records {
            store: &store,
            namespace: "t",
            settings: &s,
            key: &KEY,
        };
        let p = payload_hash("POST", "/x", b"");
        let Begin::Proceed(claim) = r.begin("u", "k", p, 0, 1).unwrap() else {
            panic!()
        };
        r.release(claim).unwrap();
        let Begin::Proceed(_) = r.begin("u", "k", p, 1, 2).unwrap() else {
            panic!("released key is free")
        };
        assert_eq!(r.begin("u", "k", p, 4_999, 3).unwrap(), Begin::InFlight);
        assert!(
            matches!(r.begin("u", "k", p, 5_001, 3).unwrap(), Begin::Proceed(_)),
            "stuck claim times out"
        );
    }

    #[test]
    fn exactly_one_of_many_parallel_requests_proceeds() {
        let store = MemoryStore::new();
        let s = settings();
        Records {
            store: &store,
            namespace: "t",
            settings: &s,
            key: &KEY,
        }
        .init()
        .unwrap();
        let proceeded = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|sc| {
            for t in 0..8u64 {
                let (store, s, proceeded) = (&store, &s, &proceeded);
                sc.spawn(move || {
                    let r = Records {
                        store,
                        namespace: "t",
                        settings: s,
                        key: &KEY,
                    };
                    for i in 0..10 {
                        if let Begin::Proceed(_) =
                            r.begin("u", "same", [0; 16], 0, t * 100 + i).unwrap()
                        {
                            proceeded.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(proceeded.into_inner(), 1);
    }

    #[test]
    fn entries_keep_every_field_in_their_fixed_size() {
        let e = Entry {
            fp: 0x0102_0304_0506_0708,
            payload: [0xab; 16],
            done: true,
            expires_ms: 1_800_000_000_123,
            generation: u64::MAX - 1,
        };
        let mut bytes = Vec::new();
        e.write(&mut bytes);
        assert_eq!(bytes.len(), Entry::SIZE);
        assert_eq!(Entry::read(e.fp, &bytes), e);
    }

    /// One slot of four entries: in-flight claims are never displaced (503 Busy for a
    /// fifth key), a completed record is, closest to expiry first.
    #[test]
    fn a_full_slot_never_gives_up_a_request_in_flight() {
        let store = MemoryStore::new();
        let s = IdempotencySettings {
            slots: 1,
            ..settings()
        };
        let r = Records {
            store: &store,
            namespace: "t",
            settings: &s,
            key: &KEY,
        };
        r.init().unwrap();
        let p = payload_hash("POST", "/x", b"");
        let claims: Vec<Claim> = (0..4u64)
            .map(
                |i| match r.begin("u", &format!("k{i}"), p, 0, i + 1).unwrap() {
                    Begin::Proceed(c) => c,
                    other => panic!("k{i}: {other:?}"),
                },
            )
            .collect();
        assert_eq!(r.begin("u", "k4", p, 1, 9).unwrap(), Begin::Busy);
        r.complete(claims[2], &created(), 2).unwrap();
        assert!(matches!(
            r.begin("u", "k4", p, 3, 10).unwrap(),
            Begin::Proceed(_)
        ));
        for i in [0, 1, 3] {
            assert_eq!(
                r.begin("u", &format!("k{i}"), p, 4, 11).unwrap(),
                Begin::InFlight,
                "k{i}"
            );
        }
    }
}
