//! Spin's key-value store over SQLite, in the very file and schema `spin up` uses by default
//! (`<state-dir>/sqlite_key_value.db`, table `spin_key_value`), so data written under one host
//! is read under the other.
//!
//! The file is in WAL mode, so readers never wait for the writer and a commit is one append
//! to the log. Every write of the process goes through one writer thread ([`writer`]), which
//! takes the writes that arrived together and commits them as one transaction: one sync per
//! group instead of one per write, and no write is answered before its group is committed.
//! Reads run on a small pool of read connections beside it and see committed data only. A
//! background thread checkpoints the log into the database file, and the writer starts the
//! log over when it has grown past a bound (`kv/checkpoint.rs`).
//!
//! Durability ([`Durability`]): by default (`process`) a commit is in the operating system's
//! hands when it is answered (WAL with `synchronous = NORMAL`), which survives the runner being
//! killed; `power` also syncs the log to the disk at every group commit (`synchronous = FULL`),
//! which survives losing power.
//!
//! Read-modify-write operations (`increment`, compare-and-swap, batches) run inside the
//! writer's transaction, which also holds SQLite's write lock (`BEGIN IMMEDIATE`), so they stay
//! atomic against other processes on the same file (another runner, or `spin up`); a busy
//! timeout makes the writer wait for such a process instead of failing.

mod checkpoint;
mod reader;
pub mod redis;
mod stores;
mod writer;

use std::fmt;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::str::FromStr;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::task::{Context, Poll};
use std::time::Duration;

use rusqlite::{params, Connection, OptionalExtension};
use tokio::sync::oneshot;

use reader::Readers;
use writer::{Done, Job, Progress, Write};

pub use stores::{Backend, Stores};
pub use writer::Swap;

/// The store label that exists without runtime configuration.
pub const DEFAULT_STORE: &str = "default";
/// The database file name inside the state directory (as `spin up`).
pub const DB_FILE: &str = "sqlite_key_value.db";
/// How long a connection waits for another process's lock before failing.
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);

/// The size the write-ahead log is truncated to after a checkpoint, bytes.
const WAL_SIZE_LIMIT: i64 = 64 << 20;

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

impl fmt::Display for KvError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for KvError {}

impl From<rusqlite::Error> for KvError {
    fn from(e: rusqlite::Error) -> Self {
        Self(format!("sqlite: {e}"))
    }
}

/// What an answered write has survived.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Durability {
    /// The runner process being killed: the commit is in the operating system's page cache
    /// (WAL, `synchronous = NORMAL`). A power loss may lose the last commits, never the
    /// database's integrity.
    #[default]
    Process,
    /// A power loss too: the log is synced to the disk at every group commit (WAL,
    /// `synchronous = FULL`).
    Power,
}

impl Durability {
    /// The `synchronous` pragma that gives this durability in WAL mode.
    fn synchronous(self) -> &'static str {
        match self {
            Self::Process => "NORMAL",
            Self::Power => "FULL",
        }
    }
}

impl fmt::Display for Durability {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Self::Process => "process",
            Self::Power => "power",
        })
    }
}

impl FromStr for Durability {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s {
            "process" => Ok(Self::Process),
            "power" => Ok(Self::Power),
            other => Err(format!(
                "unknown durability {other:?}: expected `process` or `power`"
            )),
        }
    }
}

/// The key-value database shared by every request of the process. Cloning shares it.
#[derive(Clone)]
pub struct SqliteKv {
    shared: Arc<Shared>,
}

impl fmt::Debug for SqliteKv {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SqliteKv")
            .field("path", &self.shared.path)
            .finish()
    }
}

struct Shared {
    path: PathBuf,
    jobs: mpsc::Sender<Job>,
    progress: Arc<Progress>,
    readers: Readers,
    /// Dropping it stops the checkpointer.
    _checkpointer: mpsc::Sender<()>,
}

