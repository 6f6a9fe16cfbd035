//! The side-by-side scenarios: one Envoy per configuration under `envoy/bench/`, each
//! scenario warmed once, then measured run after run, interleaved, with Envoy and wrk pinned
//! apart where the machine allows (`pin`).

use std::path::Path;
use std::time::Duration;

use anyhow::{bail, Context, Result};
use serde_json::Value;

use super::gateway::{self, Gateway};
use super::pin::{self, Pinning};
use super::report::{self, ConcurrencyRun, Sample, ScenarioResult};
use super::tokens::{self, Family, Keys, Pool, PoolSpec};
use super::{http_full, procfs, wrk, Settings, WRK_THREADS};
use crate::paths;

/// Which Envoy configuration a scenario runs on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `baseline.yaml`: the router alone.
    Baseline,
    /// `native.yaml`: `jwt_authn` + `local_ratelimit` + `rbac`.
    Native,
    /// `floor.yaml`: the minimal proxy-wasm filter.
    Floor,
    /// `wasm.yaml`: the edge filter.
    Wasm,
}

impl Kind {
    const ALL: [Kind; 4] = [Self::Baseline, Self::Native, Self::Floor, Self::Wasm];

    fn name(self) -> &'static str {
        match self {
            Self::Baseline => "baseline",
            Self::Native => "native",
            Self::Floor => "floor",
            Self::Wasm => "wasm",
        }
    }

    /// A response header only this configuration's filter adds: its presence proves the
    /// request went through it.
    fn proof_header(self) -> Option<&'static str> {
        match self {
            Self::Baseline | Self::Native => None,
            Self::Floor => Some("x-floor"),
            Self::Wasm => Some("x-request-id"),
        }
    }
}

/// The four Envoy configurations, ready to start.
pub struct Configs {
    baseline: Value,
    native: Value,
    floor: Value,
    wasm: Value,
}

impl Configs {
    /// `envoy/bench/*.yaml` with the bench issuer's keys (every algorithm family, for the
    /// distinct-token scenarios of both chains) and the built modules; `wasm` is the edge
    /// filter's config, its policy already set, and `settings.token_cache_entries` its
    /// token cache, which the native chain's gets too.
    pub fn load(keys: &Keys, wasm: Value, settings: &Settings) -> Result<Self> {
        let mut native = gateway::load("native")?;
        gateway::set_native_jwks(
            &mut native,
            &keys.jwks(&Family::ALL)?,
            settings.token_cache_entries,
        )?;
        let mut floor = gateway::load("floor")?;
        gateway::set_wasm_module(&mut floor, &paths::floor_wasm())?;
        Ok(Self {
            baseline: gateway::load("baseline")?,
            native,
            floor,
            wasm,
        })
    }

    fn of(&self, kind: Kind) -> &Value {
        match kind {
            Kind::Baseline => &self.baseline,
            Kind::Native => &self.native,
            Kind::Floor => &self.floor,
            Kind::Wasm => &self.wasm,
        }
    }
}

/// One row of the side-by-side table.
#[derive(Debug, Clone)]
pub struct Scenario {
    key: String,
    label: String,
    kind: Kind,
    path: &'static str,
    pool: Pool,
    /// A cost-breakdown row (the edge filter with fewer checks), not a headline scenario.
    breakdown: bool,
}

fn scenario(key: &str, label: &str, kind: Kind, pool: &Pool) -> Scenario {
    Scenario {
        key: key.to_owned(),
        label: label.to_owned(),
        kind,
        path: "/api/bench",
        pool: pool.clone(),
        breakdown: false,
    }
}

