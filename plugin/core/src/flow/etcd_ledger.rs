//! The flow's side of the etcd ledger (`ledger.backend: "etcd"`): every ledger step is a
//! dispatched call, answered like any other.
//!
//! One delivery: one transaction that claims every order (mod-revision compare; the claim names
//! its holder and until when it holds) and reads all their lines; one transaction that marks
//! every new line pending before any license call (a compare-and-swap of each, up to 64 lines a
//! transaction: a message of 100 one-line orders is two), and a compare-and-swap of its own for a
//! line whose mark must wait (a renewal's, which holds the expiry read first; an issue after a
//! lookup); one last transaction that records each licensed line (issued, or written back) and
//! releases the claims, answered before the reply goes out. Three transactions for a message of
//! new lines, whatever its size up to 64 lines.
//!
//! A claim holds for the claim TTL from when it was taken, by the time written in it: a claim
//! found past that time is taken over (a compare on the revision seen), whoever left it. The
//! claim keys also hang on a lease, shared by the Envoy's workers (in shared data) and granted
//! for twice the claim TTL, so that etcd deletes what a crashed Envoy left; a lease is not the
//! clock, because etcd renews every lease's TTL when its leader changes. A grant per ~claim
//! TTL, not per message. A line's keys reach etcd in the last transaction: if the Envoy dies before
//! it, the line stays pending and is looked up once its call's time is over.
//! etcd unreachable or refusing is a retryable fault, and no license call is ever made without
//! the claim and the pending mark being in etcd first.

use super::*;
use crate::config::EtcdConfig;
use crate::etcd::{self, Claimed, EtcdError, Keys, LineRecord, SeenClaim};

/// A call to etcd and what comes after it.
#[derive(Debug, Clone)]
pub(super) enum EtcdStep {
    /// Log in to etcd, then take the step.
    Auth {
        then: Box<EtcdStep>,
    },
    Grant,
    Claim,
    /// Compare-and-swap line `idx` to `state`; `issue`: then send its license call.
    Line {
        idx: usize,
        state: LineState,
        issue: bool,
    },
    /// Mark these lines pending, all or none (`MARKS_CHUNK` at most), then the next part or the
    /// license calls.
    Marks {
        lines: Vec<(usize, LineState)>,
        rest: Vec<(usize, LineState)>,
    },
    /// Record the licensed lines, release the claims, then send the held reply. Not `last`: a
    /// part with more records only (a long message's records do not fit one transaction).
    Final {
        last: bool,
    },
}

/// This delivery's part of the etcd ledger.
#[derive(Debug, Default)]
pub(super) struct EtcdRun {
    lease: Option<String>,
    /// The lease was granted by this delivery (a refused one is not granted again).
    granted: bool,
    /// The orders claimed so far (claims are taken in order, a prefix of `wanted`), each with the
    /// revision the claim was written at: later writes hold only while it is still there.
    claims: Vec<(SfId, i64)>,
    /// The revision each order of the next claim part must still have (0: absent). Empty: all 0.
    expected: Vec<i64>,
    /// Claim transactions of the current part that found a claim to take over or their own.
    contests: u8,
    /// Until when this delivery's claims hold (ms since the epoch): a claim TTL from its start.
    claims_until: u64,
    /// What etcd holds for the lines of the claimed orders, with the revision a CAS names.
    lines: Vec<LineRecord>,
    /// (order, line, keys) licensed by this delivery (issued or found by a lookup).
    licensed: Vec<(SfId, SfId, Vec<String>)>,
    /// Lines Salesforce now holds the keys of.
    written: Vec<SfId>,
    relogged: bool,
    /// Lines whose pending mark a `Marks` transaction recorded, not yet sent (their call needs
    /// no mark of its own).
    marked: Vec<SfId>,
    /// Calls sent again because they never reached etcd (see `on_etcd`).
    retries: u8,
    token_cas: Option<u32>,
    /// The reply, held until the final transaction has answered.
    reply: Option<Reply>,
    /// Records already sent by parts of the last transaction.
    final_sent: usize,
}

