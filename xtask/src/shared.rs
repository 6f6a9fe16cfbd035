//! The state several replicas share: a Redis server (Debian's `redis-server`, append-only
//! file on) and the rate limit service (`edge-ratelimit`) keeping its counters in it. What
//! `cargo xtask up --redis` and the scale-out tests start next to the gateways and backends.

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};

use crate::process::{self, Service};
use crate::{artifacts, debian, paths};

const START_TIMEOUT: Duration = Duration::from_secs(30);

/// A `redis-server` with its data (append-only file, fsync every second) in a folder.
pub struct Redis {
    /// Where it listens.
    pub addr: SocketAddr,
    service: Service,
}

impl Redis {
    /// Starts Redis on `listen` (port 0: a free one), keeping its data in `dir`.
    pub fn start(listen: SocketAddr, dir: &Path) -> Result<Self> {
        let bin = debian::ensure("redis-server", "redis-server")?;
        let addr = if listen.port() == 0 {
            TcpListener::bind(listen)?.local_addr()?
        } else {
            listen
        };
        fs::create_dir_all(dir)?;
        let log = dir.join("redis.log");
        let mut cmd = Command::new(bin);
        cmd.args(["--bind", &addr.ip().to_string()])
            .args(["--port", &addr.port().to_string()])
            .args(["--appendonly", "yes", "--save", ""])
            .arg("--dir")
            .arg(dir)
            .stdin(Stdio::null())
            .stdout(fs::File::create(&log)?)
            .stderr(fs::File::options().append(true).open(&log)?);
        let mut service = Service::new(
            "redis",
            process::spawn(cmd).context("starting redis-server")?,
            log,
        );
        let deadline = Instant::now() + START_TIMEOUT;
        while TcpStream::connect(addr).is_err() {
            if let Some(status) = service.exited() {
                bail!("redis-server exited ({status}):\n{}", service.log_tail(20));
            }
            if Instant::now() > deadline {
                bail!("redis-server did not listen on {addr}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(Self { addr, service })
    }

    /// `redis://<addr>/0`.
    pub fn url(&self) -> String {
        format!("redis://{}/0", self.addr)
    }

    /// Spin's runtime configuration putting the component's `default` store in this
    /// Redis (what `runtime-config.toml` holds for 127.0.0.1:6379), written to `dir`.
    pub fn runtime_config(&self, dir: &Path) -> Result<PathBuf> {
        let path = dir.join("runtime-config.toml");
        fs::write(
            &path,
            format!(
                "[key_value_store.default]\ntype = \"redis\"\nurl = \"{}\"\n",
                self.url()
            ),
        )?;
        Ok(path)
    }

    /// Stops it (SIGTERM: Redis flushes its append-only file and exits).
    pub fn stop(&mut self) {
        self.service.stop(Duration::from_secs(5));
    }
}

/// The rate limit service (`edge-ratelimit`) with the repository's limits.
pub struct RateLimitService {
    /// Where it serves gRPC.
    pub addr: SocketAddr,
    service: Service,
}

impl RateLimitService {
    /// Builds it if stale and starts it on `listen` (port 0: a free one), its counters in
    /// the Redis at `redis_url`, its log in `logs`.
    pub fn start(listen: SocketAddr, redis_url: &str, logs: &Path) -> Result<Self> {
        artifacts::build_ratelimit_service()?;
        let log = logs.join("ratelimit.log");
        let mut cmd = Command::new(paths::ratelimit_bin());
        cmd.arg("--limits")
            .arg(paths::ratelimit_limits())
            .args(["--listen", &listen.to_string(), "--redis", redis_url])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(fs::File::create(&log)?);
        let mut child = process::spawn(cmd).context("starting edge-ratelimit")?;
        let stdout = child.stdout.take().context("edge-ratelimit stdout")?;
        let mut service = Service::new("ratelimit", child, log.clone());
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            let mut file = fs::OpenOptions::new().append(true).open(log).ok();
            for line in BufReader::new(stdout).lines().map_while(Result::ok) {
                if let Some(addr) = line
                    .trim()
                    .strip_prefix("Serving grpc://")
                    .and_then(|a| a.parse::<SocketAddr>().ok())
                {
                    let _ = tx.send(addr);
                }
                if let Some(f) = file.as_mut() {
                    let _ = writeln!(f, "{line}");
                }
            }
        });
        match rx.recv_timeout(START_TIMEOUT) {
            Ok(addr) => Ok(Self { addr, service }),
            Err(_) => {
                service.stop(Duration::from_secs(1));
                bail!(
                    "edge-ratelimit did not serve within {START_TIMEOUT:?}:\n{}",
                    service.log_tail(20)
                )
            }
        }
    }

    /// Stops it.
    pub fn stop(&mut self) {
        self.service.stop(Duration::from_secs(5));
    }
}

/// The Envoy cluster name of the rate limit service in the rendered configurations.
pub const RATE_LIMIT_CLUSTER: &str = "ratelimit";
/// The RLS domain of `ratelimit-service/limits.toml`.
pub const RATE_LIMIT_DOMAIN: &str = "workspace-api";

/// Gives the limits of `routes` (route name, `failure_mode`) in a filter configuration to
/// the rate limit service at [`RATE_LIMIT_CLUSTER`].
pub fn limits_through_service(filter_config: &mut serde_json::Value, routes: &[(&str, &str)]) {
    let Some(all) = filter_config["routes"].as_array_mut() else {
        return;
    };
    for route in all {
        let mode = routes
            .iter()
            .find(|(name, _)| route["name"].as_str() == Some(name))
            .map(|(_, mode)| *mode);
        if let Some(mode) = mode {
            route["rate_limit"]["service"] = serde_json::json!({
                "cluster": RATE_LIMIT_CLUSTER,
                "domain": RATE_LIMIT_DOMAIN,
                "timeout": "2s",
                "failure_mode": mode,
            });
        }
    }
}
