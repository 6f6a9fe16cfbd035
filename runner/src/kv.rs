//! Spin's key-value store over SQLite, in the very file and schema `spin up` uses by default
//! (`<state-dir>/sqlite_key_value.db`, table `spin_key_value`), so data written under one host
//! is read under the other.
//!
//! One connection per process behind a mutex, like Spin's own `key-value-spin`. Plain reads
//! and writes are single statements; read-modify-write operations (`increment`, batches) run
//! in `BEGIN IMMEDIATE` transactions and compare-and-swap is a single conditional statement,
//! so they stay atomic against other connections too (another runner, or `spin up`, on the
//! same file). A busy timeout makes a second writer wait instead of failing.
//!
//! The journal mode is left as SQLite's default (rollback journal): WAL would only help
//! concurrent readers in *other* processes (this one serializes on its mutex), but it is a
//! persistent property of the database file and adds `-wal`/`-shm` side files, so a copy of
//! `sqlite_key_value.db` alone could miss recent writes. Spin reads either mode fine.

use std::path::Path;
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension, TransactionBehavior};

/// The store label that exists without runtime configuration.
pub const DEFAULT_STORE: &str = "default";
/// The database file name inside the state directory (as `spin up`).
pub const DB_FILE: &str = "sqlite_key_value.db";
/// How long a write waits for another connection's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// Spin's schema, byte for byte.
const SCHEMA: &str = "CREATE TABLE IF NOT EXISTS spin_key_value (
                           store TEXT NOT NULL,
                           key   TEXT NOT NULL,
                           value BLOB NOT NULL,

                           PRIMARY KEY (store, key)
                        )";
const GET: &str = "SELECT value FROM spin_key_value WHERE store = ?1 AND key = ?2";
const SET: &str = "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                   ON CONFLICT(store, key) DO UPDATE SET value = excluded.value";
const DELETE: &str = "DELETE FROM spin_key_value WHERE store = ?1 AND key = ?2";

/// A key-value operation that failed for a reason other than the guest's input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KvError(pub String);

impl std::fmt::Display for KvError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

impl From<rusqlite::Error> for KvError {
    fn from(e: rusqlite::Error) -> Self {
        Self(format!("sqlite: {e}"))
    }
}

/// The key-value database shared by every request of the process.
#[derive(Clone)]
pub struct SqliteKv {
    conn: Arc<Mutex<Connection>>,
}

impl SqliteKv {
    /// Opens (creating if needed) the database at `path` and Spin's table in it.
    pub fn open(path: &Path) -> Result<Self, KvError> {
        Self::init(Connection::open(path)?)
    }

    /// An in-memory database, for tests.
    pub fn open_in_memory() -> Result<Self, KvError> {
        Self::init(Connection::open_in_memory()?)
    }

    fn init(conn: Connection) -> Result<Self, KvError> {
        conn.busy_timeout(BUSY_TIMEOUT)?;
        conn.execute(SCHEMA, [])?;
        Ok(Self {
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    fn conn(&self) -> MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite half-written (statements and
        // transactions are atomic), so a poisoned lock is still safe to use.
        self.conn
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    /// The value of `key`, if any.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let conn = self.conn();
        Ok(get(&conn, store, key)?)
    }

    /// Sets `key` to `value`.
    pub fn set(&self, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
        self.conn()
            .prepare_cached(SET)?
            .execute(params![store, key, value])?;
        Ok(())
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub fn delete(&self, store: &str, key: &str) -> Result<(), KvError> {
        self.conn()
            .prepare_cached(DELETE)?
            .execute(params![store, key])?;
        Ok(())
    }

    /// Whether `key` has a value.
    pub fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?;
        Ok(stmt.exists(params![store, key])?)
    }

    /// Every key of the store, sorted (Spin returns them in no particular order).
    pub fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        let conn = self.conn();
        let mut stmt =
            conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?;
        let keys = stmt
            .query_map(params![store], |row| row.get::<_, String>(0))?
            .collect::<Result<Vec<_>, _>>()?;
        Ok(keys)
    }

    /// The values of `keys`, in the order asked, `None` for a missing key (as the
    /// `wasi:keyvalue/batch` contract says; Spin leaves missing keys out instead).
    #[allow(clippy::type_complexity)]
    pub fn get_many(
        &self,
        store: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        let conn = self.conn();
        keys.into_iter()
            .map(|key| {
                let value = get(&conn, store, &key)?;
                Ok((key, value))
            })
            .collect()
    }

    /// Sets every pair in one transaction.
    pub fn set_many(&self, store: &str, pairs: Vec<(String, Vec<u8>)>) -> Result<(), KvError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for (key, value) in pairs {
            tx.prepare_cached(SET)?
                .execute(params![store, key, value])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Deletes every key in one transaction.
    pub fn delete_many(&self, store: &str, keys: Vec<String>) -> Result<(), KvError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        for key in keys {
            tx.prepare_cached(DELETE)?.execute(params![store, key])?;
        }
        tx.commit()?;
        Ok(())
    }

    /// Atomically adds `delta` to the counter at `key` (absent counts as 0) and returns the
    /// new value. Counters are stored as 8 little-endian bytes, as Spin stores them.
    pub fn increment(&self, store: &str, key: &str, delta: i64) -> Result<i64, KvError> {
        let mut conn = self.conn();
        let tx = conn.transaction_with_behavior(TransactionBehavior::Immediate)?;
        let current = match get(&tx, store, key)? {
            None => 0,
            Some(bytes) => {
                let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                    KvError(format!(
                        "the value of {key:?} is not a counter (8 little-endian bytes)"
                    ))
                })?;
                i64::from_le_bytes(bytes)
            }
        };
        let next = current
            .checked_add(delta)
            .ok_or_else(|| KvError(format!("incrementing {key:?} by {delta} overflows")))?;
        tx.prepare_cached(SET)?
            .execute(params![store, key, next.to_le_bytes()])?;
        tx.commit()?;
        Ok(next)
    }

