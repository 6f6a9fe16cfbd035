//! Each gateway signature is accepted once: the backend remembers every nonce it accepted
//! until no backend would accept its signature any more, then forgets it.
//!
//! The MAC binds a signature to one request, but within [`edge_contract::Verifier`]'s
//! window the very same request could be sent again. So the first acceptance of a nonce is
//! recorded at `nonce/{nonce}` by an atomic `increment` (1 means first; an `increment` is
//! atomic on every host, unlike a compare-and-swap from absent, see [`crate::store::Kv`]).
//!
//! Spin's key-value store has no expiry, so forgetting is done by the requests themselves,
//! with bounded work each. Every recorded nonce is also appended to a queue: slot `n`
//! (`nonceq/{n:020}`, drawn with `increment` on `nonceq/head`) holds the nonce and the time
//! after which it may be forgotten. `nonceq/tail` counts the slots already swept. After
//! recording its own nonce, a request sweeps at most [`SWEEP_PER_REQUEST`] slots from the
//! front of the queue whose time has passed: it takes each slot with an `increment` of the
//! tail (so each slot has exactly one sweeper, however many requests race), deletes the
//! nonce and the slot. It stops at the first slot not yet due. Since every request adds one
//! slot and sweeps up to two, the queue holds about the slots of the last
//! [`edge_contract::Verifier::max_age_secs`] `× 2 +` [`SKEW_MARGIN_SECS`] seconds, plus
//! a backlog that shrinks with every request.
//!
//! Races, closed without a lock:
//! - a sweeper's ticket may land on a slot not due (another sweeper took the slot it looked
//!   at): that entry is put back at the end of the queue.
//! - a ticket may land on a slot drawn but not written yet. The ticket holder reads an
//!   empty slot again after taking the ticket, and the writer reads the tail after writing:
//!   so either the sweeper sees the entry (and sweeps or moves it) or the writer sees the
//!   tail past its slot and writes the entry again at the end (at most [`MAX_PLACEMENTS`]
//!   times). An entry may so be queued twice; forgetting twice is harmless.
//! - a slot drawn by a request that died before writing it would stop the sweep forever:
//!   an empty slot is skipped once a later slot has been drawn.
//!
//! One timing assumption, the one [`crate::idempotency`] makes too: a request does not
//! stall between two of its store calls for about [`SKEW_MARGIN_SECS`]. Its entry is due
//! no sooner than that after its signature was checked; a request that stalls longer
//! between queueing its entry and recording its nonce leaves that record behind (one key,
//! never an early deletion: nothing is forgotten before every verifier refuses it).
//!
//! The queue is generic ([`Queue`]): the idempotency records are forgotten through one of
//! their own, with the same slots, tickets and races (`crate::idempotency`).
//!
//! Cost: recording is three writes and a read; sweeping one slot a read and two writes (the
//! tail's `increment`, then the nonce and the slot in one `delete_many` batch), and finding
//! the front not due one read. Every accepted request pays it, whatever its
//! method, since a replayed read is a replay too.

use crate::store::{Kv, StoreError};

/// How far apart (seconds) the clocks of two backend instances may be: a nonce is kept this
/// much longer than the verifier's window, since an instance whose clock is behind still
/// accepts its signature.
pub const SKEW_MARGIN_SECS: u64 = 60;
/// Queue slots one request sweeps at most.
pub const SWEEP_PER_REQUEST: usize = 2;
/// How many times a request writes its entry when sweepers keep passing its slot.
pub const MAX_PLACEMENTS: usize = 3;

/// A queue of things to forget once they are due: where it lives in the store, and what
/// forgetting one of its items does. The nonce records use [`NONCES`]; the idempotency
/// records (`crate::idempotency`) a queue of their own, swept by the same rules.
pub struct Queue {
    /// The counter of slots drawn.
    pub head: &'static str,
    /// The counter of slots taken by sweepers.
    pub tail: &'static str,
    /// The prefix of slot keys (`{prefix}{n:020}`).
    pub prefix: &'static str,
    /// Forgets `item`, whose time has passed, then deletes `slot` (its queue slot): in one
    /// batch where it can.
    pub forget: fn(kv: &dyn Kv, item: &str, slot: &str, now: i64) -> Result<(), StoreError>,
}

