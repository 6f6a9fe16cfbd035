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
        /// Directory for state: the key-value database `sqlite_key_value.db`.
        #[arg(long, default_value = ".spin")]
        state_dir: PathBuf,
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
    runtime.block_on(async move {
        let options = Options {
            manifest: from,
            state_dir,
            cache_dir,
        };
        // Compiling may take seconds: do it off the async workers.
        let app = tokio::task::spawn_blocking(move || {
            App::load(&options, |name| std::env::var(name).ok())
        })
        .await??;
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
        serve(Arc::new(app), listener, shutdown_signal()).await?;
        eprintln!("spin-runner: stopped");
        Ok(())
    })
}

/// Completes on SIGINT or SIGTERM.
async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match (
        signal(SignalKind::interrupt()),
        signal(SignalKind::terminate()),
    ) {
        (Ok(mut int), Ok(mut term)) => {
            tokio::select! {
                _ = int.recv() => {}
                _ = term.recv() => {}
            }
        }
        _ => {
            // Without signal handlers the default action (terminate) still applies.
            std::future::pending::<()>().await;
        }
    }
}
