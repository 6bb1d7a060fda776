//! The per-message state machine, sans-IO: events in ([`Flow::start`], [`Flow::on_response`]),
//! [`Command`]s out. The shell carries out the commands and feeds responses back.
//!
//! Phases: claim orders → (login if no token) → query (one SOQL, all pages, then the further
//! pages of any order's OrderItems) → plan lines → license calls (one per line, at most
//! `max_concurrency` in flight; a lookup first wherever an earlier call may have issued: the
//! ledger is volatile, so that is every line it cannot vouch for) → write-back (sObject
//! Collections) → one reply. A line's [`Intent`] is an issue, or with `lifecycle` a revoke,
//! restore, reduction or renewal of the keys of the line it names.
//!
//! Files, each calling only those below it (this one, the hub, feeds every event in):
//! - `salesforce_calls`: what Salesforce's replies mean (login, query pages, write-back, marks);
//! - `lifecycle`: what a key change's reply means (revoke, restore, reduce, renew, the expiry
//!   read that makes a renewal happen once);
//! - `plan`: what each line needs;
//! - `licensing`: the license calls (issue, lookup, key changes), at most `max_concurrency` at a
//!   time, the write-ahead marks before them, what an issue's or a lookup's reply means;
//! - `line_ledger`: the one seam onto the ledger (claims, a line's state, marks, release), behind
//!   which are shared data and `etcd_ledger`; they ask for the license calls to go on through
//!   `Resume`, never by calling up;
//! - `salesforce_requests`: sending a Salesforce call (the shared token, a login first);
//! - `marks`: the texts of a line in progress in Salesforce's fields.
//!
//! This one holds the types and the message's life (start, responses, cancel, the one reply).
//!
//! Invariants a reader can check here: exactly one `Reply` per flow, always the last command;
//! an ack only when every line that was meant to be licensed has a recorded key; every
//! dispatched call gets exactly one response (reset and timeout arrive as [`Response`] too).

use std::collections::VecDeque;
use std::rc::Rc;

use crate::config::{Config, Issuing};
use crate::ids::SfId;
use crate::ledger::{Ledger, LineState};
use crate::license::{self, looks_like_key, Customer, IssueRequest, LicenseError};
use crate::metrics::{Gauge, Metric};
use crate::reply::{outcome_metric, FaultKind, Reply};
use crate::salesforce::{self, Order, SalesforceError, Token, WriteBack};
use crate::soap::OutboundMessage;
use crate::store::Store;

mod etcd_ledger;
mod licensing;
mod lifecycle;
mod line_ledger;
mod marks;
mod plan;
mod salesforce_calls;
mod salesforce_requests;

use etcd_ledger::{EtcdRun, EtcdStep};

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Dispatch(Call),
    Reply(Reply),
    Log(Level, String),
    Count(Metric, u64),
    /// Set a gauge (the start-up self-check's readiness).
    Gauge(Gauge, u64),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Level {
    Info,
    Warn,
    Error,
}

/// One outbound HTTP call through an Envoy cluster.
#[derive(Clone, PartialEq)]
pub struct Call {
    pub id: u32,
    pub cluster: String,
    pub method: &'static str,
    /// May hold credentials in its query (a strict-authentication GET to the license server):
    /// never logged whole.
    pub path: String,
    pub authority: String,
    /// Regular headers (the shell adds `:method`, `:path`, `:authority`). May carry a token.
    pub headers: Vec<(&'static str, String)>,
    /// May carry credentials: never logged.
    pub body: Vec<u8>,
    pub timeout_ms: u64,
    /// The reply headers the core reads (lower case): the shell passes these in the
    /// [`Response`], and only these.
    pub reply_headers: &'static [&'static str],
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers, body and query may hold secrets; show only where the call goes.
        let path = self
            .path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p);
        write!(
            f,
            "Call#{} {} {path} via {}",
            self.id, self.method, self.cluster
        )
    }
}

/// The outcome of a call. `status: None` = reset, timeout, refused: no HTTP answer at all (the
/// body is then empty, or [`NOT_DISPATCHED`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Option<u16>,
    /// The headers of [`Call::reply_headers`] the reply had, in that order.
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

/// The body of the response the shell feeds back for a call the host refused to dispatch.
pub const NOT_DISPATCHED: &[u8] = b"not dispatched: the host refused the call";