impl Queue {
    fn slot(&self, n: i64) -> String {
        format!("{}{n:020}", self.prefix)
    }
}

/// The queue of accepted nonces.
pub const NONCES: Queue = Queue {
    head: "nonceq/head",
    tail: "nonceq/tail",
    prefix: "nonceq/",
    forget: forget_nonce,
};

/// Forgets a nonce with its slot in one batch: whichever goes first, the slot is past the
/// tail, so no other sweeper visits it.
fn forget_nonce(kv: &dyn Kv, nonce: &str, slot: &str, _now: i64) -> Result<(), StoreError> {
    kv.delete_many(&[&seen_key(nonce), slot])
}

#[cfg(test)]
const HEAD: &str = NONCES.head;
#[cfg(test)]
const TAIL: &str = NONCES.tail;

#[cfg(test)]
fn slot_key(n: i64) -> String {
    NONCES.slot(n)
}

fn seen_key(nonce: &str) -> String {
    format!("nonce/{nonce}")
}

/// Whether this request is the first to present its nonce.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Seen {
    /// First time: accept.
    First,
    /// Accepted before: a replay.
    Again,
}

/// A queue slot's content: the item (a nonce, a record's key) and when it may be
/// forgotten (unix seconds).
#[derive(Debug, Clone, PartialEq, Eq)]
struct Entry {
    forget_after: i64,
    item: String,
}

impl Entry {
    fn encode(&self) -> Vec<u8> {
        format!("{} {}", self.forget_after, self.item).into_bytes()
    }

    fn decode(bytes: &[u8]) -> Option<Self> {
        let text = std::str::from_utf8(bytes).ok()?;
        let (at, item) = text.split_once(' ')?;
        Some(Self {
            forget_after: at.parse().ok()?,
            item: item.to_owned(),
        })
    }

    fn due(&self, now: i64) -> bool {
        now > self.forget_after
    }
}

/// Records `nonce` (the text of an authentic signature's nonce) and says whether it was
/// seen before; `accepted_until` is the last second any verifier accepts its signature
/// ([`edge_contract::Verifier::accepted_until`]). Then sweeps what is due. A store
/// failure while recording is an error (the request must fail closed); while sweeping it
/// is ignored: the next requests sweep instead.
pub fn remember(
    kv: &dyn Kv,
    nonce: &str,
    accepted_until: u64,
    now: i64,
) -> Result<Seen, StoreError> {
    let forget_after = accepted_until.saturating_add(SKEW_MARGIN_SECS);
    let forget_after = i64::try_from(forget_after).unwrap_or(i64::MAX);
    // Queued before it is recorded: a request that dies in between leaves a queue entry
    // for a nonce never recorded (harmless), never a record nothing will delete.
    let tail = schedule(kv, &NONCES, nonce, forget_after)?;
    let seen = match kv.increment(&seen_key(nonce), 1)? {
        1 => Seen::First,
        _ => Seen::Again,
    };
    // Best effort: what this request leaves, the next ones sweep.
    let _ = sweep_due(kv, &NONCES, tail, now);
    Ok(seen)
}

/// Queues `item` of `queue` to be forgotten after `forget_after` (unix seconds); returns the
/// tail to give [`sweep_due`]. Queue an item before it is stored: a request that dies in
/// between leaves an entry for nothing (harmless), never an item nothing will forget.
pub fn schedule(
    kv: &dyn Kv,
    queue: &Queue,
    item: &str,
    forget_after: i64,
) -> Result<i64, StoreError> {
    let entry = Entry {
        forget_after,
        item: item.to_owned(),
    };
    enqueue(kv, queue, &entry)
}

/// Forgets at most [`SWEEP_PER_REQUEST`] of `queue`'s due items after `tail`; returns how
/// many slots it took. A failure leaves the rest to the next requests.
pub fn sweep_due(kv: &dyn Kv, queue: &Queue, tail: i64, now: i64) -> Result<usize, StoreError> {
    sweep(kv, queue, tail, now, SWEEP_PER_REQUEST)
}

