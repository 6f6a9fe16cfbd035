//! Keeping the write-ahead log short.
//!
//! A checkpoint copies the log's pages into the database file; the log starts over from its
//! beginning only once a checkpoint has copied everything and no reader still reads from it.
//! Under a steady load neither happens on its own: there is always a newer commit and a
//! reader somewhere in the log, so the log would grow without end (hundreds of MB a minute),
//! and appending past its end makes the kernel zero every new block.
//!
//! So: a background thread runs a passive checkpoint every [`EVERY`], which copies what it can
//! and makes the syncs a checkpoint needs, without blocking the writer or any reader. When the
//! log has grown past [`RESTART_FRAMES`], it asks the writer to restart it: between two
//! groups, the writer runs a `RESTART` checkpoint, which copies the few pages committed since
//! the last passive one and waits for the readers still in the log (point reads, done in
//! microseconds). The next commit then writes from the start of the log again, over blocks
//! the file already has.

use std::path::Path;
use std::sync::atomic::Ordering;
use std::sync::{mpsc, Arc};
use std::thread;
use std::time::Duration;

use rusqlite::Connection;

use super::writer::Progress;
use super::{Durability, KvError, BUSY_TIMEOUT};

/// How often the passive checkpoint runs.
#[cfg(not(test))]
const EVERY: Duration = Duration::from_millis(250);
/// The log's length, in pages, past which the writer restarts it (16 MiB of 4 KiB pages).
#[cfg(not(test))]
const RESTART_FRAMES: i64 = 4096;
// Smaller in unit tests, so a short load shows the log being restarted.
#[cfg(test)]
const EVERY: Duration = Duration::from_millis(20);
#[cfg(test)]
const RESTART_FRAMES: i64 = 256;

/// Starts the checkpointer; it ends when the returned sender is dropped.
pub(super) fn start(
    path: &Path,
    durability: Durability,
    progress: Arc<Progress>,
) -> Result<mpsc::Sender<()>, KvError> {
    let conn = Connection::open(path)?;
    conn.busy_timeout(BUSY_TIMEOUT)?;
    // The checkpoint's own syncs (log before copying, database after) follow the durability.
    conn.pragma_update(None, "synchronous", durability.synchronous())?;
    let (stop, stopped) = mpsc::channel::<()>();
    thread::Builder::new()
        .name("spin-runner-kv-checkpoint".into())
        .spawn(move || {
            while let Err(mpsc::RecvTimeoutError::Timeout) = stopped.recv_timeout(EVERY) {
                // A checkpoint that cannot run now (another process holds a lock) runs later.
                if let Ok(frames) = checkpoint(&conn, "PASSIVE") {
                    if frames > RESTART_FRAMES {
                        progress.restart_log.store(true, Ordering::Relaxed);
                    }
                }
            }
        })
        .map_err(|e| KvError(format!("cannot start the key-value checkpointer: {e}")))?;
    Ok(stop)
}

/// Run by the writer between two groups: checkpoints everything and waits for the readers to
/// leave the log, so the next commit restarts it. A failure (a reader held on past the busy
/// timeout, another process's lock) leaves the log as it is, to be restarted later.
pub(super) fn restart_log(conn: &Connection) {
    let _ = checkpoint(conn, "RESTART");
}

/// Runs a checkpoint in `mode`; returns the log's length in pages.
fn checkpoint(conn: &Connection, mode: &str) -> rusqlite::Result<i64> {
    conn.query_row(&format!("PRAGMA wal_checkpoint({mode})"), [], |row| {
        row.get(1)
    })
}
