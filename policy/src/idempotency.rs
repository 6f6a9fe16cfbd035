//! Idempotency-Key at the edge (draft-ietf-httpapi-idempotency-key-header): claim a key
//! while its first request is in flight, replay the stored response to a retry with the
//! same payload, refuse a different payload.
//!
//! State lives in shared data, in a fixed number of slots of [`WAYS`] entries (bounded
//! memory, like the rate limiter). Each entry keeps its position for life, so its stored
//! response lives under a key derived from the slot and position; the entry's generation
//! number ties the two together. Every transition is a compare-and-swap on the slot.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use serde::{Deserialize, Serialize};

use crate::config::IdempotencySettings;
use crate::hash::{digest, digest64};
use crate::store::{self, SharedStore, StoreError};

/// Entries per slot.
pub const WAYS: usize = 4;
/// Longest key accepted.
pub const MAX_KEY_LEN: usize = 255;

/// The header name.
pub const HEADER: &str = "idempotency-key";
/// The header on a replayed response.
pub const REPLAYED_HEADER: &str = "idempotent-replayed";

/// Validates an `Idempotency-Key` value: an RFC 8941 string (quoted, as the draft
/// specifies) or, for clients that send a bare UUID as the seed's example does, a token of
/// visible ASCII without quotes or separators.
pub fn parse_key(values: &[&str]) -> Result<Option<String>, &'static str> {
    let value = match values {
        [] => return Ok(None),
        [one] => one.trim(),
        _ => return Err("Idempotency-Key must be sent at most once"),
    };
    let inner = match value.strip_prefix('"').and_then(|v| v.strip_suffix('"')) {
        Some(inner) => inner,
        None => value,
    };
    if inner.is_empty() || inner.len() > MAX_KEY_LEN {
        return Err("Idempotency-Key must be 1 to 255 characters");
    }
    if !inner
        .bytes()
        .all(|b| b.is_ascii_graphic() && b != b'"' && b != b'\\' && b != b',')
    {
        return Err("Idempotency-Key must be visible ASCII characters");
    }
    Ok(Some(inner.to_owned()))
}

/// Whether a response only describes a passing state (a conflicting request in flight, a
/// rate limit), so the key is released for a retry instead of storing it for replay.
pub fn is_transient(status: u16) -> bool {
    matches!(status, 409 | 429)
}

/// What the request's fingerprint is: method, path and body, hashed.
pub fn payload_hash(method: &str, path: &str, body: &[u8]) -> [u8; 16] {
    let d = digest(&[method.as_bytes(), path.as_bytes(), body]);
    let mut out = [0u8; 16];
    out.copy_from_slice(&d[..16]);
    out
}

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
    let name = name.to_ascii_lowercase();
    !(name.starts_with(':')
        || name.starts_with("x-envoy")
        || name.starts_with("ratelimit")
        || matches!(
            name.as_str(),
            "x-request-id"
                | "date"
                | "server"
                | "content-length"
                | "transfer-encoding"
                | "connection"
                | "retry-after"
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

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
struct Entry {
    fp: u64,
    payload: [u8; 16],
    done: bool,
    expires_ms: u64,
    generation: u64,
}

type Slot = [Option<Entry>; WAYS];

fn decode(bytes: Option<&[u8]>) -> Slot {
    bytes
        .and_then(|b| serde_json::from_slice(b).ok())
        .unwrap_or([None; WAYS])
}

fn encode(slot: &Slot) -> Vec<u8> {
    serde_json::to_vec(slot).unwrap_or_default()
}

/// Idempotency records of one configuration generation.
pub struct Records<'a> {
    /// The store.
    pub store: &'a dyn SharedStore,
    /// Key prefix.
    pub namespace: &'a str,
    /// Settings.
    pub settings: &'a IdempotencySettings,
}

impl Records<'_> {
    fn slot_key(&self, slot: u64) -> String {
        format!("{}:idem:{slot}", self.namespace)
    }

    fn response_key(&self, slot: u64, way: usize) -> String {
        format!("{}:idem:{slot}:{way}", self.namespace)
    }

    /// Writes every slot's empty value once (see [`crate::ratelimit::Limiter::init`]).
    pub fn init(&self) -> Result<(), StoreError> {
        let empty = encode(&[None; WAYS]);
        for slot in 0..u64::from(self.settings.slots) {
            store::init_if_absent(self.store, &self.slot_key(slot), &empty)?;
        }
        Ok(())
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
        let fp = digest64(&[user.as_bytes(), key.as_bytes()]).max(1);
        let slot = fp % u64::from(self.settings.slots.max(1));
        let slot_key = self.slot_key(slot);
        let found = store::update(self.store, &slot_key, |bytes| {
            let mut entries = decode(bytes);
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
                return (None, outcome);
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
                return (None, Err(Begin::Busy));
            };
            entries[way] = Some(Entry {
                fp,
                payload,
                done: false,
                expires_ms: now_ms.saturating_add(self.settings.in_flight_ms),
                generation,
            });
            (Some(encode(&entries)), Ok((way, generation, true)))
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
        store::update(self.store, &self.slot_key(claim.slot), |bytes| {
            let mut entries = decode(bytes);
            match entries.get_mut(claim.way).and_then(Option::as_mut) {
                Some(e) if e.generation == claim.generation && !e.done => {
                    f(e);
                    (Some(encode(&entries)), ())
                }
                // Expired and taken over by another key meanwhile: nothing to do.
                _ => (None, ()),
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
    fn keys() {
        let long = "k".repeat(256);
        type Case<'a> = (Vec<&'a str>, Result<Option<&'a str>, ()>);
        let cases: Vec<Case<'_>> = vec![
            (vec![], Ok(None)),
            (
                vec!["\"8e03978e-40d5-43e8-bc93-6894a57f9324\""],
                Ok(Some("8e03978e-40d5-43e8-bc93-6894a57f9324")),
            ),
            (
                vec!["8e03978e-40d5-43e8-bc93-6894a57f9324"],
                Ok(Some("8e03978e-40d5-43e8-bc93-6894a57f9324")),
            ),
            (vec!["\"\""], Err(())),
            (vec!["a b"], Err(())),
            (vec![&long], Err(())),
            (vec!["a", "b"], Err(())),
        ];
        for (values, want) in cases {
            assert_eq!(
                parse_key(&values).map_err(|_| ()),
                want.map(|o| o.map(str::to_owned)),
                "{values:?}"
            );
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
}