/// Appends `entry` to the queue; returns the tail read after it was written.
fn enqueue(kv: &dyn Kv, q: &Queue, entry: &Entry) -> Result<i64, StoreError> {
    let value = entry.encode();
    let mut previous = None;
    let mut tail = 0;
    for _ in 0..MAX_PLACEMENTS {
        let slot = kv.increment(q.head, 1)?;
        kv.set(&q.slot(slot), &value)?;
        if let Some(old) = previous.take() {
            kv.delete(&q.slot(old))?;
        }
        // Read after writing: a sweeper whose ticket is `slot` either took it before this
        // read (and then this request sees it here and moves the entry) or reads the slot
        // after the write (and sweeps or moves the entry itself).
        tail = kv.increment(q.tail, 0)?;
        if tail < slot {
            return Ok(tail);
        }
        previous = Some(slot);
    }
    // Passed every time: the last copy stays, unswept; its nonce outlives the window.
    Ok(tail)
}

/// Sweeps at most `budget` due slots after `tail`; returns how many slots it took.
fn sweep(
    kv: &dyn Kv,
    q: &Queue,
    mut tail: i64,
    now: i64,
    budget: usize,
) -> Result<usize, StoreError> {
    let mut taken = 0;
    // Each step reads a slot or catches up with other sweepers: bounded work either way.
    for _ in 0..2 * budget {
        if taken == budget {
            break;
        }
        let next = tail + 1;
        let front = kv.get(&q.slot(next))?;
        match &front {
            Some(bytes) => {
                if Entry::decode(bytes).is_some_and(|e| !e.due(now)) {
                    break;
                }
            }
            None => {
                // Swept by another request since `tail` was read: go on from where it is.
                let current = kv.increment(q.tail, 0)?;
                if current >= next {
                    tail = current;
                    continue;
                }
                // Drawn but not written: skip it only once a later slot exists, so a
                // request that died after drawing cannot stop the sweep, and one still
                // writing moves its own entry (see `enqueue`).
                if kv.increment(q.head, 0)? <= next {
                    break;
                }
            }
        }
        let ticket = kv.increment(q.tail, 1)?;
        // An entry, once written, never changes, so one read before the ticket will do. An
        // empty slot must be read again now that the ticket is held: its writer may have
        // written it and checked the tail just before, and then counts on this sweeper.
        let content = match front {
            Some(bytes) if ticket == next => Some(bytes),
            _ => kv.get(&q.slot(ticket))?,
        };
        settle(kv, q, ticket, content.as_deref(), now)?;
        tail = ticket;
        taken += 1;
    }
    Ok(taken)
}

/// Deals with the slot this sweeper holds the ticket for.
fn settle(
    kv: &dyn Kv,
    q: &Queue,
    ticket: i64,
    content: Option<&[u8]>,
    now: i64,
) -> Result<(), StoreError> {
    let Some(bytes) = content else {
        // Not written (yet): its writer sees the tail passed it and writes it again.
        return Ok(());
    };
    let slot = q.slot(ticket);
    match Entry::decode(bytes) {
        Some(entry) if !entry.due(now) => {
            enqueue(kv, q, &entry)?;
        }
        Some(entry) => return (q.forget)(kv, &entry.item, &slot, now),
        // Not an entry this code wrote: nothing to forget but the slot.
        None => {}
    }
    kv.delete(&slot)
}

#[cfg(test)]
mod tests {
    use std::cell::Cell;

    use super::*;
    use crate::store::MemoryKv;

    /// Keys of the nonce records and of the queue, apart from its two counters.
    fn stored(kv: &MemoryKv) -> (usize, usize) {
        let keys = kv.keys();
        let seen = keys.iter().filter(|k| k.starts_with("nonce/")).count();
        let slots = keys
            .iter()
            .filter(|k| k.starts_with("nonceq/") && *k != HEAD && *k != TAIL)
            .count();
        (seen, slots)
    }

    /// Slots at or before the tail that are still stored: entries no sweeper will visit.
    fn orphans(kv: &MemoryKv) -> Vec<String> {
        let tail = kv.increment(TAIL, 0).unwrap();
        kv.keys()
            .into_iter()
            .filter(|k| {
                k.strip_prefix("nonceq/")
                    .and_then(|n| n.parse::<i64>().ok())
                    .is_some_and(|n| n <= tail)
            })
            .collect()
    }

    fn nonce(i: u64) -> String {
        format!("n{i:021}")
    }

