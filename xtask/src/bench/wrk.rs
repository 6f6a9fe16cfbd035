//! The load generator: `wrk` from Debian (installed with apt when missing), driven by a Lua
//! script that rotates tokens from per-thread files and prints its summary as JSON.

use std::fs;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use serde::Serialize;

/// The Lua script. Arguments after `--`: token-file prefix, method, path, mode (`plain`,
/// `idem`), body file or `-`, `stop` to end each thread at the end of its file (the memory
/// run) instead of starting over, and the prefix of the `Idempotency-Key`s (unique per run,
/// so a later run never replays an earlier one's keys).
const SCRIPT: &str = r#"-- cargo xtask bench: one request per token line, tokens rotated from per-thread files.
local next_id = 0
function setup(thread)
  thread:set("tid", next_id)
  next_id = next_id + 1
end

local file, method, path, idem, body, stop_at_eof, eof_marker, key_prefix
local counter = 0
local last = nil
eof = false

function init(args)
  local prefix = args[1]
  method, path, idem = args[2], args[3], args[4] == "idem"
  if args[5] ~= nil and args[5] ~= "-" then
    local b = assert(io.open(args[5], "rb"))
    body = b:read("*a")
    b:close()
  end
  stop_at_eof = args[6] == "stop"
  key_prefix = args[7] or "bench"
  file = assert(io.open(prefix .. "." .. tid .. ".txt", "r"))
  eof_marker = prefix .. "." .. tid .. ".eof"
end

function request()
  local token = file:read("*l")
  if token == nil then
    if stop_at_eof then
      if not eof then
        eof = true
        local m = io.open(eof_marker, "w")
        if m then m:write("eof\n"); m:close() end
      end
      return last
    end
    file:seek("set")
    token = file:read("*l")
  end
  local headers = { ["Authorization"] = "Bearer " .. token }
  if idem then
    counter = counter + 1
    headers["Idempotency-Key"] = string.format("%s-%d-%d", key_prefix, tid, counter)
  end
  if body ~= nil then
    headers["Content-Type"] = "application/json"
  end
  last = wrk.format(method, path, headers, body)
  return last
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"p50":%d,"p90":%d,"p99":%d,"p999":%d,"max":%d,"mean":%.1f}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, latency.mean))
end
"#;

/// Appended for the memory run: a thread whose file has ended stops itself.
const STOP_AT_EOF: &str = r#"
function response(status, headers, body)
  if eof then wrk.thread:stop() end
end
"#;

/// `wrk`, installed from Debian when missing.
pub fn ensure_installed() -> Result<PathBuf> {
    crate::debian::ensure("wrk", "wrk")
}

/// `wrk --version`'s first line.
pub fn version(bin: &Path) -> String {
    Command::new(bin)
        .arg("--version")
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines().next().map(|l| l.trim().to_owned())
        })
        .unwrap_or_default()
}

/// One load run.
#[derive(Debug, Clone)]
pub struct Load<'a> {
    /// `http://127.0.0.1:<port>`.
    pub base_url: &'a str,
    /// `GET`, `POST`.
    pub method: &'a str,
    /// The request path.
    pub path: &'a str,
    /// Token files' prefix (`<prefix>.<thread>.txt`).
    pub tokens: &'a Path,
    /// Send a fresh `Idempotency-Key` on every request.
    pub idempotency_keys: bool,
    /// What those keys start with: unique per run.
    pub key_prefix: &'a str,
    /// A JSON body file.
    pub body: Option<&'a Path>,
    /// How long (an upper bound when `stop_at_eof`).
    pub duration: Duration,
    /// Open connections.
    pub connections: u32,
    /// wrk threads (one token file each).
    pub threads: u32,
    /// The CPUs wrk is confined to (empty: any).
    pub cpus: &'a [usize],
    /// End when every thread has used its file once.
    pub stop_at_eof: bool,
}

/// wrk's summary.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Outcome {
    /// Completed requests.
    pub requests: u64,
    /// Seconds of load.
    pub seconds: f64,
    /// Requests per second.
    pub rps: f64,
    /// Responses with a status ≥ 400.
    pub non_2xx: u64,
    /// Connect, read, write errors and timeouts.
    pub socket_errors: u64,
    /// Latency percentiles, microseconds.
    pub p50_us: f64,
    /// 90th percentile.
    pub p90_us: f64,
    /// 99th percentile.
    pub p99_us: f64,
    /// 99.9th percentile.
    pub p999_us: f64,
    /// Slowest.
    pub max_us: f64,
}

