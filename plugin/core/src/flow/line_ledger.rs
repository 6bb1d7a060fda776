//! The flow's one seam onto its ledger: Envoy's shared data (`crate::ledger`, one Envoy's own,
//! volatile) or etcd (`etcd_ledger`, the fleet's, durable). Every step of the flow that claims
//! orders, reads or records a line, or releases the claims goes through here; none asks which
//! ledger it has.
//!
//! What differs, and is decided only here:
//! - shared data answers at once; etcd's answers are dispatched calls (`on_etcd`), so a mark
//!   before a license call sends the call when etcd has it;
//! - etcd records every line before its call, so a line it does not know was never issued
//!   ([`Flow::ledger_is_durable`]); shared data may have lost it in a restart;
//! - etcd marks a message's new lines in one transaction before any call
//!   ([`Flow::ledger_mark_new_lines`]); shared data marks each line as its call starts.

use super::*;
use crate::ledger::ClaimError;
use crate::store::StoreError;

/// How a line's pending mark went.
pub(super) enum Marked {
    /// Recorded: the caller sends the line's call.
    Recorded,
    /// On its way to etcd: the call goes out when etcd has the mark (or the line fails then).
    Sending,
    /// Not recorded, so no call: the reason is among the failures.
    Failed,
    /// Not even asked of etcd (no time left): no call.
    NotSent,
}

