//! `cargo xtask test`: everything a fresh clone needs, then every test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use xtask::{artifacts, debian, envoy, paths, schemathesis, toolchain};

use crate::run_command as run;

/// Arguments of `cargo xtask test`.
#[derive(clap::Args)]
pub struct TestArgs {
    /// Passed to `cargo test` (e.g. a test name filter, or `-- --nocapture`).
    #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
    cargo_test_args: Vec<String>,
}

pub fn test(args: TestArgs) -> Result<()> {
    let started = Instant::now();
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let root = paths::root();
    step("formatting", || {
        run(
            Command::new(&cargo)
                .args(["fmt", "--all", "--check"])
                .current_dir(&root),
            "cargo fmt --check",
        )
    })?;
    step(
        "wasm targets of the pinned toolchain",
        toolchain::ensure_targets,
    )?;
    step(
        "clippy (workspace, and the filter on wasm32-wasip1)",
        || clippy(&cargo),
    )?;
    step("Envoy", || envoy::ensure_installed().map(drop))?;
    // The runner's Redis store is tested against a real server.
    step("Redis (Debian's redis-server)", || {
        debian::ensure("redis-server", "redis-server").map(drop)
    })?;
    step("Schemathesis", || {
        schemathesis::ensure_installed().map(drop)
    })?;
    step("build (filter, backend)", artifacts::build_wasm)?;
    // One feature resolution for the tests and for the runner binary they start.
    step("compile the tests and the runner", || {
        run(
            Command::new(&cargo)
                .args(["test", "--no-run"])
                .current_dir(&root),
            "cargo test --no-run",
        )
    })?;
    step("native, end-to-end and doc tests", || {
        run(
            Command::new(&cargo)
                .arg("test")
                .args(&args.cargo_test_args)
                .env(artifacts::BUILT_ENV, "1")
                .current_dir(&root),
            "cargo test",
        )
    })?;
    if args.cargo_test_args.is_empty() {
        step(
            "policy tests on wasm32-unknown-unknown (wasm-bindgen-test under Node.js)",
            || wasm_bindgen_tests(&cargo),
        )?;
    }
    eprintln!(
        "xtask: all tests passed in {:.0}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// Lints deny warnings: the workspace's own lints (no `unwrap`, `expect` or `panic!` outside
/// tests) and clippy's defaults, natively for every crate and tests, and for the filter on
/// the target it ships for (code behind `cfg(target_arch = "wasm32")` is only seen there).
fn clippy(cargo: &str) -> Result<()> {
    for (args, what) in [
        (
            &[
                "clippy",
                "--workspace",
                "--all-targets",
                "--",
                "-D",
                "warnings",
            ][..],
            "cargo clippy --workspace --all-targets",
        ),
        (
            &[
                "clippy",
                "--package",
                "edge-filter",
                "--target",
                "wasm32-wasip1",
                "--",
                "-D",
                "warnings",
            ][..],
            "cargo clippy --package edge-filter --target wasm32-wasip1",
        ),
    ] {
        run(
            Command::new(cargo).args(args).current_dir(paths::root()),
            what,
        )?;
    }
    Ok(())
}

fn step(what: &str, f: impl FnOnce() -> Result<()>) -> Result<()> {
    let started = Instant::now();
    eprintln!("xtask: == {what}");
    f().with_context(|| format!("{what} failed"))?;
    eprintln!(
        "xtask: == {what}: done in {:.1}s",
        started.elapsed().as_secs_f64()
    );
    Ok(())
}

/// The host-independent policy crate, compiled to `wasm32-unknown-unknown` and run under
/// Node.js, proves it depends on no host facility.
fn wasm_bindgen_tests(cargo: &str) -> Result<()> {
    let version = locked_version("wasm-bindgen").context("wasm-bindgen is not in Cargo.lock")?;
    let runner = ensure_wasm_bindgen_runner(cargo, &version)?;
    run(
        Command::new(cargo)
            .args([
                "test",
                "--package",
                "edge-policy",
                "--target",
                "wasm32-unknown-unknown",
            ])
            .env("CARGO_TARGET_WASM32_UNKNOWN_UNKNOWN_RUNNER", runner)
            .current_dir(paths::root()),
        "cargo test --target wasm32-unknown-unknown",
    )
}

/// `wasm-bindgen-test-runner` of exactly the locked wasm-bindgen version (the versions must
/// match or the runner refuses the module): the one on PATH if it is that version, else one
/// installed with `cargo install` into Cargo's own bin folder, so later runs on the machine
/// reuse it. (`--locked` is not used: the CLI's own lockfile pins crates the registry mirror
/// may lack.)
fn ensure_wasm_bindgen_runner(cargo: &str, version: &str) -> Result<PathBuf> {
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let installed = cargo_home.join("bin/wasm-bindgen-test-runner");
    for candidate in [PathBuf::from("wasm-bindgen-test-runner"), installed.clone()] {
        if runner_version(&candidate).as_deref() == Some(version) {
            return Ok(candidate);
        }
    }
    eprintln!("xtask: installing wasm-bindgen-cli {version} (once per machine; several minutes)");
    run(
        Command::new(cargo)
            .args([
                "install",
                "--quiet",
                "--force",
                "wasm-bindgen-cli",
                "--version",
            ])
            .arg(format!("={version}")),
        "cargo install wasm-bindgen-cli",
    )?;
    Ok(installed)
}

/// `wasm-bindgen-test-runner --version` prints `wasm-bindgen-test-runner 0.2.130`.
fn runner_version(runner: &std::path::Path) -> Option<String> {
    let out = Command::new(runner).arg("--version").output().ok()?;
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .nth(1)
        .map(str::to_owned)
}

/// The version of `package` recorded in `Cargo.lock`.
fn locked_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(paths::root().join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    Some(lock[start..].split('"').next()?.to_owned())
}
