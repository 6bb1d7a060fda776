//! Our own binding of the proxy-wasm ABI 0.2.1 (`proxy_abi_version_0_2_1`), in place of the
//! `proxy-wasm` SDK crate: the host imports we call, as safe wrappers that never panic, and every
//! export the SDK has (so Envoy sees the same module surface), each forwarding to the safe shell
//! in `super` or answering trivially.
//!
//! Why not the SDK: size. Its trait-object contexts keep every default trait method alive through
//! the vtables, its host-call wrappers are generic over every status, and its dispatcher keeps
//! hashbrown maps in a lazily built thread-local: ~46 KB of a module whose budget is 250 KB. It
//! also panics (killing the VM for the whole worker) on host statuses it does not expect; these
//! wrappers return them instead.
//!
//! This is the only module of the crate with `unsafe` code: raw pointers across the host
//! boundary, the `#[no_mangle]` exports and the host-allocated buffers we take ownership of.
//! Everything it hands to the rest of the shell is safe Rust.

use std::fmt;
use std::mem::MaybeUninit;
use std::ptr::{null, null_mut};

/// A host status (`WasmResult` in Envoy). Only a few values matter to us; the rest are errors.
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct Status(u32);

impl Status {
    const OK: Status = Status(0);
    pub const CAS_MISMATCH: Status = Status(8);
}

/// Same names as the SDK's `Status` debug output, so log lines read as before.
impl fmt::Debug for Status {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let name = match self.0 {
            0 => "Ok",
            1 => "NotFound",
            2 => "BadArgument",
            3 => "SerializationFailure",
            4 => "ParseFailure",
            7 => "Empty",
            8 => "CasMismatch",
            10 => "InternalFailure",
            n => return write!(f, "Status({n})"),
        };
        f.write_str(name)
    }
}

/// Log levels (the ones we use).
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum LogLevel {
    Info = 2,
    Warn = 3,
    Error = 4,
    Critical = 5,
}

/// What a stream callback tells the host.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
#[repr(u32)]
pub enum Action {
    Continue = 0,
    Pause = 1,
}

/// Host buffers we read.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Buffer {
    HttpRequestBody = 0,
    HttpCallResponseBody = 4,
    PluginConfiguration = 7,
}

/// Host header maps we read.
#[derive(Clone, Copy)]
#[repr(u32)]
pub enum Map {
    HttpRequestHeaders = 0,
    HttpCallResponseHeaders = 6,
}

const METRIC_COUNTER: u32 = 0;

// Every pointer/size pair below is wasm32 linear memory; `usize` is the ABI's i32.
#[link(wasm_import_module = "env")]
extern "C" {
    fn proxy_log(level: u32, message_data: *const u8, message_size: usize) -> u32;
    fn proxy_get_current_time_nanoseconds(return_time: *mut u64) -> u32;
    fn proxy_get_buffer_bytes(
        buffer_type: u32,
        start: usize,
        max_size: usize,
        return_buffer_data: *mut *mut u8,
        return_buffer_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_pairs(
        map_type: u32,
        return_map_data: *mut *mut u8,
        return_map_size: *mut usize,
    ) -> u32;
    fn proxy_get_header_map_value(
        map_type: u32,
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
    ) -> u32;
    fn proxy_send_local_response(
        status_code: u32,
        status_code_details_data: *const u8,
        status_code_details_size: usize,
        body_data: *const u8,
        body_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        grpc_status: i32,
    ) -> u32;
    fn proxy_http_call(
        upstream_data: *const u8,
        upstream_size: usize,
        headers_data: *const u8,
        headers_size: usize,
        body_data: *const u8,
        body_size: usize,
        trailers_data: *const u8,
        trailers_size: usize,
        timeout_ms: u32,
        return_token: *mut u32,
    ) -> u32;
    fn proxy_set_effective_context(context_id: u32) -> u32;
    fn proxy_get_shared_data(
        key_data: *const u8,
        key_size: usize,
        return_value_data: *mut *mut u8,
        return_value_size: *mut usize,
        return_cas: *mut u32,
    ) -> u32;
    fn proxy_set_shared_data(
        key_data: *const u8,
        key_size: usize,
        value_data: *const u8,
        value_size: usize,
        cas: u32,
    ) -> u32;
    fn proxy_define_metric(
        metric_type: u32,
        name_data: *const u8,
        name_size: usize,
        return_id: *mut u32,
    ) -> u32;
    fn proxy_increment_metric(metric_id: u32, offset: i64) -> u32;
}

/// Takes ownership of a buffer the host filled during a hostcall; `None` for a null pointer
/// (the host writes null for an empty value).
fn take_host_buffer(data: *mut u8, size: usize) -> Option<Vec<u8>> {
    if data.is_null() {
        return None;
    }
    // SAFETY: a non-null pointer the host returns is one it obtained from our
    // `proxy_on_memory_allocate(size)` for exactly `size` bytes (it writes the same size back)
    // and then filled: a leaked `Box<[MaybeUninit<u8>]>` of length `size` from the global
    // allocator, i.e. the allocation of a `Vec<u8>` with capacity `size`, all initialised.
    // The host hands each such buffer over once, and nothing else holds the pointer.
    Some(unsafe { Vec::from_raw_parts(data, size, size) })
}

pub fn log(level: LogLevel, message: &str) {
    // SAFETY: `message` is a live, initialised byte range for the duration of the call.
    let _ = unsafe { proxy_log(level as u32, message.as_ptr(), message.len()) };
}

/// Wall-clock time in nanoseconds since the Unix epoch.
pub fn current_time_nanos() -> Option<u64> {
    let mut t: u64 = 0;
    // SAFETY: `t` is a valid, aligned u64 for the host to write.
    let status = Status(unsafe { proxy_get_current_time_nanoseconds(&mut t) });
    (status == Status::OK).then_some(t)
}

/// Up to `max_size` bytes from `start` of a host buffer; `None` if absent or refused.
pub fn get_buffer(buffer: Buffer, start: usize, max_size: usize) -> Option<Vec<u8>> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid locals; the host writes a buffer pointer and size.
    let status = Status(unsafe {
        proxy_get_buffer_bytes(buffer as u32, start, max_size, &mut data, &mut size)
    });
    if status != Status::OK {
        return None;
    }
    take_host_buffer(data, size)
}

