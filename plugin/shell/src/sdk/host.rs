//! The [`Host`] port on the proxy-wasm SDK: shared data, metrics, logs, clock, dispatch, the
//! request's head and body, the local reply, and a call's answer. Every hostcall's error is
//! handled here; none is unwrapped.

use std::rc::Rc;
use std::time::{Duration, UNIX_EPOCH};

use keygate_core::flow::{Call, Level, Response};
use keygate_core::metrics::{Gauge, Metric};
use keygate_core::reply::CONTENT_TYPE;
use keygate_core::store::{Store, StoreError};
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, MetricType, Status};

use crate::port::{DispatchRefused, Host};

/// The core's log level as the host's.
fn level(level: Level) -> LogLevel {
    match level {
        Level::Info => LogLevel::Info,
        Level::Warn => LogLevel::Warn,
        Level::Error => LogLevel::Error,
    }
}

pub fn log(level: LogLevel, msg: &str) {
    // Nowhere to report a failed log line.
    let _ = hostcalls::log(level, msg);
}

/// Bytes from the host as text, never failing: names and values we compare are ASCII, and a
/// byte that is not UTF-8 must not take the VM down.
fn lossy(bytes: Vec<u8>) -> String {
    String::from_utf8(bytes).unwrap_or_else(|e| String::from_utf8_lossy(e.as_bytes()).into_owned())
}

/// The answer to a dispatched call, read once: on a reset or a timeout Envoy calls back with no
/// headers at all (no status: no answer); of the headers, only those the core asked for
/// (`names`); the body at most one byte over `max_reply_bytes`, enough for the core to refuse it.
pub fn call_response(
    num_headers: usize,
    body_size: usize,
    max_reply_bytes: usize,
    names: &'static [&'static str],
) -> Response {
    let status = if num_headers == 0 {
        None
    } else {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
    };
    let body = if status.is_some() && body_size > 0 {
        let max = body_size.min(max_reply_bytes.saturating_add(1));
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    let headers = if status.is_some() {
        names
            .iter()
            .filter_map(|name| {
                let value = hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, name)
                    .ok()
                    .flatten()?;
                Some((*name, String::from_utf8(value).ok()?))
            })
            .collect()
    } else {
        Vec::new()
    };
    Response {
        status,
        headers,
        body,
    }
}

/// proxy-wasm shared data: one map per VM id, shared by every worker.
pub struct SharedData;

impl Store for SharedData {
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
}

/// The host as the SDK reaches it, for one context.
pub struct SdkHost {
    pub metrics: Rc<Metrics>,
    store: SharedData,
}

impl SdkHost {
    pub fn new(metrics: Rc<Metrics>) -> SdkHost {
        SdkHost {
            metrics,
            store: SharedData,
        }
    }
}

impl Host for SdkHost {
    /// Wall-clock milliseconds since the Unix epoch (0 if the host cannot tell).
    fn now_ms(&self) -> u64 {
        hostcalls::get_current_time()
            .ok()
            .and_then(|t| t.duration_since(UNIX_EPOCH).ok())
            .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
    }

    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }

    fn log(&mut self, l: Level, msg: &str) {
        log(level(l), msg);
    }

    fn count(&mut self, m: Metric, n: u64) {
        if let Some(&(_, id)) = self.metrics.ids.iter().find(|(k, _)| *k == m) {
            let _ = hostcalls::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }

    fn gauge(&mut self, g: Gauge, value: u64) {
        if let Some(&(_, id)) = self.metrics.gauges.iter().find(|(k, _)| *k == g) {
            let _ = hostcalls::record_metric(id, value);
        }
    }

    fn dispatch(&mut self, call: &Call) -> Result<u32, DispatchRefused> {
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
        .map_err(|status| match status {
            // Envoy answers a call it fails before sending (a circuit breaker on the cluster
            // open) while dispatching it, and then refuses the dispatch itself.
            Status::InternalFailure => DispatchRefused::FailedBeforeSending,
            other => DispatchRefused::Other(format!("{other:?}")),
        })
    }

    fn request_header(&mut self, name: &str) -> Option<String> {
        hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
            .ok()
            .flatten()
            .map(lossy)
    }

    fn request_headers(&mut self) -> Vec<(String, String)> {
        hostcalls::get_map_bytes(MapType::HttpRequestHeaders)
            .unwrap_or_default()
            .into_iter()
            .map(|(k, v)| (k, lossy(v)))
            .collect()
    }

    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, name, value);
    }

    fn request_body(&mut self, max: usize) -> Vec<u8> {
        hostcalls::get_buffer(BufferType::HttpRequestBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    }

    fn send_reply(&mut self, status: u16, body: &[u8]) -> bool {
        hostcalls::send_http_response(
            u32::from(status),
            vec![("content-type", CONTENT_TYPE)],
            Some(body),
        )
        .is_ok()
    }
}