    #[test]
    fn a_nonce_is_accepted_once_within_its_window_and_forgotten_after() {
        let kv = MemoryKv::new();
        let until = 1_060;
        assert_eq!(remember(&kv, "a", until, 1_000), Ok(Seen::First));
        assert_eq!(remember(&kv, "a", until, 1_001), Ok(Seen::Again));
        assert_eq!(remember(&kv, "b", until, 1_001), Ok(Seen::First));
        // Until every verifier refuses the signature, plus the clock margin, it is kept.
        let last_kept = until as i64 + SKEW_MARGIN_SECS as i64;
        remember(&kv, "c", until + 200, last_kept).unwrap();
        assert_eq!(stored(&kv).0, 3);
        // After that, the next requests forget it.
        remember(&kv, "d", until + 200, last_kept + 1).unwrap();
        remember(&kv, "e", until + 200, last_kept + 1).unwrap();
        assert!(!kv.keys().contains(&seen_key("a")));
        assert!(!kv.keys().contains(&seen_key("b")));
        assert_eq!(stored(&kv), (3, 3), "{:?}", kv.keys());
    }

    /// One accepted request at `now`, signed by a gateway whose clock is off by up to the
    /// window either way; returns its nonce's number.
    fn request(kv: &MemoryKv, count: &mut u64, now: u64, window: u64) -> u64 {
        *count += 1;
        let signed_at = now + (*count % (2 * window + 1)) - window;
        let seen = remember(kv, &nonce(*count), signed_at + window, now as i64).unwrap();
        assert_eq!(seen, Seen::First);
        *count
    }

    fn numbers_left(kv: &MemoryKv) -> Vec<u64> {
        kv.keys()
            .iter()
            .filter_map(|k| k.strip_prefix("nonce/n")?.parse().ok())
            .collect()
    }

    #[test]
    fn the_store_stays_bounded_under_steady_traffic_and_drains_after_a_burst() {
        let kv = MemoryKv::new();
        let window = 60;
        let mut count = 0;
        // A burst: 5,000 requests in one second, then 10 a second for an hour.
        for _ in 0..5_000 {
            request(&kv, &mut count, 10_000, window);
        }
        let mut most = 0;
        for second in 10_001..13_601 {
            for _ in 0..10 {
                request(&kv, &mut count, second, window);
            }
            most = most.max(stored(&kv).0);
        }
        // What is kept: the requests of the last (2 × window + margin) seconds, since a
        // slot signed a window ahead holds up the sweep behind it until it is due.
        let bound = (10 * (2 * window + SKEW_MARGIN_SECS + 2)) as usize;
        let (seen, slots) = stored(&kv);
        assert!(seen <= bound && slots <= bound, "{seen} {slots} > {bound}");
        assert!(most <= 5_000 + bound, "{most}");
        // After a quiet spell, fewer requests than there are entries sweep them all.
        let last_before = count;
        let later = 13_600 + 3 * window + SKEW_MARGIN_SECS;
        for _ in 0..(bound / 2 + 2) {
            request(&kv, &mut count, later, window);
        }
        let left: Vec<u64> = numbers_left(&kv)
            .into_iter()
            .filter(|n| *n <= last_before)
            .collect();
        assert!(left.is_empty(), "{} left", left.len());
        assert_eq!(orphans(&kv), Vec::<String>::new());
    }

    #[test]
    fn a_slot_drawn_by_a_request_that_died_does_not_stop_the_sweep() {
        let kv = MemoryKv::new();
        remember(&kv, "a", 100, 0).unwrap();
        // A request drew slot 2 and died before writing it.
        kv.increment(HEAD, 1).unwrap();
        remember(&kv, "b", 100, 0).unwrap();
        for n in ["c", "d", "e"] {
            remember(&kv, n, 2_000, 1_000).unwrap();
        }
        assert_eq!(stored(&kv).0, 3, "{:?}", kv.keys());
        assert!(!kv.keys().contains(&seen_key("a")) && !kv.keys().contains(&seen_key("b")));
    }

    /// Which store call a [`Hooked`] store runs its hook before.
    #[derive(Clone, Copy, PartialEq)]
    enum At {
        /// The first write of a queue slot.
        SlotWrite,
        /// The first sweeping ticket (`increment` of the tail by 1).
        Ticket,
    }

