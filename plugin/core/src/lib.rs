//! keygate: a proxy-wasm plugin that turns Salesforce "Order activated" Outbound Messages into
//! license keys.
//!
//! This crate is the host-free core: no proxy-wasm (it is not a dependency, so no host type can
//! be named here), no I/O, no clock. It is tested natively and on wasm32. The module Envoy loads
//! is `plugin/shell` (crate `keygate`), which moves bytes between Envoy and this core.

pub mod config;
pub mod etcd;
pub mod flow;
pub mod ids;
pub mod inbound;
pub mod ledger;
pub mod license;
pub mod metrics;
pub mod products;
pub mod reply;
pub mod salesforce;
pub mod secret;
pub mod selfcheck;
pub mod soap;
pub mod store;
pub mod text;
pub mod throttle;
pub mod webhook;
pub mod xml;
