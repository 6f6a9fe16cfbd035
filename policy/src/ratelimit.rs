//! Token buckets in shared data, exact across workers and bounded in memory.
//!
//! Two tables ([`crate::slots`]), kept apart so that traffic anyone can send never
//! touches what limits a signed-in user: [`USERS`] holds the per-route buckets of
//! authenticated users (`limits.rate_limit_slots`), [`ADDRESSES`] the per-address
//! allowance for failed authentication (`limits.unauthenticated_slots`). Each is a fixed
//! number of slots of [`WAYS`] entries of 16 bytes, however many users or addresses
//! appear.
//!
//! A bucket is kept as the instant it will be full again (the "theoretical arrival time"
//! of the generic cell rate algorithm), in nanoseconds: a request costs `window /
//! capacity` of time and passes while the bucket's debt plus that cost fits in the
//! window. The representation does not depend on the bucket's shape, so routes with
//! different limits can share a table and "fully refilled" means the same for all.
//!
//! Never forgetting a bucket that still limits: a key without an entry takes a free one
//! or one whose bucket is full again (forgetting a full bucket changes nothing). When
//! every entry of its slot still limits someone, the newcomer is charged to the entry
//! furthest from full, shared with its owner, until that bucket refills. A collision can
//! therefore only make a limit stricter, never looser: no flood of other keys, however
//! large, brings back a spent request. (Refusing the newcomer outright would be as safe,
//! but would refuse a user who has a request left in a shared bucket; sharing degrades to
//! refusal only when the shared bucket is spent.) With slots well above the number of
//! keys active within one window, sharing is rare; the slot hash is keyed with a
//! per-process secret, so nobody can aim keys at a victim's slot.
//!
//! Exactness: every decision is a read-modify-write of the slot under Envoy's
//! compare-and-swap, retried on conflict, so two workers never spend the same token.

use crate::slots::{be_u64, Record, Table, Ways};
use crate::store::StoreError;

pub use crate::slots::WAYS;

/// Table of the per-route buckets of authenticated users, keyed by route and subject.
pub const USERS: &str = "rl-user";
/// Table of the per-address allowance for failed authentication, keyed by client address.
pub const ADDRESSES: &str = "rl-addr";

const NS_PER_MS: u128 = 1_000_000;
const NS_PER_SEC: u128 = 1_000_000_000;

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
    fn window_ns(&self) -> u128 {
        u128::from(self.window_ms) * NS_PER_MS
    }

    /// What one request costs in time, rounded down so that a burst of `capacity` always
    /// fits in the window (the rate is then at most a nanosecond per request generous).
    fn cost_ns(&self) -> u128 {
        (self.window_ns() / u128::from(self.capacity.max(1))).max(1)
    }

    /// Decides on a bucket that is full at `full_at` (never earlier than `now`), spending
    /// a request if `consume` and one is left. Returns the decision and, when a request
    /// was spent, the new instant of being full.
    fn decide(&self, full_at: u128, now: u128, consume: bool) -> (Decision, Option<u128>) {
        let (window, cost) = (self.window_ns(), self.cost_ns());
        let debt = full_at.saturating_sub(now);
        let allowed = debt + cost <= window;
        let spent = (allowed && consume).then_some(now + debt + cost);
        let after = spent.unwrap_or(now + debt);
        let left = (now + window).saturating_sub(after) / cost;
        let decision = Decision {
            allowed,
            remaining: u32::try_from(left).unwrap_or(u32::MAX).min(self.capacity),
            reset_secs: secs_ceil(after - now),
            retry_after_secs: if allowed {
                0
            } else {
                secs_ceil(debt + cost - window).max(1)
            },
        };
        (decision, spent)
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

fn secs_ceil(ns: u128) -> u64 {
    u64::try_from(ns.div_ceil(NS_PER_SEC)).unwrap_or(u64::MAX)
}

/// One bucket: whose it is and when it is full again (unix nanoseconds).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Entry {
    fp: u64,
    full_at_ns: u64,
}

