//! Building what the stack runs: the filter, the backend component and the local runner.

use std::process::Command;
use std::sync::OnceLock;

use anyhow::{bail, Context, Result};

use crate::paths;

/// Set by `cargo xtask test` once it has built everything, so test binaries skip the check.
pub const BUILT_ENV: &str = "WORKSPACE_API_ARTIFACTS_BUILT";

/// One build: a description and the `cargo` arguments.
type Build = (&'static str, &'static [&'static str]);

const FILTER: Build = (
    "edge filter (wasm32-wasip1)",
    &[
        "build",
        "--package",
        "edge-filter",
        "--target",
        "wasm32-wasip1",
        "--release",
    ],
);
const BACKEND: Build = (
    "backend component (wasm32-wasip2)",
    &[
        "build",
        "--package",
        "workspace-backend",
        "--target",
        "wasm32-wasip2",
        "--release",
    ],
);
const RUNNER: Build = ("local runner", &["build", "--package", "spin-runner"]);

/// Brings the filter, the backend and the runner up to date (Cargo does nothing when they
/// are fresh).
pub fn build() -> Result<()> {
    build_backend()?;
    build_filter()
}

/// Brings the backend component and the runner up to date, once per process.
pub fn build_backend() -> Result<()> {
    static BACKEND_DONE: OnceLock<Result<(), String>> = OnceLock::new();
    static RUNNER_DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&BACKEND_DONE, BACKEND)?;
    once(&RUNNER_DONE, RUNNER)
}

/// Brings the filter up to date, once per process.
pub fn build_filter() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, FILTER)
}

/// Brings the two WebAssembly artifacts up to date: the filter and the backend component.
/// `cargo xtask test` leaves the runner to `cargo test` itself: a separate
/// `cargo build -p spin-runner` resolves features over fewer packages and would compile
/// wasmtime a second time.
pub fn build_wasm() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, BACKEND)?;
    build_filter()
}

fn once(done: &OnceLock<Result<(), String>>, build: Build) -> Result<()> {
    done.get_or_init(|| {
        if std::env::var_os(BUILT_ENV).is_some() {
            return Ok(());
        }
        build_now(build).map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn build_now((what, args): Build) -> Result<()> {
    crate::toolchain::ensure_targets()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .current_dir(paths::root())
        .status()
        .with_context(|| format!("running cargo to build the {what}"))?;
    if !status.success() {
        bail!("building the {what} failed: `cargo {}`", args.join(" "));
    }
    Ok(())
}
