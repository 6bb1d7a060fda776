//! The shell on the proxy-wasm SDK: the host port's adapter (`host`), the root context (`root`:
//! configuration, counters, the self-check) and the HTTP context (`request`), which forwards
//! each callback to [`crate::stream::Stream`]. Only here is a `proxy_wasm` type named.

pub mod host;
pub mod request;
pub mod root;
