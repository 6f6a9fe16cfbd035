//! Bounded tables in shared data, the one layout behind the rate limiter and the
//! idempotency records.
//!
//! A table is a fixed number of slots, each one shared-data value of [`WAYS`] fixed-size
//! entries, written once at start-up: however many keys appear, it holds `slots` values
//! of `WAYS * (8 + R::SIZE)` bytes. A key (route and user, client address, user and
//! Idempotency-Key) is hashed to a slot and to a 64-bit fingerprint that tells it apart
//! inside the slot; fingerprint 0 marks a free entry. What to do when a slot is full is
//! the caller's rule, because only the caller knows which entries may be forgotten.
//!
//! The hash is SipHash-2-4 keyed with a per-process secret ([`SlotKey`]). Unkeyed, anyone
//! could compute offline which keys share a slot and aim requests at a victim's slot;
//! keyed, the placement of a key is unpredictable without the secret.
//!
//! Every change is a read-modify-write of one slot under the store's compare-and-swap
//! ([`store::update`]), so workers never lose each other's writes.

use std::fmt;
use std::hash::Hasher;

use siphasher::sip128::{Hasher128, SipHasher24};

use crate::store::{self, SharedStore, StoreError};

/// Entries per slot.
pub const WAYS: usize = 4;

/// Version of the entry layout, part of every table key: a filter upgraded in place keeps
/// the process's shared data, and must not read slots an older layout wrote.
pub const LAYOUT: &str = "v2";

/// Where the process's slot key lives. Not namespaced by configuration: one secret per
/// process, kept across configuration reloads.
const SECRET_KEY: &str = "edge-filter:slot-key";
/// A key written only to learn a compare-and-swap version (see [`SlotKey::agree`]).
const PROBE_KEY: &str = "edge-filter:slot-key:probe";

/// The secret key of the slot hash: 128 bits, drawn from the host's randomness by the
/// first worker to start and shared with the others through the store. `Debug` never
/// shows it.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct SlotKey(Option<[u8; 16]>);

impl fmt::Debug for SlotKey {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.0 {
            Some(_) => f.write_str("SlotKey(<redacted>)"),
            None => f.write_str("SlotKey(unset)"),
        }
    }
}

impl Default for SlotKey {
    fn default() -> Self {
        Self::unset()
    }
}

impl SlotKey {
    /// No key yet: every table operation fails (closed) until the worker agreed on one.
    pub const fn unset() -> Self {
        Self(None)
    }

    /// A key from its bytes (tests; the filter uses [`SlotKey::agree`]).
    pub const fn new(bytes: [u8; 16]) -> Self {
        Self(Some(bytes))
    }

    /// The process's key: the one already in `store`, or `fresh` (16 bytes from the
    /// host's randomness) if this worker is the first. Every worker reads the stored key
    /// back, so all agree even when several start at once.
    ///
    /// Envoy's compare-and-swap cannot say "only if absent": a version is checked only
    /// against a key that exists. But a version, once handed out, is never handed out
    /// again (one counter for the whole store), so writing with the version of another
    /// key's write succeeds when the key is absent and fails with a mismatch once another
    /// worker created it.
    pub fn agree(store: &dyn SharedStore, fresh: [u8; 16]) -> Result<Self, StoreError> {
        if let Some((value, _)) = store.get(SECRET_KEY)? {
            return Self::parse(&value);
        }
        // Not empty: through the proxy-wasm SDK an empty value reads back as absent.
        store.set(PROBE_KEY, b"probe", None)?;
        let seen = match store.get(PROBE_KEY)? {
            Some((_, cas)) if cas != 0 => cas,
            _ => {
                return Err(StoreError::Host(
                    "shared data gave no compare-and-swap version".into(),
                ))
            }
        };
        match store.set(SECRET_KEY, &fresh, Some(seen)) {
            Ok(()) | Err(StoreError::CasMismatch) => {}
            Err(e) => return Err(e),
        }
        match store.get(SECRET_KEY)? {
            Some((value, _)) => Self::parse(&value),
            None => Err(StoreError::Host("the slot key was not stored".into())),
        }
    }

