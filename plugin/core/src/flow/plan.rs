//! Planning: from the orders Salesforce returned to the lines that need a license call, a lookup
//! first, or only a write-back, and the lines that wait or are skipped for good. An activated
//! order's lines are issued (or restored after a cancellation); a cancelled order's lines are
//! revoked; a reduction order's lines reduce the lines they name, a renewal line renews one.

use super::marks::{issuing_marked, renewing_marked, REVOKED};
use super::*;
use crate::ledger::Instance;
use crate::salesforce::OrderItem;

impl Flow {
    /// Decide, per order line, what is left to do.
    pub(super) fn plan(&mut self, env: &mut Env<'_>) {
        let cfg = Rc::clone(&self.cfg);
        let Some(issuing) = cfg.issuing.as_ref() else {
            return;
        };
        let fetched = std::mem::take(&mut self.salesforce.fetched);
        // Read once per message: which Envoy this is, and since when.
        let instance = Ledger::new(&cfg.state_prefix, cfg.ledger).instance(env.store);
        let mut p = Planner {
            restart_busy_until: self.restart_busy_until(instance.as_ref()),
            instance,
            counts: Counts::default(),
            logs: Vec::new(),
        };
        for id in self.wanted.clone() {
            let Some(order) = fetched.iter().find(|o| o.id.same_record(&id)) else {
                p.logs.push((
                    Level::Warn,
                    format!("order {id} not found in Salesforce (deleted?): skipped"),
                ));
                p.counts.add(Metric::OrdersSkipped);
                continue;
            };
            let cancelled = issuing.lifecycle.revokes(&order.status);
            if order.status != "Activated" && !cancelled {
                p.logs.push((
                    Level::Info,
                    format!(
                        "order {id} is now '{}', neither Activated nor a revoke status: skipped",
                        crate::text::excerpt(&order.status)
                    ),
                ));
                p.counts.add(Metric::OrdersSkipped);
                continue;
            }
            let order_idx = self.work.orders.len();
            self.work.orders.push(PlannedOrder {
                id: order.id,
                order_number: order.order_number.clone(),
                customer: order.customer.clone().unwrap_or_else(|| Customer {
                    company: order.company.clone(),
                    ..Customer::default()
                }),
            });
            if order.customer.is_none() && !cancelled {
                p.logs.push((
                    Level::Warn,
                    format!(
                        "order {id} has no {} contact: licensing without customer details",
                        issuing.salesforce.contact.relationship()
                    ),
                ));
            }
            let reduction = order.is_reduction && issuing.lifecycle.reductions;
            for item in &order.items {
                let code = item.product_code.clone().unwrap_or_default();
                let Some(product) = issuing.product(&code) else {
                    p.counts.add(Metric::LinesSkippedUnmapped);
                    continue;
                };
                // The same OrderItem listed twice in a reply is one line.
                if self.work.lines.iter().any(|l| l.item.same_record(&item.id)) {
                    continue;
                }
                let line = Line {
                    order: order_idx,
                    item: item.id,
                    code,
                    quantity: 0,
                    intent: Intent::Issue,
                    target: item.id,
                    keys: Vec::new(),
                    keys_done: 0,
                    expiry_recorded: None,
                    expiry_now: None,
                    before_mark: None,
                };
                if cancelled {
                    if product.renewal || item.original.is_some() {
                        p.logs.push((
                            Level::Info,
                            format!(
                                "order {id} line {}: a cancelled renewal or reduction changes no key",
                                item.id
                            ),
                        ));
                        continue;
                    }
                    self.plan_revoke(line, item, &mut p, env);
                } else if reduction {
                    let seats = product.seats_follow_quantity();
                    self.plan_reduction(line, item, seats, &mut p, env);
                } else if product.renewal {
                    self.plan_renewal(line, item, &mut p, env);
                } else {
                    self.plan_issue(line, item, &mut p, env);
                }
            }
        }
        for (m, n) in p.counts.0 {
            self.count(m, n);
        }
        for (l, m) in p.logs {
            self.log(l, m);
        }
        self.mark_then_pump(p.instance.as_ref(), env);
    }