/// Envoy's local replies (503) for a call it never sent upstream: a circuit breaker was open
/// (`overflow`: too many requests or pending requests on the cluster), or no connection could be
/// made. Envoy's router writes them as `... reset reason: <reason>`.
const ENVOY_NEVER_SENT: [&[u8]; 2] = [
    b"reset reason: overflow",
    b"reset reason: connection failure",
];

impl Response {
    /// The response as a license-server backend reads it, at `now_ms`; `None`: no HTTP answer.
    pub fn license_reply(&self, now_ms: u64) -> Option<license::LicenseReply<'_>> {
        Some(license::LicenseReply {
            status: self.status?,
            headers: &self.headers,
            body: &self.body,
            now_ms,
        })
    }

    /// The call never left this Envoy: whatever it asked was not done, and asking again is safe.
    pub fn never_sent(&self) -> bool {
        let envoy_refused = self.status == Some(503)
            && ENVOY_NEVER_SENT
                .iter()
                .any(|r| self.body.windows(r.len()).any(|w| w == *r));
        envoy_refused || (self.status.is_none() && self.body == NOT_DISPATCHED)
    }
}

/// The world the flow sees at each step: a clock and shared data.
pub struct Env<'s> {
    pub now_ms: u64,
    pub store: &'s mut dyn Store,
}

/// What the ledger's parts (`line_ledger`, `etcd_ledger`), which sit below the license calls,
/// ask to happen once the event at hand is handled: they never call back up into `licensing`,
/// so the flow's files call one way only (replies → plan → license calls → ledger → sending).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Resume {
    /// Start queued license calls up to the concurrency bound (`pump`).
    Pump,
    /// Send line `idx`'s call: its pending mark is recorded (`send_marked`).
    SendMarked(usize),
}

/// Don't start a call that would have less than this before the deadline.
const MIN_CALL_MS: u64 = 200;

#[derive(Debug, Clone)]
enum SfCall {
    Query {
        path: String,
    },
    /// A further page of one order's OrderItems.
    Items {
        order: SfId,
        path: String,
    },
    /// Lines' keys and states; or, with `mark_for`, one renewal line's write-ahead mark in its
    /// state field (shared-data ledger only: the expiry before the renewal, so that a restart
    /// cannot lose it), after which that line's renewal is sent.
    WriteBack {
        lines: Vec<WriteBack>,
        mark_for: Option<usize>,
    },
    /// New lines' issuing marks (shared-data ledger): (line, its mark) for this call, and the
    /// marks still to send after it. The license calls wait for all of them.
    IssueMarks {
        marks: Vec<(usize, WriteBack)>,
        rest: Vec<(usize, WriteBack)>,
    },
}

#[derive(Debug, Clone)]
enum Awaiting {
    Login {
        then: SfCall,
    },
    Sf(SfCall),
    Issue(usize),
    Lookup(usize),
    /// A lifecycle call on one key of the line (`lifecycle`).
    Change(usize),
    /// `ValidateLicenseHttp` of a renewal line's key: its expiry.
    Validate(usize),
    Etcd(EtcdStep),
}

/// What a line asks of the license server.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Intent {
    Issue,
    /// The order was cancelled: revoke the line's keys.
    Revoke,
    /// Activated again after a cancellation: the same keys, no longer revoked.
    Restore,
    /// A reduction line: the reduced line's key now allows this many activations (0: revoked).
    Reduce(u32),
    /// A renewal line: renew the renewed line's key (exactly once).
    Renew,
}

/// The next license-server step of a queued line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Step {
    /// Find the keys of the line's target (the license server's lookup).
    Lookup,
    /// Read the target key's expiry (renewals).
    Validate,
    /// The intent's own call (after the write-ahead mark where it is not idempotent).
    Act,
}

/// One order line and what it needs.
#[derive(Debug, Clone)]
struct Line {
    order: usize,
    item: SfId,
    code: String,
    quantity: u32,
    intent: Intent,
    /// The line whose keys the intent is about: `item` itself, or the line reduced or renewed.
    target: SfId,
    /// The target's keys once known (ledger, write-back field or lookup).
    keys: Vec<String>,
    /// Keys a revoke or restore has changed so far (one call per key).
    keys_done: usize,
    /// A renewal whose earlier call's outcome is unknown: the expiry recorded before that call.
    expiry_recorded: Option<Option<String>>,
    /// A renewal's key expiry read just before its call.
    expiry_now: Option<String>,
    /// What the ledger held for the line before its pending mark: restored when the call is
    /// never sent.
    before_mark: Option<LineState>,
}

#[derive(Debug, Clone)]
struct PlannedOrder {
    id: SfId,
    order_number: String,
    customer: Customer,
}