const ETCD_TOKEN_KEY: &str = "etcd_token";
const MAX_RETRIES: u8 = 4;
/// etcd refuses a transaction with more operations in a list than its `--max-txn-ops` (128 by
/// default). A message has at most 100 orders, so the claims' compares always fit.
const MAX_TXN_OPS: usize = 128;
/// Orders per claim transaction (a put and a read each): one transaction up to 64 orders.
const CLAIM_CHUNK: usize = MAX_TXN_OPS / 2;
/// Lines per marks transaction: a compare each and perhaps their order's claim's.
pub(super) const MARKS_CHUNK: usize = MAX_TXN_OPS / 2;
/// Shared data: `<lease id> <expires at, ms>` of the lease this Envoy's claims are attached to.
const ETCD_LEASE_KEY: &str = "etcd_lease";
/// A part of the claims tried again after finding expired claims (taken over meanwhile by
/// someone else each time): then the orders are "busy".
const MAX_CONTESTS: u8 = 3;

impl Flow {
    fn etcd_cfg(&self) -> Option<&EtcdConfig> {
        self.cfg.etcd.as_ref()
    }

    fn etcd_token_key(&self) -> String {
        format!("{}:{ETCD_TOKEN_KEY}", self.cfg.state_prefix)
    }

    fn etcd_lease_key(&self) -> String {
        format!("{}:{ETCD_LEASE_KEY}", self.cfg.state_prefix)
    }

    /// Claim the orders: on the Envoy's lease while it has a claim TTL left, else on a new one.
    pub(super) fn etcd_begin(&mut self, env: &mut Env<'_>) -> bool {
        if let Some(run) = self.etcd.as_mut() {
            run.claims_until = env.now_ms.saturating_add(self.cfg.ledger.claim_ttl_ms);
        }
        let cached = env.store.get(&self.etcd_lease_key()).and_then(|(v, _)| {
            let text = String::from_utf8_lossy(&v).into_owned();
            let (id, expires) = text.split_once(' ')?;
            let expires: u64 = expires.parse().ok()?;
            let left = expires.saturating_sub(env.now_ms);
            (left >= self.cfg.ledger.claim_ttl_ms).then(|| id.to_owned())
        });
        match (cached, self.etcd.as_mut()) {
            (Some(lease), Some(run)) => {
                run.lease = Some(lease);
                self.etcd_send(EtcdStep::Claim, env)
            }
            _ => self.etcd_send(EtcdStep::Grant, env),
        }
    }

    fn lease_ttl_s(&self) -> u64 {
        self.cfg
            .ledger
            .claim_ttl_ms
            .saturating_mul(2)
            .div_ceil(1000)
    }

    /// What etcd holds for line `item` (`Unknown`, revision 0: nothing).
    pub(super) fn etcd_line(&self, item: &SfId) -> Option<&LineRecord> {
        self.etcd
            .as_ref()?
            .lines
            .iter()
            .find(|l| l.item.same_record(item))
    }

    /// Send `step` to etcd, logging in first when etcd wants credentials and none is cached.
    pub(super) fn etcd_send(&mut self, step: EtcdStep, env: &mut Env<'_>) -> bool {
        let Some(e) = self.etcd_cfg() else {
            return false;
        };
        let (cluster, authority, timeout) = (e.cluster.clone(), e.authority.clone(), e.timeout_ms);
        let mut headers = vec![("content-type", "application/json".to_owned())];
        // With credentials: the cached token, or a login first.
        let token = e.credentials.as_ref().map(|(user, password)| {
            let cached = env
                .store
                .get(&self.etcd_token_key())
                .filter(|(v, _)| !v.is_empty());
            cached.ok_or_else(|| etcd::auth_body(user.expose(), password.expose()))
        });
        let (path, body, what) = match token {
            Some(Err(login)) => (
                etcd::AUTH_PATH,
                login,
                EtcdStep::Auth {
                    then: Box::new(step),
                },
            ),
            token => {
                if let Some(Ok((t, cas))) = token {
                    if let Some(run) = self.etcd.as_mut() {
                        run.token_cas = Some(cas);
                    }
                    headers.push(("authorization", String::from_utf8_lossy(&t).into_owned()));
                }
                let Some((path, body)) = self.etcd_request(&step) else {
                    return false;
                };
                (path, body, step)
            }
        };
        self.dispatch(
            Awaiting::Etcd(what),
            Call {
                id: 0,
                cluster,
                method: "POST",
                path: path.to_owned(),
                authority,
                headers,
                body,
                timeout_ms: timeout,
                reply_headers: &[],
            },
            env,
        )
    }

