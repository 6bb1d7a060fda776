//! What the shell needs from its host, as one interface: the proxy-wasm SDK in Envoy
//! (`sdk::host::SdkHost`), a test double natively (`tests/stream.rs`). The stream's phase logic and
//! the command runner are written against it, so they are tested without Envoy.

use keygate_core::flow::{Call, Level};
use keygate_core::metrics::{Gauge, Metric};
use keygate_core::store::Store;

/// Why the host refused to dispatch a call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum DispatchRefused {
    /// Envoy failed the call while dispatching it, before sending anything (a circuit breaker
    /// on the cluster open, no healthy host), and then refused the dispatch.
    FailedBeforeSending,
    /// Anything else (most likely: no such cluster), with the host's status.
    Other(String),
}

pub trait Host {
    /// Wall-clock milliseconds since the Unix epoch.
    fn now_ms(&self) -> u64;
    /// Shared data, shared by every worker of this Envoy.
    fn store(&mut self) -> &mut dyn Store;
    fn log(&mut self, level: Level, msg: &str);
    fn count(&mut self, metric: Metric, n: u64);
    fn gauge(&mut self, gauge: Gauge, value: u64);
    /// Send `call` through its cluster; the host's token for its answer.
    fn dispatch(&mut self, call: &Call) -> Result<u32, DispatchRefused>;

    /// One request header as text (`None`: absent or unreadable).
    fn request_header(&mut self, name: &str) -> Option<String>;
    /// Every request header, names lower-case, values as text.
    fn request_headers(&mut self) -> Vec<(String, String)>;
    /// Set (`Some`) or remove (`None`) a request header before the request goes upstream.
    fn set_request_header(&mut self, name: &str, value: Option<&str>);
    /// The buffered request body, at most `max` bytes of it.
    fn request_body(&mut self, max: usize) -> Vec<u8>;
    /// Answer the stream locally; `false` if the host refused.
    fn send_reply(&mut self, status: u16, body: &[u8]) -> bool;
}

/// Whether the request goes on (to the route's upstream, or to the next callback) or waits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    Continue,
    Pause,
}
