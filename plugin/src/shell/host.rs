//! Host services behind the core's ports: shared data, metrics, logs, clock.

use crate::metrics::Metric;
use crate::store::{Store, StoreError};

use super::abi::{self, LogLevel, Status};

pub fn log(level: LogLevel, msg: &str) {
    abi::log(level, msg);
}

pub fn now_ms() -> u64 {
    abi::current_time_nanos().map_or(0, |ns| ns / 1_000_000)
}

/// proxy-wasm shared data: one map per VM id, shared by every worker.
pub struct HostStore;

impl Store for HostStore {
    fn get(&self, key: &str) -> Option<(Vec<u8>, u32)> {
        abi::get_shared_data(key)
    }

    fn set(&mut self, key: &str, value: &[u8], cas: Option<u32>) -> Result<(), StoreError> {
        match abi::set_shared_data(key, value, cas.unwrap_or(0)) {
            Ok(()) => Ok(()),
            Err(Status::CAS_MISMATCH) => Err(StoreError::CasMismatch),
            Err(_) => Err(StoreError::Unavailable),
        }
    }
}

/// Envoy counter ids, defined once per configuration.
#[derive(Default)]
pub struct Metrics {
    /// (metric, Envoy metric id) for every metric the host accepted.
    ids: Vec<(Metric, u32)>,
}

impl Metrics {
    pub fn define() -> Metrics {
        let mut ids = Vec::with_capacity(Metric::ALL.len());
        for m in Metric::ALL {
            match abi::define_counter(m.name()) {
                Ok(id) => ids.push((m, id)),
                Err(e) => log(
                    LogLevel::Warn,
                    &format!("keygate: cannot define metric {}: {e:?}", m.name()),
                ),
            }
        }
        Metrics { ids }
    }

    pub fn add(&self, m: Metric, n: u64) {
        if let Some(&(_, id)) = self.ids.iter().find(|(k, _)| *k == m) {
            abi::increment_metric(id, i64::try_from(n).unwrap_or(i64::MAX));
        }
    }
}
