//! The proxy-wasm host calls this filter makes, with every status handled.
//!
//! The SDK's `hostcalls` wrappers `panic!` on any status they do not expect, and its
//! `String`-returning ones on any byte that is not UTF-8 (a header value may hold any byte
//! 0x80-0xFF): either kills the VM. Here each call returns the host's status as an error
//! and every value as bytes; deciding on them is `edge_policy`'s job.
//!
//! (`dispatch_http_call` and `dispatch_grpc_call` stay the SDK's: its dispatcher must record
//! the call's token to deliver the response.)
//!
//! Memory the host returns was allocated through the SDK's exported
//! `proxy_on_memory_allocate` (a `Vec<u8>` of exactly that size), so it is taken back with
//! `Vec::from_raw_parts(ptr, len, len)`, as the SDK does.

use std::ptr::{null, null_mut};

/// A host status other than `Ok` (proxy-wasm ABI 0.2: 1 not found, 2 bad argument, …).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Status(pub u32);

const OK: u32 = 0;
const NOT_FOUND: u32 = 1;
/// `proxy_set_shared_data` when the compare-and-swap value is stale.
pub const CAS_MISMATCH: Status = Status(8);

/// Header maps (proxy-wasm `MapType`): the request's, the response's, an `http_call` response's.
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Map {
    /// The request's headers.
    Request = 0,
    /// The response's headers.
    Response = 2,
    /// The headers of an `http_call` response.
    HttpCallResponse = 6,
}

/// Buffers (proxy-wasm `BufferType`).
#[derive(Debug, Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    /// The request body buffered so far.
    RequestBody = 0,
    /// The response body buffered so far.
    ResponseBody = 1,
    /// The body of an `http_call` response.
    HttpCallResponseBody = 4,
    /// The message of a `grpc_call` answer.
    GrpcReceive = 5,
    /// The plugin configuration.
    PluginConfiguration = 7,
}

