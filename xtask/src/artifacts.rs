//! Building what the stack runs: the filter, the backend component and the local runner.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::paths;

/// Set by `cargo xtask test` once it has built everything, so test binaries skip the check.
pub const BUILT_ENV: &str = "WORKSPACE_API_ARTIFACTS_BUILT";

/// The three builds, each `(description, cargo arguments)`.
const BUILDS: [(&str, &[&str]); 3] = [
    (
        "edge filter (wasm32-wasip1)",
        &[
            "build",
            "--package",
            "edge-filter",
            "--target",
            "wasm32-wasip1",
            "--release",
        ],
    ),
    (
        "backend component (wasm32-wasip2)",
        &[
            "build",
            "--package",
            "workspace-backend",
            "--target",
            "wasm32-wasip2",
            "--release",
        ],
    ),
    ("local runner", &["build", "--package", "spin-runner"]),
];

/// Brings the filter, the backend and the runner up to date (Cargo does nothing when they
/// are fresh). Runs once per process.
pub fn build() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    DONE.get_or_init(|| {
        if std::env::var_os(BUILT_ENV).is_some() {
            return Ok(());
        }
        build_now().map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn build_now() -> Result<()> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    for (what, args) in BUILDS {
        let status = Command::new(&cargo)
            .args(args)
            .current_dir(paths::root())
            .status()
            .with_context(|| format!("running cargo to build the {what}"))?;
        if !status.success() {
            bail!("building the {what} failed: `cargo {}`", args.join(" "));
        }
    }
    Ok(())
}
