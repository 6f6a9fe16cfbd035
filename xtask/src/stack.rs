//! The whole local stack: the backend component (under the local runner, or `spin up`) and
//! the real Envoy running the real filter in front of it.
//!
//! ```no_run
//! let stack = xtask::stack::Stack::start(Default::default());
//! println!("gateway at {}", stack.gateway_url());
//! // dropping `stack` stops both processes
//! ```

use std::fs;
use std::io::{BufRead, BufReader, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use serde_json::Value;

use crate::envoy::{self, GatewaySpec};
use crate::process::{self, Service};
use crate::{artifacts, paths};

const ANY_PORT: SocketAddr =
    SocketAddr::new(std::net::IpAddr::V4(std::net::Ipv4Addr::LOCALHOST), 0);
/// The first start compiles the component with Cranelift; later starts hit the cache.
const BACKEND_START_TIMEOUT: Duration = Duration::from_secs(300);
const ENVOY_START_TIMEOUT: Duration = Duration::from_secs(120);

/// How to start a [`Stack`]. The defaults suit tests: free ports, a fresh state folder, the
/// shipped configuration, the local runner.
#[derive(Debug, Clone)]
pub struct StackOptions {
    /// Start Envoy in front of the backend (`false`: the backend alone).
    pub envoy: bool,
    /// Envoy's `--concurrency` (worker threads).
    pub envoy_concurrency: u32,
    /// Replaces the filter's configuration JSON from `envoy/envoy.yaml`.
    pub filter_config: Option<Value>,
    /// STATIC clusters added to Envoy's configuration, e.g. a JWKS server.
    pub extra_clusters: Vec<(String, SocketAddr)>,
    /// Write the gateway's access log (JSON, with the filter's decision) next to Envoy's
    /// log; [`Stack::access_log`] reads it.
    pub access_log: bool,
    /// STATIC HTTP/2 clusters added to Envoy's configuration, e.g. a rate limit service.
    pub grpc_clusters: Vec<(String, SocketAddr)>,
    /// Other backend instances Envoy load-balances with this stack's own (round robin).
    pub extra_backends: Vec<SocketAddr>,
    /// Extra environment for the backend host, e.g. `SPIN_VARIABLE_*`.
    pub backend_env: Vec<(String, String)>,
    /// Extra environment for Envoy, e.g. a key the filter reads through `host_env_keys`.
    pub envoy_env: Vec<(String, String)>,
    /// Envoy's gateway listener.
    pub gateway_listen: SocketAddr,
    /// Envoy's admin interface.
    pub admin_listen: SocketAddr,
    /// The backend's listener.
    pub backend_listen: SocketAddr,
    /// Where the key-value store lives; `None`: a temporary folder removed on drop.
    pub state_dir: Option<PathBuf>,
    /// Serve the backend with `spin up` when `spin` is on PATH (else the local runner).
    pub prefer_spin: bool,
    /// Envoy's `--log-level`.
    pub envoy_log_level: &'static str,
    /// Which build of the filter Envoy loads (the shipped one unless a test says otherwise).
    pub filter: artifacts::FilterBuild,
    /// Arguments added to the local runner's `up` (not to `spin up`), e.g. `--durability
    /// power`; by default `--log-requests`, so a failing test's log shows every request.
    pub runner_args: Vec<String>,
}

impl Default for StackOptions {
    fn default() -> Self {
        Self {
            envoy: true,
            envoy_concurrency: 2,
            filter_config: None,
            extra_clusters: Vec::new(),
            access_log: false,
            grpc_clusters: Vec::new(),
            extra_backends: Vec::new(),
            backend_env: Vec::new(),
            envoy_env: Vec::new(),
            gateway_listen: ANY_PORT,
            admin_listen: ANY_PORT,
            backend_listen: ANY_PORT,
            state_dir: None,
            prefer_spin: false,
            envoy_log_level: "info",
            filter: artifacts::FilterBuild::Shipped,
            runner_args: vec!["--log-requests".into()],
        }
    }
}

enum StateDir {
    Temp(tempfile::TempDir),
    Kept(PathBuf),
}

impl StateDir {
    fn path(&self) -> &Path {
        match self {
            Self::Temp(dir) => dir.path(),
            Self::Kept(path) => path,
        }
    }
}

/// A running backend and, unless disabled, Envoy in front of it. Dropping it stops both.
pub struct Stack {
    options: StackOptions,
    // Field order is drop order: Envoy stops before the backend, the state folder goes last.
    envoy: Option<Service>,
    backend: Service,
    gateway: Option<SocketAddr>,
    admin: Option<SocketAddr>,
    backend_addr: SocketAddr,
    logs: PathBuf,
    state: StateDir,
}

impl Stack {
    /// Starts the stack, panicking with the processes' logs if it cannot.
    pub fn start(options: StackOptions) -> Self {
        match Self::try_start(options) {
            Ok(stack) => stack,
            Err(e) => panic!("the stack did not start: {e:#}"),
        }
    }

    /// Builds what is stale, then starts the backend and Envoy and waits until both answer.
    pub fn try_start(options: StackOptions) -> Result<Self> {
        artifacts::build_backend()?;
        let envoy_bin = if options.envoy {
            options.filter.build()?;
            Some(envoy::ensure_installed()?)
        } else {
            None
        };
        let state = match &options.state_dir {
            Some(dir) => {
                fs::create_dir_all(dir)?;
                StateDir::Kept(dir.clone())
            }
            None => StateDir::Temp(
                tempfile::Builder::new()
                    .prefix("workspace-api-")
                    .tempdir()?,
            ),
        };
        let logs = match &state {
            StateDir::Temp(dir) => dir.path().to_path_buf(),
            StateDir::Kept(dir) => dir.join("logs"),
        };
        fs::create_dir_all(&logs)?;
        let (backend, backend_addr) = start_backend(&options, state.path(), &logs, false)?;
        let mut stack = Self {
            options,
            envoy: None,
            backend,
            gateway: None,
            admin: None,
            backend_addr,
            logs,
            state,
        };
        if let Some(bin) = envoy_bin {
            let (service, gateway, admin) =
                start_envoy(&bin, &stack.options, backend_addr, &stack.logs)?;
            stack.envoy = Some(service);
            stack.gateway = Some(gateway);
            stack.admin = Some(admin);
        }
        Ok(stack)
    }

    /// The gateway (Envoy listener) as `http://127.0.0.1:<port>`.
    pub fn gateway_url(&self) -> String {
        match self.gateway {
            Some(addr) => format!("http://{addr}"),
            None => panic!("this stack was started without Envoy"),
        }
    }

    /// The backend, bypassing the gateway.
    pub fn backend_url(&self) -> String {
        format!("http://{}", self.backend_addr)
    }

    /// Envoy's admin interface.
    pub fn admin_url(&self) -> String {
        match self.admin {
            Some(addr) => format!("http://{addr}"),
            None => panic!("this stack was started without Envoy"),
        }
    }

    /// The backend's address.
    pub fn backend_addr(&self) -> SocketAddr {
        self.backend_addr
    }

    /// The gateway's address, when Envoy runs.
    pub fn gateway_addr(&self) -> Option<SocketAddr> {
        self.gateway
    }

    /// The state folder (holds `sqlite_key_value.db`).
    pub fn state_dir(&self) -> &Path {
        self.state.path()
    }

    /// Envoy's process ID, when it runs (for CPU and memory measurements).
    pub fn envoy_pid(&self) -> Option<u32> {
        self.envoy.as_ref().map(Service::pid)
    }

    /// The backend host's process ID.
    pub fn backend_pid(&self) -> u32 {
        self.backend.pid()
    }

    /// Envoy's log so far.
    pub fn envoy_log(&self) -> String {
        self.envoy
            .as_ref()
            .map(|s| fs::read_to_string(&s.log).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The gateway's access log so far (with [`StackOptions::access_log`]), one JSON object
    /// per line.
    pub fn access_log(&self) -> String {
        self.envoy
            .as_ref()
            .and_then(|s| s.log.parent().map(|logs| logs.join("access.log")))
            .map(|path| fs::read_to_string(path).unwrap_or_default())
            .unwrap_or_default()
    }

    /// The backend host's log so far.
    pub fn backend_log(&self) -> String {
        fs::read_to_string(&self.backend.log).unwrap_or_default()
    }

    /// One of Envoy's stats by its full name (`cluster.backend.upstream_rq_total`), if defined.
    pub fn stat(&self, name: &str) -> Option<u64> {
        let url = format!(
            "{}/stats?format=json&filter={}",
            self.admin_url(),
            percent_encode(&format!("^{}$", regex_escape(name)))
        );
        let json: Value = serde_json::from_str(&http_get(&url).ok()?.1).ok()?;
        json["stats"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == name)?["value"]
            .as_u64()
    }

    /// Starts the backend host again, on the same address (Envoy keeps pointing at it) and
    /// the same state folder, once the previous one has exited (one still running is
    /// stopped first); its log continues the previous one. Tests kill the backend with
    /// SIGKILL through [`Stack::backend_pid`], then call this.
    pub fn restart_backend(&mut self) -> Result<()> {
        self.backend.stop(Duration::from_secs(5));
        let mut options = self.options.clone();
        options.backend_listen = self.backend_addr;
        let (backend, _) = start_backend(&options, self.state.path(), &self.logs, true)?;
        self.backend = backend;
        Ok(())
    }

    /// Checks that both processes are still running.
    pub fn check_alive(&mut self) -> Result<()> {
        for service in self
            .envoy
            .iter_mut()
            .chain(std::iter::once(&mut self.backend))
        {
            if let Some(status) = service.exited() {
                bail!(
                    "{} exited ({status}):\n{}",
                    service.name,
                    service.log_tail(40)
                );
            }
        }
        Ok(())
    }
}

impl Drop for Stack {
    fn drop(&mut self) {
        if std::thread::panicking() {
            for service in self.envoy.iter().chain(std::iter::once(&self.backend)) {
                eprintln!(
                    "--- last lines of {} ({}):\n{}",
                    service.name,
                    service.log.display(),
                    service.log_tail(30)
                );
            }
        }
    }
}

/// Starts the backend host; `append` continues its log instead of starting a new one.
fn start_backend(
    options: &StackOptions,
    state: &Path,
    logs: &Path,
    append: bool,
) -> Result<(Service, SocketAddr)> {
    let spin = options.prefer_spin.then(|| which("spin")).flatten();
    let (name, mut cmd) = match &spin {
        Some(spin) => ("spin up", Command::new(spin)),
        None => {
            let mut cmd = Command::new(paths::runner_bin());
            cmd.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
            cmd.args(["up"]).args(&options.runner_args);
            ("backend", cmd)
        }
    };
    if spin.is_some() {
        cmd.arg("up");
    }
    cmd.arg("--from")
        .arg(paths::spin_manifest())
        .arg("--listen")
        .arg(options.backend_listen.to_string())
        .arg("--state-dir")
        .arg(state)
        .current_dir(paths::root())
        .env("SPIN_VARIABLE_GATEWAY_HMAC_KEYS", dev_hmac_key()?)
        .envs(options.backend_env.iter().cloned())
        .stdin(Stdio::null())
        .stdout(Stdio::piped());
    let log = logs.join("backend.log");
    cmd.stderr(
        fs::OpenOptions::new()
            .create(true)
            .write(true)
            .append(append)
            .truncate(!append)
            .open(&log)?,
    );
    let mut child = process::spawn(cmd).with_context(|| format!("starting {name}"))?;
    let stdout = child.stdout.take().context("backend stdout")?;
    let mut service = Service::new(
        if spin.is_some() { "spin" } else { "backend" },
        child,
        log.clone(),
    );
    let (tx, rx) = mpsc::channel();
    let out_log = log.clone();
    std::thread::spawn(move || {
        let mut file = fs::OpenOptions::new().append(true).open(out_log).ok();
        let mut tx = Some(tx);
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if let (Some(addr), Some(sender)) = (serving_addr(&line), tx.as_ref()) {
                let _ = sender.send(addr);
                tx = None;
            }
            if let Some(f) = file.as_mut() {
                let _ = writeln!(f, "{line}");
            }
        }
    });
    let deadline = Instant::now() + BACKEND_START_TIMEOUT;
    loop {
        match rx.recv_timeout(Duration::from_millis(100)) {
            Ok(addr) => return Ok((service, addr)),
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                service.stop(Duration::from_secs(1));
                bail!(
                    "{name} closed its output before serving:\n{}",
                    service.log_tail(40)
                );
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
        }
        if let Some(status) = service.exited() {
            bail!(
                "{name} exited ({status}) before serving:\n{}",
                service.log_tail(40)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{name} did not serve within {BACKEND_START_TIMEOUT:?}:\n{}",
                service.log_tail(40)
            );
        }
    }
}

/// `Serving http://127.0.0.1:3000` (printed by the runner and by `spin up`).
fn serving_addr(line: &str) -> Option<SocketAddr> {
    line.trim()
        .strip_prefix("Serving http://")?
        .trim_end_matches('/')
        .parse()
        .ok()
}

fn start_envoy(
    bin: &Path,
    options: &StackOptions,
    backend: SocketAddr,
    logs: &Path,
) -> Result<(Service, SocketAddr, SocketAddr)> {
    let spec = GatewaySpec {
        listen: options.gateway_listen,
        admin: options.admin_listen,
        backend,
        filter_wasm: options.filter.wasm(),
        filter_config: options.filter_config.clone(),
        extra_clusters: options.extra_clusters.clone(),
        access_log: options.access_log.then(|| logs.join("access.log")),
        grpc_clusters: options.grpc_clusters.clone(),
        extra_backends: options.extra_backends.clone(),
    };
    let config_path = logs.join("envoy.json");
    fs::write(
        &config_path,
        serde_json::to_vec_pretty(&envoy::render(&spec)?)?,
    )?;
    let admin_file = logs.join("envoy-admin-address");
    let _ = fs::remove_file(&admin_file);
    let log = logs.join("envoy.log");
    let mut cmd = Command::new(bin);
    cmd.arg("-c")
        .arg(&config_path)
        .arg("--concurrency")
        .arg(options.envoy_concurrency.to_string())
        // Several Envoys run side by side in tests; hot restart would make them share memory.
        .arg("--disable-hot-restart")
        .arg("--admin-address-path")
        .arg(&admin_file)
        .arg("--log-level")
        .arg(options.envoy_log_level)
        // Access log lines reach the file within 200 ms rather than Envoy's default 10 s.
        .arg("--file-flush-interval-msec")
        .arg("200")
        .envs(options.envoy_env.iter().cloned())
        .current_dir(paths::root())
        .stdin(Stdio::null())
        .stdout(fs::File::create(&log)?)
        .stderr(fs::File::options().append(true).open(&log)?);
    let mut service = Service::new("envoy", process::spawn(cmd).context("starting envoy")?, log);
    let deadline = Instant::now() + ENVOY_START_TIMEOUT;
    let admin = wait_for(&mut service, deadline, || {
        fs::read_to_string(&admin_file)
            .ok()
            .and_then(|s| s.trim().parse::<SocketAddr>().ok())
    })?;
    wait_for(&mut service, deadline, || {
        http_get(&format!("http://{admin}/ready"))
            .ok()
            .filter(|(status, _)| *status == 200)
    })?;
    let (_, listeners) = http_get(&format!("http://{admin}/listeners?format=json"))?;
    let gateway = gateway_port(&listeners).context("envoy has no `gateway` listener")?;
    Ok((
        service,
        SocketAddr::new(options.gateway_listen.ip(), gateway),
        admin,
    ))
}

/// Polls `probe` until it yields, the process exits, or the deadline passes.
fn wait_for<T>(
    service: &mut Service,
    deadline: Instant,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    loop {
        if let Some(value) = probe() {
            return Ok(value);
        }
        if let Some(status) = service.exited() {
            bail!(
                "{} exited ({status}) during start-up:\n{}",
                service.name,
                service.log_tail(40)
            );
        }
        if Instant::now() > deadline {
            bail!(
                "{} was not ready in time:\n{}",
                service.name,
                service.log_tail(40)
            );
        }
        std::thread::sleep(Duration::from_millis(25));
    }
}

fn gateway_port(listeners: &str) -> Option<u16> {
    let json: Value = serde_json::from_str(listeners).ok()?;
    let status = json["listener_statuses"]
        .as_array()?
        .iter()
        .find(|l| l["name"] == "gateway")?;
    status
        .pointer("/local_address/socket_address/port_value")?
        .as_u64()
        .and_then(|p| u16::try_from(p).ok())
}

/// A plain GET for admin and readiness probes: `(status, body)`.
pub fn http_get(url: &str) -> Result<(u16, String)> {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(5)))
        .build()
        .into();
    let mut response = agent
        .get(url)
        .call()
        .map_err(|e| anyhow!("GET {url}: {e}"))?;
    let status = response.status().as_u16();
    let body = response
        .body_mut()
        .read_to_string()
        .map_err(|e| anyhow!("GET {url}: {e}"))?;
    Ok((status, body))
}

/// The local-only gateway HMAC key from `dev/`.
pub fn dev_hmac_key() -> Result<String> {
    let path = paths::dev_hmac_key();
    Ok(fs::read_to_string(&path)
        .with_context(|| format!("reading {}", path.display()))?
        .trim()
        .to_owned())
}

fn which(program: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|dir| Path::new(dir).join(program))
        .find(|p| p.is_file())
}

fn percent_encode(text: &str) -> String {
    text.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() || b == b'_' {
                (b as char).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn regex_escape(name: &str) -> String {
    name.chars()
        .flat_map(|c| {
            if c.is_ascii_alphanumeric() || c == '_' {
                vec![c]
            } else {
                vec!['\\', c]
            }
        })
        .collect()
}