    fn etcd_request(&self, step: &EtcdStep) -> Option<(&'static str, Vec<u8>)> {
        let prefix = self.etcd_cfg().map(|e| e.prefix.as_str()).unwrap_or("");
        let keys = Keys { prefix };
        let lease = self
            .etcd
            .as_ref()
            .and_then(|r| r.lease.as_deref())
            .unwrap_or("0");
        Some(match step {
            EtcdStep::Grant | EtcdStep::Auth { .. } => {
                (etcd::GRANT_PATH, etcd::grant_body(self.lease_ttl_s()))
            }
            EtcdStep::Claim => {
                let expected = self.etcd.as_ref().map_or(&[][..], |r| &r.expected);
                let chunk: Vec<(SfId, i64)> = self
                    .claim_chunk()
                    .into_iter()
                    .enumerate()
                    .map(|(i, o)| (o, expected.get(i).copied().unwrap_or(0)))
                    .collect();
                let until = self.etcd.as_ref().map_or(0, |r| r.claims_until);
                let value = etcd::claim_value(self.owner, until);
                (
                    etcd::TXN_PATH,
                    etcd::claim_body(&keys, &chunk, lease, &value),
                )
            }
            EtcdStep::Line { idx, state, .. } => {
                let (order, item) = self.line_ids(*idx)?;
                let rev = self.etcd_line(&item).map(|l| l.mod_revision).unwrap_or(0);
                let claim = self.claim_revision(&order)?;
                (
                    etcd::TXN_PATH,
                    etcd::line_cas_body(&keys, (order, claim), &item, state, rev),
                )
            }
            EtcdStep::Marks { lines, .. } => {
                let mut marks = Vec::with_capacity(lines.len());
                for (idx, state) in lines {
                    let (order, item) = self.line_ids(*idx)?;
                    marks.push(etcd::LineMark {
                        order,
                        claim_revision: self.claim_revision(&order)?,
                        item,
                        state,
                        mod_revision: self.etcd_line(&item).map(|l| l.mod_revision).unwrap_or(0),
                    });
                }
                (etcd::TXN_PATH, etcd::marks_body(&keys, &marks))
            }
            EtcdStep::Final { last } => {
                let records = self.final_records();
                let sent = self.etcd.as_ref().map_or(0, |r| r.final_sent);
                let rest = records.get(sent..).unwrap_or(&[]);
                let claims = self.etcd.as_ref().map_or(&[][..], |r| &r.claims);
                let body = if *last {
                    etcd::final_body(&keys, claims, rest)
                } else {
                    etcd::records_body(&keys, rest.get(..MAX_TXN_OPS).unwrap_or(rest))
                };
                (etcd::TXN_PATH, body)
            }
        })
    }

    /// The next orders to claim.
    fn claim_chunk(&self) -> Vec<SfId> {
        let from = self.etcd.as_ref().map_or(0, |r| r.claims.len());
        self.wanted
            .iter()
            .skip(from)
            .take(CLAIM_CHUNK)
            .copied()
            .collect()
    }

    /// The revision this delivery's claim on `order` was written at.
    fn claim_revision(&self, order: &SfId) -> Option<i64> {
        let run = self.etcd.as_ref()?;
        run.claims
            .iter()
            .find(|(o, _)| o.same_record(order))
            .map(|(_, rev)| *rev)
    }

