//! keygate: a proxy-wasm plugin that turns Salesforce "Order activated" Outbound Messages into
//! license keys.
//!
//! Everything outside `shell` is the host-free core: no proxy-wasm, no I/O, no clock. It is
//! tested natively and compiled to wasm32. `shell` (built only for `wasm32-wasip1`) moves bytes
//! between Envoy and the core.

pub mod config;
pub mod flow;
pub mod ids;
pub mod inbound;
pub mod ledger;
pub mod license;
pub mod metrics;
pub mod reply;
pub mod salesforce;
pub mod secret;
pub mod soap;
pub mod store;
pub mod text;
pub mod webhook;
pub mod xml;

#[cfg(target_os = "wasi")]
mod shell;
