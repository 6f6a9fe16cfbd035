use std::thread;
use std::time::Duration;

use super::*;

const S: &str = DEFAULT_STORE;

fn temp_db() -> (tempfile::TempDir, std::path::PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(DB_FILE);
    (dir, path)
}

fn open() -> (tempfile::TempDir, SqliteKv) {
    let (dir, path) = temp_db();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    (dir, kv)
}

fn counter(n: i64) -> Option<Vec<u8>> {
    Some(n.to_le_bytes().to_vec())
}

#[test]
fn get_set_delete_exists_keys() {
    let (_dir, kv) = open();
    assert_eq!(kv.get(S, "a").unwrap(), None);
    assert!(!kv.exists(S, "a").unwrap());
    kv.set(S, "b", b"2".to_vec()).wait().unwrap();
    kv.set(S, "a", b"1".to_vec()).wait().unwrap();
    kv.set(S, "a", b"one".to_vec()).wait().unwrap();
    assert_eq!(kv.get(S, "a").unwrap().as_deref(), Some(&b"one"[..]));
    assert!(kv.exists(S, "a").unwrap());
    assert_eq!(kv.keys(S).unwrap(), vec!["a", "b"]);
    kv.delete(S, "a").wait().unwrap();
    kv.delete(S, "never-there").wait().unwrap();
    assert_eq!(kv.keys(S).unwrap(), vec!["b"]);
    assert_eq!(kv.get(S, "a").unwrap(), None);
}

#[test]
fn stores_are_separate_namespaces() {
    let (_dir, kv) = open();
    kv.set("one", "k", b"1".to_vec()).wait().unwrap();
    kv.set("two", "k", b"2".to_vec()).wait().unwrap();
    assert_eq!(kv.get("one", "k").unwrap().as_deref(), Some(&b"1"[..]));
    assert_eq!(kv.keys("two").unwrap(), vec!["k"]);
    assert!(kv.keys("three").unwrap().is_empty());
}

#[test]
fn empty_values_are_values() {
    let (_dir, kv) = open();
    kv.set(S, "empty", Vec::new()).wait().unwrap();
    assert_eq!(kv.get(S, "empty").unwrap(), Some(vec![]));
    assert!(kv.exists(S, "empty").unwrap());
}

#[test]
fn batches() {
    let (_dir, kv) = open();
    kv.set_many(
        S,
        vec![("x".into(), b"1".to_vec()), ("y".into(), b"2".to_vec())],
    )
    .wait()
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
        .wait()
        .unwrap();
    assert_eq!(kv.keys(S).unwrap(), vec!["y"]);
}

#[test]
fn increment_uses_spins_counter_encoding() {
    let (_dir, kv) = open();
    assert_eq!(kv.increment(S, "c", 1).wait().unwrap(), 1);
    assert_eq!(kv.increment(S, "c", 2).wait().unwrap(), 3);
    assert_eq!(kv.increment(S, "c", -10).wait().unwrap(), -7);
    assert_eq!(kv.get(S, "c").unwrap(), counter(-7));
    kv.set(S, "text", b"not a counter".to_vec()).wait().unwrap();
    assert!(kv.increment(S, "text", 1).wait().is_err());
    kv.set(S, "max", i64::MAX.to_le_bytes().to_vec())
        .wait()
        .unwrap();
    assert!(kv.increment(S, "max", 1).wait().is_err());
    assert_eq!(kv.get(S, "max").unwrap(), counter(i64::MAX));
}

#[test]
fn increment_by_zero_is_a_read() {
    let (_dir, kv) = open();
    let before = kv.commits();
    assert_eq!(kv.increment(S, "absent", 0).wait().unwrap(), 0);
    // Read, not written back: the counter stays absent (Spin would store a 0).
    assert_eq!(kv.get(S, "absent").unwrap(), None);
    kv.increment(S, "c", 5).wait().unwrap();
    assert_eq!(kv.increment(S, "c", 0).wait().unwrap(), 5);
    kv.set(S, "text", b"abc".to_vec()).wait().unwrap();
    assert!(kv.increment(S, "text", 0).wait().is_err());
    assert_eq!(kv.commits() - before, 2, "only the two writes committed");
}

#[test]
fn compare_and_swap_detects_changes() {
    let (_dir, kv) = open();
    let cas = |expected: Option<&[u8]>, new: &[u8]| {
        kv.compare_and_swap(S, "k", expected.map(<[u8]>::to_vec), new.to_vec())
            .wait()
            .unwrap()
    };
    // Absent → only succeeds while still absent, and a conflict tells what is there now.
    assert_eq!(cas(None, b"first"), Swap::Swapped);
    assert_eq!(
        cas(None, b"second"),
        Swap::Conflict {
            current: Some(b"first".to_vec())
        }
    );
    assert_eq!(kv.get(S, "k").unwrap().as_deref(), Some(&b"first"[..]));
    // Present → only succeeds while the value is unchanged.
    assert!(matches!(cas(Some(b"stale"), b"x"), Swap::Conflict { .. }));
    assert_eq!(cas(Some(b"first"), b"third"), Swap::Swapped);
    assert_eq!(kv.get(S, "k").unwrap().as_deref(), Some(&b"third"[..]));
    // Deleted in between → a swap expecting the old value fails, and sees the key absent.
    kv.delete(S, "k").wait().unwrap();
    assert_eq!(cas(Some(b"third"), b"y"), Swap::Conflict { current: None });
    assert_eq!(kv.get(S, "k").unwrap(), None);
}

