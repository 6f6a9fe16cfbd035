//! The filter's request path, timed natively with criterion: what `edge_policy` does per
//! request inside the VM, on the bench's own policy and request (`envoy/bench/wasm.yaml`,
//! `GET /api/bench`), so each lever on the filter's cost shows here as a measured figure
//! before the end-to-end bench (`cargo xtask bench`) confirms it under Envoy.
//!
//! ```sh
//! cargo bench -p edge-policy --bench request_path                          # every figure
//! cargo bench -p edge-policy --bench request_path -- --save-baseline before
//! cargo bench -p edge-policy --bench request_path -- --baseline before     # after a change
//! ```
//!
//! - `cached/rs256`: the same RS256 token on every request, so after the first the token
//!   cache answers: the request ID generated, the rate limit and the permission checked,
//!   the identity signed, the response headers computed (scenario (3) of the bench);
//! - `fresh/<alg>`: a distinct token on every request (the cache holds fewer than are sent
//!   in turn), so each one is parsed and its signature verified (scenario (4));
//! - `stage/decode`: the header map alone, as the adapter decodes it.
//!
//! Figures are the benchmark thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`), not wall time:
//! on a machine shared with builds, wall time per iteration grows with the load average
//! (several-fold here), CPU time hardly. Native code has SHA and wide multiplies the VM
//! lacks: figures under V8 are several times these (`docs/performance.md`, "Where the time
//! goes").

#![allow(clippy::unwrap_used, clippy::panic)] // bench code

use std::hint::black_box;
use std::time::Duration;

use criterion::measurement::{Measurement, ValueFormatter};
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use edge_policy::headers;
use edge_policy::jwt::Alg;
use edge_policy::testkit::request_path::RequestPath;

/// Distinct tokens sent in turn on the fresh path, and the token cache that forgets them.
const FRESH_TOKENS: usize = 32;
const FRESH_CACHE: u64 = 16;

/// The calling thread's CPU time so far.
fn thread_cpu() -> Duration {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid timespec for the call to fill.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    assert_eq!(rc, 0, "clock_gettime(CLOCK_THREAD_CPUTIME_ID)");
    Duration::new(ts.tv_sec as u64, ts.tv_nsec as u32)
}

/// Criterion measuring the benchmark thread's CPU time.
struct ThreadCpu;

impl Measurement for ThreadCpu {
    type Intermediate = Duration;
    type Value = Duration;

    fn start(&self) -> Duration {
        thread_cpu()
    }
    fn end(&self, started: Duration) -> Duration {
        thread_cpu().saturating_sub(started)
    }
    fn add(&self, a: &Duration, b: &Duration) -> Duration {
        *a + *b
    }
    fn zero(&self) -> Duration {
        Duration::ZERO
    }
    fn to_f64(&self, value: &Duration) -> f64 {
        value.as_nanos() as f64
    }
    fn formatter(&self) -> &dyn ValueFormatter {
        &CpuFormatter
    }
}

/// Nanoseconds of CPU, shown as criterion shows wall time.
struct CpuFormatter;

impl ValueFormatter for CpuFormatter {
    fn scale_values(&self, ns: f64, values: &mut [f64]) -> &'static str {
        let (factor, unit) = match ns {
            n if n < 1e3 => (1.0, "ns"),
            n if n < 1e6 => (1e-3, "µs"),
            n if n < 1e9 => (1e-6, "ms"),
            _ => (1e-9, "s"),
        };
        values.iter_mut().for_each(|v| *v *= factor);
        unit
    }

    fn scale_throughputs(
        &self,
        _ns: f64,
        throughput: &Throughput,
        values: &mut [f64],
    ) -> &'static str {
        let per_iteration = match *throughput {
            Throughput::Bits(n) | Throughput::Bytes(n) | Throughput::BytesDecimal(n) => n,
            Throughput::Elements(n) | Throughput::ElementsAndBytes { elements: n, .. } => n,
        } as f64;
        values
            .iter_mut()
            .for_each(|v| *v = per_iteration * 1e9 / *v);
        "/s of CPU"
    }

    fn scale_for_machines(&self, _values: &mut [f64]) -> &'static str {
        "ns"
    }
}

fn cached(c: &mut Criterion<ThreadCpu>) {
    let mut path = RequestPath::new(Alg::RS256, 1, None);
    path.request(&mut |_| {});
    let mut group = c.benchmark_group("cached");
    group.bench_function("rs256", |b| {
        b.iter(|| black_box(path.request(&mut |_| {})));
    });
    group.finish();
}

fn fresh(c: &mut Criterion<ThreadCpu>) {
    let mut group = c.benchmark_group("fresh");
    // A signature check takes up to a millisecond of CPU: fewer, longer samples.
    group.sample_size(30);
    for (name, alg) in [
        ("hs256", Alg::HS256),
        ("rs256", Alg::RS256),
        ("es256", Alg::ES256),
        ("eddsa", Alg::EdDSA),
    ] {
        let mut path = RequestPath::new(alg, FRESH_TOKENS, Some(FRESH_CACHE));
        group.bench_function(name, |b| {
            b.iter(|| black_box(path.request(&mut |_| {})));
        });
    }
    group.finish();
}

fn stages(c: &mut Criterion<ThreadCpu>) {
    let token = "eyJhbGciOiJSUzI1NiJ9.".repeat(32);
    let wire = headers::encode(&[
        (":authority", "127.0.0.1:8093"),
        (":path", "/api/bench"),
        (":method", "GET"),
        (":scheme", "http"),
        ("authorization", &format!("Bearer {token}")),
        ("x-forwarded-proto", "http"),
    ]);
    c.bench_function("stage/decode", |b| {
        b.iter(|| black_box(headers::decode(black_box(&wire)).map(|p| p.len())));
    });
}

criterion_group! {
    name = benches;
    config = Criterion::default().with_measurement(ThreadCpu);
    targets = cached, fresh, stages
}
criterion_main!(benches);