impl SqliteKv {
    /// Opens (creating if needed) the database at `path`, switches it to WAL, creates Spin's
    /// table and starts the writer and checkpointer threads.
    pub fn open(path: &Path, durability: Durability) -> Result<Self, KvError> {
        let conn = Connection::open(path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        let mode: String =
            conn.pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))?;
        if !mode.eq_ignore_ascii_case("wal") {
            return Err(KvError(format!(
                "{} cannot use a write-ahead log (journal mode {mode:?})",
                path.display()
            )));
        }
        conn.pragma_update(None, "synchronous", durability.synchronous())?;
        // Checkpoints run on their own thread, so a commit never waits for one.
        conn.pragma_update(None, "wal_autocheckpoint", 0)?;
        // Once checkpointed, the log is cut back to this size rather than kept at its peak.
        conn.pragma_update(None, "journal_size_limit", WAL_SIZE_LIMIT)?;
        conn.execute(SCHEMA, [])?;
        let progress = Arc::new(Progress::default());
        let jobs = writer::start(conn, progress.clone())?;
        let checkpointer = checkpoint::start(path, durability, progress.clone())?;
        Ok(Self {
            shared: Arc::new(Shared {
                path: path.to_owned(),
                jobs,
                progress,
                readers: Readers::new(path),
                _checkpointer: checkpointer,
            }),
        })
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.shared.path
    }

    /// How many groups of writes the writer has committed so far.
    pub fn commits(&self) -> u64 {
        self.shared.progress.commits.load(Ordering::Relaxed)
    }

    /// The value of `key`, if any.
    pub fn get(&self, store: &str, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        self.shared.readers.with(|conn| get(conn, store, key))
    }

    /// Whether `key` has a value.
    pub fn exists(&self, store: &str, key: &str) -> Result<bool, KvError> {
        self.shared.readers.with(|conn| {
            conn.prepare_cached("SELECT 1 FROM spin_key_value WHERE store = ?1 AND key = ?2")?
                .exists(params![store, key])
        })
    }

    /// Every key of the store, sorted (Spin returns them in no particular order).
    pub fn keys(&self, store: &str) -> Result<Vec<String>, KvError> {
        self.shared.readers.with(|conn| {
            conn.prepare_cached("SELECT key FROM spin_key_value WHERE store = ?1 ORDER BY key")?
                .query_map(params![store], |row| row.get::<_, String>(0))?
                .collect()
        })
    }

    /// The values of `keys`, in the order asked, `None` for a missing key (as the
    /// `wasi:keyvalue/batch` contract says; Spin leaves missing keys out instead). One read
    /// transaction, so the values are from one moment.
    #[allow(clippy::type_complexity)]
    pub fn get_many(
        &self,
        store: &str,
        keys: Vec<String>,
    ) -> Result<Vec<(String, Option<Vec<u8>>)>, KvError> {
        self.shared.readers.with(|conn| {
            let tx = conn.unchecked_transaction()?;
            keys.into_iter()
                .map(|key| {
                    let value = get(&tx, store, &key)?;
                    Ok((key, value))
                })
                .collect()
        })
    }

    /// Sets `key` to `value`.
    pub fn set(&self, store: &str, key: &str, value: Vec<u8>) -> Pending<()> {
        self.submit(
            Write::Set {
                store: store.to_owned(),
                key: key.to_owned(),
                value,
            },
            unit,
        )
    }

    /// Deletes `key`; deleting a missing key is not an error.
    pub fn delete(&self, store: &str, key: &str) -> Pending<()> {
        self.submit(
            Write::Delete {
                store: store.to_owned(),
                key: key.to_owned(),
            },
            unit,
        )
    }

    /// Sets every pair, all or none.
    pub fn set_many(&self, store: &str, pairs: Vec<(String, Vec<u8>)>) -> Pending<()> {
        self.submit(
            Write::SetMany {
                store: store.to_owned(),
                pairs,
            },
            unit,
        )
    }

    /// Deletes every key, all or none.
    pub fn delete_many(&self, store: &str, keys: Vec<String>) -> Pending<()> {
        self.submit(
            Write::DeleteMany {
                store: store.to_owned(),
                keys,
            },
            unit,
        )
    }

    /// Atomically adds `delta` to the counter at `key` (absent counts as 0) and returns the
    /// new value. Counters are stored as 8 little-endian bytes, as Spin stores them.
    ///
    /// Adding 0 is a read: guests use it to read a counter whatever its encoding, and a
    /// single-row read is as atomic as the write would be, without waiting for a commit.
    /// (Spin writes the 0 back, creating an absent counter; here it stays absent, and still
    /// reads as 0.)
    pub fn increment(&self, store: &str, key: &str, delta: i64) -> Pending<i64> {
        if delta == 0 {
            let read = self
                .get(store, key)
                .and_then(|value| decode_counter(key, value));
            return Pending::ready(read);
        }
        self.submit(
            Write::Increment {
                store: store.to_owned(),
                key: key.to_owned(),
                delta,
            },
            |done| match done {
                Done::Counter(n) => Ok(n),
                other => Err(unexpected(&other)),
            },
        )
    }

    /// Sets `key` to `new` only if its value is still `expected` (`None`: only if it is still
    /// absent); on a conflict, returns the value stored now. One conditional statement in the
    /// writer's transaction, so it is atomic.
    pub fn compare_and_swap(
        &self,
        store: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    ) -> Pending<Swap> {
        self.submit(
            Write::Swap {
                store: store.to_owned(),
                key: key.to_owned(),
                expected,
                new,
            },
            |done| match done {
                Done::Swap(swap) => Ok(swap),
                other => Err(unexpected(&other)),
            },
        )
    }

    fn submit<T>(&self, write: Write, map: fn(Done) -> Result<T, KvError>) -> Pending<T> {
        let (reply, answer) = oneshot::channel();
        match self.shared.jobs.send(Job { write, reply }) {
            Ok(()) => Pending(State::Waiting { answer, map }),
            Err(_) => Pending::ready(Err(writer::stopped())),
        }
    }
}

