//! Building what the stack runs: the filter, the backend component and the local runner.

use std::ffi::OsString;
use std::path::PathBuf;
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
/// The shipped filter plus the `test-trap` feature; [`build_filter_test_trap`] adds its own
/// `--target-dir`.
const FILTER_TEST_TRAP: Build = (
    "edge filter, test-trap build (wasm32-wasip1)",
    &[
        "build",
        "--package",
        "edge-filter",
        "--target",
        "wasm32-wasip1",
        "--release",
        "--features",
        "test-trap",
    ],
);
/// The bench's floor filter (`envoy/bench/floor`), [`paths::floor_wasm`].
const FLOOR: Build = (
    "bench floor filter (wasm32-wasip1)",
    &[
        "build",
        "--package",
        "edge-bench-floor",
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
const RATELIMIT: Build = (
    "rate limit service",
    &["build", "--package", "edge-ratelimit"],
);

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

/// Brings the rate limit service (`edge-ratelimit`) up to date, once per process.
pub fn build_ratelimit_service() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, RATELIMIT)
}

/// Brings the filter up to date, once per process.
pub fn build_filter() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, FILTER)
}

/// Brings the bench's floor filter up to date, once per process.
pub fn build_floor() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, FLOOR)
}

/// Brings the filter's `test-trap` build up to date, once per process. It goes to its own
/// target folder ([`paths::filter_test_trap_target_dir`]): built into the shared one, it would
/// replace the shipped `edge_filter.wasm` that other tests and `cargo xtask up` load.
pub fn build_filter_test_trap() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    let target_dir = paths::filter_test_trap_target_dir();
    once_with(
        &DONE,
        FILTER_TEST_TRAP,
        &["--target-dir".into(), target_dir.into()],
    )
}

/// Brings the WebAssembly artifacts the tests load up to date: the filter, its `test-trap`
/// build, the bench's floor filter (the bench's smoke test loads it) and the backend
/// component. `cargo xtask test` leaves the runner to `cargo test` itself: a separate
/// `cargo build -p spin-runner` resolves features over fewer packages and would compile
/// wasmtime a second time.
pub fn build_wasm() -> Result<()> {
    static DONE: OnceLock<Result<(), String>> = OnceLock::new();
    once(&DONE, BACKEND)?;
    build_filter()?;
    build_filter_test_trap()?;
    build_floor()
}

/// Which build of the filter an Envoy loads.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FilterBuild {
    /// The shipped filter, [`paths::filter_wasm`].
    #[default]
    Shipped,
    /// The `test-trap` build, [`paths::filter_test_trap_wasm`]: a request with the
    /// `x-edge-test-trap` header traps its VM. For the recovery tests only.
    TestTrap,
}

impl FilterBuild {
    /// Brings this build up to date (once per process).
    pub fn build(self) -> Result<()> {
        match self {
            Self::Shipped => build_filter(),
            Self::TestTrap => build_filter_test_trap(),
        }
    }

    /// The module Envoy loads.
    pub fn wasm(self) -> PathBuf {
        match self {
            Self::Shipped => paths::filter_wasm(),
            Self::TestTrap => paths::filter_test_trap_wasm(),
        }
    }
}

fn once(done: &OnceLock<Result<(), String>>, build: Build) -> Result<()> {
    once_with(done, build, &[])
}

fn once_with(
    done: &OnceLock<Result<(), String>>,
    build: Build,
    extra_args: &[OsString],
) -> Result<()> {
    done.get_or_init(|| {
        if std::env::var_os(BUILT_ENV).is_some() {
            return Ok(());
        }
        build_now(build, extra_args).map_err(|e| format!("{e:#}"))
    })
    .clone()
    .map_err(anyhow::Error::msg)
}

fn build_now((what, args): Build, extra_args: &[OsString]) -> Result<()> {
    crate::toolchain::ensure_targets()?;
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let status = Command::new(&cargo)
        .args(args)
        .args(extra_args)
        .current_dir(paths::root())
        .status()
        .with_context(|| format!("running cargo to build the {what}"))?;
    if !status.success() {
        let extra: Vec<_> = extra_args.iter().map(|a| a.to_string_lossy()).collect();
        bail!(
            "building the {what} failed: `cargo {} {}`",
            args.join(" "),
            extra.join(" ")
        );
    }
    Ok(())
}
