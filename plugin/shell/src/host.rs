//! Host services behind the core's ports: shared data, metrics, logs, clock. Every hostcall's
//! error is handled here; none is unwrapped.

use std::time::UNIX_EPOCH;

use std::time::Duration;

use keygate_core::flow::{Call, Level};
use keygate_core::metrics::{Gauge, Metric};
use keygate_core::store::{Store, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{LogLevel, MetricType, Status};

/// The core's log level as the host's.
pub fn level(level: Level) -> LogLevel {
    match level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

/// Dispatch one of the core's calls through its Envoy cluster; the host's token for it.
pub fn dispatch(call: &Call) -> Result<u32, Status> {
    let mut headers: Vec<(&str, &str)> = vec![
        (":method", call.method),
        (":path", &call.path),
        (":authority", &call.authority),
    ];
    headers.extend(call.headers.iter().map(|(k, v)| (*k, v.as_str())));
    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
    hostcalls::dispatch_http_call(
        &call.cluster,
        headers,
        body,
        Vec::new(),
        Duration::from_millis(call.timeout_ms),
    )
}

pub fn log(level: LogLevel, msg: &str) {
    // Nowhere to report a failed log line.
    let _ = hostcalls::log(level, msg);
}

/// Wall-clock milliseconds since the Unix epoch (0 if the host cannot tell).
pub fn now_ms() -> u64 {
    hostcalls::get_current_time()
        .ok()
        .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// Bytes from the host as text, never failing: names and values we compare are ASCII, and a
/// byte that is not UTF-8 must not take the VM down.
pub fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// proxy-wasm shared data: one map per VM id, shared by every worker.
pub struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        match hostcalls::get_shared_data(key) {
            Ok((Some(value), cas)) => Some((value, cas.unwrap_or(0))),
            _ => None,
        }
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match hostcalls::set_shared_data(key, Some(value), cas) {
            Ok(()) => Ok(()),
            Err(Status::CasMismatch) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// Envoy counter and gauge ids, defined once per configuration.
#[derive(Default)]
pub struct Metrics {
    /// (metric, Envoy metric id) for every metric the host accepted.
    ids: Vec<(Metric, u32)>,
    gauges: Vec<(Gauge, u32)>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let mut ids = Vec::with_capacity(Metric::ALL.len());
        for m in Metric::ALL {
            match hostcalls::define_metric(MetricType::Counter, m.name()) {
                Ok(id) => ids.push((m, id)),
                Err(e) => log(
                    LogLevel::Warn,
                    &format!("keygate: cannot define metric {}: {e:?}", m.name()),
                ),
            }
        }
        let mut gauges = Vec::with_capacity(Gauge::ALL.len());
        for g in Gauge::ALL {
            match hostcalls::define_metric(MetricType::Gauge, g.name()) {
                Ok(id) => gauges.push((g, id)),
                Err(e) => log(
                    LogLevel::Warn,
                    &format!("keygate: cannot define metric {}: {e:?}", g.name()),
                ),
            }
        }
        Metrics { ids, gauges }
    }

    pub fn set(&self, g: Gauge, value: u64) {
        if let Some(&(_, id)) = self.gauges.iter().find(|(k, _)| *k == g) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    pub fn add(&self, m: Metric, n: u64) {
        if let Some(&(_, id)) = self.ids.iter().find(|(k, _)| *k == m) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
