//! `spin-runner up`: the local stand-in for `spin up`.

use std::io::Write;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
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
    Up {
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
    },
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("spin-runner: error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(cli: Cli) -> Result<()> {
    let Command::Up {
        from,
        listen,
        state_dir,
        cache_dir,
    } = cli.command;
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