/// Runs wrk, returning its summary.
pub fn run(bin: &Path, work: &Path, load: &Load<'_>) -> Result<Outcome> {
    fs::create_dir_all(work)?;
    let script = work.join(if load.stop_at_eof {
        "bench-stop.lua"
    } else {
        "bench.lua"
    });
    let text = if load.stop_at_eof {
        format!("{SCRIPT}{STOP_AT_EOF}")
    } else {
        SCRIPT.to_owned()
    };
    fs::write(&script, text)?;
    let markers: Vec<PathBuf> = (0..load.threads)
        .map(|t| {
            let mut name = load.tokens.as_os_str().to_owned();
            name.push(format!(".{t}.eof"));
            PathBuf::from(name)
        })
        .collect();
    for m in &markers {
        let _ = fs::remove_file(m);
    }
    let secs = load.duration.as_secs_f64().max(1.0).ceil() as u64;
    let mut cmd = super::pin::command(bin, load.cpus);
    cmd.arg("-t")
        .arg(load.threads.to_string())
        .arg("-c")
        .arg(load.connections.to_string())
        .arg("-d")
        .arg(format!("{secs}s"))
        .arg("--timeout")
        .arg("10s")
        .arg("-s")
        .arg(&script)
        .arg(format!("{}{}", load.base_url, load.path))
        .arg("--")
        .arg(load.tokens)
        .arg(load.method)
        .arg(load.path)
        .arg(if load.idempotency_keys {
            "idem"
        } else {
            "plain"
        })
        .arg(
            load.body
                .map_or_else(|| "-".into(), |b| b.display().to_string()),
        )
        .arg(if load.stop_at_eof { "stop" } else { "loop" })
        .arg(load.key_prefix)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    // Durations under a second: wrk only takes whole seconds, so stop it early with SIGINT
    // (it still prints its summary). The memory run stops the same way once every thread
    // has reached the end of its file.
    let mut child = cmd.spawn().context("starting wrk")?;
    let started = Instant::now();
    let short = load.duration < Duration::from_secs(1);
    loop {
        if child.try_wait()?.is_some() {
            break;
        }
        let done_early = (short && started.elapsed() >= load.duration)
            || (load.stop_at_eof && markers.iter().all(|m| m.exists()));
        if done_early {
            // SAFETY: signalling our own child.
            unsafe { libc::kill(child.id() as libc::pid_t, libc::SIGINT) };
            break;
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let out = child.wait_with_output().context("waiting for wrk")?;
    let stdout = String::from_utf8_lossy(&out.stdout);
    let Some(line) = stdout.lines().find_map(|l| l.strip_prefix("WRK_JSON ")) else {
        bail!(
            "wrk printed no summary ({}):\n{stdout}\n{}",
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    parse(line)
}

fn parse(line: &str) -> Result<Outcome> {
    let v: serde_json::Value = serde_json::from_str(line).context("parsing wrk's summary")?;
    let num = |p: &str| {
        v.pointer(p)
            .and_then(serde_json::Value::as_f64)
            .unwrap_or(0.0)
    };
    let requests = num("/requests") as u64;
    let seconds = num("/duration_us") / 1e6;
    Ok(Outcome {
        requests,
        seconds,
        rps: if seconds > 0.0 {
            requests as f64 / seconds
        } else {
            0.0
        },
        non_2xx: num("/errors/status") as u64,
        socket_errors: (num("/errors/connect")
            + num("/errors/read")
            + num("/errors/write")
            + num("/errors/timeout")) as u64,
        p50_us: num("/latency_us/p50"),
        p90_us: num("/latency_us/p90"),
        p99_us: num("/latency_us/p99"),
        p999_us: num("/latency_us/p999"),
        max_us: num("/latency_us/max"),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_scripts_summary() {
        let o = parse(r#"{"requests":1000,"duration_us":2000000,"bytes":1,"errors":{"connect":0,"read":1,"write":0,"status":3,"timeout":0},"latency_us":{"p50":100,"p90":150,"p99":300,"p999":900,"max":1200,"mean":110.5}}"#).unwrap();
        assert_eq!(o.requests, 1000);
        assert!((o.rps - 500.0).abs() < 1e-9);
        assert_eq!(o.non_2xx, 3);
        assert_eq!(o.socket_errors, 1);
        assert_eq!(o.p999_us, 900.0);
    }
}
