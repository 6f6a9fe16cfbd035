//! Read connections beside the writer.
//!
//! In WAL mode a reader sees the last commit and never waits for the writer, so reads need
//! no queue: a request takes an idle read connection (or opens one), reads, and puts it
//! back. Reads are point lookups answered from SQLite's page cache in microseconds, so they
//! run on the calling thread.

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard};

use rusqlite::Connection;

use super::{KvError, BUSY_TIMEOUT};

/// Idle read connections kept open; more are opened when more requests read at once, and
/// closed afterwards.
const MAX_IDLE: usize = 16;

/// A pool of read connections to one database file.
pub(super) struct Readers {
    path: PathBuf,
    idle: Mutex<Vec<Connection>>,
}

impl Readers {
    pub(super) fn new(path: &Path) -> Self {
        Self {
            path: path.to_path_buf(),
            idle: Mutex::new(Vec::new()),
        }
    }

    /// Runs `read` on a read connection.
    pub(super) fn with<T>(
        &self,
        read: impl FnOnce(&Connection) -> rusqlite::Result<T>,
    ) -> Result<T, KvError> {
        let conn = match self.idle().pop() {
            Some(conn) => conn,
            None => self.open()?,
        };
        let result = read(&conn);
        let mut idle = self.idle();
        if idle.len() < MAX_IDLE {
            idle.push(conn);
        }
        Ok(result?)
    }

    fn idle(&self) -> MutexGuard<'_, Vec<Connection>> {
        // The list is only pushed to and popped from: a panic elsewhere cannot leave it
        // half-changed, so a poisoned lock is still safe to use.
        self.idle
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn open(&self) -> Result<Connection, KvError> {
        let conn = Connection::open(&self.path)?;
        conn.busy_timeout(BUSY_TIMEOUT)?;
        // A read connection never writes, whatever a later change asks of it.
        conn.pragma_update(None, "query_only", true)?;
        Ok(conn)
    }
}