/// Every scenario in table order, or those `only` names (by key); token pools are minted
/// (once, kept in `token_dir`) for the scenarios kept.
pub fn list(
    keys: &Keys,
    token_dir: &Path,
    settings: &Settings,
    only: &[String],
) -> Result<Vec<Scenario>> {
    let wanted = |key: &str| only.is_empty() || only.iter().any(|k| k == key);
    let pool = |name: &str, family: Family, tokens: u64| {
        tokens::pool(
            keys,
            token_dir,
            name,
            PoolSpec {
                family,
                tokens,
                threads: WRK_THREADS,
                distinct_users: false,
            },
        )
    };
    let cached = pool("cached-rs256", Family::RS256, 1)?;
    let mut scenarios: Vec<Scenario> = [
        ("baseline", "(1) none: Envoy, no filter", Kind::Baseline),
        (
            "native",
            "(2) native: jwt_authn + local_ratelimit + rbac (RS256, cached)",
            Kind::Native,
        ),
        (
            "floor",
            "(F) floor: minimal proxy-wasm filter (reads the headers, sets 2)",
            Kind::Floor,
        ),
        ("wasm", "(3) ours: all checks (RS256, cached)", Kind::Wasm),
    ]
    .into_iter()
    .filter(|(key, _, _)| wanted(key))
    .map(|(key, label, kind)| scenario(key, label, kind, &cached))
    .collect();
    for family in Family::ALL {
        let alg = family.alg().to_ascii_lowercase();
        let (native_key, wasm_key) = (format!("native-{alg}"), format!("wasm-{alg}"));
        if !wanted(&native_key) && !wanted(&wasm_key) {
            continue;
        }
        let tokens = settings.distinct_tokens;
        let distinct = pool(&format!("distinct-{alg}-{tokens}"), family, tokens)?;
        for (key, label, kind) in [
            (native_key, "native", Kind::Native),
            (wasm_key, "ours", Kind::Wasm),
        ] {
            if wanted(&key) {
                let label = format!("(4) {label}: distinct {} tokens", family.alg());
                scenarios.push(scenario(&key, &label, kind, &distinct));
            }
        }
    }
    for (key, label, path) in [
        (
            "wasm-jwt-only",
            "breakdown: ours, JWT + request ID + identity only",
            "/api/bench/jwt-only",
        ),
        (
            "wasm-jwt-ratelimit",
            "breakdown: ours, + rate limit (no permission)",
            "/api/bench/jwt-ratelimit",
        ),
    ] {
        if wanted(key) {
            let mut s = scenario(key, label, Kind::Wasm, &cached);
            s.path = path;
            s.breakdown = true;
            scenarios.push(s);
        }
    }
    if let Some(unknown) = only
        .iter()
        .find(|k| !scenarios.iter().any(|s| &s.key == *k))
    {
        bail!("--only: no scenario `{unknown}`");
    }
    Ok(scenarios)
}

/// What one Envoy concurrency's runs need besides the scenarios.
pub struct Bench<'a> {
    /// wrk.
    pub wrk_bin: &'a Path,
    /// Envoy.
    pub envoy_bin: &'a Path,
    /// Scratch folder (configs, logs, wrk's script).
    pub work: &'a Path,
    /// The configurations.
    pub configs: &'a Configs,
    /// Durations, runs, connections.
    pub settings: &'a Settings,
    /// Pin Envoy and wrk apart where possible.
    pub pin: bool,
}