    /// Each line this delivery licensed, as the last transaction records it.
    fn final_records(&self) -> Vec<(SfId, SfId, LineState)> {
        let Some(run) = self.etcd.as_ref() else {
            return Vec::new();
        };
        run.licensed
            .iter()
            .map(|(order, item, k)| {
                let state = if self.revokes(item) {
                    LineState::Revoked(k.clone())
                } else if run.written.iter().any(|w| w.same_record(item)) {
                    LineState::WrittenBack(k.clone())
                } else {
                    LineState::Issued(k.clone())
                };
                (*order, *item, state)
            })
            .collect()
    }

    /// The next part of the last transaction: the last one when the records left and the
    /// claims' release fit in one.
    fn final_step(&self) -> EtcdStep {
        let (records, sent, claims) = self.etcd.as_ref().map_or((0, 0, 0), |r| {
            (r.licensed.len(), r.final_sent, r.claims.len())
        });
        let rest = records.saturating_sub(sent);
        EtcdStep::Final {
            last: rest + claims <= MAX_TXN_OPS,
        }
    }

    /// (order, item) of line `idx`.
    pub(super) fn line_ids(&self, idx: usize) -> Option<(SfId, SfId)> {
        let line = self.work.lines.get(idx)?;
        Some((self.work.orders.get(line.order)?.id, line.item))
    }

    /// Mark `marks` pending in etcd, `MARKS_CHUNK` lines a transaction, then start the license
    /// calls.
    pub(super) fn etcd_send_marks(
        &mut self,
        mut marks: Vec<(usize, LineState)>,
        env: &mut Env<'_>,
    ) {
        if marks.is_empty() {
            return self.then(Resume::Pump);
        }
        let rest = marks.split_off(marks.len().min(MARKS_CHUNK));
        let step = EtcdStep::Marks { lines: marks, rest };
        if !self.etcd_send(step.clone(), env) {
            self.etcd_failed(step, "deadline reached");
        }
    }

    /// Was line `item`'s pending mark recorded by a marks transaction (and not used yet)? Its
    /// call then needs no mark of its own; asking uses it up.
    pub(super) fn etcd_take_mark(&mut self, item: &SfId) -> bool {
        let Some(run) = self.etcd.as_mut() else {
            return false;
        };
        match run.marked.iter().position(|m| m.same_record(item)) {
            Some(pos) => {
                run.marked.swap_remove(pos);
                true
            }
            None => false,
        }
    }

    /// Compare-and-swap line `idx` to `state` in etcd. With `issue`, the line holds a
    /// concurrency slot until its license call has answered.
    pub(super) fn etcd_set_line(
        &mut self,
        idx: usize,
        state: LineState,
        issue: bool,
        env: &mut Env<'_>,
    ) -> bool {
        let sent = self.etcd_send(EtcdStep::Line { idx, state, issue }, env);
        if sent && issue {
            self.work.in_flight += 1;
        }
        sent
    }

    /// Line `idx` has keys (issued, found by a lookup, or known to etcd already): recorded by
    /// the final transaction.
    pub(super) fn etcd_licensed(&mut self, idx: usize, keys: &[String]) {
        if let (Some((order, item)), Some(run)) = (self.line_ids(idx), self.etcd.as_mut()) {
            if !run.licensed.iter().any(|(_, i, _)| i.same_record(&item)) {
                run.licensed.push((order, item, keys.to_vec()));
            }
        }
    }

    /// Lines Salesforce accepted: recorded as written back by the final transaction.
    pub(super) fn etcd_written(&mut self, item: &SfId) {
        if let Some(run) = self.etcd.as_mut() {
            run.written.push(*item);
        }
    }