pub struct Flow {
    cfg: Rc<Config>,
    owner: u64,
    deadline_at: u64,
    next_id: u32,
    /// Calls in flight: (call id, what it was); a handful at a time.
    pending: Vec<(u32, Awaiting)>,
    /// Activated orders of the message, deduplicated, in message order.
    wanted: Vec<SfId>,
    claimed: Vec<SfId>,
    salesforce: SalesforceSession,
    work: LicenseWork,
    outcome: Outcome,
    finished: bool,
    /// The etcd ledger's part of this delivery (`None`: shared data).
    etcd: Option<EtcdRun>,
    /// What the ledger asked to happen next, in order (`run_resumed`).
    resume: Vec<Resume>,
    out: Vec<Command>,
}

/// The Salesforce side of one delivery: its login, what it read, what it has still to write.
#[derive(Default)]
struct SalesforceSession {
    relogged: bool,
    /// CAS token of the shared Salesforce token this flow used, so that a 401 clears only that
    /// token and never one another worker has just stored.
    token_cas: Option<u32>,
    /// The orders as the query read them, until they are planned.
    fetched: Vec<Order>,
    /// Lines with keys (and states) that Salesforce does not have yet.
    to_write: Vec<WriteBack>,
}

/// The license work of one delivery: the orders and lines planned, the calls waiting, and how
/// many are at the license server (or etcd, for a mark) now.
#[derive(Default)]
struct LicenseWork {
    orders: Vec<PlannedOrder>,
    lines: Vec<Line>,
    /// Lines waiting for a license-server call (index into `lines`, and which call).
    queue: VecDeque<(usize, Step)>,
    in_flight: usize,
    /// Until when the license server throttles the account (`None`: not throttled), read from
    /// shared data once, when this delivery's license calls start, and set by its own 429s.
    throttled_until: Option<Option<u64>>,
}

/// How the delivery is going, for its one reply: what failed, what is busy, what was done.
#[derive(Default)]
struct Outcome {
    failures: Vec<String>,
    /// Lines whose earlier license call may still be running: retry later, nothing failed.
    busy: Vec<String>,
    deadline_hit: bool,
    /// Keys issued / found by lookup / changed (revoked, restored, …), for the summary log line.
    issued: u32,
    recovered: u32,
    changed: u32,
}

impl Flow {
    /// Start on a parsed, sender-checked message. Returns the flow (if it has work in flight)
    /// and the first commands.
    pub fn start(
        cfg: Rc<Config>,
        msg: &OutboundMessage,
        owner: u64,
        env: &mut Env<'_>,
    ) -> (Option<Flow>, Vec<Command>) {
        let mut flow = Flow {
            deadline_at: env.now_ms.saturating_add(cfg.deadline_ms),
            cfg,
            owner,
            next_id: 1,
            pending: Vec::new(),
            wanted: Vec::new(),
            claimed: Vec::new(),
            salesforce: SalesforceSession::default(),
            work: LicenseWork::default(),
            outcome: Outcome::default(),
            finished: false,
            etcd: None,
            resume: Vec::new(),
            out: Vec::new(),
        };
        if flow.cfg.etcd.is_some() {
            flow.etcd = Some(EtcdRun::default());
        }
        flow.count(Metric::Notifications, msg.notifications.len() as u64);
        for n in &msg.notifications {
            let revokes = match (&flow.cfg.issuing, n.order.status()) {
                (Some(i), Some(s)) => i.lifecycle.revokes(s),
                _ => false,
            };
            if !n.order.is_activated() && !revokes {
                continue;
            }
            // One order can be in a message twice (two edits); it is licensed once.
            if let Some(id) = n.order.id() {
                if !flow.wanted.iter().any(|w| w.same_record(&id)) {
                    flow.wanted.push(id);
                }
            }
        }
        flow.begin(env);
        flow.run_resumed(env);
        let out = std::mem::take(&mut flow.out);
        if flow.finished {
            (None, out)
        } else {
            (Some(flow), out)
        }
    }

    pub fn is_finished(&self) -> bool {
        self.finished
    }

    fn begin(&mut self, env: &mut Env<'_>) {
        if self.wanted.is_empty() {
            // Nothing activated: nothing to do is done.
            return self.finish(env);
        }
        if self.cfg.issuing.is_none() {
            let reply = Reply::fault(
                503,
                FaultKind::Unconfigured,
                "license issuing is not configured on this gateway; the message will be retried",
            );
            self.log(
                Level::Warn,
                format!(
                    "{} activated order(s) refused: issuing not configured",
                    self.wanted.len()
                ),
            );
            return self.reply(reply);
        }
        self.ledger_claim(env);
    }

