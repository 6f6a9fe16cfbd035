//! `spin-runner up`: the local stand-in for `spin up`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use spin_runner::kv::Durability;
use spin_runner::{bind, serve, App, Options};

#[derive(Parser)]
#[command(
    version,
    about = "Serves a Spin HTTP application locally on wasmtime (a stand-in for `spin up`)."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the application described by a spin.toml.
    Up(Up),
    /// Measure how many SQLite commits per second the disk under a folder takes, in each
    /// journal mode (one line of JSON on stdout): the limit the key-value store works against.
    CommitRate {
        /// A folder on the disk to measure (a scratch database is made and removed there).
        #[arg(long, default_value = ".")]
        dir: PathBuf,
        /// Seconds per mode.
        #[arg(long, default_value_t = 2.0)]
        seconds: f64,
    },
}

#[derive(clap::Args)]
struct Up {
    /// The application manifest.
    #[arg(long = "from", short = 'f', default_value = "spin.toml")]
    from: PathBuf,
    /// Address to listen on (port 0 picks a free port; the real one is printed).
    #[arg(long, default_value = "127.0.0.1:3000")]
    listen: SocketAddr,
    /// Directory for state: the key-value database `sqlite_key_value.db` [default: `.spin`
    /// in the manifest's folder, as `spin up`].
    #[arg(long)]
    state_dir: Option<PathBuf>,
    /// Directory for compiled components [default: the `target/` folder the .wasm was
    /// built into, else <state-dir>/spin-runner-cache].
    #[arg(long, env = "SPIN_RUNNER_CACHE_DIR")]
    cache_dir: Option<PathBuf>,
    /// What an answered key-value write survives: `process` (the runner being killed;
    /// WAL, synchronous=NORMAL) or `power` (a power loss too; the log is synced to disk at
    /// every group commit, synchronous=FULL).
    #[arg(long, env = "SPIN_RUNNER_DURABILITY", default_value_t = Durability::Process)]
    durability: Durability,
    /// One stderr line per request: method, path, status, time to the response head.
    #[arg(long)]
    log_requests: bool,
    /// Spin's runtime configuration file: which store serves each key-value label, e.g.
    /// `[key_value_store.default]` with `type = "redis"` and `url = "redis://…"` (as
    /// `spin up --runtime-config-file`).
    #[arg(long, env = "SPIN_RUNTIME_CONFIG_FILE")]
    runtime_config_file: Option<PathBuf>,
}

fn main() -> ExitCode {
    let result = match Cli::parse().command {
        Command::Up(up) => serve_app(up),
        Command::CommitRate { dir, seconds } => commit_rate(&dir, seconds),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spin-runner: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn commit_rate(dir: &std::path::Path, seconds: f64) -> Result<()> {
    let each = std::time::Duration::try_from_secs_f64(seconds)?;
    println!(
        "{}",
        spin_runner::commit_rate::measure(dir, each)?.to_json()
    );
    Ok(())
}

fn serve_app(up: Up) -> Result<()> {
    let Up {
        from,
        listen,
        state_dir,
        cache_dir,
        durability,
        log_requests,
        runtime_config_file,
    } = up;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let result = runtime.block_on(async move {
        // Installed first, so a signal during a slow start-up also ends the process with 0.
        let shutdown = shutdown_signal()?;
        tokio::pin!(shutdown);
        let state_dir = state_dir.unwrap_or_else(|| {
            from.parent()
                .unwrap_or_else(|| std::path::Path::new(""))
                .join(".spin")
        });
        let options = Options {
            manifest: from,
            state_dir,
            cache_dir,
            durability,
            log_requests,
            runtime_config: runtime_config_file,
        };
        // Compiling may take seconds: do it off the async workers.
        let load = tokio::task::spawn_blocking(move || {
            App::load(&options, |name| std::env::var(name).ok())
        });
        let app = tokio::select! {
            () = &mut shutdown => {
                eprintln!("spin-runner: stopped during start-up");
                return Ok(());
            }
            app = load => app??,
        };
        let listener = bind(listen).await?;
        let addr = listener.local_addr()?;
        for (route, component) in app.routes() {
            eprintln!("spin-runner: route {route} -> {component}");
        }
        // The one line on stdout, the contract with whoever started us.
        let mut stdout = std::io::stdout().lock();
        writeln!(stdout, "Serving http://{addr}")?;
        stdout.flush()?;
        drop(stdout);
        serve(Arc::new(app), listener, shutdown).await?;
        eprintln!("spin-runner: stopped");
        Ok(())
    });
    // Do not wait for a compilation still running in the blocking pool.
    runtime.shutdown_background();
    result
}

/// A future that completes on SIGINT or SIGTERM.
fn shutdown_signal() -> Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{signal, SignalKind};
    let mut interrupt = signal(SignalKind::interrupt())?;
    let mut terminate = signal(SignalKind::terminate())?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}
