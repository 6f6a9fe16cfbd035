//! Creates per second (issue 11): `POST /api/workspaces` with the seed-004 body, a distinct
//! user per request, through the gateway (Envoy + filter + runner, loaded by wrk) and
//! straight to the runner (`tests/e2e/backend_bench.rs`, which signs the gateway identity
//! itself), at 1 and 32 connections, without and with an `Idempotency-Key`, under each
//! durability setting of the runner; and, in the same run, how many commits per second the
//! disk itself takes (`spin-runner commit-rate`), the limit underneath.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::report::{load_average, CommitRates, CreateRow, Creates};
use super::{http, procfs, wrk, Settings, WRK_THREADS};
use crate::stack::{Stack, StackOptions};
use crate::token::TokenSpec;
use crate::{artifacts, envoy, paths};

/// The seed-004 example request, as every create sends it.
const SEED_BODY: &str = include_str!("../../../tests/fixtures/seed-004-request.json");
/// The seed's organization; every user is its owner.
const ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";
/// Connections of each figure (the issue's: one client alone, and 32 at once).
pub const CONNECTIONS: [u32; 2] = [1, 32];
/// The runner's durability settings (`spin-runner up --durability`).
pub const DURABILITIES: [&str; 2] = ["process", "power"];

/// Measures every figure; see the module documentation.
pub fn run(wrk_bin: &Path, work: &Path, settings: &Settings) -> Result<Creates> {
    let load_before = load_average();
    let users = settings.create_users;
    let tokens = mint_users(work, users)?;
    let body = work.join("seed-004.json");
    fs::write(&body, SEED_BODY)?;
    let mut rows = Vec::new();
    for durability in DURABILITIES {
        eprintln!("xtask bench: creates through the gateway, durability {durability}");
        rows.extend(through_gateway(
            wrk_bin, work, settings, &tokens, &body, durability,
        )?);
    }
    eprintln!("xtask bench: creates straight to the runner (tests/e2e/backend_bench.rs)");
    rows.extend(straight_to_runner(settings)?);
    for row in &rows {
        eprintln!(
            "  {:<8} {:<8} {:>2} conn  key {:<5} {:>7.0} creates/s  p50 {:>6.1} ms  p99 {:>6.1} ms  {} errors",
            row.via,
            row.durability,
            row.connections,
            row.idempotency_key,
            row.creates_per_s,
            row.p50_us / 1000.0,
            row.p99_us / 1000.0,
            row.non_2xx + row.socket_errors
        );
    }
    let commit_rates = commit_rates(work, settings)?;
    Ok(Creates {
        users,
        rows,
        commit_rates,
        load_average: [load_before, load_average()],
    })
}

/// One token per user (`u-create-<n>`, owner of the seed organization), split over wrk's
/// threads; returns the files' prefix.
fn mint_users(work: &Path, users: u64) -> Result<PathBuf> {
    let prefix = work.join("create-users");
    let mut files = vec![String::new(); WRK_THREADS as usize];
    for n in 0..users {
        let token = TokenSpec::new(&format!("u-create-{n}"), &[(ORG, &["owner"])]).mint()?;
        let file = &mut files[(n % u64::from(WRK_THREADS)) as usize];
        file.push_str(&token);
        file.push('\n');
    }
    for (t, text) in files.iter().enumerate() {
        let mut name = prefix.as_os_str().to_owned();
        name.push(format!(".{t}.txt"));
        fs::write(PathBuf::from(name), text)?;
    }
    Ok(prefix)
}

