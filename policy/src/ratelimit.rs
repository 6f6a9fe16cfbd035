//! Token buckets in shared data, exact across workers and bounded in memory.
//!
//! Memory: buckets live in a fixed number of slots (`limits.rate_limit_slots`), each a
//! shared-data value of [`WAYS`] fixed-size entries; a (route, user) pair hashes to one
//! slot and is identified inside it by a 64-bit fingerprint. However many users appear,
//! the store holds at most `slots` keys of `WAYS * 24` bytes. A new user evicts, in its
//! slot, a bucket that has refilled completely (which is the same as having none), and
//! only if every entry is still draining, the one idle the longest; exactness per user
//! therefore holds while fewer than `WAYS` users sharing a slot are active within one
//! window, which a slot count above the number of concurrently active users makes the
//! norm.
//!
//! Exactness: every decision is a read-modify-write of the slot under Envoy's
//! compare-and-swap, retried on conflict, so two workers never spend the same token.
//!
//! Arithmetic is in integers: a bucket of `capacity` requests per `window_ms` holds
//! `capacity * window_ms` units, refills `capacity` units per millisecond and a request
//! costs `window_ms` units.

use crate::hash::digest64;
use crate::store::{self, SharedStore, StoreError};

/// Entries per slot.
pub const WAYS: usize = 4;
const ENTRY: usize = 24;

/// A token bucket's shape.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bucket {
    /// Requests per window, and the burst size.
    pub capacity: u32,
    /// Window in milliseconds.
    pub window_ms: u64,
}

/// The outcome of one decision, with what the rate-limit headers report.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decision {
    /// Whether the request may pass.
    pub allowed: bool,
    /// Requests left now.
    pub remaining: u32,
    /// Seconds until the bucket is full again.
    pub reset_secs: u64,
    /// Seconds until the next request would pass (0 when allowed).
    pub retry_after_secs: u64,
}

impl Bucket {
    fn full(&self) -> u128 {
        u128::from(self.capacity) * u128::from(self.window_ms)
    }

    fn refill(&self, level: u128, elapsed_ms: u64) -> u128 {
        (level + u128::from(elapsed_ms) * u128::from(self.capacity)).min(self.full())
    }

    fn describe(&self, level: u128, allowed: bool) -> Decision {
        let cost = u128::from(self.window_ms.max(1));
        let per_ms = u128::from(self.capacity.max(1));
        let remaining = u32::try_from(level / cost).unwrap_or(u32::MAX);
        let reset_ms = (self.full() - level).div_ceil(per_ms);
        let retry_ms = if level >= cost {
            0
        } else {
            (cost - level).div_ceil(per_ms)
        };
        Decision {
            allowed,
            remaining,
            reset_secs: secs_ceil(reset_ms),
            retry_after_secs: if allowed {
                0
            } else {
                secs_ceil(retry_ms).max(1)
            },
        }
    }

    /// `RateLimit-Policy` value (draft-ietf-httpapi-ratelimit-headers).
    pub fn policy_header(&self, name: &str) -> String {
        format!(
            "\"{name}\";q={};w={}",
            self.capacity,
            self.window_ms.div_ceil(1000)
        )
    }
}

impl Decision {
    /// `RateLimit` value (draft-ietf-httpapi-ratelimit-headers).
    pub fn header(&self, name: &str) -> String {
        format!("\"{name}\";r={};t={}", self.remaining, self.reset_secs)
    }
}

fn secs_ceil(ms: u128) -> u64 {
    u64::try_from(ms.div_ceil(1000)).unwrap_or(u64::MAX)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    fp: u64,
    level: u64,
    updated_ms: u64,
}

fn decode(bytes: Option<&[u8]>) -> [Option<Entry>; WAYS] {
    let mut out = [None; WAYS];
    let Some(bytes) = bytes else { return out };
    for (i, chunk) in bytes.chunks_exact(ENTRY).take(WAYS).enumerate() {
        let n = |r: std::ops::Range<usize>| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&chunk[r]);
            u64::from_be_bytes(b)
        };
        let fp = n(0..8);
        if fp != 0 {
            out[i] = Some(Entry {
                fp,
                level: n(8..16),
                updated_ms: n(16..24),
            });
        }
    }
    out
}

fn encode(entries: &[Option<Entry>; WAYS]) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAYS * ENTRY);
    for e in entries {
        let e = e.unwrap_or(Entry {
            fp: 0,
            level: 0,
            updated_ms: 0,
        });
        out.extend_from_slice(&e.fp.to_be_bytes());
        out.extend_from_slice(&e.level.to_be_bytes());
        out.extend_from_slice(&e.updated_ms.to_be_bytes());
    }
    out
}

/// Buckets of one configuration generation in a shared store.
pub struct Limiter<'a> {
    /// The store.
    pub store: &'a dyn SharedStore,
    /// Key prefix (the configuration generation).
    pub namespace: &'a str,
    /// Number of slots.
    pub slots: u32,
}

