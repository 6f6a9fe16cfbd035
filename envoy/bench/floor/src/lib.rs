//! The bench's floor: a proxy-wasm filter that does the least a filter in the edge filter's
//! place must do on every request, and nothing else. It reads the request headers once
//! (one host call copying the whole map into the VM, as the edge filter does), sets one
//! request header and one response header. What it costs over Envoy with no filter is the
//! price of the proxy-wasm interface itself on the V8 runtime: creating the request
//! context, entering the VM for each callback (headers, response headers, log, done) and
//! three host calls. `cargo xtask bench` runs it on the same route as the edge filter
//! (`envoy/bench/floor.yaml`); see `docs/performance.md`, "Floor".
//!
//! The header map is read straight from the ABI, as the edge filter reads it: the SDK's
//! `get_map_bytes` would also copy every header into a `String` and a `Vec` of its own, work
//! the edge filter does not do. Headers are set with the SDK's call, which is one host call
//! (it traps on a status other than `Ok`, which Envoy does not return for these maps in
//! these callbacks; this module is a measuring stick, never deployed).

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType, MapType};

/// The request header the floor sets: how many headers it read.
pub const REQUEST_HEADER: &str = "x-floor-headers";
/// The response header the floor sets; the bench checks it to know the floor ran.
pub const RESPONSE_HEADER: &str = "x-floor";

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| Box::new(FloorRoot));
}}

struct FloorRoot;

impl Context for FloorRoot {}

impl RootContext for FloorRoot {
    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Floor))
    }
}

struct Floor;

impl Context for Floor {}

impl HttpContext for Floor {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let count = request_headers().map_or(0, |map| header_count(&map));
        let value = count.to_string();
        let _ = hostcalls::set_map_value_bytes(
            MapType::HttpRequestHeaders,
            REQUEST_HEADER,
            Some(value.as_bytes()),
        );
        Action::Continue
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = hostcalls::set_map_value_bytes(
            MapType::HttpResponseHeaders,
            RESPONSE_HEADER,
            Some(b"1"),
        );
        Action::Continue
    }
}

/// The number of pairs of a serialized header map (its first little-endian `u32`).
fn header_count(map: &[u8]) -> u32 {
    map.first_chunk::<4>().map_or(0, |b| u32::from_le_bytes(*b))
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_get_header_map_pairs(map: MapType, out: *mut *mut u8, out_size: *mut usize) -> u32;
}

/// The request's header map as the host serializes it; `None` when the host refuses.
fn request_headers() -> Option<Vec<u8>> {
    let mut data: *mut u8 = std::ptr::null_mut();
    let mut size = 0usize;
    // SAFETY: the host writes a pointer and a length it allocated through the SDK's exported
    // `proxy_on_memory_allocate`, a `Vec<u8>` of exactly that length, which is taken back as
    // such (as the SDK itself does).
    unsafe {
        let status = proxy_get_header_map_pairs(MapType::HttpRequestHeaders, &mut data, &mut size);
        if status != 0 || data.is_null() {
            return None;
        }
        Some(Vec::from_raw_parts(data, size, size))
    }
}
