//! The license-server side of the flow: issues, lookups and key changes, at most
//! `max_concurrency` at a time, the write-ahead mark before each call that must not run twice
//! (an issue, a renewal), and what an issue's or a lookup's reply means for its line. What a key
//! change's reply means is `lifecycle`.

use super::line_ledger::Marked;
use super::marks;
use super::*;
use crate::ledger::Instance;
use crate::license::{Backend, HttpRequest, KeyChange};
use crate::throttle;

/// The configured license server (`license::backend`), borrowed from `cfg` (a clone of the
/// flow's) so that the flow stays free to change.
pub(super) fn license_backend(cfg: &Config) -> Option<Backend<'_>> {
    cfg.issuing.as_ref().map(|i| license::backend(&i.license))
}

/// Why a call Envoy never sent failed (`Response::never_sent`).
pub(super) const NOT_SENT: &str = "not sent (Envoy's circuit breaker on the license cluster is \
     open, or no connection); nothing was done, retry later";

/// Where a new line's issuing mark goes in Salesforce (shared-data ledger).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum MarkField {
    /// `salesforce.state_field`.
    State,
    /// `salesforce.writeback_field`, when there is no state field: the keys replace the mark.
    Keys,
}

impl Flow {
    /// The durable place for issuing marks: the state field, else the write-back field; `None`
    /// with etcd (its own marks are durable) or without either field.
    pub(super) fn mark_field(&self) -> Option<MarkField> {
        let sf = &self.issuing()?.salesforce;
        if self.ledger_is_durable() {
            return None;
        }
        match (&sf.state_field, &sf.writeback_field) {
            (Some(_), _) => Some(MarkField::State),
            (None, Some(_)) => Some(MarkField::Keys),
            (None, None) => None,
        }
    }

    /// With no durable place for marks, what a restart of this Envoy forgot may still be running
    /// at the license server until its last call's time (and the grace) is up: until then a line
    /// the ledger does not know is busy. 0 when marks are durable (etcd, or a Salesforce field),
    /// or the ledger's start (`instance`) is not known.
    pub(super) fn restart_busy_until(&self, instance: Option<&Instance>) -> u64 {
        if self.ledger_is_durable() || self.mark_field().is_some() {
            return 0;
        }
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        let timeout = self.issuing().map_or(0, |i| i.license.timeout_ms);
        instance.map_or(0, |i| ledger.busy_until(i.started_at_ms, timeout))
    }

    /// After planning: with the shared-data ledger, every line that may be issued is marked in
    /// Salesforce (one sObject Collections call per 200 lines, in turn) before any license call
    /// of this delivery, so a restart mid-call cannot forget it; with a durable ledger, in the
    /// ledger. Then the calls start.
    pub(super) fn mark_then_pump(&mut self, instance: Option<&Instance>, env: &mut Env<'_>) {
        let Some(field) = self.mark_field() else {
            return self.ledger_mark_new_lines(env);
        };
        let grace = self.cfg.ledger.pending_grace_ms;
        let instance = instance.map_or("", |i| i.id.as_str());
        // Every call of this delivery ends by its deadline (timeouts are cut to it).
        let mark = marks::issuing_mark(self.deadline_at.saturating_add(grace), instance);
        let marks: Vec<(usize, WriteBack)> = self
            .work
            .queue
            .iter()
            .filter_map(|(idx, _)| {
                let line = self
                    .work
                    .lines
                    .get(*idx)
                    .filter(|l| l.intent == Intent::Issue)?;
                let (keys, state) = match field {
                    MarkField::State => (Vec::new(), mark.clone()),
                    MarkField::Keys => (vec![mark.clone()], String::new()),
                };
                Some((
                    *idx,
                    WriteBack {
                        item: line.item,
                        keys,
                        state,
                    },
                ))
            })
            .collect();
        self.send_issue_marks(marks, env);
    }

    /// The next batch of issuing marks, or, when none are left, the license calls.
    pub(super) fn send_issue_marks(
        &mut self,
        mut marks: Vec<(usize, WriteBack)>,
        env: &mut Env<'_>,
    ) {
        if marks.is_empty() {
            return self.pump(env);
        }
        let rest = marks.split_off(marks.len().min(salesforce::WRITEBACK_BATCH));
        self.sf_call(SfCall::IssueMarks { marks, rest }, env);
    }

