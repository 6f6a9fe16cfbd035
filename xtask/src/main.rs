//! `cargo xtask <command>`: the developer commands the README documents.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xtask::stack::{Stack, StackOptions};
use xtask::token::TokenSpec;
use xtask::{artifacts, envoy, paths};

mod tests_cmd;

/// Developer commands of the edge-enforced workspace API.
#[derive(Parser)]
#[command(name = "cargo xtask")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Build what is stale and run the whole stack: the backend, and Envoy with the filter.
    Up(UpArgs),
    /// Install what is missing, build, and run every test.
    Test(tests_cmd::TestArgs),
    /// Print a dev token (signed with the local-only key) on stdout.
    Token(TokenArgs),
    /// Measure the filter against Envoy's native filters (docs/performance.md).
    Bench(xtask::bench::BenchArgs),
    /// Build the release filter and package it under target/package/: the .wasm, its
    /// sha256, and an OCI image layout Istio and Envoy Gateway pull.
    Package,
}

#[derive(clap::Args)]
struct UpArgs {
    /// The gateway (Envoy) listener.
    #[arg(long, default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Envoy's admin interface.
    #[arg(long, default_value = "127.0.0.1:9901")]
    admin: SocketAddr,
    /// The backend's listener.
    #[arg(long, default_value = "127.0.0.1:3000")]
    backend: SocketAddr,
    /// Envoy worker threads.
    #[arg(long, default_value_t = 2)]
    concurrency: u32,
    /// Where the key-value store lives (the same default as `spin up`).
    #[arg(long, default_value = ".spin")]
    state_dir: PathBuf,
    /// Serve the backend with the local runner even when `spin` is on PATH.
    #[arg(long)]
    no_spin: bool,
    /// What an answered write survives under the local runner: `process` (the runner being
    /// killed) or `power` (a power loss too: one sync per group commit). See runner/README.md.
    #[arg(long, default_value = "process", value_parser = ["process", "power"])]
    durability: String,
    /// Have the local runner log one line per request on stderr (in the backend log).
    #[arg(long)]
    log_requests: bool,
}

#[derive(clap::Args)]
struct TokenArgs {
    /// The subject.
    #[arg(long, default_value = "u-dev")]
    sub: String,
    /// A membership, `ORG_ID:ROLE[,ROLE…]`; repeatable. The first is also the `company`.
    #[arg(long = "org", value_name = "ORG_ID:ROLES")]
    orgs: Vec<String>,
    /// An explicitly granted permission; repeatable.
    #[arg(long = "perm", value_name = "PERMISSION")]
    perms: Vec<String>,
    /// Lifetime in seconds.
    #[arg(long, default_value_t = 3600)]
    ttl: i64,
    /// The e-mail claim (default `<sub>@dev.local`).
    #[arg(long)]
    email: Option<String>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Cmd::Up(args) => up(args),
        Cmd::Test(args) => tests_cmd::test(args),
        Cmd::Token(args) => token(args).map(|t| println!("{t}")),
        Cmd::Bench(args) => xtask::bench::run(&args).map(|_| ()),
        Cmd::Package => xtask::package::run().map(|_| ()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("xtask: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn token(args: TokenArgs) -> Result<String> {
    let mut orgs = Vec::new();
    for spec in &args.orgs {
        let (org, roles) = spec
            .split_once(':')
            .with_context(|| format!("--org {spec}: expected ORG_ID:ROLE[,ROLE…]"))?;
        let roles: Vec<String> = roles
            .split(',')
            .map(str::trim)
            .filter(|r| !r.is_empty())
            .map(str::to_owned)
            .collect();
        if org.trim().is_empty() || roles.is_empty() {
            bail!("--org {spec}: expected ORG_ID:ROLE[,ROLE…]");
        }
        orgs.push((org.trim().to_owned(), roles));
    }
    TokenSpec {
        sub: args.sub,
        orgs,
        perms: args.perms,
        ttl_secs: args.ttl,
        email: args.email,
        ..TokenSpec::default()
    }
    .mint()
}

const SEED_ORG: &str = "a1b2c3d4-5678-90ef-1234-567890abcdef";
const SEED_BODY: &str = include_str!("../../tests/fixtures/seed-004-request.json");

fn up(args: UpArgs) -> Result<()> {
    let started = Instant::now();
    let stop = Arc::new(AtomicBool::new(false));
    for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
        signal_hook::flag::register(signal, Arc::clone(&stop))?;
    }
    envoy::ensure_installed()?;
    artifacts::build()?;
    let state_dir = paths::root().join(&args.state_dir);
    let mut runner_args = vec!["--durability".to_owned(), args.durability.clone()];
    if args.log_requests {
        runner_args.push("--log-requests".into());
    }
    let mut stack = Stack::try_start(StackOptions {
        envoy_concurrency: args.concurrency,
        gateway_listen: args.listen,
        admin_listen: args.admin,
        backend_listen: args.backend,
        state_dir: Some(state_dir.clone()),
        prefer_spin: !args.no_spin,
        runner_args,
        ..StackOptions::default()
    })?;
    let token = TokenSpec::new("u-dev", &[(SEED_ORG, &["owner"])]).mint()?;
    let body = SEED_BODY.trim().replace('\'', r"'\''");
    let idempotency_key = uuid::Uuid::new_v4();
    println!(
        "\nReady in {:.1}s.\n  gateway  {}\n  admin    {}\n  backend  {} (direct calls get 401: identity must come through the gateway)\n  state    {}\n  logs     {}\n\nTry it: run it twice and the second answer is the first one replayed (same Idempotency-Key).
The token is a local-only dev token, valid for an hour; mint others with `cargo xtask token`.\n\ncurl -i {}/api/workspaces \\\n  -H 'Authorization: Bearer {token}' \\\n  -H 'Content-Type: application/json' \\\n  -H 'Idempotency-Key: {idempotency_key}' \\\n  --data-raw '{body}'\n\nCtrl-C stops everything.",
        started.elapsed().as_secs_f64(),
        stack.gateway_url(),
        stack.admin_url(),
        stack.backend_url(),
        state_dir.display(),
        state_dir.join("logs").display(),
        stack.gateway_url(),
    );
    while !stop.load(Ordering::Relaxed) {
        if let Err(e) = stack.check_alive() {
            drop(stack);
            return Err(e);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    eprintln!("\nxtask: stopping Envoy and the backend");
    drop(stack);
    Ok(())
}

/// Runs `cmd`, failing with `what` when it does not succeed.
fn run_command(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
