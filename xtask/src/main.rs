//! `cargo xtask <command>`: the developer commands the README documents.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::{Parser, Subcommand};
use xtask::shared::{limits_through_service, RateLimitService, Redis, RATE_LIMIT_CLUSTER};
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
    /// Scale out: a local Redis, the rate limit service on it, and two runners sharing it
    /// (Spin's runtime configuration), load-balanced by Envoy; the create routes' limits go
    /// through the rate limit service. Always the local runner.
    #[arg(long)]
    redis: bool,
    /// With `--redis`: where Redis listens.
    #[arg(long, default_value = "127.0.0.1:6379")]
    redis_listen: SocketAddr,
    /// With `--redis`: where the rate limit service listens.
    #[arg(long, default_value = "127.0.0.1:8081")]
    ratelimit_listen: SocketAddr,
    /// With `--redis`: the second runner's listener.
    #[arg(long, default_value = "127.0.0.1:3001")]
    backend2: SocketAddr,
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
    let mut options = StackOptions {
        envoy_concurrency: args.concurrency,
        gateway_listen: args.listen,
        admin_listen: args.admin,
        backend_listen: args.backend,
        state_dir: Some(state_dir.clone()),
        prefer_spin: !args.no_spin,
        runner_args,
        ..StackOptions::default()
    };
    // With `--redis`: what the replicas share, and the second runner. Declared before the
    // stack, so they stop after it.
    let scale_out = if args.redis {
        Some(scale_out(&args, &state_dir, &mut options)?)
    } else {
        None
    };
    let mut stack = Stack::try_start(options)?;
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
    drop(scale_out);
    Ok(())
}

/// What `up --redis` runs besides the stack: Redis, the rate limit service, the second
/// runner.
struct ScaleOut {
    _replica: Stack,
    _rls: RateLimitService,
    _redis: Redis,
}

/// Starts Redis (data in `<state>/redis`), the rate limit service on it and the second
/// runner, and points `options` (the first runner and Envoy) at them.
fn scale_out(args: &UpArgs, state_dir: &Path, options: &mut StackOptions) -> Result<ScaleOut> {
    std::fs::create_dir_all(state_dir)?;
    let redis = Redis::start(args.redis_listen, &state_dir.join("redis"))?;
    let rls = RateLimitService::start(args.ratelimit_listen, &redis.url(), state_dir)?;
    let runtime_config = redis.runtime_config(state_dir)?;
    options.prefer_spin = false;
    options.runner_args.extend([
        "--runtime-config-file".to_owned(),
        runtime_config.display().to_string(),
    ]);
    let replica = Stack::try_start(StackOptions {
        envoy: false,
        backend_listen: args.backend2,
        state_dir: Some(state_dir.join("replica-2")),
        ..options.clone()
    })?;
    let mut filter = envoy::shipped_filter_config()?;
    limits_through_service(
        &mut filter,
        &[
            ("create-workspace", "deny"),
            ("create-workspace-v3", "deny"),
        ],
    );
    options.filter_config = Some(filter);
    options.grpc_clusters = vec![(RATE_LIMIT_CLUSTER.into(), rls.addr)];
    options.extra_backends = vec![replica.backend_addr()];
    println!(
        "Scaling out: Redis {} ({}), rate limit service {}, second runner {}",
        redis.addr,
        state_dir.join("redis").display(),
        rls.addr,
        replica.backend_url()
    );
    Ok(ScaleOut {
        _replica: replica,
        _rls: rls,
        _redis: redis,
    })
}

/// Runs `cmd`, failing with `what` when it does not succeed.
fn run_command(cmd: &mut Command, what: &str) -> Result<()> {
    let status = cmd.status().with_context(|| format!("starting {what}"))?;
    if !status.success() {
        bail!("{what} failed ({status})");
    }
    Ok(())
}