    fn push_line(&mut self, line: Line) -> usize {
        self.work.lines.push(line);
        self.work.lines.len() - 1
    }

    /// A line whose action an earlier delivery completed: only the write-back may be missing.
    fn plan_done(&mut self, mut line: Line, keys: Vec<String>, p: &mut Planner) {
        p.counts.add(Metric::LinesAlreadyLicensed);
        line.keys = keys;
        let idx = self.push_line(line);
        self.line_known(idx);
    }

    /// The license server may still be working on an earlier call for this line: a lookup now
    /// could miss its outcome, so the line waits.
    fn plan_busy(&mut self, item: &SfId, busy_until_ms: u64, p: &mut Planner, env: &Env<'_>) {
        p.counts.add(Metric::LinesBusy);
        let wait_s = busy_until_ms.saturating_sub(env.now_ms).div_ceil(1000);
        self.outcome.busy.push(format!(
            "line {item}: an earlier license call may still be running; retry in {wait_s} s"
        ));
    }

    /// An activated order's line: issue its key, or restore the keys a cancellation revoked.
    fn plan_issue(&mut self, mut line: Line, item: &OrderItem, p: &mut Planner, env: &Env<'_>) {
        let id = self.work.orders.get(line.order).map(|o| o.id);
        let known = self.ledger_line(&item.id, env);
        let written = item.written_back.as_deref().and_then(keys_of);
        let revoked_in_sf = item.state.as_deref() == Some(REVOKED)
            && matches!(known, LineState::Unknown | LineState::Revoked(_));
        if let LineState::Revoked(keys) = &known {
            line.keys = keys.clone();
        }
        if matches!(known, LineState::Revoked(_)) || revoked_in_sf {
            // Reactivated after a cancellation: the same keys back, never new ones.
            line.intent = Intent::Restore;
            if line.keys.is_empty() {
                line.keys = written.unwrap_or_default();
            }
            let step = if line.keys.is_empty() {
                Step::Lookup
            } else {
                Step::Act
            };
            let idx = self.push_line(line);
            self.work.queue.push_back((idx, step));
            return;
        }
        // An earlier delivery's issuing mark (in the state field, else the write-back field).
        let marked = item
            .state
            .as_deref()
            .and_then(issuing_marked)
            .or_else(|| item.written_back.as_deref().and_then(issuing_marked));
        match item.written_back.as_deref() {
            // Salesforce already holds this line's keys: the durable marker across replicas.
            Some(_) if written.is_some() => {
                p.counts.add(Metric::LinesAlreadyLicensed);
                return;
            }
            Some(_) if marked.is_some() => {}
            // "TBD", "pending", …: a person's note, not a key. The lookup decides.
            Some(v) => p.logs.push((
                Level::Warn,
                format!(
                    "line {}: write-back field holds {}, not a license key; looking the line up",
                    item.id,
                    crate::text::excerpt(v)
                ),
            )),
            None => {}
        }
        let Some(quantity) = whole(item.quantity) else {
            p.skip_invalid(format!(
                "order {} line {}: quantity is not a positive whole number: skipped",
                id.map(|i| i.to_string()).unwrap_or_default(),
                item.id
            ));
            return;
        };
        line.quantity = quantity;
        match known {
            LineState::Issued(keys) | LineState::WrittenBack(keys) | LineState::Revoked(keys) => {
                self.plan_done(line, keys, p)
            }
            LineState::Pending { busy_until_ms, .. } if busy_until_ms > env.now_ms => {
                self.plan_busy(&item.id, busy_until_ms, p, env)
            }
            // An earlier call's outcome is unknown: ask before issuing.
            LineState::Pending { .. } => {
                let idx = self.push_line(line);
                self.work.queue.push_back((idx, Step::Lookup));
            }
            // Shared data lost (a restart, an eviction): Salesforce's mark says whether an
            // earlier delivery's call may still be running.
            LineState::Unknown if !self.ledger_is_durable() => {
                // This Envoy's own mark with nothing in its ledger: no call went out from here
                // (the ledger records a line before its call, and never evicts one in flight).
                let mine = marked.as_ref().is_some_and(|m| {
                    p.instance
                        .as_ref()
                        .is_some_and(|i| !m.instance.is_empty() && i.id == m.instance)
                });
                let marked_until = marked.filter(|_| !mine).map_or(0, |m| m.until_ms);
                let busy_until = marked_until.max(p.restart_busy_until);
                if busy_until > env.now_ms {
                    return self.plan_busy(&item.id, busy_until, p, env);
                }
                let idx = self.push_line(line);
                self.work.queue.push_back((idx, Step::Lookup));
            }
            // Unknown to etcd, which records every line before its call: never issued.
            LineState::Unknown => {
                let idx = self.push_line(line);
                self.work.queue.push_back((idx, Step::Act));
            }
        }
    }