/// One header's value; `None` when absent (or the host refuses). Bytes that are not UTF-8 are
/// replaced (the SDK panicked on them, killing the VM).
pub fn get_header(map: Map, key: &str) -> Option<String> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: `key` is live for the call; the out-pointers are valid locals.
    let status = Status(unsafe {
        proxy_get_header_map_value(map as u32, key.as_ptr(), key.len(), &mut data, &mut size)
    });
    if status != Status::OK {
        return None;
    }
    let bytes = take_host_buffer(data, size).unwrap_or_default();
    Some(
        String::from_utf8(bytes)
            .unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned()),
    )
}

/// Every header of a map in one hostcall. Each `get_header` is a hostcall plus a call back into
/// the module to allocate the value: reading the four the webhook needs one by one cost ~6 µs of
/// Envoy CPU per request more than this (measured with scripts/bench's set-up).
pub fn get_header_pairs(map: Map) -> HeaderPairs {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    // SAFETY: the out-pointers are valid locals; the host writes a buffer pointer and size.
    let status = Status(unsafe { proxy_get_header_map_pairs(map as u32, &mut data, &mut size) });
    let bytes = if status == Status::OK {
        take_host_buffer(data, size).unwrap_or_default()
    } else {
        Vec::new()
    };
    HeaderPairs(bytes)
}

/// A header map in the ABI's serialised form (see `serialize_map`).
pub struct HeaderPairs(Vec<u8>);

impl HeaderPairs {
    /// The value of a header (names are lower case in Envoy's maps). Bytes that are not UTF-8
    /// are replaced, as in `get_header`. A malformed map reads as empty.
    pub fn get(&self, name: &str) -> Option<String> {
        let buf = self.0.as_slice();
        let u32_at = |at: usize| -> Option<usize> {
            let b: [u8; 4] = buf.get(at..at.checked_add(4)?)?.try_into().ok()?;
            usize::try_from(u32::from_le_bytes(b)).ok()
        };
        let count = u32_at(0)?;
        let mut at = count.checked_mul(8)?.checked_add(4)?;
        for i in 0..count {
            let key_len = u32_at(4 + i * 8)?;
            let value_len = u32_at(8 + i * 8)?;
            let key = buf.get(at..at.checked_add(key_len)?)?;
            let value_at = at.checked_add(key_len)?.checked_add(1)?;
            let value = buf.get(value_at..value_at.checked_add(value_len)?)?;
            if key == name.as_bytes() {
                return Some(String::from_utf8_lossy(value).into_owned());
            }
            at = value_at.checked_add(value_len)?.checked_add(1)?;
        }
        None
    }
}