    /// The orders are claimed: read them, their contacts and order products.
    pub(super) fn query_orders(&mut self, env: &mut Env<'_>) {
        let soql = match &self.cfg.issuing {
            Some(i) => salesforce::build_soql(&self.wanted, &salesforce::Fields::of(i)),
            None => return self.finish(env),
        };
        let path = salesforce::query_path(self.sf_version(), &soql);
        self.sf_call(SfCall::Query { path }, env);
    }

    fn issuing(&self) -> Option<&Issuing> {
        self.cfg.issuing.as_ref()
    }

    fn sf_version(&self) -> &str {
        self.issuing()
            .map(|i| i.salesforce.api_version.as_str())
            .unwrap_or("v60.0")
    }

    /// Send `call` (its id is assigned here) unless the deadline leaves too little time; its
    /// timeout is cut to the time left.
    fn dispatch(&mut self, what: Awaiting, mut call: Call, env: &mut Env<'_>) -> bool {
        let remaining = self.deadline_at.saturating_sub(env.now_ms);
        if remaining < MIN_CALL_MS {
            self.outcome.deadline_hit = true;
            return false;
        }
        call.id = self.next_id;
        call.timeout_ms = call.timeout_ms.min(remaining);
        self.next_id = self.next_id.wrapping_add(1);
        self.pending.push((call.id, what));
        self.out.push(Command::Dispatch(call));
        true
    }

    /// Feed the response of call `id`. Unknown ids (e.g. after the flow finished) are ignored.
    pub fn on_response(&mut self, id: u32, resp: Response, env: &mut Env<'_>) -> Vec<Command> {
        if self.finished {
            return Vec::new();
        }
        if let Some(pos) = self.pending.iter().position(|(i, _)| *i == id) {
            let (_, what) = self.pending.swap_remove(pos);
            if resp.body.len() > self.cfg.max_reply_bytes {
                self.reply_too_large(what, env);
                self.run_resumed(env);
                self.maybe_finish(env);
                return std::mem::take(&mut self.out);
            }
            match what {
                Awaiting::Login { then } => self.on_login(then, resp, env),
                Awaiting::Sf(call) => self.on_sf(call, resp, env),
                Awaiting::Issue(line) => self.on_issue(line, resp, env),
                Awaiting::Lookup(line) => self.on_lookup(line, resp, env),
                Awaiting::Change(line) => self.on_change(line, resp, env),
                Awaiting::Validate(line) => self.on_validate(line, resp, env),
                Awaiting::Etcd(step) => self.on_etcd(step, resp, env),
            }
            self.run_resumed(env);
            self.maybe_finish(env);
        }
        std::mem::take(&mut self.out)
    }

    /// The ledger's part asks for `r` once the event at hand is handled.
    fn then(&mut self, r: Resume) {
        self.resume.push(r);
    }

    /// Carry out what the ledger asked for, in order (each may ask for more).
    fn run_resumed(&mut self, env: &mut Env<'_>) {
        while !self.resume.is_empty() {
            match self.resume.remove(0) {
                Resume::Pump => self.pump(env),
                Resume::SendMarked(idx) => {
                    if !self.send_marked(idx, env) {
                        let item = self.line_item(idx);
                        self.outcome
                            .failures
                            .push(format!("deadline reached before licensing line {item}"));
                    }
                }
            }
        }
    }

    /// The downstream request went away (Salesforce hung up): outstanding calls are cancelled
    /// by Envoy. Lines already marked pending stay pending; claims are released (etcd's hold
    /// until the time written in them: no call can be made any more).
    pub fn on_cancel(&mut self, env: &mut Env<'_>) {
        if !self.finished {
            self.finished = true;
            self.log(
                Level::Warn,
                "request cancelled before it finished; the message will be redelivered".into(),
            );
            self.ledger_release_claims(env);
        }
    }

