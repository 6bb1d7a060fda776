//! The license-server side of the flow: license calls and lookups at most `max_concurrency` at a
//! time, the write-ahead mark before each call, and what each reply means for its line.

use super::*;
use crate::store::StoreError;

impl Flow {
    /// Start queued license calls up to the concurrency bound.
    #[inline(never)]
    pub(super) fn pump(&mut self, env: &mut Env<'_>) {
        let Some(max) = self.issuing().map(|i| i.license.max_concurrency) else {
            return;
        };
        while self.in_flight < max {
            let Some((line, lookup)) = self.queue.pop_front() else {
                break;
            };
            if !self.start_line(line, lookup, env) {
                let item = self
                    .lines
                    .get(line)
                    .map(|l| l.item.to_string())
                    .unwrap_or_default();
                self.failures
                    .push(format!("deadline reached before licensing line {item}"));
                // Nothing else can start either.
                let rest = self.queue.len();
                if rest > 0 {
                    self.failures.push(format!(
                        "{rest} more line(s) not started before the deadline"
                    ));
                }
                self.queue.clear();
                break;
            }
        }
    }

    #[inline(never)]
    pub(super) fn start_line(&mut self, idx: usize, lookup: bool, env: &mut Env<'_>) -> bool {
        let Some(issuing) = self.cfg.issuing.as_ref() else {
            return false;
        };
        let Some(line) = self.lines.get(idx) else {
            return false;
        };
        let lic = &issuing.license;
        let (path, body, what) = if lookup {
            let (p, b) = license::retrieve_request(lic, &line.item);
            (p, b, Pending::Lookup(idx))
        } else {
            if issuing.product(&line.code).is_none() || self.orders.get(line.order).is_none() {
                return false;
            }
            // A call that will not be sent must not leave the line marked uncertain.
            if self.deadline_at.saturating_sub(env.now_ms) < MIN_CALL_MS {
                self.deadline_hit = true;
                return false;
            }
            // Write-ahead: from here until a key is recorded, the outcome counts as uncertain,
            // and until the call's time is up (plus grace) it may still be running.
            let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
            let timeout = lic
                .timeout_ms
                .min(self.deadline_at.saturating_sub(env.now_ms));
            if let Some(e) = self.cfg.etcd.as_ref() {
                // The license call goes out once etcd has the mark (`on_etcd`).
                let busy_until =
                    ledger.busy_until(env.now_ms.saturating_add(e.timeout_ms), timeout);
                return self.etcd_set_line(
                    idx,
                    LineState::Pending {
                        busy_until_ms: busy_until,
                    },
                    true,
                    env,
                );
            }
            let busy_until = ledger.busy_until(env.now_ms, timeout);
            if let Err(e) = ledger.mark_pending(env.store, &line.item, busy_until, env.now_ms) {
                let why = match e {
                    StoreError::Full => "the ledger is full of unfinished lines",
                    _ => "shared state unavailable",
                };
                let msg = format!(
                    "could not record line {} before licensing it: {why}",
                    line.item
                );
                self.failures.push(msg);
                if e == StoreError::Full {
                    self.count(Metric::LedgerFull, 1);
                }
                return true;
            }
            return self.send_issue(idx, env);
        };
        self.send_license_call(what, path, body, env)
    }

    /// The license call that creates line `idx`'s key (its pending mark is recorded).
    #[inline(never)]
    pub(super) fn send_issue(&mut self, idx: usize, env: &mut Env<'_>) -> bool {
        let Some(issuing) = self.cfg.issuing.as_ref() else {
            return false;
        };
        let (Some(line), Some(product)) = (
            self.lines.get(idx),
            self.lines.get(idx).and_then(|l| issuing.product(&l.code)),
        ) else {
            return false;
        };
        let Some(order) = self.orders.get(line.order) else {
            return false;
        };
        let (path, body) = license::issue_request(
            &issuing.license,
            &IssueRequest {
                product,
                quantity: line.quantity,
                order_item_id: &line.item,
                order_number: &order.order_number,
                customer: &order.customer,
            },
        );
        self.send_license_call(Pending::Issue(idx), path, body, env)
    }