fn unit(done: Done) -> Result<(), KvError> {
    match done {
        Done::Unit => Ok(()),
        other => Err(unexpected(&other)),
    }
}

fn unexpected(done: &Done) -> KvError {
    KvError(format!(
        "the store's writer answered {done:?} to another request"
    ))
}

/// A counter's value: absent is 0, anything but 8 bytes is not a counter.
fn decode_counter(key: &str, value: Option<Vec<u8>>) -> Result<i64, KvError> {
    match value {
        None => Ok(0),
        Some(bytes) => {
            let bytes: [u8; 8] = bytes.as_slice().try_into().map_err(|_| {
                KvError(format!(
                    "the value of {key:?} is not a counter (8 little-endian bytes)"
                ))
            })?;
            Ok(i64::from_le_bytes(bytes))
        }
    }
}

fn get(conn: &Connection, store: &str, key: &str) -> rusqlite::Result<Option<Vec<u8>>> {
    conn.prepare_cached(GET)?
        .query_row(params![store, key], |row| row.get(0))
        .optional()
}

/// A write on its way to being committed: `.await` it, or [`Pending::wait`] outside async
/// code. Its result is known only once its group is committed (or failed).
#[must_use = "a write is only known to be durable once its result is read"]
pub struct Pending<T>(State<T>);

enum State<T> {
    Ready(Option<Result<T, KvError>>),
    Waiting {
        answer: oneshot::Receiver<Result<Done, KvError>>,
        map: fn(Done) -> Result<T, KvError>,
    },
}

impl<T> Pending<T> {
    fn ready(result: Result<T, KvError>) -> Self {
        Self(State::Ready(Some(result)))
    }

    /// Blocks the calling thread until the write is committed. Not for async code.
    pub fn wait(self) -> Result<T, KvError> {
        match self.0 {
            State::Ready(result) => result.unwrap_or_else(|| Err(writer::stopped())),
            State::Waiting { answer, map } => match answer.blocking_recv() {
                Ok(result) => result.and_then(map),
                Err(_) => Err(writer::stopped()),
            },
        }
    }
}

impl<T: Unpin> Future for Pending<T> {
    type Output = Result<T, KvError>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        match &mut self.get_mut().0 {
            State::Ready(result) => {
                Poll::Ready(result.take().unwrap_or_else(|| Err(writer::stopped())))
            }
            State::Waiting { answer, map } => match Pin::new(answer).poll(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Ok(result)) => Poll::Ready(result.and_then(*map)),
                Poll::Ready(Err(_)) => Poll::Ready(Err(writer::stopped())),
            },
        }
    }
}

#[cfg(test)]
mod tests;