    /// A reply over `max_reply_bytes` (the shell reads one byte more than that, never the rest).
    fn reply_too_large(&mut self, what: Awaiting, env: &mut Env<'_>) {
        let why = format!(
            "reply larger than max_reply_bytes ({})",
            self.cfg.max_reply_bytes
        );
        match what {
            Awaiting::Sf(SfCall::WriteBack {
                mark_for: Some(line),
                ..
            }) => self.mark_failed(line, &why, env),
            Awaiting::Sf(SfCall::IssueMarks { marks, rest }) => {
                self.on_issue_marks(marks, rest, Err(why), env)
            }
            Awaiting::Login { .. } | Awaiting::Sf(_) => {
                self.log(Level::Warn, format!("Salesforce {why}"));
                self.sf_failed(format!("Salesforce {why}"));
            }
            Awaiting::Issue(idx)
            | Awaiting::Lookup(idx)
            | Awaiting::Change(idx)
            | Awaiting::Validate(idx) => {
                // An issue call that answered too much may still have issued: the line stays
                // pending, and its call is over, so the next delivery looks it up.
                self.work.in_flight = self.work.in_flight.saturating_sub(1);
                self.call_over(idx, env);
                self.license_failed(idx, &why);
                self.pump(env);
            }
            Awaiting::Etcd(step) => self.etcd_failed(step, &why),
        }
    }

    /// Everything issued, nothing in flight: write back, then reply.
    fn maybe_finish(&mut self, env: &mut Env<'_>) {
        if !self.pending.is_empty() || self.finished {
            return;
        }
        if !self.salesforce.to_write.is_empty() {
            let writes = self.issuing().is_some_and(|i| {
                i.salesforce.writeback_field.is_some() || i.salesforce.state_field.is_some()
            });
            let batch: Vec<WriteBack> = if writes {
                let n = self
                    .salesforce
                    .to_write
                    .len()
                    .min(salesforce::WRITEBACK_BATCH);
                self.salesforce.to_write.drain(..n).collect()
            } else {
                self.salesforce.to_write.clear();
                Vec::new()
            };
            if !batch.is_empty() {
                self.sf_call(
                    SfCall::WriteBack {
                        lines: batch,
                        mark_for: None,
                    },
                    env,
                );
                if !self.pending.is_empty() {
                    return;
                }
                self.outcome
                    .failures
                    .push("deadline reached before the write-back".into());
            }
        }
        self.finish(env);
    }

    fn finish(&mut self, env: &mut Env<'_>) {
        let only_busy = self.outcome.failures.is_empty() && !self.outcome.busy.is_empty();
        self.outcome.failures.append(&mut self.outcome.busy);
        let reply = if self.outcome.failures.is_empty() && !self.outcome.deadline_hit {
            if !self.wanted.is_empty() {
                let mut summary = format!(
                    "acked: {} activated order(s), {} key(s) issued, {} found from an earlier delivery",
                    self.wanted.len(),
                    self.outcome.issued,
                    self.outcome.recovered
                );
                if self.outcome.changed > 0 {
                    summary.push_str(&format!(", {} key change(s)", self.outcome.changed));
                }
                self.log(Level::Info, summary);
            }
            Reply::ack()
        } else {
            let kind = if self.outcome.deadline_hit {
                FaultKind::Deadline
            } else if only_busy {
                FaultKind::Busy
            } else {
                FaultKind::Upstream
            };
            let mut reason =
                String::from("not all activated orders were licensed; Salesforce will redeliver: ");
            let shown = self
                .outcome
                .failures
                .iter()
                .take(3)
                .cloned()
                .collect::<Vec<_>>()
                .join("; ");
            reason.push_str(if shown.is_empty() {
                "deadline reached"
            } else {
                &shown
            });
            if self.outcome.failures.len() > 3 {
                reason.push_str(&format!("; and {} more", self.outcome.failures.len() - 3));
            }
            self.log(Level::Warn, reason.clone());
            Reply::fault(500, kind, &reason)
        };
        self.ledger_release_then_reply(reply, env);
    }

    fn reply(&mut self, reply: Reply) {
        self.finished = true;
        self.count(outcome_metric(&reply.outcome), 1);
        self.out.push(Command::Reply(reply));
    }

    fn count(&mut self, m: Metric, n: u64) {
        if n > 0 {
            self.out.push(Command::Count(m, n));
        }
    }

    fn log(&mut self, level: Level, msg: String) {
        self.out.push(Command::Log(level, msg));
    }

    /// Does this delivery revoke `item`'s keys? Its ledger record stays `R` whatever the
    /// write-back does.
    pub(super) fn revokes(&self, item: &SfId) -> bool {
        self.work
            .lines
            .iter()
            .any(|l| l.item.same_record(item) && l.intent == Intent::Revoke)
    }

    pub(super) fn line_item(&self, idx: usize) -> String {
        self.work
            .lines
            .get(idx)
            .map(|l| l.item.to_string())
            .unwrap_or_default()
    }
}