    /// The delivery is over: with claims in etcd, release them (and record what was written
    /// back) before `reply` goes out. `false`: nothing to release, reply now.
    pub(super) fn etcd_release(&mut self, reply: Reply, env: &mut Env<'_>) -> Option<Reply> {
        let holds = self
            .etcd
            .as_ref()
            .is_some_and(|r| r.lease.is_some() && !r.claims.is_empty());
        if !holds {
            return Some(reply);
        }
        if let Some(run) = self.etcd.as_mut() {
            run.reply = Some(reply);
        }
        if self.etcd_send(self.final_step(), env) {
            return None;
        }
        // No time left to release: the claims hold until the time written in them.
        self.etcd.as_mut().and_then(|r| r.reply.take())
    }

    pub(super) fn on_etcd(&mut self, step: EtcdStep, resp: Response, env: &mut Env<'_>) {
        // Sent again: a call that never reached etcd; and, whatever became of the first one, a
        // step that is safe to repeat: the lease grant (a spare lease expires), the claim (one
        // taken by this delivery is recognised as its own), the last transaction (facts, and
        // the release of claims that are still ours). Not a line's compare-and-swap.
        // Envoy could not connect to the member it picked: it has ejected it by then.
        let never_reached = resp.never_sent();
        let repeatable = matches!(
            step,
            EtcdStep::Grant | EtcdStep::Claim | EtcdStep::Final { .. }
        );
        let lost = resp.status.is_none_or(|s| s >= 500);
        if let Some(run) = self.etcd.as_mut() {
            if (never_reached || (repeatable && lost)) && run.retries < MAX_RETRIES {
                run.retries += 1;
                return self.resend(step, env);
            }
        }
        let Some(status) = resp.status else {
            return self.etcd_failed(step, "no response (unreachable, reset or timeout)");
        };
        if let EtcdStep::Auth { then } = step {
            return match etcd::parse_auth(status, &resp.body) {
                Ok(token) => {
                    let key = self.etcd_token_key();
                    let _ = env.store.set(&key, token.as_bytes(), None);
                    self.resend(*then, env);
                }
                Err(e) => {
                    self.log(Level::Error, format!("etcd login failed: {e}"));
                    self.etcd_failed(*then, "login refused");
                }
            };
        }
        let result = match &step {
            EtcdStep::Auth { .. } | EtcdStep::Grant => {
                etcd::parse_grant(status, &resp.body).map(Answer::Lease)
            }
            EtcdStep::Claim => {
                let prefix = self.etcd_cfg().map(|e| e.prefix.as_str()).unwrap_or("");
                let chunk = self.claim_chunk();
                etcd::parse_claim(status, &resp.body, &Keys { prefix }, chunk.len())
                    .map(|c| Answer::Claim(c, chunk))
            }
            EtcdStep::Line { .. } | EtcdStep::Marks { .. } => {
                etcd::parse_cas(status, &resp.body).map(Answer::Cas)
            }
            EtcdStep::Final { .. } => etcd::parse_final(status, &resp.body).map(Answer::Final),
        };
        match result {
            Err(EtcdError::AuthInvalid) => self.etcd_relogin(step, env),
            Err(EtcdError::Refused { ref message, .. })
                if matches!(step, EtcdStep::Claim)
                    && message.contains("lease not found")
                    && self.etcd.as_ref().is_some_and(|r| !r.granted) =>
            {
                // The cached lease is gone (etcd restored, revoked by hand): a new one.
                let _ = env.store.set(&self.etcd_lease_key(), b"", None);
                self.resend(EtcdStep::Grant, env);
            }
            Err(e) => self.etcd_failed(step, &e.to_string()),
            Ok(Answer::Lease(lease)) => {
                let expires = env.now_ms.saturating_add(self.lease_ttl_s() * 1000);
                let _ = env.store.set(
                    &self.etcd_lease_key(),
                    format!("{lease} {expires}").as_bytes(),
                    None,
                );
                if let Some(run) = self.etcd.as_mut() {
                    run.lease = Some(lease);
                    run.granted = true;
                }
                self.resend(EtcdStep::Claim, env);
            }
            Ok(Answer::Claim(Claimed::Taken { revision, lines }, chunk)) => {
                let claimed = self.etcd.as_mut().map_or(0, |run| {
                    run.lines.extend(lines);
                    run.claims.extend(chunk.into_iter().map(|o| (o, revision)));
                    run.expected.clear();
                    run.contests = 0;
                    run.claims.len()
                });
                if claimed < self.wanted.len() {
                    self.resend(EtcdStep::Claim, env);
                } else {
                    self.query_orders(env);
                }
            }
            Ok(Answer::Claim(Claimed::Contested(seen), chunk)) => {
                self.on_contested_claims(&seen, &chunk, env)
            }
            Ok(Answer::Cas(Some(rev))) if matches!(step, EtcdStep::Marks { .. }) => {
                if let EtcdStep::Marks { lines, rest } = step {
                    for (idx, state) in lines {
                        let Some(item) = self.work.lines.get(idx).map(|l| l.item) else {
                            continue;
                        };
                        // What the line held before, for a call that is then never sent.
                        let before = self
                            .etcd_line(&item)
                            .map_or(LineState::Unknown, |l| l.state.clone());
                        if let Some(line) = self.work.lines.get_mut(idx) {
                            line.before_mark = Some(before);
                        }
                        self.etcd_line_recorded(idx, state, rev);
                        if let Some(run) = self.etcd.as_mut() {
                            run.marked.push(item);
                        }
                    }
                    self.etcd_send_marks(rest, env);
                }
            }
            Ok(Answer::Cas(Some(rev))) => {
                if let EtcdStep::Line { idx, state, issue } = step {
                    self.etcd_line_recorded(idx, state, rev);
                    if issue {
                        self.work.in_flight = self.work.in_flight.saturating_sub(1);
                        self.then(Resume::SendMarked(idx));
                        self.then(Resume::Pump);
                    }
                }
            }
            Ok(Answer::Cas(None)) => self.etcd_failed(
                step,
                "the line changed or the order's claim expired (another delivery took it over)",
            ),
            Ok(Answer::Final(_)) if matches!(step, EtcdStep::Final { last: false }) => {
                if let Some(run) = self.etcd.as_mut() {
                    run.final_sent += MAX_TXN_OPS;
                }
                let next = self.final_step();
                self.resend(next, env);
            }
            Ok(Answer::Final(released)) => {
                if !released {
                    self.log(
                        Level::Warn,
                        "an order's claim expired before this delivery ended".into(),
                    );
                }
                self.send_held_reply();
            }
        }
    }