/// Holds SQLite's write lock from another connection (as another process would), so the
/// writer stops at `BEGIN IMMEDIATE` and the writes submitted meanwhile queue up; they form
/// one group when the lock is released.
struct WriteLock(rusqlite::Connection);

impl WriteLock {
    fn take(path: &Path) -> Self {
        let conn = rusqlite::Connection::open(path).unwrap();
        conn.execute_batch("BEGIN IMMEDIATE").unwrap();
        Self(conn)
    }

    fn release(self) {
        self.0.execute_batch("COMMIT").unwrap();
    }
}

/// Submits a write and gives the writer time to take it alone and stop at the lock, so
/// every later write goes into the next group.
fn block_writer(kv: &SqliteKv) -> Pending<()> {
    let first = kv.set(S, "first", b"1".to_vec());
    thread::sleep(Duration::from_millis(200));
    first
}

#[test]
fn writes_that_arrive_together_share_one_commit() {
    let (_dir, path) = temp_db();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    let before = kv.commits();
    let lock = WriteLock::take(&path);
    let first = block_writer(&kv);
    let pending: Vec<_> = (0..100)
        .map(|i| kv.set(S, &format!("k{i:03}"), vec![1]))
        .collect();
    lock.release();
    first.wait().unwrap();
    for p in pending {
        p.wait().unwrap();
    }
    assert_eq!(kv.keys(S).unwrap().len(), 101);
    assert_eq!(
        kv.commits() - before,
        2,
        "the 100 queued writes share one commit"
    );
}

#[test]
fn inside_a_group_each_write_sees_the_ones_before_and_fails_alone() {
    let (_dir, path) = temp_db();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    kv.set(S, "text", b"abc".to_vec()).wait().unwrap();
    let before = kv.commits();
    let lock = WriteLock::take(&path);
    let first = block_writer(&kv);
    let increments: Vec<_> = (0..10).map(|_| kv.increment(S, "n", 1)).collect();
    let not_a_counter = kv.increment(S, "text", 1);
    let claim = kv.compare_and_swap(S, "claim", None, b"a".to_vec());
    let lost_claim = kv.compare_and_swap(S, "claim", None, b"b".to_vec());
    let update = kv.compare_and_swap(S, "claim", Some(b"a".to_vec()), b"c".to_vec());
    let overflow_set = kv.set(S, "max", i64::MAX.to_le_bytes().to_vec());
    let overflow = kv.increment(S, "max", 1);
    let after_failures = kv.set(S, "after", b"ok".to_vec());
    lock.release();
    first.wait().unwrap();
    let counts: Vec<i64> = increments.into_iter().map(|p| p.wait().unwrap()).collect();
    assert_eq!(counts, (1..=10).collect::<Vec<_>>());
    assert!(not_a_counter.wait().is_err());
    assert_eq!(claim.wait().unwrap(), Swap::Swapped);
    assert_eq!(
        lost_claim.wait().unwrap(),
        Swap::Conflict {
            current: Some(b"a".to_vec())
        }
    );
    assert_eq!(update.wait().unwrap(), Swap::Swapped);
    overflow_set.wait().unwrap();
    assert!(overflow.wait().is_err());
    after_failures.wait().unwrap();
    assert_eq!(
        kv.commits() - before,
        2,
        "one group besides the first write"
    );
    assert_eq!(kv.get(S, "n").unwrap(), counter(10));
    assert_eq!(kv.get(S, "text").unwrap().as_deref(), Some(&b"abc"[..]));
    assert_eq!(kv.get(S, "claim").unwrap().as_deref(), Some(&b"c"[..]));
    assert_eq!(kv.get(S, "max").unwrap(), counter(i64::MAX));
    assert_eq!(kv.get(S, "after").unwrap().as_deref(), Some(&b"ok"[..]));
}

#[test]
fn a_failing_batch_leaves_nothing_and_the_group_commits() {
    let (_dir, path) = temp_db();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    // A trigger makes one key unwritable, so a batch can fail half-way through.
    let setup = rusqlite::Connection::open(&path).unwrap();
    setup
        .execute_batch(
            "CREATE TRIGGER refuse BEFORE INSERT ON spin_key_value WHEN NEW.key = 'refused'
             BEGIN SELECT RAISE(ABORT, 'refused'); END",
        )
        .unwrap();
    drop(setup);
    let lock = WriteLock::take(&path);
    let first = block_writer(&kv);
    let before = kv.set(S, "before", b"1".to_vec());
    let batch = kv.set_many(
        S,
        vec![
            ("a".into(), b"1".to_vec()),
            ("refused".into(), b"2".to_vec()),
            ("b".into(), b"3".to_vec()),
        ],
    );
    let after = kv.set(S, "after", b"1".to_vec());
    lock.release();
    first.wait().unwrap();
    before.wait().unwrap();
    assert!(batch.wait().is_err());
    after.wait().unwrap();
    assert_eq!(kv.keys(S).unwrap(), vec!["after", "before", "first"]);
}