    /// Sets `key` to `new` only if its value is still `expected` (`None`: only if it is still
    /// absent). Returns whether the swap happened. One conditional statement, so it is atomic.
    pub fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<&[u8]>,
        new: &[u8],
    ) -> Result<bool, KvError> {
        let conn = self.conn();
        let changed = match expected {
            Some(old) => conn
                .prepare_cached(
                    "UPDATE spin_key_value SET value = ?4 WHERE store = ?1 AND key = ?2 AND value = ?3",
                )?
                .execute(params![store, key, old, new])?,
            // Spin upserts here, which lets a concurrent first writer be overwritten; inserting
            // only when still absent is what compare-and-swap promises.
            None => conn
                .prepare_cached(
                    "INSERT INTO spin_key_value (store, key, value) VALUES (?1, ?2, ?3)
                     ON CONFLICT(store, key) DO NOTHING",
                )?
                .execute(params![store, key, new])?,
        };
        Ok(changed == 1)
    }
}

fn get(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(GET)?
        .query_row(params![store, key], |row| row.get(0))
        .optional()
}

#[cfg(test)]
mod tests {
    use std::thread;

    use super::*;

    const S: &str = DEFAULT_STORE;

    #[test]
    fn get_set_delete_exists_keys() {
        let kv = SqliteKv::open_in_memory().unwrap();
        assert_eq!(kv.get(S, "a").unwrap(), None);
        assert!(!kv.exists(S, "a").unwrap());
        kv.set(S, "b", b"2").unwrap();
        kv.set(S, "a", b"1").unwrap();
        kv.set(S, "a", b"one").unwrap();
        assert_eq!(kv.get(S, "a").unwrap().as_deref(), Some(&b"one"[..]));
        assert!(kv.exists(S, "a").unwrap());
        assert_eq!(kv.keys(S).unwrap(), vec!["a", "b"]);
        kv.delete(S, "a").unwrap();
        kv.delete(S, "never-there").unwrap();
        assert_eq!(kv.keys(S).unwrap(), vec!["b"]);
        assert_eq!(kv.get(S, "a").unwrap(), None);
    }

    #[test]
    fn stores_are_separate_namespaces() {
        let kv = SqliteKv::open_in_memory().unwrap();
        kv.set("one", "k", b"1").unwrap();
        kv.set("two", "k", b"2").unwrap();
        assert_eq!(kv.get("one", "k").unwrap().as_deref(), Some(&b"1"[..]));
        assert_eq!(kv.keys("two").unwrap(), vec!["k"]);
        assert!(kv.keys("three").unwrap().is_empty());
    }

    #[test]
    fn empty_values_are_values() {
        let kv = SqliteKv::open_in_memory().unwrap();
        kv.set(S, "empty", b"").unwrap();
        assert_eq!(kv.get(S, "empty").unwrap(), Some(vec![]));
        assert!(kv.exists(S, "empty").unwrap());
    }

