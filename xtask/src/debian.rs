//! Programs the project takes from Debian's packages (`wrk` for the bench, `redis-server` for
//! the shared key-value store, `clang` for the C part of `ring` on the wasm targets), installed with `apt-get` when missing: as root, or through
//! `sudo`.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{bail, Context, Result};

/// `program` from PATH, installing Debian's `package` first when it is missing.
pub fn ensure(program: &str, package: &str) -> Result<PathBuf> {
    if let Some(bin) = which(program) {
        return Ok(bin);
    }
    eprintln!("xtask: installing {package} from Debian (apt-get)");
    // SAFETY: geteuid has no preconditions.
    let root = unsafe { libc::geteuid() } == 0;
    let apt = |args: &[&str]| -> Result<()> {
        let mut cmd = if root {
            Command::new("apt-get")
        } else {
            let mut c = Command::new("sudo");
            c.arg("apt-get");
            c
        };
        let status = cmd
            .args(args)
            .env("DEBIAN_FRONTEND", "noninteractive")
            .status()
            .context("running apt-get")?;
        if !status.success() {
            bail!("apt-get {} failed ({status})", args.join(" "));
        }
        Ok(())
    };
    apt(&["update", "-qq"])?;
    apt(&["install", "-y", "-qq", package])?;
    which(program)
        .with_context(|| format!("apt-get installed {package}, but {program} is not on PATH"))
}

/// The first `program` on PATH.
pub fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}