    fn send_license_call(
        &mut self,
        what: Pending,
        path: String,
        body: String,
        env: &mut Env<'_>,
    ) -> bool {
        let Some(lic) = self.issuing().map(|i| &i.license) else {
            return false;
        };
        let headers = vec![(
            "content-type",
            "application/x-www-form-urlencoded".to_owned(),
        )];
        let (cluster, authority, timeout) =
            (lic.cluster.clone(), lic.authority.clone(), lic.timeout_ms);
        let started = self.dispatch(
            what,
            Call {
                id: 0,
                cluster,
                method: "POST",
                path,
                authority,
                headers,
                body: body.into_bytes(),
                timeout_ms: timeout,
            },
            env,
        );
        if started {
            self.in_flight += 1;
        }
        started
    }

    pub(super) fn line_item(&self, idx: usize) -> String {
        self.lines
            .get(idx)
            .map(|l| l.item.to_string())
            .unwrap_or_default()
    }

    pub(super) fn on_issue(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let (answered, result) = match resp.status {
            // The call may still be running at the license server: the line stays busy.
            None => (
                false,
                Err("no response (reset or refused); outcome unknown".to_owned()),
            ),
            Some(504) => (false, Err("timed out; outcome unknown".to_owned())),
            Some(s) => (
                true,
                match license::parse_keys(s, &resp.body) {
                    Ok(keys) if !keys.is_empty() => Ok(keys),
                    Ok(_) => Err("reply carried no key".to_owned()),
                    Err(e) => Err(e.to_string()),
                },
            ),
        };
        match result {
            // Recording the keys replaces the pending mark.
            Ok(keys) => self.line_licensed(idx, keys, Metric::LicensesIssued, env),
            Err(why) => {
                // An answer, even a failed one, means the call is over: a lookup settles it.
                if answered {
                    self.call_over(idx, env);
                }
                self.license_failed(idx, &why);
            }
        }
        self.pump(env);
    }

    #[inline(never)]
    pub(super) fn license_failed(&mut self, idx: usize, why: &str) {
        let item = self.line_item(idx);
        self.count(Metric::CalloutsFailedLicense, 1);
        let msg = format!("license call for line {item} failed: {why}");
        self.log(Level::Warn, msg.clone());
        self.failures.push(msg);
    }

    /// The license call for a line has answered: it is no longer running, whatever it did.
    #[inline(never)]
    pub(super) fn call_over(&mut self, idx: usize, env: &mut Env<'_>) {
        let Some(line) = self.lines.get(idx) else {
            return;
        };
        let over = LineState::Pending {
            busy_until_ms: env.now_ms,
        };
        if self.etcd.is_some() {
            if let Some(LineState::Pending { .. }) = self.etcd_line(&line.item).map(|l| &l.state) {
                self.etcd_set_line(idx, over, false, env);
            }
            return;
        }
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        if let LineState::Pending { .. } = ledger.line(env.store, &line.item) {
            let _ = ledger.mark_pending(env.store, &line.item, env.now_ms, env.now_ms);
        }
    }

    pub(super) fn on_lookup(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        self.count(Metric::Lookups, 1);
        let item = self.line_item(idx);
        let found = match resp.status {
            None => Err(LicenseError::Unparseable("no response".into())),
            Some(s) => license::parse_keys(s, &resp.body),
        };
        match found {
            Ok(keys) if !keys.is_empty() => {
                self.log(
                    Level::Info,
                    format!(
                        "line {item}: found {} key(s) issued by an earlier delivery",
                        keys.len()
                    ),
                );
                self.line_licensed(idx, keys, Metric::LicensesRecovered, env);
            }
            Ok(_) => self.queue.push_front((idx, false)),
            Err(e) => {
                self.count(Metric::CalloutsFailedLicense, 1);
                self.failures.push(format!(
                    "could not check for keys already issued for line {item}: {e}"
                ));
            }
        }
        self.pump(env);
    }

    #[inline(never)]
    pub(super) fn line_licensed(
        &mut self,
        idx: usize,
        keys: Vec<String>,
        metric: Metric,
        env: &mut Env<'_>,
    ) {
        let Some(line) = self.lines.get(idx) else {
            return;
        };
        let item = line.item;
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        if self.etcd.is_some() {
            // Recorded by the delivery's last transaction, with the write-back's outcome.
            self.etcd_licensed(idx, &keys);
        } else if ledger
            .record_issued(env.store, &item, &keys, env.now_ms)
            .is_err()
        {
            self.log(
                Level::Error,
                format!("line {item}: key issued but not recorded in shared state"),
            );
        }
        self.count(metric, 1);
        if metric == Metric::LicensesRecovered {
            self.recovered += 1;
        } else {
            self.issued += 1;
        }
        self.to_write.push((item, keys));
    }
}
