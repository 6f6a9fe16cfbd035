//! The runner against tiny hand-written components (`tests/fixtures/*.wat`), so these checks
//! do not depend on the backend: key-value writes land in Spin's SQLite schema, a store not in
//! `key_value_stores` is denied, a trap gives 500 without taking the runner down, and
//! requests run concurrently.

// Test helpers outside `#[test]` functions may unwrap and panic too: this whole crate is a test.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use support::{fixture, send, sqlite_rows, InProcess};

fn manifest(dir: &std::path::Path) -> std::path::PathBuf {
    let text = format!(
        r#"
spin_manifest_version = 2
[application]
name = "wat-fixtures"
[[trigger.http]]
route = "/kv"
component = "kv"
[[trigger.http]]
route = "/sleep/..."
component = "sleep"
[[trigger.http]]
route = "/forever"
component = "forever"
[component.forever]
source = "{forever}"
[component.kv]
source = "{kv}"
key_value_stores = ["default"]
[component.sleep]
source = "{sleep}"
"#,
        kv = fixture("kv_then_trap.wat").display(),
        sleep = fixture("sleep_then_trap.wat").display(),
        forever = fixture("spin_forever.wat").display(),
    );
    let path = dir.join("spin.toml");
    std::fs::write(&path, text).unwrap();
    path
}

#[test]
fn key_value_writes_land_in_spins_sqlite_schema_and_a_trap_is_a_500() {
    let dir = tempfile::tempdir().unwrap();
    let runner = InProcess::start(&manifest(dir.path()), dir.path(), vec![]);

    // The component traps after writing: 500 for this request…
    let reply = send(runner.addr, "GET", "/kv", &[], b"");
    assert_eq!(reply.status, 500, "{}", reply.text());
    // …and the runner keeps serving: the same component runs again.
    let reply = send(runner.addr, "GET", "/kv", &[], b"");
    assert_eq!(reply.status, 500);

    let rows = sqlite_rows(dir.path());
    assert_eq!(
        rows,
        vec![
            // 0x12: err(access-denied) for the store "forbidden", not in key_value_stores.
            ("default".to_string(), "denied-case".to_string(), vec![0x12]),
            (
                "default".to_string(),
                "hello".to_string(),
                b"world".to_vec()
            ),
        ]
    );
}

#[test]
fn unrouted_paths_get_404() {
    let dir = tempfile::tempdir().unwrap();
    let runner = InProcess::start(&manifest(dir.path()), dir.path(), vec![]);
    for path in ["/", "/kvx", "/kv/deeper", "/sleepy"] {
        assert_eq!(
            send(runner.addr, "GET", path, &[], b"").status,
            404,
            "{path}"
        );
    }
}

#[test]
fn requests_are_served_concurrently() {
    let dir = tempfile::tempdir().unwrap();
    let runner = InProcess::start(&manifest(dir.path()), dir.path(), vec![]);
    let addr = runner.addr;
    // Warm up, so instantiation costs do not count.
    assert_eq!(send(addr, "GET", "/sleep/warm", &[], b"").status, 500);

    let n = 4;
    let started = Instant::now();
    let handles: Vec<_> = (0..n)
        .map(|i| {
            std::thread::spawn(move || send(addr, "GET", &format!("/sleep/{i}"), &[], b"").status)
        })
        .collect();
    for h in handles {
        assert_eq!(h.join().unwrap(), 500);
    }
    let elapsed = started.elapsed();
    // Each request blocks 400 ms; one after the other would take at least 1.6 s.
    assert!(
        elapsed < Duration::from_millis(1200),
        "{n} requests took {elapsed:?}"
    );
}

#[test]
fn runaway_guests_do_not_stop_other_requests() {
    let dir = tempfile::tempdir().unwrap();
    let runner = InProcess::start(&manifest(dir.path()), dir.path(), vec![]);
    // Twice as many never-ending requests as the runtime has worker threads: without the
    // epoch yields they would hold every thread and nothing else would be answered.
    let spinning: Vec<TcpStream> = (0..8)
        .map(|_| {
            let mut stream = TcpStream::connect(runner.addr).unwrap();
            write!(stream, "GET /forever HTTP/1.1\r\nhost: x\r\n\r\n").unwrap();
            stream
        })
        .collect();
    std::thread::sleep(Duration::from_millis(200));
    let started = Instant::now();
    assert_eq!(
        send(runner.addr, "GET", "/nothing-here", &[], b"").status,
        404
    );
    assert_eq!(send(runner.addr, "GET", "/kv", &[], b"").status, 500);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "{:?}",
        started.elapsed()
    );
    drop(spinning);
}