    fn parse(value: &[u8]) -> Result<Self, StoreError> {
        <[u8; 16]>::try_from(value)
            .map(Self::new)
            .map_err(|_| StoreError::Host("the stored slot key is malformed".into()))
    }

    /// Keyed hash of the parts, each length-prefixed so `("ab","c")` and `("a","bc")`
    /// differ: two independent 64-bit halves.
    fn hash(&self, parts: &[&[u8]]) -> Result<(u64, u64), StoreError> {
        let Some(key) = &self.0 else {
            return Err(StoreError::Host("shared state is not initialized".into()));
        };
        let mut h = SipHasher24::new_with_key(key);
        for p in parts {
            h.write(&(p.len() as u64).to_be_bytes());
            h.write(p);
        }
        Ok(h.finish128().as_u64())
    }
}

/// An entry of a table: a fingerprint and `SIZE` bytes of its own.
pub trait Record: Copy {
    /// Encoded size after the fingerprint.
    const SIZE: usize;
    /// The fingerprint of the key this entry belongs to (never 0).
    fn fingerprint(&self) -> u64;
    /// Appends exactly `SIZE` bytes.
    fn write(&self, out: &mut Vec<u8>);
    /// Reads the entry back from its fingerprint and its `SIZE` bytes.
    fn read(fingerprint: u64, bytes: &[u8]) -> Self;
}

/// The entries of one slot, `None` where free.
pub type Ways<R> = [Option<R>; WAYS];

/// Where a key lives.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Place {
    /// The slot.
    pub slot: u64,
    /// The key's fingerprint inside the slot (never 0).
    pub fingerprint: u64,
}

/// One table of one configuration generation.
pub struct Table<'a> {
    /// The store.
    pub store: &'a dyn SharedStore,
    /// Key prefix (the configuration generation).
    pub namespace: &'a str,
    /// The table's name, which also separates its hash from other tables'.
    pub name: &'static str,
    /// Number of slots.
    pub slots: u32,
    /// The process's slot key.
    pub key: &'a SlotKey,
}

impl Table<'_> {
    /// The slot and fingerprint of the key made of `parts`.
    pub fn place(&self, parts: &[&[u8]]) -> Result<Place, StoreError> {
        let mut all = Vec::with_capacity(parts.len() + 1);
        all.push(self.name.as_bytes());
        all.extend_from_slice(parts);
        let (a, b) = self.key.hash(&all)?;
        Ok(Place {
            slot: a % u64::from(self.slots.max(1)),
            fingerprint: b.max(1),
        })
    }

    /// The shared-data key of `slot`.
    pub fn slot_key(&self, slot: u64) -> String {
        format!("{}:{LAYOUT}:{}:{slot}", self.namespace, self.name)
    }

    /// Writes every slot's empty value once, so later updates always have a version to
    /// compare against (Envoy cannot compare-and-swap an absent key).
    pub fn init<R: Record>(&self) -> Result<(), StoreError> {
        let empty = encode::<R>(&[None; WAYS]);
        for slot in 0..u64::from(self.slots) {
            store::init_if_absent(self.store, &self.slot_key(slot), &empty)?;
        }
        Ok(())
    }

    /// Reads `slot`, lets `f` change its entries (returning whether it did, and a result)
    /// and writes it back under compare-and-swap, running `f` again on a conflict. A slot
    /// that does not decode is an error: nothing is decided on state that cannot be read.
    pub fn update<R: Record, T>(
        &self,
        slot: u64,
        mut f: impl FnMut(&mut Ways<R>) -> (bool, T),
    ) -> Result<T, StoreError> {
        store::update(self.store, &self.slot_key(slot), |bytes| {
            let mut ways = match decode::<R>(bytes) {
                Ok(ways) => ways,
                Err(e) => return (None, Err(e)),
            };
            let (changed, result) = f(&mut ways);
            (changed.then(|| encode(&ways)), Ok(result))
        })?
    }
}

fn entry_size<R: Record>() -> usize {
    8 + R::SIZE
}

