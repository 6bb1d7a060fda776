//! The invariant checker over the end state, once the faults have stopped and every delivery has
//! settled: what the license server, Salesforce and etcd hold must be exactly what the book's
//! last states call for. Each violation names the order and line and carries the order's event
//! history (its messages, every attempt and how it ended).

use std::collections::BTreeMap;
use std::fmt::Write as _;

use keygate_e2e::exactly_once::keys_written_back;
use keygate_standins::{KeyState, Standins};

use crate::book::{Book, Order, SUBSCRIPTION, SUBSCRIPTION_DAYS};
use crate::simulator::Traffic;

#[derive(Debug, Default)]
pub struct Verdict {
    /// Lines with more than one key (the keys beyond the first).
    pub duplicates: usize,
    /// Messages never acked, and licensed lines with no key at the end.
    pub lost_messages: usize,
    pub lost_lines: usize,
    pub violations: Vec<String>,
}

pub fn check(
    book: &Book,
    standins: &Standins,
    traffic: &Traffic,
    etcd_claims: Option<usize>,
) -> Verdict {
    let issued = standins.issued();
    let keys = standins.keys();
    let written = keys_written_back(standins);
    let mut v = Verdict::default();
    let deliveries = traffic.deliveries();
    let messages = traffic.messages();
    let history = |order: &Order| -> String {
        let mut out = String::new();
        for (i, m) in messages.iter().enumerate() {
            let mentions = m.orders.iter().any(|o| {
                o == &order.id
                    || order.reduction.as_ref().is_some_and(|r| &r.0 == o)
                    || order.renewal.as_ref().is_some_and(|r| &r.0 == o)
            });
            if !mentions {
                continue;
            }
            let _ = writeln!(
                out,
                "    message #{i} ({}, {} notification(s)):",
                m.what, m.notifications
            );
            for a in &deliveries[i].attempts {
                let _ = writeln!(
                    out,
                    "      {:>8} ms replica {}{}: {}",
                    a.at_ms,
                    a.replica,
                    if a.duplicate { " (duplicate)" } else { "" },
                    a.outcome
                );
            }
        }
        out
    };
    v.lost_messages = deliveries.iter().filter(|d| !d.acked).count();
    for (i, d) in deliveries.iter().enumerate().filter(|(_, d)| !d.acked) {
        v.violations.push(format!(
            "message #{i} ({}) was never acked after {} attempt(s); its orders: {:?}",
            messages[i].what,
            d.attempts.len(),
            messages[i].orders
        ));
    }
    for order in &book.orders {
        let mut problems = Vec::new();
        for line in &order.lines {
            let got = issued.get(&line.id).map_or(&[][..], Vec::as_slice);
            if !order.licensed_lines().any(|l| l.id == line.id) {
                if !got.is_empty() {
                    problems.push(format!(
                        "line {} (unmapped {}) has keys {got:?}",
                        line.id, line.code
                    ));
                }
                continue;
            }
            match got.len() {
                0 => {
                    v.lost_lines += 1;
                    problems.push(format!("line {} has no key", line.id));
                    continue;
                }
                1 => {}
                n => {
                    v.duplicates += n - 1;
                    problems.push(format!("line {} has {n} keys: {got:?}", line.id));
                }
            }
            let key = &got[0];
            if written.get(&line.id) != Some(key) {
                problems.push(format!(
                    "line {}: Salesforce holds {:?}, the license server issued {key}",
                    line.id,
                    written.get(&line.id)
                ));
            }
            let Some(state) = keys.get(key) else {
                problems.push(format!(
                    "line {}: key {key} unknown to the license server",
                    line.id
                ));
                continue;
            };
            problems.extend(terms(order, line, state));
        }
        for (what, own) in [("reduction", &order.reduction), ("renewal", &order.renewal)] {
            if let Some((_, line, _)) = own {
                if issued.get(line).is_some_and(|k| !k.is_empty()) {
                    problems.push(format!("{what} line {line} got keys of its own"));
                }
            }
        }
        if !problems.is_empty() {
            v.violations.push(format!(
                "order {} ({}): {}\n{}",
                order.id,
                life(order),
                problems.join("; "),
                history(order)
            ));
        }
    }
    if let Some(n) = etcd_claims.filter(|n| *n > 0) {
        v.violations.push(format!("{n} claim(s) left in etcd"));
    }
    v
}

/// What the key of `line` must show at the end.
fn terms(order: &Order, line: &crate::book::Line, state: &KeyState) -> Vec<String> {
    let mut problems = Vec::new();
    if state.revoked != order.revoked_at_end() {
        problems.push(format!(
            "line {}: revoked {} at the end, expected {}",
            line.id,
            state.revoked,
            order.revoked_at_end()
        ));
    }
    let reduced = order
        .reduction
        .as_ref()
        .is_some_and(|(_, _, l)| l == &line.id);
    let quantity = u64::from(line.quantity) - u64::from(reduced);
    if state.quantity != quantity {
        problems.push(format!(
            "line {}: {} activations, expected {quantity}",
            line.id, state.quantity
        ));
    }
    if line.code == SUBSCRIPTION {
        let renewed = order
            .renewal
            .as_ref()
            .is_some_and(|(_, _, l)| l == &line.id);
        let days = SUBSCRIPTION_DAYS * (1 + u32::from(renewed));
        if state.expiry_days != Some(days) {
            problems.push(format!(
                "line {}: {:?} days of validity, expected {days} (renewals applied once)",
                line.id, state.expiry_days
            ));
        }
    }
    problems
}

fn life(order: &Order) -> String {
    let mut parts = vec!["activated"];
    if order.cancelled {
        parts.push("cancelled");
    }
    if order.reactivated {
        parts.push("reactivated");
    }
    if order.reduction.is_some() {
        parts.push("reduced");
    }
    if order.renewal.is_some() {
        parts.push("renewed");
    }
    parts.join(", ")
}

/// Every line's key count, for the figures: lines by how many keys they have.
pub fn key_counts(book: &Book, standins: &Standins) -> BTreeMap<usize, usize> {
    let issued = standins.issued();
    let mut out = BTreeMap::new();
    for o in &book.orders {
        for l in o.licensed_lines() {
            *out.entry(issued.get(&l.id).map_or(0, Vec::len))
                .or_insert(0) += 1;
        }
    }
    out
}
