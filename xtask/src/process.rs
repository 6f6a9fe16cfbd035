//! Child processes that never outlive their owner.
//!
//! Every child is spawned from one long-lived thread with `PR_SET_PDEATHSIG`, so the kernel
//! ends it when this process dies, however it dies (Linux sends the signal when the
//! *thread* that spawned the child exits, hence the dedicated thread). Dropping a
//! [`Service`] stops its process: SIGTERM, then SIGKILL after a grace period.

use std::path::PathBuf;
use std::process::{Child, Command};
use std::sync::mpsc;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use anyhow::{anyhow, Context, Result};

type SpawnRequest = (Command, mpsc::Sender<std::io::Result<Child>>);

fn spawner() -> &'static Mutex<mpsc::Sender<SpawnRequest>> {
    static SPAWNER: OnceLock<Mutex<mpsc::Sender<SpawnRequest>>> = OnceLock::new();
    SPAWNER.get_or_init(|| {
        let (tx, rx) = mpsc::channel::<SpawnRequest>();
        std::thread::Builder::new()
            .name("child-spawner".into())
            .spawn(move || {
                for (mut cmd, reply) in rx {
                    let _ = reply.send(cmd.spawn());
                }
                // Keep the thread (and so the children's parent-death signal) alive until exit.
                loop {
                    std::thread::park();
                }
            })
            .ok();
        Mutex::new(tx)
    })
}

/// Spawns `cmd` so that it dies with this process.
pub fn spawn(mut cmd: Command) -> Result<Child> {
    use std::os::unix::process::CommandExt;
    // SAFETY: prctl is async-signal-safe and touches only the child.
    unsafe {
        cmd.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let (tx, rx) = mpsc::channel();
    spawner()
        .lock()
        .map_err(|_| anyhow!("spawner poisoned"))?
        .send((cmd, tx))
        .context("spawner gone")?;
    rx.recv()
        .context("spawner gone")?
        .context("spawning process")
}

/// A running child process with a name and a log file.
#[derive(Debug)]
pub struct Service {
    /// A short name for messages (`envoy`, `backend`).
    pub name: &'static str,
    /// Where its output goes.
    pub log: PathBuf,
    child: Child,
}

impl Service {
    /// Wraps a spawned child.
    pub fn new(name: &'static str, child: Child, log: PathBuf) -> Self {
        Self { name, log, child }
    }

    /// The process ID.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// `Some(status)` once the process has exited.
    pub fn exited(&mut self) -> Option<std::process::ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// The last `lines` lines of the log, for error messages.
    pub fn log_tail(&self, lines: usize) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let all: Vec<&str> = text.lines().collect();
        all[all.len().saturating_sub(lines)..].join("\n")
    }

    /// Sends SIGTERM and waits up to `grace`, then SIGKILLs.
    pub fn stop(&mut self, grace: Duration) {
        if self.exited().is_some() {
            return;
        }
        // SAFETY: signalling our own child, which has not been reaped yet.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.exited().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Service {
    fn drop(&mut self) {
        self.stop(Duration::from_secs(5));
    }
}
