//! The one writer of the process, and group commit.
//!
//! Writes are queued to a thread that owns the write connection. It takes every write
//! waiting in the queue (at most [`MAX_GROUP`]), applies them in arrival order inside one
//! `BEGIN IMMEDIATE` transaction, commits once, and only then answers each of them: requests
//! that write at the same time share one commit (and, with `power` durability, one sync),
//! while a lone write is committed at once, without waiting for company. Each write still
//! sees the effects of the writes before it in the group, exactly as if they had been
//! committed one by one.
//!
//! A write that fails (a value that is not a counter, an overflow, a constraint) is undone
//! alone and answered with its error; the rest of the group commits. When the transaction
//! itself fails (the lock is not obtained within the busy timeout, the disk is full, the
//! commit fails), every write of the group is answered with the error and none is applied.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{mpsc, Arc};
use std::thread;

use rusqlite::{params, Connection, TransactionBehavior};
use tokio::sync::oneshot;

use super::{decode_counter, get, KvError, DELETE, SET};

/// The most writes committed together: bounds the latency one commit adds to the first.
const MAX_GROUP: usize = 256;

/// One write, as the writer applies it.
#[derive(Debug)]
pub(super) enum Write {
    Set {
        store: String,
        key: String,
        value: Vec<u8>,
    },
    Delete {
        store: String,
        key: String,
    },
    SetMany {
        store: String,
        pairs: Vec<(String, Vec<u8>)>,
    },
    DeleteMany {
        store: String,
        keys: Vec<String>,
    },
    Increment {
        store: String,
        key: String,
        delta: i64,
    },
    Swap {
        store: String,
        key: String,
        expected: Option<Vec<u8>>,
        new: Vec<u8>,
    },
}

/// The result of a compare-and-swap.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Swap {
    /// The new value is stored.
    Swapped,
    /// The stored value was not the expected one; this is what it is now.
    Conflict {
        /// The value at the time of the attempt (`None`: absent).
        current: Option<Vec<u8>>,
    },
}

/// The result of a committed write.
#[derive(Debug)]
pub(super) enum Done {
    Unit,
    Counter(i64),
    Swap(Swap),
}

/// A write and where its result goes once its group is committed.
pub(super) struct Job {
    pub(super) write: Write,
    pub(super) reply: oneshot::Sender<Result<Done, KvError>>,
}

/// Why a write did not happen: on its own, or because the whole transaction is lost.
enum Failed {
    /// This write is undone; the others of the group are unaffected.
    Write(KvError),
    /// The transaction cannot go on (SQLite rolled it back, or undoing a write failed).
    Group(KvError),
}

/// The error every write gets once the writer thread is gone.
pub(super) fn stopped() -> KvError {
    KvError("the key-value store's writer has stopped".into())
}

/// What the writer and the checkpointer share.
#[derive(Default)]
pub(super) struct Progress {
    /// Groups committed so far.
    pub(super) commits: AtomicU64,
    /// Set by the checkpointer when the log has grown past its bound.
    pub(super) restart_log: AtomicBool,
}

/// Starts the writer thread on `conn`; it ends when every sender is dropped.
pub(super) fn start(
    conn: Connection,
    progress: Arc<Progress>,
) -> Result<mpsc::Sender<Job>, KvError> {
    let (jobs, queue) = mpsc::channel::<Job>();
    thread::Builder::new()
        .name("spin-runner-kv-writer".into())
        .spawn(move || run(conn, &queue, &progress))
        .map_err(|e| KvError(format!("cannot start the key-value writer: {e}")))?;
    Ok(jobs)
}

fn run(mut conn: Connection, queue: &mpsc::Receiver<Job>, progress: &Progress) {
    while let Ok(first) = queue.recv() {
        let mut group = vec![first];
        while group.len() < MAX_GROUP {
            match queue.try_recv() {
                Ok(job) => group.push(job),
                Err(_) => break,
            }
        }
        commit_group(&mut conn, group, &progress.commits);
        if progress.restart_log.swap(false, Ordering::Relaxed) {
            super::checkpoint::restart_log(&conn);
        }
    }
}