    /// Salesforce's answer to a batch of issuing marks: a line whose mark it did not take gets no
    /// license call in this delivery.
    pub(super) fn on_issue_marks(
        &mut self,
        marks: Vec<(usize, WriteBack)>,
        rest: Vec<(usize, WriteBack)>,
        result: Result<Vec<(usize, String)>, String>,
        env: &mut Env<'_>,
    ) {
        let refused: Vec<(usize, String)> = match result {
            Ok(failed) => failed
                .into_iter()
                .filter_map(|(i, code)| {
                    marks
                        .get(i)
                        .map(|(idx, _)| (*idx, format!("refused: {code}")))
                })
                .collect(),
            Err(why) => marks.iter().map(|(idx, _)| (*idx, why.clone())).collect(),
        };
        for (idx, why) in &refused {
            let item = self.line_item(*idx);
            self.sf_failed(format!(
                "could not mark line {item} in Salesforce before licensing it: {why}"
            ));
        }
        if !refused.is_empty() {
            self.work
                .queue
                .retain(|(idx, _)| !refused.iter().any(|(r, _)| r == idx));
        }
        // A batch lost altogether: the rest is not sent either (the message faults anyway).
        if refused.len() == marks.len() && !marks.is_empty() {
            let lost: Vec<usize> = rest.iter().map(|(idx, _)| *idx).collect();
            self.work.queue.retain(|(idx, _)| !lost.contains(idx));
            return self.pump(env);
        }
        self.send_issue_marks(rest, env);
    }

    /// The license server throttles the account: no call of this delivery goes to it before
    /// `until_ms`, nor of any delivery this Envoy's workers start before then (shared data).
    pub(super) fn throttled(&mut self, until_ms: u64, env: &mut Env<'_>) {
        self.work.throttled_until = Some(Some(until_ms));
        if let Some(i) = self.cfg.issuing.as_ref() {
            throttle::record(
                env.store,
                &self.cfg.state_prefix,
                &i.license.cluster,
                until_ms,
            );
        }
        self.count(Metric::LicenseThrottled, 1);
    }

    /// Until when the license server throttles the account, as this delivery knows it: read
    /// from shared data at its first license call (once, not before each call), then kept.
    fn throttled_until(&mut self, env: &Env<'_>) -> Option<u64> {
        let until = match self.work.throttled_until {
            Some(known) => known,
            None => {
                let read = self.cfg.issuing.as_ref().and_then(|i| {
                    throttle::until(
                        env.store,
                        &self.cfg.state_prefix,
                        &i.license.cluster,
                        env.now_ms,
                    )
                });
                self.work.throttled_until = Some(read);
                read
            }
        };
        until.filter(|u| *u > env.now_ms)
    }

    /// Start queued license calls up to the concurrency bound; none while the license server
    /// throttles the account (each queued line fails, for Salesforce to redeliver later).
    pub(super) fn pump(&mut self, env: &mut Env<'_>) {
        let Some(max) = self.issuing().map(|i| i.license.max_concurrency) else {
            return;
        };
        if !self.work.queue.is_empty() {
            if let Some(until) = self.throttled_until(env) {
                let why = LicenseError::Throttled { until_ms: until };
                let lines: Vec<usize> = self.work.queue.drain(..).map(|(idx, _)| idx).collect();
                for idx in lines {
                    let item = self.line_item(idx);
                    self.outcome.failures.push(format!(
                        "line {item} not started: {why}; nothing was called, retry later"
                    ));
                }
                return;
            }
        }
        while self.work.in_flight < max {
            let Some((line, step)) = self.work.queue.pop_front() else {
                break;
            };
            if !self.start_line(line, step, env) {
                let item = self.line_item(line);
                self.outcome
                    .failures
                    .push(format!("deadline reached before licensing line {item}"));
                // Nothing else can start either.
                let rest = self.work.queue.len();
                if rest > 0 {
                    self.outcome.failures.push(format!(
                        "{rest} more line(s) not started before the deadline"
                    ));
                }
                self.work.queue.clear();
                break;
            }
        }
    }