    /// A store that runs `before` once, just before the call `at` names: another request
    /// acting between two calls of this one.
    struct Hooked<'a> {
        kv: &'a MemoryKv,
        at: At,
        before: Cell<Option<Hook<'a>>>,
    }

    /// What another request does in between.
    type Hook<'a> = Box<dyn FnOnce(&MemoryKv) + 'a>;

    impl Hooked<'_> {
        fn fire(&self, here: At) {
            if here == self.at {
                if let Some(f) = self.before.take() {
                    f(self.kv);
                }
            }
        }
    }

    impl Kv for Hooked<'_> {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            self.kv.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            if key.starts_with("nonceq/") {
                self.fire(At::SlotWrite);
            }
            self.kv.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            self.kv.delete(key)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            if key == TAIL && delta == 1 {
                self.fire(At::Ticket);
            }
            self.kv.increment(key, delta)
        }
        fn compare_and_swap(
            &self,
            k: &str,
            e: Option<&[u8]>,
            n: &[u8],
        ) -> Result<bool, StoreError> {
            self.kv.compare_and_swap(k, e, n)
        }
    }

    fn hooked<'a>(kv: &'a MemoryKv, at: At, f: impl FnOnce(&MemoryKv) + 'a) -> Hooked<'a> {
        Hooked {
            kv,
            at,
            before: Cell::new(Some(Box::new(f))),
        }
    }

    #[test]
    fn a_slot_written_just_before_the_sweepers_ticket_is_read_again() {
        let kv = MemoryKv::new();
        // Slot 1 drawn by a request not done writing; slot 2 drawn and written after it.
        kv.increment(HEAD, 1).unwrap();
        kv.increment(HEAD, 1).unwrap();
        let later = Entry {
            forget_after: 5_000,
            item: "later".into(),
        };
        kv.set(&slot_key(2), &later.encode()).unwrap();
        // The sweeper finds slot 1 empty; before it takes its ticket, the writer writes the
        // slot and checks the tail, which has not moved: the writer is done.
        let racing = hooked(&kv, At::Ticket, |kv: &MemoryKv| {
            let mine = Entry {
                forget_after: 5_000,
                item: "mine".into(),
            };
            kv.set(&slot_key(1), &mine.encode()).unwrap();
            assert_eq!(kv.increment(TAIL, 0).unwrap(), 0);
            kv.increment(&seen_key("mine"), 1).unwrap();
        });
        assert_eq!(sweep(&racing, &NONCES, 0, 1_000, 1), Ok(1));
        // The sweeper holding slot 1 saw the entry after all and queued it again.
        assert_eq!(orphans(&kv), Vec::<String>::new());
        while sweep(&kv, &NONCES, kv.increment(TAIL, 0).unwrap(), 9_000, 2).unwrap() > 0 {}
        assert_eq!(stored(&kv), (0, 0), "{:?}", kv.keys());
    }

    #[test]
    fn an_entry_a_sweeper_passed_before_it_was_written_is_moved_not_lost() {
        let kv = MemoryKv::new();
        remember(&kv, "old", 100, 0).unwrap();
        remember(&kv, "older", 100, 0).unwrap();
        // "new" draws slot 3; before it writes, a later request draws slot 4 and sweeps at
        // 1,000: slots 1 and 2 are due, and slot 3 looks like a dead request's.
        let racing = hooked(&kv, At::SlotWrite, |kv: &MemoryKv| {
            let slot = kv.increment(HEAD, 1).unwrap();
            kv.increment(&seen_key("later"), 1).unwrap();
            let later = Entry {
                forget_after: 5_000,
                item: "later".into(),
            };
            kv.set(&slot_key(slot), &later.encode()).unwrap();
            sweep(kv, &NONCES, 0, 1_000, 3).unwrap();
        });
        assert_eq!(remember(&racing, "new", 2_000, 1_000), Ok(Seen::First));
        assert_eq!(
            kv.increment(TAIL, 0).unwrap(),
            3,
            "the sweeper passed slot 3"
        );
        assert_eq!(orphans(&kv), Vec::<String>::new());
        // Still refused as a replay, and still forgotten once due.
        assert_eq!(remember(&kv, "new", 2_000, 1_001), Ok(Seen::Again));
        for now in [9_000, 9_000, 9_000, 9_000] {
            remember(&kv, &format!("x{now}"), 9_500, now).unwrap();
        }
        assert!(!kv.keys().contains(&seen_key("new")), "{:?}", kv.keys());
        assert!(!kv.keys().contains(&seen_key("later")), "{:?}", kv.keys());
        assert_eq!(orphans(&kv), Vec::<String>::new());
    }

    #[test]
    fn a_slot_not_due_under_a_sweepers_ticket_goes_back_in_the_queue() {
        let kv = MemoryKv::new();
        kv.increment(HEAD, 1).unwrap();
        kv.set(
            &slot_key(1),
            &Entry {
                forget_after: 50,
                item: "x".into(),
            }
            .encode(),
        )
        .unwrap();
        kv.increment(&seen_key("x"), 1).unwrap();
        // The sweeper looked at slot 0's successor, but another took it: it holds slot 1.
        settle(
            &kv,
            &NONCES,
            1,
            kv.get(&slot_key(1)).unwrap().as_deref(),
            10,
        )
        .unwrap();
        assert_eq!(kv.get(&slot_key(1)).unwrap(), None);
        assert_eq!(
            kv.get(&slot_key(2)).unwrap(),
            Some(
                Entry {
                    forget_after: 50,
                    item: "x".into()
                }
                .encode()
            )
        );
        assert!(kv.keys().contains(&seen_key("x")));
    }

    /// The shared store, yielding the thread before every call so racing requests
    /// interleave between any two of each other's calls.
    struct Yielding<'a>(&'a MemoryKv);

    impl Kv for Yielding<'_> {
        fn get(&self, key: &str) -> Result<Option<Vec<u8>>, StoreError> {
            std::thread::yield_now();
            self.0.get(key)
        }
        fn set(&self, key: &str, value: &[u8]) -> Result<(), StoreError> {
            // A writer about to fill its queue slot sometimes stalls, as a request
            // descheduled between two host calls does, so sweepers reach its empty slot.
            if key.starts_with("nonceq/") && key.bytes().map(u32::from).sum::<u32>() % 3 == 0 {
                std::thread::sleep(std::time::Duration::from_micros(300));
            }
            std::thread::yield_now();
            self.0.set(key, value)
        }
        fn delete(&self, key: &str) -> Result<(), StoreError> {
            std::thread::yield_now();
            self.0.delete(key)
        }
        fn increment(&self, key: &str, delta: i64) -> Result<i64, StoreError> {
            std::thread::yield_now();
            self.0.increment(key, delta)
        }
        fn compare_and_swap(
            &self,
            k: &str,
            e: Option<&[u8]>,
            n: &[u8],
        ) -> Result<bool, StoreError> {
            std::thread::yield_now();
            self.0.compare_and_swap(k, e, n)
        }
    }

    #[test]
    fn racing_writers_and_sweepers_leave_no_entry_behind() {
        let kv = MemoryKv::new();
        let threads = 4;
        let per_thread = 2_000;
        // Time stands still while any request runs and jumps past every entry's due time
        // between requests: each jump is a quiet spell after which the sweepers drain the
        // queue up to its head, where the other requests of the new instant are writing.
        let clock = std::sync::RwLock::new(1_000_000_i64);
        std::thread::scope(|s| {
            for t in 0..threads {
                let (kv, clock) = (Yielding(&kv), &clock);
                s.spawn(move || {
                    for i in 0..per_thread {
                        if t == 0 && i % 4 == 0 {
                            *clock.write().unwrap() += 1_000;
                        }
                        let now = clock.read().unwrap();
                        let n = format!("t{t}-{i}");
                        let seen = remember(&kv, &n, *now as u64, *now);
                        assert_eq!(seen, Ok(Seen::First), "{n}");
                    }
                });
            }
        });
        // Long after, sweeping alone empties the queue: every nonce forgotten, no orphan.
        let later = 2_000_000_000;
        let mut sweeps = 0;
        while sweep(&kv, &NONCES, kv.increment(TAIL, 0).unwrap(), later, 2).unwrap() > 0 {
            sweeps += 1;
        }
        assert!(sweeps > 0);
        let keys = kv.keys();
        assert_eq!(stored(&kv), (0, 0), "{:?}", &keys[..keys.len().min(5)]);
        assert_eq!(orphans(&kv), Vec::<String>::new());
    }

    #[test]
    fn a_store_failure_while_recording_is_an_error() {
        let kv = MemoryKv::new();
        kv.set_failing(Some("down"));
        assert!(remember(&kv, "a", 100, 0).is_err());
    }
}