/// Threads with their own store each (as separate processes would have), plus threads
/// sharing one: no increment may be lost.
#[test]
fn concurrent_increments_are_never_lost() {
    let (_dir, path) = temp_db();
    let shared = SqliteKv::open(&path, Durability::Process).unwrap();
    let threads = 8;
    let per_thread = 50;
    let handles: Vec<_> = (0..threads)
        .map(|i| {
            let kv = if i % 2 == 0 {
                SqliteKv::open(&path, Durability::Process).unwrap()
            } else {
                shared.clone()
            };
            thread::spawn(move || {
                for _ in 0..per_thread {
                    kv.increment(S, "hits", 1).wait().unwrap();
                }
            })
        })
        .collect();
    for h in handles {
        h.join().unwrap();
    }
    assert_eq!(
        shared.get(S, "hits").unwrap(),
        counter(threads * per_thread)
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
            let kv = SqliteKv::open(&path, Durability::Process).unwrap();
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
                        match kv
                            .compare_and_swap(S, "n", current, next.into_bytes())
                            .wait()
                            .unwrap()
                        {
                            Swap::Swapped => break,
                            Swap::Conflict { .. } => conflicts += 1,
                        }
                    }
                }
                conflicts
            })
        })
        .collect();
    let conflicts: u32 = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    let total = kv.get(S, "n").unwrap().unwrap();
    assert_eq!(
        std::str::from_utf8(&total).unwrap(),
        (threads * per_thread).to_string()
    );
    // With 8 writers racing, some swaps must have lost; if none did the test proved nothing.
    assert!(conflicts > 0, "no CAS conflict observed");
}

/// An answered write is in the file: another connection (another process, or `spin up`
/// after this one died) reads it, in both durability settings.
#[test]
fn an_answered_write_is_committed_to_the_file_in_spins_schema() {
    for durability in [Durability::Process, Durability::Power] {
        let (_dir, path) = temp_db();
        let kv = SqliteKv::open(&path, durability).unwrap();
        kv.set(S, "k", b"v".to_vec()).wait().unwrap();
        let conn = rusqlite::Connection::open(&path).unwrap();
        let value: Vec<u8> = conn
            .query_row(
                "SELECT value FROM spin_key_value WHERE store = 'default' AND key = 'k'",
                [],
                |row| row.get(0),
            )
            .unwrap();
        assert_eq!(value, b"v", "{durability}");
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
        // WAL is a property of the file: whoever opens it next (spin up) uses it too.
        let mode: String = conn
            .query_row("PRAGMA journal_mode", [], |row| row.get(0))
            .unwrap();
        assert_eq!(mode, "wal");
    }
}

/// A steady load of writes with reads always in progress: checkpoints alone would never
/// let the log start over, and it would grow with every commit; the writer restarts it.
#[test]
fn the_log_stays_bounded_under_writes_and_reads() {
    let (_dir, path) = temp_db();
    let kv = SqliteKv::open(&path, Durability::Process).unwrap();
    let stop = std::sync::atomic::AtomicBool::new(false);
    let stop = &stop;
    thread::scope(|s| {
        for _ in 0..4 {
            let kv = kv.clone();
            s.spawn(move || {
                while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                    kv.get(S, "k0001").unwrap();
                }
            });
        }
        let writers: Vec<_> = (0..4)
            .map(|w| {
                let kv = kv.clone();
                s.spawn(move || {
                    for i in 0..1500 {
                        // Keys spread over the table, as workspace IDs are: many pages per commit.
                        let key = format!("k{:04}", (i * 7919 + w * 13) % 10_000);
                        kv.set(S, &key, vec![7; 1024]).wait().unwrap();
                    }
                })
            })
            .collect();
        for w in writers {
            w.join().unwrap();
        }
        stop.store(true, std::sync::atomic::Ordering::Relaxed);
    });
    let wal = std::fs::metadata(path.with_extension("db-wal"))
        .unwrap()
        .len();
    // 6000 commits of a page or more each, had the log never started over: over 24 MiB.
    assert!(wal < 6 << 20, "the log grew to {wal} bytes");
}

#[test]
fn durability_names() {
    assert_eq!("process".parse(), Ok(Durability::Process));
    assert_eq!("power".parse(), Ok(Durability::Power));
    assert!("fsync".parse::<Durability>().is_err());
    assert_eq!(Durability::default(), Durability::Process);
    assert_eq!(Durability::Power.to_string(), "power");
}
