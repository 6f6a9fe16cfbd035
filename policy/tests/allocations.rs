//! Allocations per request on the filter's request path, counted by a global allocator: the
//! bench's request (`GET /api/bench`, cached RS256 token, request ID generated, rate limit,
//! permission, identity signed) through `edge_policy::testkit::request_path`, stage by stage.
//! Inside the VM every allocation is dlmalloc in linear memory, and each value the host
//! returns is one more; fewer allocations is one of the levers on the filter's cost.
//!
//! The cached path's count may only go down: [`CACHED_CEILING`] is the figure the baseline in
//! `docs/performance.md` records, and a change that adds allocations fails here. A change that
//! removes some lowers the ceiling with it. `cargo test -p edge-policy --test allocations --
//! --nocapture` prints the table.

#![cfg(not(target_arch = "wasm32"))]
#![allow(clippy::unwrap_used, clippy::panic)] // test code

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;

use edge_policy::jwt::Alg;
use edge_policy::testkit::request_path::{RequestPath, Stage};

/// Allocations (calls to `alloc` and `realloc`) per cached request, at most.
const CACHED_CEILING: u64 = 50;

thread_local! {
    // `const` thread-locals of `Copy` types need no lazy initialization nor destructor, so
    // the allocator may read them without allocating itself.
    static COUNTING: Cell<bool> = const { Cell::new(false) };
    static CALLS: Cell<u64> = const { Cell::new(0) };
    static BYTES: Cell<u64> = const { Cell::new(0) };
}

/// Counts this thread's allocations while `COUNTING` is set.
struct Counting;

fn count(bytes: usize) {
    let _ = COUNTING.try_with(|on| {
        if on.get() {
            let _ = CALLS.try_with(|c| c.set(c.get() + 1));
            let _ = BYTES.try_with(|b| b.set(b.get() + bytes as u64));
        }
    });
}

// SAFETY: every call is forwarded to the system allocator unchanged.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        count(layout.size());
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        count(new_size);
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

fn snapshot() -> (u64, u64) {
    (CALLS.with(Cell::get), BYTES.with(Cell::get))
}

/// Allocations and bytes per request, by stage, over `requests` requests (after one that
/// warms the token cache and the rate-limit slot).
fn per_request(path: &mut RequestPath, requests: u64) -> [(Stage, f64, f64); 3] {
    path.request(&mut |_| {});
    let mut totals = [(0u64, 0u64); 3];
    let mut last = (0, 0);
    COUNTING.with(|c| c.set(true));
    for _ in 0..requests {
        path.request(&mut |stage| {
            let now = snapshot();
            let slot = match stage {
                Stage::Start => None,
                Stage::Decoded => Some(0),
                Stage::Decided => Some(1),
                Stage::Responded => Some(2),
            };
            if let Some(i) = slot {
                totals[i].0 += now.0 - last.0;
                totals[i].1 += now.1 - last.1;
            }
            last = now;
        });
    }
    COUNTING.with(|c| c.set(false));
    let per = |(calls, bytes): (u64, u64)| {
        (
            calls as f64 / requests as f64,
            bytes as f64 / requests as f64,
        )
    };
    [
        (Stage::Decoded, per(totals[0]).0, per(totals[0]).1),
        (Stage::Decided, per(totals[1]).0, per(totals[1]).1),
        (Stage::Responded, per(totals[2]).0, per(totals[2]).1),
    ]
}

fn print(what: &str, stages: &[(Stage, f64, f64); 3]) -> f64 {
    let total: f64 = stages.iter().map(|s| s.1).sum();
    let bytes: f64 = stages.iter().map(|s| s.2).sum();
    println!("{what}: {total:.1} allocations, {bytes:.0} bytes per request");
    for (stage, calls, bytes) in stages {
        let name = match stage {
            Stage::Start | Stage::Decoded => "decode the header map",
            Stage::Decided => "Worker::on_headers",
            Stage::Responded => "Worker::response_headers",
        };
        println!("  {name:<26} {calls:>6.1} allocations {bytes:>8.0} bytes");
    }
    total
}

#[test]
fn a_cached_request_allocates_no_more_than_the_baseline() {
    let mut cached = RequestPath::new(Alg::RS256, 1, None);
    let stages = per_request(&mut cached, 200);
    let total = print("cached RS256 token", &stages);
    let mut fresh = RequestPath::new(Alg::RS256, 8, Some(4));
    print(
        "distinct RS256 tokens (cache miss)",
        &per_request(&mut fresh, 16),
    );
    assert!(
        total <= CACHED_CEILING as f64,
        "a cached request now makes {total:.1} allocations, more than the {CACHED_CEILING} of the baseline (docs/performance.md)"
    );
}
