//! Planning: from the orders Salesforce returned to the lines that need a license call, a lookup
//! first, or only a write-back, and the lines that wait or are skipped for good.

use super::*;

impl Flow {
    /// Decide, per order line, what is left to do.
    #[inline(never)]
    pub(super) fn plan(&mut self, env: &mut Env<'_>) {
        let cfg = Rc::clone(&self.cfg);
        let Some(issuing) = cfg.issuing.as_ref() else {
            return;
        };
        let ledger = Ledger::new(&cfg.state_prefix, cfg.ledger);
        let fetched = std::mem::take(&mut self.fetched);
        let mut counts = Counts::default();
        let mut logs = Vec::new();
        for id in self.wanted.clone() {
            let Some(order) = fetched.iter().find(|o| o.id.same_record(&id)) else {
                logs.push((
                    Level::Warn,
                    format!("order {id} not found in Salesforce (deleted?): skipped"),
                ));
                counts.add(Metric::OrdersSkipped);
                continue;
            };
            if order.status != "Activated" {
                logs.push((
                    Level::Info,
                    format!(
                        "order {id} is now '{}', not Activated: skipped",
                        crate::text::excerpt(&order.status)
                    ),
                ));
                counts.add(Metric::OrdersSkipped);
                continue;
            }
            let order_idx = self.orders.len();
            self.orders.push(PlannedOrder {
                id: order.id,
                order_number: order.order_number.clone(),
                customer: order.customer.clone().unwrap_or_else(|| Customer {
                    company: order.company.clone(),
                    ..Customer::default()
                }),
            });
            if order.customer.is_none() {
                logs.push((
                    Level::Warn,
                    format!(
                        "order {id} has no {} contact: licensing without customer details",
                        issuing.salesforce.contact.relationship()
                    ),
                ));
            }
            for item in &order.items {
                let code = item.product_code.clone().unwrap_or_default();
                if issuing.product(&code).is_none() {
                    counts.add(Metric::LinesSkippedUnmapped);
                    continue;
                }
                // The same OrderItem listed twice in a reply is one line.
                if self.lines.iter().any(|l| l.item.same_record(&item.id)) {
                    continue;
                }
                match item.written_back.as_deref() {
                    // Salesforce already holds this line's keys: the durable marker across replicas.
                    Some(v) if v.lines().all(|k| looks_like_key(k.trim())) => {
                        counts.add(Metric::LinesAlreadyLicensed);
                        continue;
                    }
                    // "TBD", "pending", …: a person's note, not a key. The lookup decides.
                    Some(v) => logs.push((
                        Level::Warn,
                        format!(
                            "line {}: write-back field holds {}, not a license key; looking the line up",
                            item.id,
                            crate::text::excerpt(v)
                        ),
                    )),
                    None => {}
                }
                let q = item.quantity;
                if !((1.0..=1_000_000.0).contains(&q) && q.fract() == 0.0) {
                    logs.push((
                        Level::Error,
                        format!(
                            "order {id} line {}: quantity is not a positive whole number: skipped",
                            item.id
                        ),
                    ));
                    counts.add(Metric::LinesSkippedInvalid);
                    continue;
                }
                let line = self.lines.len();
                self.lines.push(Line {
                    order: order_idx,
                    item: item.id,
                    code,
                    quantity: q as u32,
                });
                let known = match self.etcd_line(&item.id) {
                    Some(record) => record.state.clone(),
                    None if self.etcd.is_some() => LineState::Unknown,
                    None => ledger.line(env.store, &item.id),
                };
                match known {
                    LineState::Issued(keys) | LineState::WrittenBack(keys) => {
                        // Issued by an earlier delivery: only the write-back may be missing.
                        counts.add(Metric::LinesAlreadyLicensed);
                        if self.etcd.is_some() {
                            self.etcd_licensed(line, &keys);
                        }
                        self.to_write.push((item.id, keys));
                    }
                    LineState::Pending { busy_until_ms } if busy_until_ms > env.now_ms => {
                        // The license server may still be issuing: a lookup now could miss the
                        // key and a re-issue would make a second one.
                        counts.add(Metric::LinesBusy);
                        let wait_s = (busy_until_ms - env.now_ms).div_ceil(1000);
                        self.busy.push(format!(
                            "line {}: an earlier license call may still be running; retry in {wait_s} s",
                            item.id
                        ));
                    }
                    // An earlier call's outcome is unknown: ask before issuing.
                    LineState::Pending { .. } => self.queue.push_back((line, true)),
                    // Unknown to etcd, which records every line before its call: never issued.
                    // Unknown to shared data (volatile, one Envoy's) is no such proof.
                    LineState::Unknown => self.queue.push_back((line, self.etcd.is_none())),
                }
            }
        }
        for (m, n) in counts.0 {
            self.count(m, n);
        }
        for (l, m) in logs {
            self.log(l, m);
        }
        self.pump(env);
    }
}

/// Per-metric tallies for one planning pass, in first-seen order.
#[derive(Default)]
struct Counts(Vec<(Metric, u64)>);

impl Counts {
    fn add(&mut self, m: Metric) {
        match self.0.iter_mut().find(|(k, _)| *k == m) {
            Some((_, n)) => *n += 1,
            None => self.0.push((m, 1)),
        }
    }
}