    /// A cancelled order's line: revoke every key it has (a line without keys is nothing to do).
    fn plan_revoke(&mut self, mut line: Line, item: &OrderItem, p: &mut Planner, env: &Env<'_>) {
        line.intent = Intent::Revoke;
        let known = self.ledger_line(&item.id, env);
        let step = match known {
            LineState::Revoked(keys) => {
                // Revoked already; Salesforce may not show it yet.
                let shown = self
                    .issuing()
                    .is_none_or(|i| i.salesforce.state_field.is_none())
                    || item.state.as_deref() == Some(REVOKED);
                if shown {
                    return;
                }
                return self.plan_done(line, keys, p);
            }
            LineState::Issued(keys) | LineState::WrittenBack(keys) => {
                line.keys = keys;
                Step::Act
            }
            LineState::Pending { busy_until_ms, .. } if busy_until_ms > env.now_ms => {
                return self.plan_busy(&item.id, busy_until_ms, p, env)
            }
            LineState::Pending { .. } => Step::Lookup,
            LineState::Unknown if item.state.as_deref() == Some(REVOKED) => return,
            LineState::Unknown => match item.written_back.as_deref().and_then(keys_of) {
                Some(keys) => {
                    line.keys = keys;
                    Step::Act
                }
                None => Step::Lookup,
            },
        };
        let idx = self.push_line(line);
        self.work.queue.push_back((idx, step));
    }

    /// A reduction order's line: lower the key of the line it reduces to what is left.
    /// A reduction line: the original line's key allows `left` seats, or is revoked at none.
    /// `seats`: the license's seats follow the Quantity (else only a reduction to none changes
    /// the key: a Keygen policy's own limits are not the order's).
    fn plan_reduction(
        &mut self,
        mut line: Line,
        item: &OrderItem,
        seats: bool,
        p: &mut Planner,
        env: &Env<'_>,
    ) {
        let Some(original) = item.original.as_ref() else {
            p.skip_invalid(format!(
                "reduction line {}: no OriginalOrderItemId: skipped",
                item.id
            ));
            return;
        };
        // The reduced quantity may come signed either way (UNCONFIRMED): its size is what counts.
        let (Some(reduced), Some(had)) =
            (whole(item.quantity.abs()), whole_or_zero(original.quantity))
        else {
            p.skip_invalid(format!(
                "reduction line {}: quantities are not whole numbers: skipped",
                item.id
            ));
            return;
        };
        // Salesforce's AvailableQuantity counts every reduction of the line, where it has
        // counted this one (UNCONFIRMED when): the smaller of the two readings.
        let mut left = had.saturating_sub(reduced);
        if let Some(a) = original.available.and_then(whole_or_zero) {
            left = left.min(a);
        }
        if left > 0 && !seats {
            p.logs.push((
                Level::Info,
                format!(
                    "reduction line {}: the license's seats are its policy's, not the Quantity: nothing to change",
                    item.id
                ),
            ));
            return;
        }
        line.intent = Intent::Reduce(left);
        line.target = original.id;
        self.plan_change(line, item, p, env);
    }

