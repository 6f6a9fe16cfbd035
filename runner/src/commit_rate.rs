//! `spin-runner commit-rate`: how many SQLite commits per second the disk under a folder
//! takes, one row written per commit, in the journal modes that matter here. The physical
//! limit the key-value store works against: with `power` durability every group commit costs
//! one sync of the log (`wal_full`); with `process` durability none (`wal_normal`); SQLite's
//! defaults (`rollback_full`) cost several syncs per commit.

use std::path::Path;
use std::time::{Duration, Instant};

use rusqlite::{params, Connection};

use crate::kv::KvError;

/// Commits per second in each mode.
#[derive(Debug, Clone, Copy)]
pub struct CommitRates {
    /// SQLite's defaults: rollback journal, `synchronous = FULL`.
    pub rollback_full: f64,
    /// WAL, `synchronous = FULL`: one sync of the log per commit (`--durability power`).
    pub wal_full: f64,
    /// WAL, `synchronous = NORMAL`: no sync at commit (`--durability process`).
    pub wal_normal: f64,
}

impl CommitRates {
    /// One line of JSON, what `spin-runner commit-rate` prints.
    pub fn to_json(&self) -> String {
        format!(
            r#"{{"rollback_full":{:.1},"wal_full":{:.1},"wal_normal":{:.1}}}"#,
            self.rollback_full, self.wal_full, self.wal_normal
        )
    }
}

/// Measures each mode for `each` in a scratch database under `dir`, removed afterwards.
pub fn measure(dir: &Path, each: Duration) -> Result<CommitRates, KvError> {
    let scratch = tempfile_in(dir)?;
    let rate = |journal: &str, synchronous: &str| -> Result<f64, KvError> {
        let path = scratch.join(format!("commit-rate-{journal}-{synchronous}.db"));
        let result = commits_per_second(&path, journal, synchronous, each);
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = path.clone().into_os_string();
            file.push(suffix);
            let _ = std::fs::remove_file(file);
        }
        result
    };
    let rates = CommitRates {
        rollback_full: rate("DELETE", "FULL")?,
        wal_full: rate("WAL", "FULL")?,
        wal_normal: rate("WAL", "NORMAL")?,
    };
    let _ = std::fs::remove_dir(&scratch);
    Ok(rates)
}

fn commits_per_second(
    path: &Path,
    journal: &str,
    synchronous: &str,
    each: Duration,
) -> Result<f64, KvError> {
    let conn = Connection::open(path)?;
    let _: String = conn.pragma_update_and_check(None, "journal_mode", journal, |r| r.get(0))?;
    conn.pragma_update(None, "synchronous", synchronous)?;
    conn.execute(
        "CREATE TABLE t (k INTEGER PRIMARY KEY, v BLOB NOT NULL)",
        [],
    )?;
    // A workspace record's size.
    let value = vec![b'x'; 1024];
    let started = Instant::now();
    let mut commits = 0i64;
    while started.elapsed() < each {
        conn.execute(
            "INSERT INTO t (k, v) VALUES (?1, ?2) ON CONFLICT(k) DO UPDATE SET v = excluded.v",
            params![commits % 1000, value],
        )?;
        commits += 1;
    }
    Ok(commits as f64 / started.elapsed().as_secs_f64())
}

/// A fresh folder under `dir` (created if missing).
fn tempfile_in(dir: &Path) -> Result<std::path::PathBuf, KvError> {
    let scratch = dir.join(format!("spin-runner-commit-rate-{}", std::process::id()));
    std::fs::create_dir_all(&scratch)
        .map_err(|e| KvError(format!("cannot create {}: {e}", scratch.display())))?;
    Ok(scratch)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_mode_commits_and_leaves_nothing_behind() {
        let dir = tempfile::tempdir().unwrap();
        let rates = measure(dir.path(), Duration::from_millis(50)).unwrap();
        assert!(rates.rollback_full > 0.0 && rates.wal_full > 0.0 && rates.wal_normal > 0.0);
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
    }
}
