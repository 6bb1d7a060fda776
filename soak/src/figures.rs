//! The soak's figures, printed for a person and written as JSON: what was processed, how fast it
//! was acked under faults, how often messages were redelivered, which faults were injected, the
//! invariants' counts (duplicates and lost must be 0), Envoy's memory at start, after warm-up and
//! at the end, etcd's keys, and the most license calls the license server saw at once against
//! the ceiling the shipped config sets.

use std::collections::BTreeMap;

use serde_json::{json, Value};

use crate::book::Book;
use crate::invariants::Verdict;
use crate::simulator::Traffic;

pub struct Report<'a> {
    pub seed: u64,
    pub minutes: f64,
    pub ledger: &'static str,
    pub replicas: usize,
    pub book: &'a Book,
    pub traffic: &'a Traffic,
    pub injected: &'a BTreeMap<&'static str, u32>,
    pub acks_in_fault_phase: usize,
    pub fault_phase_s: f64,
    pub settled_s: f64,
    pub memory: &'a crate::memory::Memory,
    pub etcd_keys: Option<usize>,
    pub license_max_in_flight: u64,
    pub license_ceiling: Option<u64>,
    /// Licensed lines by how many keys they have at the end (1 is right).
    pub key_counts: BTreeMap<usize, usize>,
    pub verdict: &'a Verdict,
}

/// The license cluster's circuit-breaker ceiling in host-config/envoy.local.yaml (the config the
/// soak runs): its `max_requests`.
pub fn license_ceiling() -> Option<u64> {
    let yaml =
        std::fs::read_to_string(keygate_e2e::repo_root().join("host-config/envoy.local.yaml"))
            .ok()?;
    let cluster = yaml.split("  - name: license_server\n").nth(1)?;
    let cluster = cluster.split("\n  - name: ").next()?;
    let at = cluster.find("max_requests:")? + "max_requests:".len();
    cluster[at..]
        .trim_start()
        .split(|c: char| !c.is_ascii_digit())
        .next()?
        .parse()
        .ok()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() - 1) as f64 * p / 100.0).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

impl Report<'_> {
    fn messages(&self) -> (usize, usize, Vec<u64>) {
        let messages = self.traffic.messages();
        let deliveries = self.traffic.deliveries();
        let notifications = messages.iter().map(|m| m.notifications).sum();
        let mut redeliveries: Vec<u64> = deliveries
            .iter()
            .map(|d| {
                d.attempts
                    .iter()
                    .filter(|a| !a.duplicate)
                    .count()
                    .saturating_sub(1) as u64
            })
            .collect();
        redeliveries.sort_unstable();
        (messages.len(), notifications, redeliveries)
    }

    fn duplicates_sent(&self) -> usize {
        let deliveries = self.traffic.deliveries();
        deliveries
            .iter()
            .map(|d| d.attempts.iter().filter(|a| a.duplicate).count())
            .sum()
    }

    /// The messages that took the most attempts, with how their last attempts ended: where a
    /// run's time went.
    fn slowest(&self) -> Vec<Value> {
        let messages = self.traffic.messages();
        let deliveries = self.traffic.deliveries();
        let mut by_attempts: Vec<usize> = (0..deliveries.len()).collect();
        by_attempts.sort_by_key(|&i| std::cmp::Reverse(deliveries[i].attempts.len()));
        by_attempts
            .into_iter()
            .take(3)
            .map(|i| {
                let d = &deliveries[i];
                let last: Vec<String> = d
                    .attempts
                    .iter()
                    .rev()
                    .take(3)
                    .map(|a| format!("{} ms: {}", a.at_ms, a.outcome))
                    .collect();
                json!({"message": i, "what": messages[i].what, "orders": messages[i].orders,
                       "attempts": d.attempts.len(), "acked": d.acked, "last_attempts": last})
            })
            .collect()
    }

    pub fn to_json(&self) -> Value {
        let (messages, notifications, redeliveries) = self.messages();
        json!({
            "seed": self.seed, "minutes_of_faults": self.minutes, "ledger": self.ledger,
            "replicas": self.replicas,
            "orders": self.book.orders.len(), "lines": self.book.line_count(),
            "messages": messages, "notifications": notifications,
            "duplicate_deliveries_sent": self.duplicates_sent(),
            "acks_per_s_under_faults": self.acks_in_fault_phase as f64 / self.fault_phase_s.max(1e-9),
            "redeliveries_per_message": {"p50": percentile(&redeliveries, 50.0), "p99": percentile(&redeliveries, 99.0),
                                          "max": redeliveries.last().copied().unwrap_or(0)},
            "faults_injected": self.injected,
            "slowest_messages": self.slowest(),
            "settled_after_s": self.settled_s,
            "duplicates": self.verdict.duplicates,
            "lost_messages": self.verdict.lost_messages,
            "lost_lines": self.verdict.lost_lines,
            "violations": self.verdict.violations.len(),
            "lines_by_key_count": self.key_counts.iter().map(|(k, v)| (k.to_string(), *v)).collect::<BTreeMap<_, _>>(),
            "envoy_rss": self.memory.to_json(),
            "etcd_keys_at_end": self.etcd_keys,
            "etcd_keys_bound": self.book.etcd_line_bound(),
            "license_max_in_flight": self.license_max_in_flight,
            "license_ceiling": self.license_ceiling,
        })
    }

    pub fn print(&self) {
        let (messages, notifications, redeliveries) = self.messages();
        let faults: u32 = self.injected.values().sum();
        println!(
            "── soak figures (seed {}, {} ledger, {} Envoy(s)) ──",
            self.seed, self.ledger, self.replicas
        );
        println!("  book          {} orders, {} lines; {} messages, {} notifications, {} duplicate deliveries",
                 self.book.orders.len(), self.book.line_count(), messages, notifications, self.duplicates_sent());
        println!(
            "  faults        {faults} injected over {:.0} s: {}",
            self.fault_phase_s,
            self.injected
                .iter()
                .map(|(k, n)| format!("{k} {n}"))
                .collect::<Vec<_>>()
                .join(", ")
        );
        println!(
            "  acks          {:.2}/s under faults; every delivery settled after {:.0} s",
            self.acks_in_fault_phase as f64 / self.fault_phase_s.max(1e-9),
            self.settled_s
        );
        println!(
            "  redeliveries  per message p50 {}, p99 {}, max {}",
            percentile(&redeliveries, 50.0),
            percentile(&redeliveries, 99.0),
            redeliveries.last().copied().unwrap_or(0)
        );
        println!("  invariants    duplicates {} (must be 0), lost messages {} and lines {} (must be 0), {} violation(s)",
                 self.verdict.duplicates, self.verdict.lost_messages, self.verdict.lost_lines, self.verdict.violations.len());
        println!("  Envoy RSS     {}", self.memory.summary());
        if self.etcd_keys.is_none() {
            println!("  shared data   bounded by ledger.max_lines (10 000 lines); not readable from outside Envoy");
        }
        if let Some(k) = self.etcd_keys {
            println!("  etcd          {k} keys under keygate/ (bound {}: one per line licensed or changed; no claim left)", self.book.etcd_line_bound());
        }
        println!(
            "  license calls at most {} at once (ceiling {:?})",
            self.license_max_in_flight, self.license_ceiling
        );
    }
}