impl Entry {
    fn full_at(&self) -> u128 {
        u128::from(self.full_at_ns)
    }
}

impl Record for Entry {
    const SIZE: usize = 8;

    fn fingerprint(&self) -> u64 {
        self.fp
    }

    fn write(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&self.full_at_ns.to_be_bytes());
    }

    fn read(fp: u64, bytes: &[u8]) -> Self {
        Self {
            fp,
            full_at_ns: be_u64(bytes),
        }
    }
}

/// The bucket a key is charged to.
enum Holder {
    /// Its own entry.
    Own(usize),
    /// A free entry, or one whose bucket is full again: a fresh bucket.
    Fresh(usize),
    /// Every entry still limits its owner: the one furthest from full, shared.
    Shared(usize),
}

fn holder(ways: &Ways<Entry>, fp: u64, now: u128) -> Holder {
    if let Some(i) = ways.iter().position(|w| w.is_some_and(|e| e.fp == fp)) {
        return Holder::Own(i);
    }
    if let Some(i) = ways
        .iter()
        .position(|w| w.is_none_or(|e| e.full_at() <= now))
    {
        return Holder::Fresh(i);
    }
    ways.iter()
        .enumerate()
        .max_by_key(|(_, w)| w.map_or(0, |e| e.full_at_ns))
        .map_or(Holder::Fresh(0), |(i, _)| Holder::Shared(i))
}

/// The buckets of one table.
pub struct Limiter<'a> {
    /// The table.
    pub table: Table<'a>,
}