#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message: *const u8, size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(out: *mut u64) -> u32;
    fn proxy_set_tick_period_milliseconds(period: u32) -> u32;
    fn proxy_get_buffer_bytes(
        buffer: u32,
        start: usize,
        max_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(map: u32, out: *mut *mut u8, out_size: *mut usize) -> u32;
    fn proxy_get_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_replace_header_map_value(
        map: u32,
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_remove_header_map_value(map: u32, key: *const u8, key_size: usize) -> u32;
    fn proxy_get_property(
        path: *const u8,
        path_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
    ) -> u32;
    fn proxy_get_shared_data(
        key: *const u8,
        key_size: usize,
        out: *mut *mut u8,
        out_size: *mut usize,
        cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key: *const u8,
        key_size: usize,
        value: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_continue_stream(stream: u32) -> u32;
    fn proxy_send_local_response(
        status: u32,
        details: *const u8,
        details_size: usize,
        body: *const u8,
        body_size: usize,
        headers: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_set_property(
        path: *const u8,
        path_size: usize,
        value: *const u8,
        value_size: usize,
    ) -> u32;
    fn proxy_define_metric(kind: u32, name: *const u8, name_size: usize, id: *mut u32) -> u32;
    fn proxy_increment_metric(id: u32, offset: i64) -> u32;
}

fn status(code: u32) -> Result<(), Status> {
    if code == OK {
        Ok(())
    } else {
        Err(Status(code))
    }
}

/// Takes ownership of a host-returned buffer.
///
/// # Safety
/// `ptr` must be null or a `len`-byte allocation made by `proxy_on_memory_allocate`.
unsafe fn owned(ptr: *mut u8, len: usize) -> Vec<u8> {
    if ptr.is_null() {
        Vec::new()
    } else {
        // SAFETY: per the function's contract.
        unsafe { Vec::from_raw_parts(ptr, len, len) }
    }
}

/// Logs at `level` (0 trace … 5 critical).
pub fn log(level: u32, message: &str) -> Result<(), Status> {
    // SAFETY: pointer and length of a live string.
    status(unsafe { proxy_log(level, message.as_ptr(), message.len()) })
}

/// Envoy's wall clock, nanoseconds since the Unix epoch.
pub fn now_nanos() -> Result<u64, Status> {
    let mut out = 0u64;
    // SAFETY: `out` outlives the call.
    status(unsafe { proxy_get_current_time_nanoseconds(&mut out) })?;
    Ok(out)
}

/// Asks for `on_tick` every `period_ms`.
pub fn set_tick_period_ms(period_ms: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_tick_period_milliseconds(period_ms) })
}

/// Up to `max` bytes of `buffer` from `start`; empty when the host has none.
pub fn buffer(buffer: Buffer, start: usize, max: usize) -> Result<Vec<u8>, Status> {
    let (mut ptr, mut len) = (null_mut(), 0usize);
    // SAFETY: out-pointers outlive the call; the host allocates through our allocator.
    let code = unsafe { proxy_get_buffer_bytes(buffer as u32, start, max, &mut ptr, &mut len) };
    match code {
        OK => Ok(unsafe { owned(ptr, len) }),
        NOT_FOUND => Ok(Vec::new()),
        other => Err(Status(other)),
    }
}

/// A header map in the host's serialized form (decode with `edge_policy::headers::decode`).
pub fn header_map(map: Map) -> Result<Vec<u8>, Status> {
    let (mut ptr, mut len) = (null_mut(), 0usize);
    // SAFETY: as for `buffer`.
    status(unsafe { proxy_get_header_map_pairs(map as u32, &mut ptr, &mut len) })?;
    Ok(unsafe { owned(ptr, len) })
}

/// One header's value, as bytes.
pub fn header(map: Map, name: &str) -> Result<Option<Vec<u8>>, Status> {
    let (mut ptr, mut len) = (null_mut(), 0usize);
    // SAFETY: as for `buffer`.
    let code = unsafe {
        proxy_get_header_map_value(map as u32, name.as_ptr(), name.len(), &mut ptr, &mut len)
    };
    match code {
        OK if ptr.is_null() => Ok(None),
        OK => Ok(Some(unsafe { owned(ptr, len) })),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Sets a header, replacing every value it had.
pub fn set_header(map: Map, name: &str, value: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_replace_header_map_value(
            map as u32,
            name.as_ptr(),
            name.len(),
            value.as_ptr(),
            value.len(),
        )
    })
}

/// Removes every value of a header.
pub fn remove_header(map: Map, name: &str) -> Result<(), Status> {
    // SAFETY: pointer and length of a live string.
    status(unsafe { proxy_remove_header_map_value(map as u32, name.as_ptr(), name.len()) })
}

/// A host property (`path` segments joined by NUL, as the ABI wants); `None` when unset.
pub fn property(path: &[&str]) -> Result<Option<Vec<u8>>, Status> {
    let joined = path.join("\0");
    let (mut ptr, mut len) = (null_mut(), 0usize);
    // SAFETY: as for `buffer`.
    let code = unsafe { proxy_get_property(joined.as_ptr(), joined.len(), &mut ptr, &mut len) };
    match code {
        OK if ptr.is_null() => Ok(None),
        OK => Ok(Some(unsafe { owned(ptr, len) })),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Sets a property of the stream: Envoy keeps it as filter state `wasm.<path>`, which
/// access logs and route header formatters (`%FILTER_STATE(wasm.<path>:PLAIN)%`) read.
pub fn set_property(path: &[&str], value: &[u8]) -> Result<(), Status> {
    let joined = path.join("\0");
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_set_property(joined.as_ptr(), joined.len(), value.as_ptr(), value.len())
    })
}

/// A shared-data value and its compare-and-swap token; `None` when absent.
pub fn shared_data(key: &str) -> Result<Option<(Vec<u8>, u32)>, Status> {
    let (mut ptr, mut len, mut cas) = (null_mut(), 0usize, 0u32);
    // SAFETY: as for `buffer`.
    let code =
        unsafe { proxy_get_shared_data(key.as_ptr(), key.len(), &mut ptr, &mut len, &mut cas) };
    match code {
        OK => Ok(Some((unsafe { owned(ptr, len) }, cas))),
        NOT_FOUND => Ok(None),
        other => Err(Status(other)),
    }
}

/// Writes a shared-data value; with `cas` (non-zero) only if nobody wrote since that read.
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    })
}

/// Resumes a request paused in a header, body or trailer callback.
pub fn resume_request() -> Result<(), Status> {
    // SAFETY: no pointers. 0 = the HTTP request stream.
    status(unsafe { proxy_continue_stream(0) })
}

/// Answers the request locally; `headers` in the serialized map form.
pub fn send_local_response(code: u16, headers: &[u8], body: &[u8]) -> Result<(), Status> {
    // SAFETY: pointers and lengths of live slices.
    status(unsafe {
        proxy_send_local_response(
            u32::from(code),
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    })
}

/// Makes later host calls act on `context_id`'s stream.
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_set_effective_context(context_id) })
}

/// Defines a counter; returns its id.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id = 0u32;
    // SAFETY: pointer and length of a live string; `id` outlives the call. Kind 0 = counter.
    status(unsafe { proxy_define_metric(0, name.as_ptr(), name.len(), &mut id) })?;
    Ok(id)
}

/// Adds `by` to a counter.
pub fn increment(id: u32, by: i64) -> Result<(), Status> {
    // SAFETY: no pointers.
    status(unsafe { proxy_increment_metric(id, by) })
}
