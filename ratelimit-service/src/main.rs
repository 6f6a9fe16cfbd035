//! `edge-ratelimit --limits limits.toml [--listen 127.0.0.1:8081] [--redis redis://...]`

use std::net::SocketAddr;
use std::path::PathBuf;

use clap::Parser;
use edge_ratelimit::{serve, Config, Limiter, Service};

/// Envoy's rate limit service (ShouldRateLimit over gRPC) on limitador.
#[derive(Parser)]
#[command(version)]
struct Args {
    /// The limits file (TOML, `[[limit]]` tables).
    #[arg(long)]
    limits: PathBuf,
    /// Address to listen on (port 0: a free one, printed on stdout).
    #[arg(long, default_value = "127.0.0.1:8081")]
    listen: SocketAddr,
    /// Keep the counters in this Redis (shared by every instance on it); in memory without.
    #[arg(long)]
    redis: Option<String>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let text = std::fs::read_to_string(&args.limits)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", args.limits.display()))?;
    let limits = Config::parse(&text)
        .map_err(|why| anyhow::anyhow!("invalid limits in {}: {why}", args.limits.display()))?;
    let limiter = Limiter::new(args.redis.as_deref(), limits).await?;
    let listener = tokio::net::TcpListener::bind(args.listen).await?;
    // The one line on stdout: where it listens (tests and `cargo xtask up` read it).
    println!("Serving grpc://{}", listener.local_addr()?);
    serve(Service::new(limiter), listener, async {
        let _ = tokio::signal::ctrl_c().await;
    })
    .await
}