    #[test]
    fn batches() {
        let kv = SqliteKv::open_in_memory().unwrap();
        kv.set_many(
            S,
            vec![("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())],
        )
        .unwrap();
        let got = kv
            .get_many(S, vec!["y".into(), "missing".into(), "x".into()])
            .unwrap();
        assert_eq!(
            got,
            vec![
                ("y".to_string(), Some(b"2".to_vec())),
                ("missing".to_string(), None),
                ("x".to_string(), Some(b"1".to_vec())),
            ]
        );
        kv.delete_many(S, vec!["x".into(), "missing".into()])
            .unwrap();
        assert_eq!(kv.keys(S).unwrap(), vec!["y"]);
    }

    #[test]
    fn increment_uses_spins_counter_encoding() {
        let kv = SqliteKv::open_in_memory().unwrap();
        assert_eq!(kv.increment(S, "c", 1).unwrap(), 1);
        assert_eq!(kv.increment(S, "c", 2).unwrap(), 3);
        assert_eq!(kv.increment(S, "c", -10).unwrap(), -7);
        assert_eq!(
            kv.get(S, "c").unwrap(),
            Some((-7i64).to_le_bytes().to_vec())
        );
        kv.set(S, "text", b"not a counter").unwrap();
        assert!(kv.increment(S, "text", 1).is_err());
        kv.set(S, "max", &i64::MAX.to_le_bytes()).unwrap();
        assert!(kv.increment(S, "max", 1).is_err());
        assert_eq!(
            kv.get(S, "max").unwrap(),
            Some(i64::MAX.to_le_bytes().to_vec())
        );
    }

    #[test]
    fn compare_and_swap_detects_changes() {
        let kv = SqliteKv::open_in_memory().unwrap();
        // Absent → only succeeds while still absent.
        assert!(kv.compare_and_swap(S, "k", None, b"first").unwrap());
        assert!(!kv.compare_and_swap(S, "k", None, b"second").unwrap());
        assert_eq!(kv.get(S, "k").unwrap().as_deref(), Some(&b"first"[..]));
        // Present → only succeeds while the value is unchanged.
        assert!(!kv.compare_and_swap(S, "k", Some(b"stale"), b"x").unwrap());
        assert!(kv
            .compare_and_swap(S, "k", Some(b"first"), b"third")
            .unwrap());
        assert_eq!(kv.get(S, "k").unwrap().as_deref(), Some(&b"third"[..]));
        // Deleted in between → a swap expecting the old value fails.
        kv.delete(S, "k").unwrap();
        assert!(!kv.compare_and_swap(S, "k", Some(b"third"), b"y").unwrap());
        assert_eq!(kv.get(S, "k").unwrap(), None);
    }

    fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(DB_FILE);
        (dir, path)
    }

    /// Threads with their own connection each (as separate processes would have), plus
    /// threads sharing one: no increment may be lost.
    #[test]
    fn concurrent_increments_are_never_lost() {
        let (_dir, path) = temp_db();
        let shared = SqliteKv::open(&path).unwrap();
        let threads = 8;
        let per_thread = 50;
        let handles: Vec<_> = (0..threads)
            .map(|i| {
                let kv = if i % 2 == 0 {
                    SqliteKv::open(&path).unwrap()
                } else {
                    shared.clone()
                };
                thread::spawn(move || {
                    for _ in 0..per_thread {
                        kv.increment(S, "hits", 1).unwrap();
                    }
                })
            })
            .collect();
        for h in handles {
            h.join().unwrap();
        }
        let total = shared.get(S, "hits").unwrap().unwrap();
        assert_eq!(
            i64::from_le_bytes(total.try_into().unwrap()),
            threads * per_thread
        );
    }

    /// Many threads run read–compute–swap loops on one key: every loop eventually wins exactly
    /// once, conflicts are reported (not silently overwritten), and the final value counts
    /// every win.
    #[test]
    fn concurrent_compare_and_swap_conflicts_are_detected() {
        let (_dir, path) = temp_db();
        let threads = 8;
        let per_thread = 25;
        let handles: Vec<_> = (0..threads)
            .map(|_| {
                let kv = SqliteKv::open(&path).unwrap();
                thread::spawn(move || {
                    let mut conflicts = 0u32;
                    for _ in 0..per_thread {
                        loop {
                            let current = kv.get(S, "n").unwrap();
                            let n: u64 = current
                                .as_deref()
                                .map(|b| std::str::from_utf8(b).unwrap().parse().unwrap())
                                .unwrap_or(0);
                            let next = (n + 1).to_string();
                            thread::yield_now();
                            if kv
                                .compare_and_swap(S, "n", current.as_deref(), next.as_bytes())
                                .unwrap()
                            {
                                break;
                            }
                            conflicts += 1;
                        }
                    }
                    conflicts
                })
            })
            .collect();
        let conflicts: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
        let kv = SqliteKv::open(&path).unwrap();
        let total = kv.get(S, "n").unwrap().unwrap();
        assert_eq!(
            std::str::from_utf8(&total).unwrap(),
            (threads * per_thread).to_string()
        );
        // With 8 writers racing, some swaps must have lost; if none did the test proved nothing.
        assert!(conflicts > 0, "no CAS conflict observed");
    }

    #[test]
    fn the_file_uses_spins_schema() {
        let (_dir, path) = temp_db();
        let kv = SqliteKv::open(&path).unwrap();
        kv.set(S, "k", b"v").unwrap();
        drop(kv);
        let conn = Connection::open(&path).unwrap();
        let value: Vec<u8> = conn
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'k'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(value, b"v");
        let pk: Vec<(String, i64)> = conn
            .prepare("SELECT name, pk FROM pragma_table_info('spin_key_value') ORDER BY cid")
            .unwrap()
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        assert_eq!(
            pk,
            vec![("store".into(), 1), ("key".into(), 2), ("value".into(), 0)]
        );
    }
}