impl Bench<'_> {
    /// Runs `scenarios` at Envoy `--concurrency` `workers`: every one warmed, then `runs`
    /// interleaved measurements.
    pub fn run_at(&self, workers: u32, scenarios: &[Scenario]) -> Result<ConcurrencyRun> {
        let settings = self.settings;
        let mut pinning = Pinning::plan(
            workers,
            &pin::usable_cpus(),
            self.pin,
            crate::debian::which("taskset").is_some(),
            settings.wrk_threads,
        );
        eprintln!(
            "xtask bench: Envoy --concurrency {workers}, {}",
            pinning.note
        );
        let load_before = report::load_average();
        let run_dir = self.work.join(format!("c{workers}"));
        let mut gateways: Vec<(Kind, Gateway)> = Vec::new();
        for kind in Kind::ALL {
            if scenarios.iter().any(|s| s.kind == kind) {
                let config = self.configs.of(kind).clone();
                let gw = Gateway::start(
                    self.envoy_bin,
                    kind.name(),
                    config,
                    workers,
                    &pinning.envoy_cpus,
                    &run_dir,
                )?;
                check_pinned(&gw, &mut pinning)?;
                gateways.push((kind, gw));
            }
        }
        let gateway_of = |kind: Kind| {
            gateways
                .iter()
                .find(|(k, _)| *k == kind)
                .map(|(_, gw)| gw)
                .context("no Envoy for the scenario")
        };
        for s in scenarios {
            sanity_check(gateway_of(s.kind)?, s)?;
        }
        // Warm every scenario once (JIT, caches, connection set-up), then measure them
        // interleaved, run after run, so a disturbance on this shared machine hits a whole
        // run rather than one scenario.
        for s in scenarios {
            self.measure(gateway_of(s.kind)?, s, &pinning, settings.warmup_s)?;
        }
        let mut samples: Vec<Vec<Sample>> = vec![Vec::new(); scenarios.len()];
        for run in 0..settings.runs {
            for (s, runs) in scenarios.iter().zip(&mut samples) {
                let sample = self.measure(gateway_of(s.kind)?, s, &pinning, settings.duration_s)?;
                eprintln!(
                    "  run {}/{} {:<20} {:>9.0} req/s  p99 {:>7.2} ms  {:>6.1} µs CPU/req",
                    run + 1,
                    settings.runs,
                    s.key,
                    sample.rps,
                    sample.p99_us / 1000.0,
                    sample.cpu_us_per_req
                );
                runs.push(sample);
            }
        }
        let filter_stats = gateway_of(Kind::Wasm)
            .map(|gw| gw.stats_containing("edge_filter"))
            .unwrap_or_default();
        Ok(ConcurrencyRun {
            envoy_concurrency: workers,
            pinning,
            load_average: [load_before, report::load_average()],
            scenarios: scenarios
                .iter()
                .zip(samples)
                .map(|(s, runs)| ScenarioResult::new(&s.key, &s.label, s.breakdown, runs))
                .collect(),
            filter_stats,
        })
    }

    fn measure(
        &self,
        gateway: &Gateway,
        s: &Scenario,
        pinning: &Pinning,
        seconds: f64,
    ) -> Result<Sample> {
        let cpu_before = procfs::cpu_seconds(gateway.pid())?;
        let outcome = wrk::run(
            self.wrk_bin,
            self.work,
            &wrk::Load {
                base_url: &gateway.url,
                method: "GET",
                path: s.path,
                tokens: &s.pool.prefix,
                idempotency_keys: false,
                key_prefix: "bench",
                body: None,
                duration: Duration::from_secs_f64(seconds),
                connections: self.settings.connections,
                threads: pinning.wrk_threads,
                cpus: &pinning.wrk_cpus,
                stop_at_eof: false,
            },
        )?;
        let cpu = procfs::cpu_seconds(gateway.pid())? - cpu_before;
        Ok(Sample::new(&outcome, cpu))
    }
}

/// Records the CPUs the kernel lets Envoy run on, and refuses a pin that did not take.
fn check_pinned(gw: &Gateway, pinning: &mut Pinning) -> Result<()> {
    let allowed = pin::cpus_allowed_of(gw.pid());
    if pinning.pinned && pin::parse_cpu_list(&allowed) != pinning.envoy_cpus {
        bail!(
            "Envoy was to run on CPU {:?} but may run on {allowed}",
            pinning.envoy_cpus
        );
    }
    pinning.envoy_cpus_allowed = allowed;
    Ok(())
}

/// One request of the scenario must pass (200) through the filter it measures: a
/// misconfigured scenario measuring 401s, or a chain without its filter, would be fast and
/// wrong.
fn sanity_check(gateway: &Gateway, s: &Scenario) -> Result<()> {
    let token = tokens::first_token(&s.pool)?;
    let (status, headers, body) = http_full(
        "GET",
        &format!("{}{}", gateway.url, s.path),
        &[("authorization", &format!("Bearer {token}"))],
        None,
    )?;
    if status != 200 {
        bail!(
            "scenario {}: GET {} answered {status}, not 200: {body}\nEnvoy log:\n{}",
            s.key,
            s.path,
            gateway.log_tail()
        );
    }
    if let Some(proof) = s.kind.proof_header() {
        if !headers.iter().any(|(name, _)| name == proof) {
            bail!(
                "scenario {}: the response has no {proof} header: the filter did not run\nEnvoy log:\n{}",
                s.key,
                gateway.log_tail()
            );
        }
    }
    Ok(())
}
