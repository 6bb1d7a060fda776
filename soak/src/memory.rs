//! Envoy's memory over a soak: each Envoy's resident set sampled every few seconds with the
//! messages acked so far. A restart is a new process, so growth is measured per process lifetime:
//! from its first sample at least [`WARM_UP_S`] into its life to its last: in KiB, and per 10 000
//! messages acked meanwhile. Each Envoy's memory steps up once by 10–25 MiB some time after its
//! warm-up (the wasm VMs' linear memory grows to the largest message's needs and never shrinks,
//! V8 tiers up), so a rate is only read from a lifetime with at least [`MIN_ACKS`] acks, where such
//! a step does not pass for a leak; every lifetime is held to the absolute bound too.

use keygate_e2e::Gateway;
use serde_json::{json, Value};

const WARM_UP_S: f64 = 30.0;
const MIN_ACKS: usize = 1000;

#[derive(Debug, Clone, Copy)]
struct Sample {
    pid: u32,
    at_s: f64,
    acks: usize,
    rss_kib: u64,
}

#[derive(Default)]
pub struct Memory {
    samples: Vec<Sample>,
}

/// One Envoy process's stretch after warm-up.
#[derive(Debug, Clone, Copy)]
pub struct Lifetime {
    pub pid: u32,
    pub start_kib: u64,
    pub warm_kib: u64,
    pub end_kib: u64,
    pub acks: usize,
    pub growth_per_10k_kib: Option<f64>,
}

impl Lifetime {
    /// KiB grown after the warm-up (0 if it shrank).
    pub fn growth_kib(&self) -> u64 {
        self.end_kib.saturating_sub(self.warm_kib)
    }
}

/// Resident memory of a process, in KiB (`VmRSS`).
fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

impl Memory {
    pub fn sample(&mut self, gateways: &[Option<Gateway>], at_s: f64, acks: usize) {
        for g in gateways.iter().flatten() {
            let pid = g.envoy_pid();
            if let Some(rss_kib) = rss_kib(pid) {
                self.samples.push(Sample {
                    pid,
                    at_s,
                    acks,
                    rss_kib,
                });
            }
        }
    }

    pub fn lifetimes(&self) -> Vec<Lifetime> {
        let mut pids: Vec<u32> = self.samples.iter().map(|s| s.pid).collect();
        pids.dedup();
        pids.sort_unstable();
        pids.dedup();
        pids.into_iter()
            .filter_map(|pid| {
                let mine: Vec<&Sample> = self.samples.iter().filter(|s| s.pid == pid).collect();
                let (first, last) = (mine.first()?, mine.last()?);
                let warm = mine
                    .iter()
                    .find(|s| s.at_s - first.at_s >= WARM_UP_S)
                    .copied()
                    .copied();
                let (warm_kib, acks, growth) = match warm {
                    Some(w) => {
                        let acks = last.acks.saturating_sub(w.acks);
                        let growth = (acks >= MIN_ACKS).then(|| {
                            (last.rss_kib as f64 - w.rss_kib as f64) * 10_000.0 / acks as f64
                        });
                        (w.rss_kib, acks, growth)
                    }
                    None => (last.rss_kib, 0, None),
                };
                Some(Lifetime {
                    pid,
                    start_kib: first.rss_kib,
                    warm_kib,
                    end_kib: last.rss_kib,
                    acks,
                    growth_per_10k_kib: growth,
                })
            })
            .collect()
    }

    /// The most any lifetime grew after its warm-up, in KiB.
    pub fn max_growth_kib(&self) -> u64 {
        self.lifetimes()
            .iter()
            .map(Lifetime::growth_kib)
            .max()
            .unwrap_or(0)
    }

    /// The largest growth rate of any lifetime long enough to say something.
    pub fn max_growth_per_10k_kib(&self) -> Option<f64> {
        self.lifetimes()
            .iter()
            .filter_map(|l| l.growth_per_10k_kib)
            .reduce(f64::max)
    }

    pub fn to_json(&self) -> Value {
        let lifetimes: Vec<Value> = self
            .lifetimes()
            .iter()
            .map(|l| {
                json!({"pid": l.pid, "start_kib": l.start_kib, "after_warm_up_kib": l.warm_kib, "end_kib": l.end_kib,
                       "acks_after_warm_up": l.acks, "growth_per_10k_messages_kib": l.growth_per_10k_kib})
            })
            .collect();
        json!({"processes": lifetimes, "max_growth_kib": self.max_growth_kib(),
               "max_growth_per_10k_messages_kib": self.max_growth_per_10k_kib()})
    }

    /// One line for a person: the longest-lived process's start, warm and end, and the max growth.
    pub fn summary(&self) -> String {
        let lifetimes = self.lifetimes();
        let longest = lifetimes.iter().max_by_key(|l| l.acks);
        match longest {
            Some(l) => format!(
                "{} Envoy process(es); the longest-lived {} KiB at start, {} after warm-up, {} at its end ({} acks); growth after warm-up at most {} KiB, {} KiB per 10 000 messages",
                lifetimes.len(),
                l.start_kib,
                l.warm_kib,
                l.end_kib,
                l.acks,
                self.max_growth_kib(),
                self.max_growth_per_10k_kib().map_or(format!("(no lifetime with {MIN_ACKS} acks to say)"), |g| format!("{g:.0}"))
            ),
            None => "no sample".to_owned(),
        }
    }
}