impl Limiter<'_> {
    /// Writes every slot's empty value once (see [`Table::init`]).
    pub fn init(&self) -> Result<(), StoreError> {
        self.table.init::<Entry>()
    }

    /// Spends one request of `who`'s bucket at `now_ms` if one is left (`consume`), or only
    /// reports whether one is (`!consume`). Any store failure is an error: the caller
    /// refuses the request rather than let it pass unlimited.
    pub fn check(
        &self,
        bucket: Bucket,
        who: &[&[u8]],
        now_ms: u64,
        consume: bool,
    ) -> Result<Decision, StoreError> {
        let place = self.table.place(who)?;
        let now = u128::from(now_ms) * NS_PER_MS;
        self.table.update(place.slot, |ways: &mut Ways<Entry>| {
            let (way, fp, full_at) = match holder(ways, place.fingerprint, now) {
                Holder::Own(i) => (i, place.fingerprint, ways[i].map_or(now, |e| e.full_at())),
                Holder::Fresh(i) => (i, place.fingerprint, now),
                // The owner keeps the entry; the newcomer only adds to its debt.
                Holder::Shared(i) => {
                    let e = ways[i];
                    (
                        i,
                        e.map_or(place.fingerprint, |e| e.fp),
                        e.map_or(now, |e| e.full_at()),
                    )
                }
            };
            let (decision, spent) = bucket.decide(full_at.max(now), now, consume);
            let Some(after) = spent else {
                return (false, decision);
            };
            ways[way] = Some(Entry {
                fp,
                full_at_ns: u64::try_from(after).unwrap_or(u64::MAX),
            });
            (true, decision)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::slots::SlotKey;
    use crate::store::{MemoryStore, SharedStore};

    const PER_MINUTE_20: Bucket = Bucket {
        capacity: 20,
        window_ms: 60_000,
    };
    const KEY: SlotKey = SlotKey::new([42; 16]);
    const T0: u64 = 1_800_000_000_000;

    fn limiter(store: &dyn SharedStore, slots: u32) -> Limiter<'_> {
        Limiter {
            table: Table {
                store,
                namespace: "t",
                name: USERS,
                slots,
                key: &KEY,
            },
        }
    }

    fn spend(l: &Limiter<'_>, who: &str, at: u64) -> Decision {
        l.check(PER_MINUTE_20, &[b"create", who.as_bytes()], at, true)
            .unwrap()
    }

    #[test]
    fn twenty_per_minute_then_429_with_retry_after() {
        let store = MemoryStore::new();
        let l = limiter(&store, 64);
        l.init().unwrap();
        for i in 0..20u32 {
            let d = spend(&l, "u-alice", T0);
            assert!(d.allowed, "request {i}");
            assert_eq!(d.remaining, 19 - i);
            assert_eq!(d.reset_secs, 3 * u64::from(i + 1));
        }
        let d = spend(&l, "u-alice", T0);
        assert_eq!(
            (d.allowed, d.remaining, d.retry_after_secs, d.reset_secs),
            (false, 0, 3, 60)
        );
        // One token refills every 3 s.
        assert!(!spend(&l, "u-alice", T0 + 2_999).allowed);
        assert!(spend(&l, "u-alice", T0 + 3_000).allowed);
        // Another user has their own bucket.
        assert!(spend(&l, "u-bob", T0 + 3_000).allowed);
        assert_eq!(
            PER_MINUTE_20.policy_header("per-user"),
            "\"per-user\";q=20;w=60"
        );
    }

    #[test]
    fn peeking_spends_nothing() {
        let store = MemoryStore::new();
        let l = limiter(&store, 8);
        l.init().unwrap();
        let one = Bucket {
            capacity: 1,
            window_ms: 60_000,
        };
        assert!(l.check(one, &[b"ip"], T0, false).unwrap().allowed);
        assert!(l.check(one, &[b"ip"], T0, true).unwrap().allowed);
        assert!(!l.check(one, &[b"ip"], T0, false).unwrap().allowed);
    }

    #[test]
    fn a_burst_of_the_full_capacity_fits_whatever_the_rounding() {
        let store = MemoryStore::new();
        let l = limiter(&store, 8);
        l.init().unwrap();
        let seven = Bucket {
            capacity: 7,
            window_ms: 60_000,
        };
        let passed = (0..10)
            .filter(|_| l.check(seven, &[b"u"], T0, true).unwrap().allowed)
            .count();
        assert_eq!(passed, 7);
    }

    #[test]
    fn exact_across_threads() {
        let store = MemoryStore::new();
        limiter(&store, 16).init().unwrap();
        let allowed = std::sync::atomic::AtomicU32::new(0);
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let l = limiter(&store, 16);
                    for _ in 0..25 {
                        if spend(&l, "u", T0).allowed {
                            allowed.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                        }
                    }
                });
            }
        });
        assert_eq!(allowed.into_inner(), 20);
    }

    /// The attack that once got through: a user spends their limit, then floods of other
    /// keys land in the same slot (here every key does: one slot). The user's bucket is
    /// never forgotten while it limits them.
    #[test]
    fn a_bucket_that_still_limits_is_never_evicted() {
        let store = MemoryStore::new();
        let l = limiter(&store, 1);
        l.init().unwrap();
        for _ in 0..20 {
            assert!(spend(&l, "u-alice", T0).allowed);
        }
        for i in 0..1_000 {
            spend(&l, &format!("u-{i}"), T0 + 1_000);
        }
        let d = spend(&l, "u-alice", T0 + 1_500);
        assert_eq!((d.allowed, d.remaining), (false, 0));
        // The flood did not spend alice's refill either: one token back after 3 s.
        assert!(spend(&l, "u-alice", T0 + 3_000).allowed);
        assert!(!spend(&l, "u-alice", T0 + 3_000).allowed);
    }

    #[test]
    fn collisions_only_make_limits_stricter() {
        let store = MemoryStore::new();
        let l = limiter(&store, 1);
        l.init().unwrap();
        for (n, who) in [(1, "a"), (2, "b"), (3, "c"), (4, "d")] {
            for _ in 0..n {
                spend(&l, who, T0);
            }
        }
        // Every entry still limits someone: eve shares the most spent bucket, d's.
        let eve = spend(&l, "eve", T0);
        assert_eq!((eve.allowed, eve.remaining), (true, 15));
        assert_eq!(spend(&l, "d", T0).remaining, 14, "d paid for eve's request");
        assert_eq!(spend(&l, "a", T0).remaining, 18, "a is untouched");
        // Once buckets are full again, eve gets one of her own.
        assert_eq!(spend(&l, "eve", T0 + 60_000).remaining, 19);
    }

    #[test]
    fn a_refilled_bucket_is_replaced() {
        let store = MemoryStore::new();
        let l = limiter(&store, 1);
        l.init().unwrap();
        for who in ["a", "b", "c", "d"] {
            spend(&l, who, T0);
        }
        assert_eq!(spend(&l, "eve", T0 + 2_999).remaining, 18, "shared");
        assert_eq!(
            spend(&l, "frank", T0 + 3_000).remaining,
            19,
            "a, b or c is full again"
        );
    }

    /// Routes with different limits share the table; a bucket's "full again" does not
    /// depend on whose shape looks at it.
    #[test]
    fn different_limits_share_a_table_without_loosening() {
        let store = MemoryStore::new();
        let l = limiter(&store, 1);
        l.init().unwrap();
        let slow = Bucket {
            capacity: 2,
            window_ms: 60_000,
        };
        let fast = Bucket {
            capacity: 100,
            window_ms: 1_000,
        };
        assert!(l.check(slow, &[b"x"], T0, true).unwrap().allowed);
        assert!(l.check(slow, &[b"x"], T0, true).unwrap().allowed);
        for i in 0..50u32 {
            l.check(fast, &[&i.to_be_bytes()], T0 + 5_000, true)
                .unwrap();
        }
        assert!(!l.check(slow, &[b"x"], T0 + 29_999, true).unwrap().allowed);
        assert!(l.check(slow, &[b"x"], T0 + 30_000, true).unwrap().allowed);
    }

    #[test]
    fn separate_tables_never_meet() {
        let store = MemoryStore::new();
        let users = limiter(&store, 1);
        let addresses = Limiter {
            table: Table {
                name: ADDRESSES,
                ..limiter(&store, 1).table
            },
        };
        users.init().unwrap();
        addresses.init().unwrap();
        for _ in 0..20 {
            spend(&users, "u-alice", T0);
        }
        for i in 0..1_000u32 {
            let _ = addresses.check(PER_MINUTE_20, &[&i.to_be_bytes()], T0, true);
        }
        assert_eq!(store.footprint().0, 2, "one slot each");
        assert!(!spend(&users, "u-alice", T0).allowed);
    }

    #[test]
    fn store_failures_are_errors() {
        struct Down;
        impl SharedStore for Down {
            fn get(&self, _: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
                Err(StoreError::Host("down".into()))
            }
            fn set(&self, _: &str, _: &[u8], _: Option<u32>) -> Result<(), StoreError> {
                Err(StoreError::Host("down".into()))
            }
        }
        assert!(limiter(&Down, 8)
            .check(PER_MINUTE_20, &[b"u"], T0, false)
            .is_err());
        let store = MemoryStore::new();
        let unset = SlotKey::unset();
        let l = Limiter {
            table: Table {
                key: &unset,
                ..limiter(&store, 8).table
            },
        };
        assert!(l.check(PER_MINUTE_20, &[b"u"], T0, true).is_err());
    }

    /// A million distinct users: the store never grows past `slots` keys of fixed size.
    #[test]
    fn memory_is_bounded_with_a_million_users() {
        let store = MemoryStore::new();
        let slots = 4096;
        let l = limiter(&store, slots);
        l.init().unwrap();
        let before = store.footprint();
        for user in 0..1_000_000u32 {
            l.check(
                PER_MINUTE_20,
                &[b"create", &user.to_be_bytes()],
                T0 + u64::from(user),
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
        assert!(after.1 < slots as usize * (WAYS * 16 + 24), "{after:?}");
    }
}