    pub(super) fn start_line(&mut self, idx: usize, step: Step, env: &mut Env<'_>) -> bool {
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return false;
        };
        let Some(line) = self.work.lines.get(idx) else {
            return false;
        };
        let (call, what) = match (step, line.intent) {
            (Step::Lookup, _) => (
                backend.lookup(line.target.as_str(), env.now_ms),
                Awaiting::Lookup(idx),
            ),
            (Step::Validate, _) => {
                let key = line.keys.first().map(String::as_str).unwrap_or("");
                (
                    backend.read_expiry(key, env.now_ms),
                    Awaiting::Validate(idx),
                )
            }
            (Step::Act, Intent::Issue | Intent::Renew) => return self.mark_and_send(idx, env),
            (Step::Act, _) => return self.send_change(idx, env),
        };
        self.send_license_call(what, call, env)
    }

    /// Write-ahead: from here until the outcome is recorded, it counts as uncertain, and until
    /// the call's time is up (plus grace) it may still be running. Then the call itself.
    fn mark_and_send(&mut self, idx: usize, env: &mut Env<'_>) -> bool {
        let cfg = Rc::clone(&self.cfg);
        let Some(issuing) = cfg.issuing.as_ref() else {
            return false;
        };
        let Some(line) = self.work.lines.get(idx) else {
            return false;
        };
        if issuing.product(&line.code).is_none() || self.work.orders.get(line.order).is_none() {
            return false;
        }
        // A call that will not be sent must not leave the line marked uncertain.
        if self.deadline_at.saturating_sub(env.now_ms) < MIN_CALL_MS {
            self.outcome.deadline_hit = true;
            return false;
        }
        let timeout = issuing
            .license
            .timeout_ms
            .min(self.deadline_at.saturating_sub(env.now_ms));
        let expiry_before = match line.intent {
            Intent::Renew => line.expiry_now.clone(),
            _ => None,
        };
        let (item, line_action) = (line.item, line.intent);
        let state_field = issuing.salesforce.state_field.as_deref();
        let expiry_mark = expiry_before.clone();
        let busy_until = self.ledger_busy_until(timeout, env);
        match self.ledger_mark(idx, pending(busy_until, expiry_before), env) {
            Marked::Recorded => {}
            // The call goes out when etcd has the mark (`on_etcd`).
            Marked::Sending => return true,
            Marked::Failed => return true,
            Marked::NotSent => return false,
        }
        if let (Intent::Renew, Some(_)) = (line_action, state_field) {
            // The ledger's mark does not survive a restart (`Recorded` is shared data's): the
            // mark goes to Salesforce too, and the renewal follows its write (`on_sf`).
            let mark = WriteBack {
                item,
                keys: Vec::new(),
                state: marks::renewing_mark(expiry_mark.as_deref()),
            };
            self.work.in_flight += 1;
            let call = SfCall::WriteBack {
                lines: vec![mark],
                mark_for: Some(idx),
            };
            self.sf_call(call, env);
            return true;
        }
        self.send_marked(idx, env)
    }

    /// The call of a line whose pending mark is recorded: its issue, or its renewal.
    pub(super) fn send_marked(&mut self, idx: usize, env: &mut Env<'_>) -> bool {
        if self
            .work
            .lines
            .get(idx)
            .is_some_and(|l| l.intent == Intent::Renew)
        {
            return self.send_change(idx, env);
        }
        self.send_issue(idx, env)
    }

    /// The license call that creates line `idx`'s key (its pending mark is recorded).
    fn send_issue(&mut self, idx: usize, env: &mut Env<'_>) -> bool {
        let Some(issuing) = self.cfg.issuing.as_ref() else {
            return false;
        };
        let (Some(line), Some(product)) = (
            self.work.lines.get(idx),
            self.work
                .lines
                .get(idx)
                .and_then(|l| issuing.product(&l.code)),
        ) else {
            return false;
        };
        let Some(order) = self.work.orders.get(line.order) else {
            return false;
        };
        let request = license::backend(&issuing.license).issue(
            &IssueRequest {
                product,
                quantity: line.quantity,
                order_item_id: &line.item,
                order_number: &order.order_number,
                customer: &order.customer,
            },
            env.now_ms,
        );
        self.send_license_call(Awaiting::Issue(idx), request, env)
    }

    /// Send one license-server request, as the backend built it.
    pub(super) fn send_license_call(
        &mut self,
        what: Awaiting,
        http: HttpRequest,
        env: &mut Env<'_>,
    ) -> bool {
        let Some(lic) = self.issuing().map(|i| &i.license) else {
            return false;
        };
        let (cluster, authority, timeout) =
            (lic.cluster.clone(), lic.authority.clone(), lic.timeout_ms);
        let reply_headers = license::backend(lic).reply_headers();
        let started = self.dispatch(
            what,
            Call {
                id: 0,
                cluster,
                method: http.verb,
                path: http.path,
                authority,
                headers: http.headers,
                body: http.body,
                timeout_ms: timeout,
                reply_headers,
            },
            env,
        );
        if started {
            self.work.in_flight += 1;
        }
        started
    }

    pub(super) fn on_issue(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.work.in_flight = self.work.in_flight.saturating_sub(1);
        if resp.never_sent() {
            return self.license_call_not_sent(idx, env);
        }
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return;
        };
        let (answered, result) = match resp.license_reply(env.now_ms) {
            // The call may still be running at the license server: the line stays busy.
            None => (
                false,
                Err("no response (reset or refused); outcome unknown".to_owned()),
            ),
            Some(r) if r.status == 504 => (false, Err("timed out; outcome unknown".to_owned())),
            Some(r) => (
                true,
                match backend.issued(&r) {
                    Ok(keys) if !keys.is_empty() => Ok(keys),
                    Ok(_) => Err("reply carried no key".to_owned()),
                    // Refused before anything was done: as a call never sent.
                    Err(e @ LicenseError::Throttled { until_ms }) => {
                        self.throttled(until_ms, env);
                        return self.license_call_refused(idx, &e.to_string(), env);
                    }
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

    /// Envoy never sent line `idx`'s call (a circuit breaker on the license cluster was open, no
    /// connection, or the host refused the dispatch): nothing happened at the license server, so
    /// the line's pending mark goes (what the ledger held before it is back) and the next
    /// delivery needs no lookup for it. Retryable.
    pub(super) fn license_call_not_sent(&mut self, idx: usize, env: &mut Env<'_>) {
        self.license_call_refused(idx, NOT_SENT, env);
    }

    /// Line `idx`'s call did nothing at the license server (never sent, or refused before it
    /// was looked at, as a throttled call is): its pending mark goes, as for a call never sent.
    pub(super) fn license_call_refused(&mut self, idx: usize, why: &str, env: &mut Env<'_>) {
        if let Some(before) = self
            .work
            .lines
            .get_mut(idx)
            .and_then(|l| l.before_mark.take())
        {
            self.ledger_set(idx, before, env);
        }
        self.license_failed(idx, why);
        self.pump(env);
    }

    pub(super) fn license_failed(&mut self, idx: usize, why: &str) {
        let item = self.line_item(idx);
        self.count(Metric::CalloutsFailedLicense, 1);
        let msg = format!("license call for line {item} failed: {why}");
        self.log(Level::Warn, msg.clone());
        self.outcome.failures.push(msg);
    }

    /// The license call for a line has answered: it is no longer running, whatever it did.
    pub(super) fn call_over(&mut self, idx: usize, env: &mut Env<'_>) {
        let Some(line) = self.work.lines.get(idx) else {
            return;
        };
        let item = line.item;
        if let LineState::Pending { expiry_before, .. } = self.ledger_line(&item, env) {
            self.ledger_set(idx, pending(env.now_ms, expiry_before), env);
        }
    }

    pub(super) fn on_lookup(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.work.in_flight = self.work.in_flight.saturating_sub(1);
        if resp.never_sent() {
            self.license_failed(idx, &format!("lookup {NOT_SENT}"));
            return self.pump(env);
        }
        self.count(Metric::Lookups, 1);
        let target = self
            .work
            .lines
            .get(idx)
            .map(|l| l.target.to_string())
            .unwrap_or_default();
        let action = self.work.lines.get(idx).map_or(Intent::Issue, |l| l.intent);
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return;
        };
        let found = match resp.license_reply(env.now_ms) {
            None => Err(LicenseError::Unparseable("no response".into())),
            Some(r) => backend.found(&r),
        };
        if let Err(LicenseError::Throttled { until_ms }) = found {
            self.throttled(until_ms, env);
        }
        match found {
            Ok(keys) if !keys.is_empty() && action == Intent::Issue => {
                self.log(
                    Level::Info,
                    format!(
                        "line {target}: found {} key(s) issued by an earlier delivery",
                        keys.len()
                    ),
                );
                self.line_licensed(idx, keys, Metric::LicensesRecovered, env);
            }
            Ok(keys) if !keys.is_empty() => {
                let step = if action == Intent::Renew {
                    Step::Validate
                } else {
                    Step::Act
                };
                if let Some(line) = self.work.lines.get_mut(idx) {
                    line.keys = keys;
                }
                if self.single_key(idx) {
                    self.work.queue.push_front((idx, step));
                }
            }
            Ok(_) if action == Intent::Issue => self.work.queue.push_front((idx, Step::Act)),
            // Never licensed: nothing to revoke or restore.
            Ok(_) if matches!(action, Intent::Revoke | Intent::Restore) => self.log(
                Level::Info,
                format!("line {target}: no key at the license server: nothing to change"),
            ),
            Ok(_) => self.skip_unknown_key(idx, "has no key at the license server"),
            Err(e) => {
                self.count(Metric::CalloutsFailedLicense, 1);
                self.outcome.failures.push(format!(
                    "could not check for keys already issued for line {target}: {e}"
                ));
            }
        }
        self.pump(env);
    }

    /// Line `idx`'s action is done, with `keys` (issued, found by a lookup, or changed): recorded
    /// in the ledger, counted, and queued for the write-back with the line's state.
    pub(super) fn line_licensed(
        &mut self,
        idx: usize,
        keys: Vec<String>,
        metric: Metric,
        env: &mut Env<'_>,
    ) {
        let Some(line) = self.work.lines.get_mut(idx) else {
            return;
        };
        line.keys = keys;
        let action = line.intent;
        let n = line.keys.len() as u32;
        let state = match action {
            Intent::Revoke => LineState::Revoked(line.keys.clone()),
            _ => LineState::Issued(line.keys.clone()),
        };
        self.ledger_licensed(idx, &state, env);
        self.count(
            metric,
            if action == Intent::Issue {
                1
            } else {
                u64::from(n)
            },
        );
        match metric {
            Metric::LicensesRecovered => self.outcome.recovered += 1,
            Metric::LicensesIssued => self.outcome.issued += 1,
            _ => self.outcome.changed += n,
        }
        self.line_known(idx);
    }

    /// Line `idx` is done and its keys are known: the etcd ledger's last transaction records it,
    /// and the write-back gives Salesforce its keys and state.
    pub(super) fn line_known(&mut self, idx: usize) {
        let Some(line) = self.work.lines.get(idx) else {
            return;
        };
        let (item, keys) = (line.item, line.keys.clone());
        let state = self.state_label(line);
        self.ledger_keys_known(idx);
        self.salesforce
            .to_write
            .push(WriteBack { item, keys, state });
    }

    pub(super) fn send_change(&mut self, idx: usize, env: &mut Env<'_>) -> bool {
        let cfg = Rc::clone(&self.cfg);
        let Some(backend) = license_backend(&cfg) else {
            return false;
        };
        let Some((change, key)) = self.key_change(idx) else {
            return false;
        };
        let request = backend.change(key, change, env.now_ms);
        self.send_license_call(Awaiting::Change(idx), request, env)
    }

    /// The change line `idx` needs on its next key.
    pub(super) fn key_change(&self, idx: usize) -> Option<(KeyChange<'_>, &str)> {
        let line = self.work.lines.get(idx)?;
        let key = line.keys.get(line.keys_done)?;
        let change = match line.intent {
            Intent::Issue => return None,
            Intent::Revoke | Intent::Reduce(0) => KeyChange::Revoke,
            Intent::Restore => KeyChange::Restore,
            Intent::Reduce(n) => KeyChange::SetQuantity(n),
            Intent::Renew => KeyChange::Renew(self.issuing()?.product(&line.code)?),
        };
        Some((change, key))
    }

    /// Reductions and renewals change one key's terms; a line with a key per seat is left to a
    /// person (logged and counted) rather than guessed at. `false`: skipped.
    pub(super) fn single_key(&mut self, idx: usize) -> bool {
        let Some(line) = self.work.lines.get(idx) else {
            return false;
        };
        if line.keys.len() <= 1 || matches!(line.intent, Intent::Revoke | Intent::Restore) {
            return true;
        }
        let msg = format!(
            "line {}: line {} has {} keys (one per seat); reduce or renew them in the license server: skipped",
            line.item,
            line.target,
            line.keys.len()
        );
        self.log(Level::Error, msg);
        self.count(Metric::LinesSkippedInvalid, 1);
        false
    }

    /// A change to a key the license server does not know (or a line it has no key for) can
    /// never succeed: a permanent skip, logged and counted, never a reason to redeliver.
    pub(super) fn skip_unknown_key(&mut self, idx: usize, why: &str) {
        let Some(line) = self.work.lines.get(idx) else {
            return;
        };
        let msg = format!(
            "line {}: the key of line {} {why}: skipped",
            line.item, line.target
        );
        self.log(Level::Warn, msg);
        self.count(Metric::LinesSkippedUnknownKey, 1);
    }

    /// The state field's value for a line whose action is done.
    pub(super) fn state_label(&self, line: &Line) -> String {
        match line.intent {
            Intent::Issue => "Issued".to_owned(),
            Intent::Revoke => marks::REVOKED.to_owned(),
            Intent::Restore => "Restored".to_owned(),
            Intent::Reduce(n) => format!("Reduced to {n}"),
            Intent::Renew => self
                .issuing()
                .and_then(|i| i.product(&line.code))
                .map_or_else(|| "Renewed".to_owned(), |p| p.renewal_label()),
        }
    }
}

fn pending(busy_until_ms: u64, expiry_before: Option<String>) -> LineState {
    LineState::Pending {
        busy_until_ms,
        expiry_before,
    }
}