    /// The claim transaction found claims where it expected none (or other revisions): go on
    /// over the expired ones and this delivery's own (its first answer was lost); any other is
    /// held, and its orders are "busy".
    fn on_contested_claims(&mut self, seen: &[SeenClaim], chunk: &[SfId], env: &mut Env<'_>) {
        let now = env.now_ms;
        let held: Vec<String> = seen
            .iter()
            .zip(chunk)
            .filter(|(c, _)| {
                let ours = c.owner == Some(self.owner);
                let expired = c.until_ms.is_some_and(|u| u <= now);
                c.mod_revision != 0 && !ours && !expired
            })
            .map(|(_, o)| o.to_string())
            .collect();
        let contests = self.etcd.as_ref().map_or(0, |r| r.contests);
        if held.is_empty() && contests < MAX_CONTESTS {
            for (c, o) in seen.iter().zip(chunk) {
                if c.mod_revision != 0 && c.owner != Some(self.owner) {
                    self.log(
                        Level::Info,
                        format!("order {o}: taking over a claim that expired"),
                    );
                }
            }
            if let Some(run) = self.etcd.as_mut() {
                run.expected = seen.iter().map(|c| c.mod_revision).collect();
                run.contests += 1;
            }
            return self.resend(EtcdStep::Claim, env);
        }
        let orders = if held.is_empty() {
            chunk.iter().map(|o| o.to_string()).collect()
        } else {
            held
        };
        let reason = format!(
            "order {} is being processed by another request; retry later",
            orders.join(", ")
        );
        self.log(Level::Warn, reason.clone());
        // Orders claimed by an earlier part are released before the reply.
        self.outcome.busy.push(reason);
        self.finish(env);
    }