impl Limiter<'_> {
    fn slot_of(&self, who: &[&[u8]]) -> (String, u64) {
        let h = digest64(who);
        let slot = h % u64::from(self.slots.max(1));
        // Fingerprint 0 marks a free entry.
        (format!("{}:rl:{slot}", self.namespace), h.max(1))
    }

    /// Writes every slot's empty value once, so later updates always have a version to
    /// compare against (Envoy cannot compare-and-swap an absent key).
    pub fn init(&self) -> Result<(), StoreError> {
        let empty = encode(&[None; WAYS]);
        for slot in 0..self.slots {
            store::init_if_absent(self.store, &format!("{}:rl:{slot}", self.namespace), &empty)?;
        }
        Ok(())
    }

    /// Spends one request of `who`'s bucket at `now_ms` if one is left (`consume`), or only
    /// reports whether one is (`!consume`).
    pub fn check(
        &self,
        bucket: Bucket,
        who: &[&[u8]],
        now_ms: u64,
        consume: bool,
    ) -> Result<Decision, StoreError> {
        let (key, fp) = self.slot_of(who);
        let full = bucket.full();
        let cost = u128::from(bucket.window_ms);
        store::update(self.store, &key, |bytes| {
            let mut entries = decode(bytes);
            let found = entries.iter().position(|e| e.is_some_and(|e| e.fp == fp));
            let level = match found.and_then(|i| entries[i]) {
                Some(e) => bucket.refill(u128::from(e.level), now_ms.saturating_sub(e.updated_ms)),
                None => full,
            };
            let allowed = level >= cost;
            let after = if allowed && consume {
                level - cost
            } else {
                level
            };
            let decision = bucket.describe(after, allowed);
            if !consume || !allowed {
                return (None, decision);
            }
            let entry = Entry {
                fp,
                level: u64::try_from(after).unwrap_or(u64::MAX),
                updated_ms: now_ms,
            };
            let way = found.unwrap_or_else(|| victim(&entries, bucket, now_ms));
            entries[way] = Some(entry);
            (Some(encode(&entries)), decision)
        })
    }
}

/// The entry a newcomer replaces: a free one, else one whose bucket would be full by now
/// (forgetting it changes nothing), else the least recently used.
fn victim(entries: &[Option<Entry>; WAYS], bucket: Bucket, now_ms: u64) -> usize {
    if let Some(i) = entries.iter().position(Option::is_none) {
        return i;
    }
    let idle_full = |e: &Entry| {
        bucket.refill(u128::from(e.level), now_ms.saturating_sub(e.updated_ms)) >= bucket.full()
    };
    if let Some(i) = entries
        .iter()
        .position(|e| e.as_ref().is_some_and(idle_full))
    {
        return i;
    }
    entries
        .iter()
        .enumerate()
        .min_by_key(|(_, e)| e.map_or(0, |e| e.updated_ms))
        .map_or(0, |(i, _)| i)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    const PER_MINUTE_20: Bucket = Bucket {
        capacity: 20,
        window_ms: 60_000,
    };

    #[test]
    fn twenty_per_minute_then_429_with_retry_after() {
        let store = MemoryStore::new();
        let l = Limiter {
            store: &store,
            namespace: "t",
            slots: 64,
        };
        l.init().unwrap();
        let who: &[&[u8]] = &[b"create", b"u-alice"];
        for i in 0..20u32 {
            let d = l.check(PER_MINUTE_20, who, 1_000, true).unwrap();
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 19 - i);
        }
        let d = l.check(PER_MINUTE_20, who, 1_000, true).unwrap();
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after_secs, d.reset_secs),
            (false, 0, 3, 60)
        );
        // One token refills every 3 s.
        assert!(!l.check(PER_MINUTE_20, who, 3_999, true).unwrap().allowed);
        assert!(l.check(PER_MINUTE_20, who, 4_000, true).unwrap().allowed);
        // Another user has their own bucket.
        assert!(
            l.check(PER_MINUTE_20, &[b"create", b"u-bob"], 4_000, true)
                .unwrap()
                .allowed
        );
        assert_eq!(
            PER_MINUTE_20.policy_header("per-user"),
            "\"per-user\";q=20;w=60"
        );
    }

    #[test]
    fn peeking_spends_nothing() {
        let store = MemoryStore::new();
        let l = Limiter {
            store: &store,
            namespace: "t",
            slots: 8,
        };
        let one = Bucket {
            capacity: 1,
            window_ms: 60_000,
        };
        assert!(l.check(one, &[b"ip"], 0, false).unwrap().allowed);
        assert!(l.check(one, &[b"ip"], 0, true).unwrap().allowed);
        assert!(!l.check(one, &[b"ip"], 0, false).unwrap().allowed);
    }

    #[test]
    fn exact_across_threads() {
        let store = std::sync::Arc::new(MemoryStore::new());
        let l = Limiter {
            store: store.as_ref(),
            namespace: "t",
            slots: 16,
        };
        l.init().unwrap();
        let allowed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let l = Limiter {
                        store: store.as_ref(),
                        namespace: "t",
                        slots: 16,
                    };
                    for _ in 0..25 {
                        if l.check(PER_MINUTE_20, &[b"r", b"u"], 5, true)
                            .unwrap()
                            .allowed
                        {
                            allowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.into_inner(), 20);
    }

    /// A million distinct users: the store never grows past `slots` keys of fixed size.
    #[test]
    fn memory_is_bounded_with_a_million_users() {
        let store = MemoryStore::new();
        let slots = 4096;
        let l = Limiter {
            store: &store,
            namespace: "t",
            slots,
        };
        l.init().unwrap();
        let before = store.footprint();
        for user in 0..1_000_000u32 {
            l.check(
                PER_MINUTE_20,
                &[b"create", &user.to_be_bytes()],
                u64::from(user),
                true,
            )
            .unwrap();
        }
        let after = store.footprint();
        println!(
            "1,000,000 users through {slots} slots: {} keys, {} bytes of keys and values",
            after.0, after.1
        );
        assert_eq!(
            before, after,
            "slots are preallocated; their size never changes"
        );
        assert_eq!(after.0, slots as usize);
        assert!(after.1 < slots as usize * (WAYS * ENTRY + 16), "{after:?}");
    }
}