/// The ABI's header-map encoding: count, then (name length, value length) pairs, then each
/// name and value followed by a NUL, all lengths u32 little-endian.
fn serialize_map(pairs: &[(&str, &str)]) -> Vec<u8> {
    let size = 4 + pairs
        .iter()
        .map(|(k, v)| k.len() + v.len() + 10)
        .sum::<usize>();
    let mut out = Vec::with_capacity(size);
    // usize is 32 bits on wasm32: the `as u32` casts are exact.
    out.extend_from_slice(&(pairs.len() as u32).to_le_bytes());
    for (k, v) in pairs {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in pairs {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Answer the current stream locally (the host sends it after this callback returns).
pub fn send_local_response(
    status: u32,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Result<(), Status> {
    let headers = serialize_map(headers);
    // SAFETY: every pointer/size pair is a live slice for the duration of the call; the details
    // are absent (null, 0). grpc_status -1: not a gRPC reply.
    let status = Status(unsafe {
        proxy_send_local_response(
            status,
            null(),
            0,
            body.as_ptr(),
            body.len(),
            headers.as_ptr(),
            headers.len(),
            -1,
        )
    });
    if status == Status::OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Dispatch an HTTP call to `cluster`; the answer arrives in `proxy_on_http_call_response` with
/// the returned token. No trailers.
pub fn http_call(
    cluster: &str,
    headers: &[(&str, &str)],
    body: Option<&[u8]>,
    timeout_ms: u32,
) -> Result<u32, Status> {
    let headers = serialize_map(headers);
    let trailers = serialize_map(&[]);
    let (body_data, body_size) = body.map_or((null(), 0), |b| (b.as_ptr(), b.len()));
    let mut token: u32 = 0;
    // SAFETY: every pointer/size pair is a live slice (or null, 0) for the duration of the
    // call; `token` is a valid local for the host to write.
    let status = Status(unsafe {
        proxy_http_call(
            cluster.as_ptr(),
            cluster.len(),
            headers.as_ptr(),
            headers.len(),
            body_data,
            body_size,
            trailers.as_ptr(),
            trailers.len(),
            timeout_ms,
            &mut token,
        )
    });
    if status == Status::OK {
        Ok(token)
    } else {
        Err(status)
    }
}

/// Make `context_id` the context later hostcalls act on (an HTTP call's answer arrives on the
/// root context that issued it in the host's eyes; replies must go to the stream).
pub fn set_effective_context(context_id: u32) -> Result<(), Status> {
    // SAFETY: plain integer argument.
    let status = Status(unsafe { proxy_set_effective_context(context_id) });
    if status == Status::OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// A shared-data value and its CAS token; `None` when absent, empty or refused.
pub fn get_shared_data(key: &str) -> Option<(Vec<u8>, u32)> {
    let mut data: *mut u8 = null_mut();
    let mut size: usize = 0;
    let mut cas: u32 = 0;
    // SAFETY: `key` is live for the call; the out-pointers are valid locals.
    let status = Status(unsafe {
        proxy_get_shared_data(key.as_ptr(), key.len(), &mut data, &mut size, &mut cas)
    });
    if status != Status::OK {
        return None;
    }
    take_host_buffer(data, size).map(|v| (v, cas))
}

/// Write a shared-data value; with `cas` only if the key's token is still that (0: always).
pub fn set_shared_data(key: &str, value: &[u8], cas: u32) -> Result<(), Status> {
    // SAFETY: `key` and `value` are live slices for the duration of the call.
    let status = Status(unsafe {
        proxy_set_shared_data(key.as_ptr(), key.len(), value.as_ptr(), value.len(), cas)
    });
    if status == Status::OK {
        Ok(())
    } else {
        Err(status)
    }
}

/// Define a counter; its id for `increment_metric`.
pub fn define_counter(name: &str) -> Result<u32, Status> {
    let mut id: u32 = 0;
    // SAFETY: `name` is live for the call; `id` is a valid local for the host to write.
    let status =
        Status(unsafe { proxy_define_metric(METRIC_COUNTER, name.as_ptr(), name.len(), &mut id) });
    if status == Status::OK {
        Ok(id)
    } else {
        Err(status)
    }
}

pub fn increment_metric(id: u32, offset: i64) {
    // SAFETY: plain integer arguments.
    let _ = unsafe { proxy_increment_metric(id, offset) };
}

// ---- exports: what the host calls ----------------------------------------------------------
//
// Booleans cross the boundary as u32 (0 = false): an `extern "C" fn(bool)` would be undefined
// behaviour if the host ever passed another value.

extern "C" {
    /// Synthesised by wasm-ld: runs the module's static constructors (wasi-libc's environment
    /// setup among them).
    fn __wasm_call_ctors();
}

/// WASI reactor entry point, called once by the host before any other export (as the SDK's
/// `main!` macro did for a cdylib).
#[no_mangle]
pub extern "C" fn _initialize() {
    // SAFETY: the host calls `_initialize` exactly once, first; the constructors must run
    // before any other code of the module, and nothing else calls them.
    unsafe { __wasm_call_ctors() };
    super::init();
}

#[no_mangle]
pub extern "C" fn proxy_abi_version_0_2_1() {}

/// The host's allocator for the buffers it returns from hostcalls (`take_host_buffer` takes them
/// back). Traps, as any allocation failure does, when memory is exhausted.
#[no_mangle]
pub extern "C" fn proxy_on_memory_allocate(size: usize) -> *mut u8 {
    Box::into_raw(Box::<[MaybeUninit<u8>]>::new_uninit_slice(size)).cast::<u8>()
}

#[no_mangle]
pub extern "C" fn proxy_on_context_create(context_id: u32, root_context_id: u32) {
    super::on_context_create(context_id, root_context_id);
}

#[no_mangle]
pub extern "C" fn proxy_on_vm_start(_context_id: u32, _vm_configuration_size: usize) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_configure(context_id: u32, _plugin_configuration_size: usize) -> u32 {
    u32::from(super::on_configure(context_id))
}

#[no_mangle]
pub extern "C" fn proxy_on_request_headers(
    context_id: u32,
    _num_headers: usize,
    end_of_stream: u32,
) -> Action {
    super::on_request_headers(context_id, end_of_stream != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_body(
    context_id: u32,
    body_size: usize,
    end_of_stream: u32,
) -> Action {
    super::on_request_body(context_id, body_size, end_of_stream != 0)
}

#[no_mangle]
pub extern "C" fn proxy_on_request_trailers(_context_id: u32, _num_trailers: usize) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_response_headers(
    _context_id: u32,
    _num_headers: usize,
    _end_of_stream: u32,
) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_response_body(
    _context_id: u32,
    _body_size: usize,
    _end_of_stream: u32,
) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_response_trailers(_context_id: u32, _num_trailers: usize) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_http_call_response(
    _context_id: u32,
    token: u32,
    num_headers: usize,
    body_size: usize,
    _num_trailers: usize,
) {
    super::on_http_call_response(token, num_headers, body_size);
}

#[no_mangle]
pub extern "C" fn proxy_on_log(context_id: u32) {
    super::on_log(context_id);
}

/// 1: done now (we never defer a context's teardown with `proxy_done`).
#[no_mangle]
pub extern "C" fn proxy_on_done(_context_id: u32) -> u32 {
    1
}

#[no_mangle]
pub extern "C" fn proxy_on_delete(context_id: u32) {
    super::on_delete(context_id);
}

// Callbacks we never ask for (no ticks, queues, gRPC, foreign functions, TCP streams). Exported
// all the same, as the SDK did, so the module's surface is what the host has always seen.

#[no_mangle]
pub extern "C" fn proxy_on_tick(_context_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_queue_ready(_context_id: u32, _queue_id: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_foreign_function(
    _context_id: u32,
    _function_id: u32,
    _arguments_size: usize,
) {
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_initial_metadata(
    _context_id: u32,
    _token: u32,
    _headers: u32,
) {
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive(_context_id: u32, _token: u32, _response_size: usize) {}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_receive_trailing_metadata(
    _context_id: u32,
    _token: u32,
    _trailers: u32,
) {
}

#[no_mangle]
pub extern "C" fn proxy_on_grpc_close(_context_id: u32, _token: u32, _status_code: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_new_connection(_context_id: u32) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_data(
    _context_id: u32,
    _data_size: usize,
    _end_of_stream: u32,
) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_downstream_connection_close(_context_id: u32, _peer_type: u32) {}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_data(
    _context_id: u32,
    _data_size: usize,
    _end_of_stream: u32,
) -> Action {
    Action::Continue
}

#[no_mangle]
pub extern "C" fn proxy_on_upstream_connection_close(_context_id: u32, _peer_type: u32) {}