    fn etcd_line_recorded(&mut self, idx: usize, state: LineState, rev: i64) {
        let Some(item) = self.work.lines.get(idx).map(|l| l.item) else {
            return;
        };
        let Some(run) = self.etcd.as_mut() else {
            return;
        };
        match run.lines.iter_mut().find(|l| l.item.same_record(&item)) {
            Some(l) => {
                l.state = state;
                l.mod_revision = rev;
            }
            None => run.lines.push(LineRecord {
                item,
                state,
                mod_revision: rev,
            }),
        }
    }

    fn resend(&mut self, step: EtcdStep, env: &mut Env<'_>) {
        if !self.etcd_send(step.clone(), env) {
            self.etcd_failed(step, "deadline reached");
        }
    }

    /// The token expired: forget it (if it is still the one used) and log in once more.
    fn etcd_relogin(&mut self, step: EtcdStep, env: &mut Env<'_>) {
        let has_credentials = self.etcd_cfg().is_some_and(|e| e.credentials.is_some());
        let Some(run) = self.etcd.as_mut() else {
            return;
        };
        if !has_credentials || run.relogged {
            let why = if has_credentials {
                "etcd refused a fresh auth token"
            } else {
                "etcd requires authentication: set ledger.etcd.user_env and password_env"
            };
            return self.etcd_failed(step, why);
        }
        run.relogged = true;
        if let Some(cas) = run.token_cas.take() {
            let _ = env.store.set(&self.etcd_token_key(), b"", Some(cas));
        }
        self.resend(step, env);
    }

    /// A ledger step failed: nothing that depends on it happens in this delivery.
    pub(super) fn etcd_failed(&mut self, step: EtcdStep, why: &str) {
        self.count(Metric::CalloutsFailedLedger, 1);
        match step {
            EtcdStep::Auth { then } => self.etcd_failed(*then, why),
            EtcdStep::Grant | EtcdStep::Claim => {
                let reason = format!("could not claim the orders in etcd: {why}; retry later");
                self.log(Level::Warn, reason.clone());
                self.outcome.failures.push(reason);
            }
            EtcdStep::Marks { lines, rest } => {
                // None of these lines is marked: none gets a call in this delivery.
                let failed: Vec<usize> = lines.iter().chain(&rest).map(|(idx, _)| *idx).collect();
                for idx in &failed {
                    let item = self.line_item(*idx);
                    let msg =
                        format!("line {item} not licensed: recording it in etcd failed: {why}");
                    self.log(Level::Warn, msg.clone());
                    self.outcome.failures.push(msg);
                }
                self.work.queue.retain(|(idx, _)| !failed.contains(idx));
                self.then(Resume::Pump);
            }
            EtcdStep::Line { idx, issue, .. } => {
                let item = self.line_item(idx);
                let msg = if issue {
                    format!("line {item} not licensed: recording it in etcd failed: {why}")
                } else {
                    format!("line {item}: its state was not recorded in etcd: {why}")
                };
                self.log(Level::Warn, msg.clone());
                if issue {
                    self.work.in_flight = self.work.in_flight.saturating_sub(1);
                    self.outcome.failures.push(msg);
                    self.then(Resume::Pump);
                }
            }
            EtcdStep::Final { .. } => {
                // What was done is done; unreleased claims hold until the time written in them.
                self.log(
                    Level::Warn,
                    format!("could not release the claims in etcd: {why}"),
                );
                self.send_held_reply();
            }
        }
    }

    fn send_held_reply(&mut self) {
        if let Some(reply) = self.etcd.as_mut().and_then(|r| r.reply.take()) {
            self.reply(reply);
        }
    }
}

enum Answer {
    Lease(String),
    Claim(Claimed, Vec<SfId>),
    Cas(Option<i64>),
    Final(bool),
}