impl Flow {
    fn shared(&self) -> Ledger<'_> {
        Ledger::new(&self.cfg.state_prefix, self.cfg.ledger)
    }

    /// The ledger's marks survive a restart and every line is recorded before its call: a line
    /// it does not know was never issued, and no mark needs a second home in Salesforce.
    pub(super) fn ledger_is_durable(&self) -> bool {
        self.etcd.is_some()
    }

    /// Claim every order of the message, then read them (or reply "busy").
    pub(super) fn ledger_claim(&mut self, env: &mut Env<'_>) {
        if self.etcd.is_some() {
            // The claims and the lines' states come from etcd (`etcd_ledger`).
            if !self.etcd_begin(env) {
                self.finish(env);
            }
            return;
        }
        for id in self.wanted.clone() {
            match self.shared().claim(env.store, &id, self.owner, env.now_ms) {
                Ok(()) => self.claimed.push(id),
                Err(e) => {
                    let reason = match e {
                        ClaimError::Busy => {
                            format!("order {id} is being processed by another request; retry later")
                        }
                        ClaimError::Unavailable => format!(
                            "could not claim order {id} (shared state unavailable); retry later"
                        ),
                    };
                    self.log(Level::Warn, reason.clone());
                    self.ledger_release_claims(env);
                    return self.reply(Reply::fault(500, FaultKind::Busy, &reason));
                }
            }
        }
        self.query_orders(env);
    }

    /// The delivery is over: release the claims, then send `reply` (with etcd, once its last
    /// transaction has recorded the lines and released them).
    pub(super) fn ledger_release_then_reply(&mut self, reply: Reply, env: &mut Env<'_>) {
        if self.etcd.is_some() {
            if let Some(reply) = self.etcd_release(reply, env) {
                self.reply(reply);
            }
            return;
        }
        self.ledger_release_claims(env);
        self.reply(reply);
    }

    /// Release the claims now (shared data; etcd's go with the last transaction or their time).
    pub(super) fn ledger_release_claims(&mut self, env: &mut Env<'_>) {
        let ids = std::mem::take(&mut self.claimed);
        let ledger = self.shared();
        for id in ids {
            ledger.release(env.store, &id, self.owner, env.now_ms);
        }
    }

    /// What the ledger holds for line `item`.
    pub(super) fn ledger_line(&self, item: &SfId, env: &Env<'_>) -> LineState {
        match self.etcd_line(item) {
            Some(record) => record.state.clone(),
            None if self.etcd.is_some() => LineState::Unknown,
            None => self.shared().line(env.store, item),
        }
    }

    /// When a mark made now for a call of `timeout_ms` stops holding: with etcd, counted from
    /// when etcd may still be writing it.
    pub(super) fn ledger_busy_until(&self, timeout_ms: u64, env: &Env<'_>) -> u64 {
        let from = match self.cfg.etcd.as_ref() {
            Some(e) => env.now_ms.saturating_add(e.timeout_ms),
            None => env.now_ms,
        };
        self.shared().busy_until(from, timeout_ms)
    }

    /// After planning, before any license call: with etcd, every line to issue now is marked
    /// pending at once (a transaction per 64 lines, not one per line); then the calls start.
    /// Shared data marks each line when its call starts (`ledger_mark`): a write of its own
    /// costs nothing there.
    ///
    /// The marks hold (busy) until the last of these calls can be over, and the grace: when
    /// every queued call starts at once (no more than `max_concurrency`), one call's time after
    /// etcd has the marks; otherwise the delivery's deadline, by which every call ends.
    pub(super) fn ledger_mark_new_lines(&mut self, env: &mut Env<'_>) {
        let Some(etcd_timeout) = self.cfg.etcd.as_ref().map(|e| e.timeout_ms) else {
            return self.then(Resume::Pump);
        };
        let (timeout, max) = self.issuing().map_or((0, 1), |i| {
            (i.license.timeout_ms, i.license.max_concurrency)
        });
        let marked_at = env.now_ms.saturating_add(etcd_timeout);
        let calls_end = if self.work.queue.len() <= max {
            marked_at
                .saturating_add(timeout)
                .min(self.deadline_at.max(marked_at))
        } else {
            self.deadline_at.max(marked_at)
        };
        let busy_until = calls_end.saturating_add(self.cfg.ledger.pending_grace_ms);
        let marks: Vec<(usize, LineState)> = self
            .work
            .queue
            .iter()
            .filter(|(idx, step)| {
                *step == Step::Act
                    && self
                        .work
                        .lines
                        .get(*idx)
                        .is_some_and(|l| l.intent == Intent::Issue)
            })
            .map(|(idx, _)| {
                let mark = LineState::Pending {
                    busy_until_ms: busy_until,
                    expiry_before: None,
                };
                (*idx, mark)
            })
            .collect();
        self.etcd_send_marks(marks, env);
    }

    /// Record line `idx`'s pending mark before its license call (what it held before is kept
    /// on the line, for a call that is never sent). A line `ledger_mark_new_lines` marked is
    /// recorded already.
    pub(super) fn ledger_mark(&mut self, idx: usize, mark: LineState, env: &mut Env<'_>) -> Marked {
        let Some(item) = self.work.lines.get(idx).map(|l| l.item) else {
            return Marked::Failed;
        };
        if self.etcd_take_mark(&item) {
            return Marked::Recorded;
        }
        let before = self.ledger_line(&item, env);
        if let Some(l) = self.work.lines.get_mut(idx) {
            l.before_mark = Some(before);
        }
        if self.etcd.is_some() {
            return match self.etcd_set_line(idx, mark, true, env) {
                true => Marked::Sending,
                false => Marked::NotSent,
            };
        }
        match self.shared().set(env.store, &item, &mark, env.now_ms) {
            Ok(()) => Marked::Recorded,
            Err(e) => {
                let why = match e {
                    StoreError::Full => "the ledger is full of unfinished lines",
                    _ => "shared state unavailable",
                };
                self.outcome.failures.push(format!(
                    "could not record line {item} before licensing it: {why}"
                ));
                if e == StoreError::Full {
                    self.count(Metric::LedgerFull, 1);
                }
                Marked::Failed
            }
        }
    }

    /// Record line `idx`'s state when no call waits on it (a call's time over, a mark taken
    /// back); a failure is logged, not fatal.
    pub(super) fn ledger_set(&mut self, idx: usize, state: LineState, env: &mut Env<'_>) {
        if self.etcd.is_some() {
            self.etcd_set_line(idx, state, false, env);
            return;
        }
        let Some(item) = self.work.lines.get(idx).map(|l| l.item) else {
            return;
        };
        if self
            .shared()
            .set(env.store, &item, &state, env.now_ms)
            .is_err()
        {
            self.log(
                Level::Warn,
                format!("line {item}: its state was not recorded in shared state"),
            );
        }
    }

    /// Line `idx` got keys from a call (issued, found, changed): shared data records them now;
    /// etcd with every known line ([`Flow::ledger_keys_known`]).
    pub(super) fn ledger_licensed(&mut self, idx: usize, state: &LineState, env: &mut Env<'_>) {
        if self.etcd.is_some() {
            return;
        }
        let Some(item) = self.work.lines.get(idx).map(|l| l.item) else {
            return;
        };
        if self
            .shared()
            .set(env.store, &item, state, env.now_ms)
            .is_err()
        {
            self.log(
                Level::Error,
                format!("line {item}: key issued or changed but not recorded in shared state"),
            );
        }
    }

    /// Line `idx`'s keys are known, from a call or not: etcd's last transaction records them
    /// (shared data holds them already, or got them from [`Flow::ledger_licensed`]).
    pub(super) fn ledger_keys_known(&mut self, idx: usize) {
        if self.etcd.is_some() {
            let keys = self
                .work
                .lines
                .get(idx)
                .map(|l| l.keys.clone())
                .unwrap_or_default();
            self.etcd_licensed(idx, &keys);
        }
    }

    /// Salesforce accepted line `w`'s keys.
    pub(super) fn ledger_written(&mut self, w: &WriteBack, env: &mut Env<'_>) {
        if self.etcd.is_some() {
            self.etcd_written(&w.item);
        } else if !self.revokes(&w.item) {
            // A revoked line stays `R` whether Salesforce shows it or not.
            let _ = self
                .shared()
                .mark_written(env.store, &w.item, &w.keys, env.now_ms);
        }
    }
}
