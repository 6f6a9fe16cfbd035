//! `cargo xtask test`: everything a fresh clone needs, then every test.

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result};
use xtask::{artifacts, envoy, paths};

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
    step("Envoy", || envoy::ensure_installed().map(drop))?;
    step("build (filter, backend, runner)", artifacts::build)?;
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

/// `wasm-bindgen-test-runner` of exactly the locked wasm-bindgen version, installed into
/// `.cache/tools` when missing (the versions must match or the runner refuses the module).
fn ensure_wasm_bindgen_runner(cargo: &str, version: &str) -> Result<PathBuf> {
    let root = paths::cache_dir().join(format!("tools/wasm-bindgen-{version}"));
    let runner = root.join("bin/wasm-bindgen-test-runner");
    if !runner.exists() {
        eprintln!(
            "xtask: installing wasm-bindgen-cli {version} into {}",
            root.display()
        );
        run(
            Command::new(cargo)
                .args([
                    "install",
                    "--locked",
                    "--quiet",
                    "wasm-bindgen-cli",
                    "--version",
                ])
                .arg(format!("={version}"))
                .arg("--root")
                .arg(&root),
            "cargo install wasm-bindgen-cli",
        )?;
    }
    Ok(runner)
}

/// The version of `package` recorded in `Cargo.lock`.
fn locked_version(package: &str) -> Option<String> {
    let lock = std::fs::read_to_string(paths::root().join("Cargo.lock")).ok()?;
    let needle = format!("name = \"{package}\"\nversion = \"");
    let start = lock.find(&needle)? + needle.len();
    Some(lock[start..].split('"').next()?.to_owned())
}