/// The shipped gateway with its per-user rate limits lifted (they would answer 429 long
/// before the backend is the bound), in front of the runner with `durability`.
fn through_gateway(
    wrk_bin: &Path,
    work: &Path,
    settings: &Settings,
    tokens: &Path,
    body: &Path,
    durability: &str,
) -> Result<Vec<CreateRow>> {
    let mut filter = envoy::shipped_filter_config()?;
    if let Some(Value::Array(routes)) = filter.get_mut("routes") {
        for route in routes {
            if route.get("rate_limit").is_some() {
                route["rate_limit"] =
                    serde_json::json!({"requests": 1_000_000_000u64, "per": "1s"});
            }
        }
    }
    let stack = Stack::try_start(StackOptions {
        envoy_concurrency: 2,
        filter_config: Some(filter),
        envoy_log_level: "warn",
        runner_args: vec!["--durability".into(), durability.into()],
        ..StackOptions::default()
    })?;
    let url = stack.gateway_url();
    let first = fs::read_to_string(first_file(tokens))?;
    let token = first.lines().next().context("no bench token")?;
    let (status, text) = http(
        "POST",
        &format!("{url}/api/workspaces"),
        &[
            ("authorization", &format!("Bearer {token}")),
            ("content-type", "application/json"),
        ],
        Some(SEED_BODY.as_bytes()),
    )?;
    if status != 201 {
        bail!(
            "creates: POST /api/workspaces answered {status}: {text}\n{}",
            stack.backend_log()
        );
    }
    let load = |connections: u32, idempotency_keys: bool, seconds: f64, key_prefix: &str| {
        wrk::run(
            wrk_bin,
            work,
            &wrk::Load {
                base_url: &url,
                method: "POST",
                path: "/api/workspaces",
                tokens,
                idempotency_keys,
                key_prefix,
                body: Some(body),
                duration: Duration::from_secs_f64(seconds),
                connections,
                threads: WRK_THREADS.min(connections),
                cpus: &[],
                stop_at_eof: false,
            },
        )
    };
    // Warm-up: the first instances, SQLite's pages, Envoy's connections to the backend.
    load(32, false, settings.warmup_s, "warmup")?;
    let run_id = uuid::Uuid::new_v4().simple().to_string();
    let mut rows = Vec::new();
    for connections in CONNECTIONS {
        for key in [false, true] {
            let prefix = format!("{durability}-{connections}-{run_id}");
            let cpu = || -> Result<(f64, f64)> {
                let envoy = stack.envoy_pid().context("the stack has no Envoy")?;
                Ok((
                    procfs::cpu_seconds(envoy)?,
                    procfs::cpu_seconds(stack.backend_pid())?,
                ))
            };
            let before = cpu()?;
            let outcome = load(connections, key, settings.creates_s, &prefix)?;
            let after = cpu()?;
            rows.push(
                CreateRow::from_wrk("gateway", durability, connections, key, &outcome)
                    .with_cpu(after.0 - before.0, after.1 - before.1),
            );
        }
    }
    Ok(rows)
}

fn first_file(prefix: &Path) -> PathBuf {
    let mut name = prefix.as_os_str().to_owned();
    name.push(".0.txt");
    PathBuf::from(name)
}

/// Runs `tests/e2e/backend_bench.rs` and reads its `BENCH_JSON` lines: the runner alone,
/// loaded by a Rust client that signs the gateway identity for a distinct user per create.
/// The end-to-end tests are one binary (`--test e2e`); no `--package`, which would resolve
/// features over fewer packages and build wasmtime again.
fn straight_to_runner(settings: &Settings) -> Result<Vec<CreateRow>> {
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".to_owned());
    let out = Command::new(cargo)
        .args([
            "test",
            "--quiet",
            "--test",
            "e2e",
            "--",
            "backend_bench::",
            "--ignored",
            "--nocapture",
            "--test-threads",
            "1",
            "--exact",
            "backend_bench::creates_per_second_straight_to_the_runner",
        ])
        .env("BENCH_SECONDS", settings.creates_s.to_string())
        .env("BENCH_WARMUP_SECONDS", settings.warmup_s.to_string())
        .env(artifacts::BUILT_ENV, "1")
        .current_dir(paths::root())
        .stdin(Stdio::null())
        .output()
        .context("running tests/e2e/backend_bench.rs")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    if !out.status.success() {
        bail!(
            "tests/e2e/backend_bench.rs failed ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let rows: Vec<CreateRow> = stdout
        .lines()
        .filter_map(|line| line.strip_prefix("BENCH_JSON "))
        .map(serde_json::from_str)
        .collect::<Result<_, _>>()
        .context("parsing tests/e2e/backend_bench.rs's figures")?;
    if rows.is_empty() {
        bail!("tests/e2e/backend_bench.rs printed no figure:\n{stdout}");
    }
    Ok(rows)
}

/// `spin-runner commit-rate` on the disk the bench's state folders live on.
fn commit_rates(work: &Path, settings: &Settings) -> Result<CommitRates> {
    let seconds = if settings.smoke { 0.2 } else { 2.0 };
    let out = Command::new(paths::runner_bin())
        .args(["commit-rate", "--seconds", &seconds.to_string(), "--dir"])
        .arg(work)
        .stdin(Stdio::null())
        .output()
        .context("running spin-runner commit-rate")?;
    if !out.status.success() {
        bail!(
            "spin-runner commit-rate failed ({}): {}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    serde_json::from_slice(&out.stdout).context("parsing spin-runner commit-rate's output")
}