    /// A renewal line: renew the key of the line its renewal field names, exactly once.
    fn plan_renewal(&mut self, mut line: Line, item: &OrderItem, p: &mut Planner, env: &Env<'_>) {
        let Some(target) = item.renews else {
            p.skip_invalid(format!(
                "renewal line {}: the renewal field names no line: skipped",
                item.id
            ));
            return;
        };
        line.intent = Intent::Renew;
        line.target = target;
        self.plan_change(line, item, p, env);
    }

    /// A reduction or renewal line: done once its write-back holds the key it changed.
    fn plan_change(&mut self, mut line: Line, item: &OrderItem, p: &mut Planner, env: &Env<'_>) {
        // Salesforce holds the change's keys or its final state: done.
        let shown_done = item
            .state
            .as_deref()
            .is_some_and(|s| s.starts_with("Renewed") || s.starts_with("Reduced to"));
        if shown_done || item.written_back.as_deref().and_then(keys_of).is_some() {
            p.counts.add(Metric::LinesAlreadyLicensed);
            return;
        }
        match self.ledger_line(&item.id, env) {
            LineState::Issued(keys) | LineState::WrittenBack(keys) | LineState::Revoked(keys) => {
                return self.plan_done(line, keys, p)
            }
            LineState::Pending { busy_until_ms, .. } if busy_until_ms > env.now_ms => {
                return self.plan_busy(&item.id, busy_until_ms, p, env)
            }
            // A renewal whose call's outcome is unknown: the key's expiry tells (`on_validate`).
            LineState::Pending { expiry_before, .. } => line.expiry_recorded = Some(expiry_before),
            // Shared data lost (a restart): the mark in Salesforce still tells.
            LineState::Unknown => {
                line.expiry_recorded = item.state.as_deref().and_then(renewing_marked);
            }
        }
        // The changed line's keys: this ledger's record of it, else the license server's.
        if let LineState::Issued(k) | LineState::WrittenBack(k) | LineState::Revoked(k) =
            self.ledger_line(&line.target, env)
        {
            line.keys = k;
        }
        let step = match (line.keys.is_empty(), line.intent) {
            (true, _) => Step::Lookup,
            (false, Intent::Renew) => Step::Validate,
            (false, _) => Step::Act,
        };
        let idx = self.push_line(line);
        if step != Step::Lookup && !self.single_key(idx) {
            return;
        }
        self.work.queue.push_back((idx, step));
    }
}

/// The keys a write-back field holds, when every line of it is one.
fn keys_of(v: &str) -> Option<Vec<String>> {
    let keys: Vec<String> = v
        .lines()
        .map(str::trim)
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
        .collect();
    (!keys.is_empty() && keys.iter().all(|k| looks_like_key(k))).then_some(keys)
}

/// A positive whole quantity a license can carry.
fn whole(q: f64) -> Option<u32> {
    ((1.0..=1_000_000.0).contains(&q) && q.fract() == 0.0).then_some(q as u32)
}

fn whole_or_zero(q: f64) -> Option<u32> {
    if q == 0.0 {
        Some(0)
    } else {
        whole(q)
    }
}

/// What planning gathers before it is emitted: tallies and log lines.
struct Planner {
    /// This Envoy's ledger instance (its issuing marks are its own).
    instance: Option<Instance>,
    /// Until when every line the ledger does not know is busy after a restart (no durable marks).
    restart_busy_until: u64,
    counts: Counts,
    logs: Vec<(Level, String)>,
}

/// Per-metric tallies for one planning pass, in first-seen order.
#[derive(Default)]
struct Counts(Vec<(Metric, u64)>);

impl Planner {
    /// A line that can never be licensed as it is: logged as an error, counted, never retried.
    fn skip_invalid(&mut self, msg: String) {
        self.logs.push((Level::Error, msg));
        self.counts.add(Metric::LinesSkippedInvalid);
    }
}

impl Counts {
    fn add(&mut self, m: Metric) {
        match self.0.iter_mut().find(|(k, _)| *k == m) {
            Some((_, n)) => *n += 1,
            None => self.0.push((m, 1)),
        }
    }
}