/// Applies and commits `group`, then answers each write.
fn commit_group(conn: &mut Connection, group: Vec<Job>, commits: &AtomicU64) {
    let tx = match conn.transaction_with_behavior(TransactionBehavior::Immediate) {
        Ok(tx) => tx,
        Err(e) => return fail_all(group, &KvError::from(e)),
    };
    let mut results = Vec::with_capacity(group.len());
    for job in &group {
        match apply(&tx, &job.write) {
            Ok(done) => results.push(Ok(done)),
            Err(Failed::Write(e)) => results.push(Err(e)),
            // Dropping `tx` rolls back whatever is left of the transaction.
            Err(Failed::Group(e)) => return fail_all(group, &e),
        }
    }
    if let Err(e) = tx.commit() {
        return fail_all(group, &KvError::from(e));
    }
    commits.fetch_add(1, Ordering::Relaxed);
    for (job, result) in group.into_iter().zip(results) {
        // A request that went away no longer waits for its answer; nothing to do.
        let _ = job.reply.send(result);
    }
}

fn fail_all(group: Vec<Job>, error: &KvError) {
    for job in group {
        let _ = job.reply.send(Err(error.clone()));
    }
}

/// Applies one write inside the group's transaction, leaving no trace of it if it fails.
fn apply(conn: &Connection, write: &Write) -> Result<Done, Failed> {
    let result = match write {
        Write::Set { store, key, value } => set(conn, store, key, value).map(|()| Done::Unit),
        Write::Delete { store, key } => delete(conn, store, key).map(|()| Done::Unit),
        // Several statements: a savepoint makes them all or none.
        Write::SetMany { store, pairs } => {
            return in_savepoint(conn, |conn| {
                pairs
                    .iter()
                    .try_for_each(|(key, value)| set(conn, store, key, value))
            })
        }
        Write::DeleteMany { store, keys } => {
            return in_savepoint(conn, |conn| {
                keys.iter().try_for_each(|key| delete(conn, store, key))
            })
        }
        Write::Increment { store, key, delta } => increment(conn, store, key, *delta),
        Write::Swap {
            store,
            key,
            expected,
            new,
        } => swap(conn, store, key, expected.as_deref(), new),
    };
    // A single statement that fails is undone by SQLite itself, but some errors (I/O, full
    // disk, out of memory) roll back the whole transaction: then nothing of the group stands.
    result.map_err(|e| lost_or_undone(conn, e))
}

fn lost_or_undone(conn: &Connection, error: KvError) -> Failed {
    if conn.is_autocommit() {
        Failed::Group(error)
    } else {
        Failed::Write(error)
    }
}

fn in_savepoint(
    conn: &Connection,
    f: impl FnOnce(&Connection) -> Result<(), KvError>,
) -> Result<Done, Failed> {
    conn.execute_batch("SAVEPOINT batch")
        .map_err(|e| lost_or_undone(conn, e.into()))?;
    match f(conn) {
        Ok(()) => {
            conn.execute_batch("RELEASE batch")
                .map_err(|e| Failed::Group(e.into()))?;
            Ok(Done::Unit)
        }
        Err(e) => {
            if conn.is_autocommit() {
                return Err(Failed::Group(e));
            }
            conn.execute_batch("ROLLBACK TO batch; RELEASE batch")
                .map_err(|undo| Failed::Group(undo.into()))?;
            Err(Failed::Write(e))
        }
    }
}

fn set(conn: &Connection, store: &str, key: &str, value: &[u8]) -> Result<(), KvError> {
    conn.prepare_cached(SET)?
        .execute(params![store, key, value])?;
    Ok(())
}

fn delete(conn: &Connection, store: &str, key: &str) -> Result<(), KvError> {
    conn.prepare_cached(DELETE)?.execute(params![store, key])?;
    Ok(())
}

fn increment(conn: &Connection, store: &str, key: &str, delta: i64) -> Result<Done, KvError> {
    let current = decode_counter(key, get(conn, store, key)?)?;
    let next = current
        .checked_add(delta)
        .ok_or_else(|| KvError(format!("incrementing {key:?} by {delta} overflows")))?;
    set(conn, store, key, &next.to_le_bytes())?;
    Ok(Done::Counter(next))
}

fn swap(
    conn: &Connection,
    store: &str,
    key: &str,
    expected: Option<&[u8]>,
    new: &[u8],
) -> Result<Done, KvError> {
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
    Ok(Done::Swap(if changed == 1 {
        Swap::Swapped
    } else {
        Swap::Conflict {
            current: get(conn, store, key)?,
        }
    }))
}