fn encode<R: Record>(ways: &Ways<R>) -> Vec<u8> {
    let mut out = Vec::with_capacity(WAYS * entry_size::<R>());
    for way in ways {
        let start = out.len();
        if let Some(r) = way {
            out.extend_from_slice(&r.fingerprint().to_be_bytes());
            r.write(&mut out);
        }
        // A free way, or a record that wrote too little or too much, is padded or cut to
        // its exact size, so one way never shifts the next.
        out.resize(start + entry_size::<R>(), 0);
    }
    out
}

fn decode<R: Record>(bytes: Option<&[u8]>) -> Result<Ways<R>, StoreError> {
    let mut ways = [None; WAYS];
    let Some(bytes) = bytes else {
        return Ok(ways);
    };
    let size = entry_size::<R>();
    if bytes.len() != WAYS * size {
        return Err(StoreError::Host(format!(
            "a slot holds {} bytes instead of {}",
            bytes.len(),
            WAYS * size
        )));
    }
    for (way, chunk) in ways.iter_mut().zip(bytes.chunks_exact(size)) {
        let (fp, rest) = chunk.split_at(8);
        let fp = be_u64(fp);
        if fp != 0 {
            *way = Some(R::read(fp, rest));
        }
    }
    Ok(ways)
}

/// The big-endian number in the first 8 bytes (0 if fewer).
pub fn be_u64(bytes: &[u8]) -> u64 {
    bytes
        .get(..8)
        .and_then(|b| <[u8; 8]>::try_from(b).ok())
        .map_or(0, u64::from_be_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::MemoryStore;

    #[derive(Debug, Clone, Copy, PartialEq, Eq)]
    struct Counter {
        fp: u64,
        n: u64,
    }

    impl Record for Counter {
        const SIZE: usize = 8;
        fn fingerprint(&self) -> u64 {
            self.fp
        }
        fn write(&self, out: &mut Vec<u8>) {
            out.extend_from_slice(&self.n.to_be_bytes());
        }
        fn read(fp: u64, bytes: &[u8]) -> Self {
            Self {
                fp,
                n: be_u64(bytes),
            }
        }
    }

    const KEY: SlotKey = SlotKey::new([7; 16]);

    fn table<'a>(store: &'a dyn SharedStore, key: &'a SlotKey, slots: u32) -> Table<'a> {
        Table {
            store,
            namespace: "g",
            name: "t",
            slots,
            key,
        }
    }

    #[test]
    fn workers_agree_on_the_first_key_and_never_show_it() {
        let store = MemoryStore::new();
        let first = SlotKey::agree(&store, [1; 16]).unwrap();
        let second = SlotKey::agree(&store, [2; 16]).unwrap();
        assert_eq!(first, SlotKey::new([1; 16]));
        assert_eq!(second, first, "a later worker adopts the stored key");
        assert_eq!(format!("{first:?}"), "SlotKey(<redacted>)");
    }

    /// Envoy's store as the proxy-wasm SDK shows it: an empty value reads as absent.
    struct EmptyIsAbsent(MemoryStore);

    impl SharedStore for EmptyIsAbsent {
        fn get(&self, key: &str) -> Result<Option<(Vec<u8>, u32)>, StoreError> {
            Ok(self.0.get(key)?.filter(|(v, _)| !v.is_empty()))
        }
        fn set(&self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
            self.0.set(key, value, cas)
        }
    }

    #[test]
    fn agreement_works_through_envoys_view_of_empty_values() {
        let store = EmptyIsAbsent(MemoryStore::new());
        assert_eq!(
            SlotKey::agree(&store, [3; 16]).unwrap(),
            SlotKey::new([3; 16])
        );
        assert_eq!(
            SlotKey::agree(&store, [4; 16]).unwrap(),
            SlotKey::new([3; 16])
        );
    }

    #[test]
    fn workers_starting_together_agree() {
        for _ in 0..20 {
            let store = MemoryStore::new();
            let keys = std::sync::Mutex::new(Vec::new());
            std::thread::scope(|s| {
                for i in 0..8u8 {
                    let (store, keys) = (&store, &keys);
                    s.spawn(move || {
                        let k = SlotKey::agree(store, [i + 1; 16]).unwrap();
                        keys.lock().unwrap().push(k);
                    });
                }
            });
            let keys = keys.into_inner().unwrap();
            assert!(keys.windows(2).all(|w| w[0] == w[1]), "{keys:?}");
        }
    }

    #[test]
    fn a_malformed_stored_key_fails_closed() {
        let store = MemoryStore::new();
        store.set(SECRET_KEY, b"short", None).unwrap();
        assert!(SlotKey::agree(&store, [1; 16]).is_err());
        let unset = SlotKey::unset();
        assert!(table(&store, &unset, 8).place(&[b"u"]).is_err());
    }

    #[test]
    fn placement_depends_on_the_secret_and_the_table() {
        let store = MemoryStore::new();
        let other = SlotKey::new([8; 16]);
        let (a, b) = (table(&store, &KEY, 1 << 20), table(&store, &other, 1 << 20));
        let mut c = table(&store, &KEY, 1 << 20);
        c.name = "other-table";
        let users: Vec<String> = (0..64).map(|i| format!("u-{i}")).collect();
        let place = |t: &Table<'_>, u: &str| t.place(&[u.as_bytes()]).unwrap();
        assert!(users.iter().all(|u| place(&a, u) == place(&a, u)));
        let moved = |t: &Table<'_>| {
            users
                .iter()
                .filter(|u| place(&a, u).slot != place(t, u).slot)
                .count()
        };
        assert!(moved(&b) > 60, "another secret, other slots");
        assert!(moved(&c) > 60, "another table, other slots");
        assert!(users.iter().all(|u| place(&a, u).fingerprint != 0));
        assert_ne!(
            place(&a, "ab"),
            a.place(&[b"a", b"b"]).unwrap(),
            "parts are framed"
        );
    }

    #[test]
    fn slots_are_preallocated_and_keep_their_size() {
        let store = MemoryStore::new();
        let t = table(&store, &KEY, 16);
        t.init::<Counter>().unwrap();
        let before = store.footprint();
        assert_eq!(before.0, 16);
        for i in 0..1000u64 {
            let p = t.place(&[&i.to_be_bytes()]).unwrap();
            t.update::<Counter, _>(p.slot, |ways| {
                ways[(i % 4) as usize] = Some(Counter {
                    fp: p.fingerprint,
                    n: i,
                });
                (true, ())
            })
            .unwrap();
        }
        assert_eq!(store.footprint(), before);
    }

    #[test]
    fn an_unreadable_slot_fails_closed() {
        let store = MemoryStore::new();
        let t = table(&store, &KEY, 1);
        store.set(&t.slot_key(0), b"garbage", None).unwrap();
        let got = t.update::<Counter, _>(0, |_| (false, ()));
        assert!(matches!(got, Err(StoreError::Host(_))), "{got:?}");
    }

    #[test]
    fn updates_are_exact_across_threads() {
        let store = MemoryStore::new();
        let t = table(&store, &KEY, 1);
        t.init::<Counter>().unwrap();
        std::thread::scope(|s| {
            for _ in 0..8 {
                s.spawn(|| {
                    let t = table(&store, &KEY, 1);
                    for _ in 0..50 {
                        t.update::<Counter, _>(0, |ways| {
                            let c = ways[0].get_or_insert(Counter { fp: 1, n: 0 });
                            c.n += 1;
                            (true, ())
                        })
                        .unwrap();
                    }
                });
            }
        });
        let n = t
            .update::<Counter, _>(0, |ways| (false, ways[0].map(|c| c.n)))
            .unwrap();
        assert_eq!(n, Some(400));
    }

    #[test]
    fn nothing_is_written_when_nothing_changed() {
        let store = MemoryStore::new();
        let t = table(&store, &KEY, 1);
        t.init::<Counter>().unwrap();
        let version = store.get(&t.slot_key(0)).unwrap().unwrap().1;
        t.update::<Counter, _>(0, |_| (false, ())).unwrap();
        assert_eq!(store.get(&t.slot_key(0)).unwrap().unwrap().1, version);
    }
}
