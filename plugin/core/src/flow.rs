//! The per-message state machine, sans-IO: events in ([`Flow::start`], [`Flow::on_response`]),
//! [`Command`]s out. The shell carries out the commands and feeds responses back.
//!
//! Phases: claim orders → (login if no token) → query (one SOQL, all pages, then the further
//! pages of any order's OrderItems) → plan lines → issue (one license call per line, at most
//! `max_concurrency` in flight; a lookup first wherever an earlier call may have issued: the
//! ledger is volatile, so that is every line it cannot vouch for) → write-back (sObject
//! Collections) → one reply.
//!
//! Helpers called from many places are `#[inline(never)]`: their inlined copies cost ~1.2 KB of
//! the .wasm for no measurable speed.
//!
//! Invariants a reader can check here: exactly one `Reply` per flow, always the last command;
//! an ack only when every line that was meant to be licensed has a recorded key; every
//! dispatched call gets exactly one response (reset and timeout arrive as [`Response`] too).

use std::collections::VecDeque;
use std::rc::Rc;

use crate::config::{Config, Issuing};
use crate::ids::SfId;
use crate::ledger::{ClaimError, Ledger, LineState};
use crate::license::{self, looks_like_key, Customer, IssueRequest, LicenseError};
use crate::metrics::Metric;
use crate::reply::{outcome_metric, FaultKind, Reply};
use crate::salesforce::{self, Order, SalesforceError, Token};
use crate::soap::OutboundMessage;
use crate::store::{Store, StoreError};

/// What the shell must do next.
#[derive(Debug, Clone, PartialEq)]
pub enum Command {
    Dispatch(Call),
    Reply(Reply),
    Log(Level, String),
    Count(Metric, u64),
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
    pub path: String,
    pub authority: String,
    /// Regular headers (the shell adds `:method`, `:path`, `:authority`). May carry a token.
    pub headers: Vec<(&'static str, String)>,
    /// May carry credentials: never logged.
    pub body: Vec<u8>,
    pub timeout_ms: u64,
}

impl std::fmt::Debug for Call {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Headers and body may hold secrets; show only where the call goes.
        write!(
            f,
            "Call#{} {} {} via {}",
            self.id, self.method, self.path, self.cluster
        )
    }
}

/// The outcome of a call. `status: None` = reset, refused, overflow: no HTTP answer at all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: Option<u16>,
    pub body: Vec<u8>,
}

/// The world the flow sees at each step: a clock and shared data.
pub struct Env<'s> {
    pub now_ms: u64,
    pub store: &'s mut dyn Store,
}

const TOKEN_KEY: &str = "sf_token";
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
    WriteBack {
        lines: Vec<(SfId, Vec<String>)>,
    },
}

#[derive(Debug, Clone)]
enum Pending {
    Login { then: SfCall },
    Sf(SfCall),
    Issue(usize),
    Lookup(usize),
}

/// One order line to license.
#[derive(Debug, Clone)]
struct Line {
    order: usize,
    item: SfId,
    code: String,
    quantity: u32,
}

#[derive(Debug, Clone)]
struct PlannedOrder {
    order_number: String,
    customer: Customer,
}

pub struct Flow {
    cfg: Rc<Config>,
    owner: u64,
    deadline_at: u64,
    next_id: u32,
    /// Calls in flight: (call id, what it was). Few at a time, so a Vec beats a map in size.
    pending: Vec<(u32, Pending)>,
    relogged: bool,
    /// Activated orders of the message, deduplicated, in message order.
    wanted: Vec<SfId>,
    claimed: Vec<SfId>,
    fetched: Vec<Order>,
    orders: Vec<PlannedOrder>,
    lines: Vec<Line>,
    /// Lines waiting for a license call (index into `lines`; `true` = look up first).
    queue: VecDeque<(usize, bool)>,
    in_flight: usize,
    /// Lines with keys that Salesforce does not have yet.
    to_write: Vec<(SfId, Vec<String>)>,
    failures: Vec<String>,
    /// Lines whose earlier license call may still be running: retry later, nothing failed.
    busy: Vec<String>,
    /// CAS token of the shared Salesforce token this flow used, so that a 401 clears only that
    /// token and never one another worker has just stored.
    token_cas: Option<u32>,
    deadline_hit: bool,
    finished: bool,
    /// Keys issued / found by lookup in this delivery, for the summary log line.
    issued: u32,
    recovered: u32,
    out: Vec<Command>,
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
            relogged: false,
            wanted: Vec::new(),
            claimed: Vec::new(),
            fetched: Vec::new(),
            orders: Vec::new(),
            lines: Vec::new(),
            queue: VecDeque::new(),
            in_flight: 0,
            to_write: Vec::new(),
            failures: Vec::new(),
            busy: Vec::new(),
            token_cas: None,
            deadline_hit: false,
            finished: false,
            issued: 0,
            recovered: 0,
            out: Vec::new(),
        };
        flow.count(Metric::Notifications, msg.notifications.len() as u64);
        for n in &msg.notifications {
            if !n.order.is_activated() {
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
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        for id in self.wanted.clone() {
            match ledger.claim(env.store, &id, self.owner, env.now_ms) {
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
                    self.release_claims(env);
                    return self.reply(Reply::fault(500, FaultKind::Busy, &reason));
                }
            }
        }
        let soql = match &self.cfg.issuing {
            Some(i) => salesforce::build_soql(
                &self.wanted,
                i.salesforce.contact,
                i.salesforce.writeback_field.as_deref(),
            ),
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

    fn token_key(&self) -> String {
        format!("{}:{TOKEN_KEY}", self.cfg.state_prefix)
    }

    /// A Salesforce REST call with the shared token, or a login first when there is none.
    #[inline(never)]
    fn sf_call(&mut self, call: SfCall, env: &mut Env<'_>) {
        let token = env
            .store
            .get(&self.token_key())
            .and_then(|(v, cas)| Some((Token::from_shared(&v)?, cas)));
        match token {
            Some((t, cas)) => {
                self.token_cas = Some(cas);
                self.dispatch_sf(call, &t, env);
            }
            None => self.login(call, env),
        }
    }

    #[inline(never)]
    fn login(&mut self, then: SfCall, env: &mut Env<'_>) {
        let Some(i) = self.issuing() else { return };
        let sf = &i.salesforce;
        let (cluster, authority, timeout) =
            (sf.cluster.clone(), sf.authority.clone(), sf.timeout_ms);
        let body = salesforce::token_request_body(sf).into_bytes();
        let headers = vec![
            (
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            ),
            ("accept", "application/json".to_owned()),
        ];
        self.dispatch(
            Pending::Login { then },
            Call {
                id: 0,
                cluster,
                method: "POST",
                path: salesforce::TOKEN_PATH.to_owned(),
                authority,
                headers,
                body,
                timeout_ms: timeout,
            },
            env,
        );
    }

    #[inline(never)]
    fn dispatch_sf(&mut self, call: SfCall, token: &Token, env: &mut Env<'_>) {
        let Some(i) = self.issuing() else { return };
        let sf = &i.salesforce;
        let (cluster, timeout) = (sf.cluster.clone(), sf.timeout_ms);
        let mut headers = vec![
            (
                "authorization",
                format!("Bearer {}", token.access_token.expose()),
            ),
            ("accept", "application/json".to_owned()),
        ];
        let (method, path, body) = match &call {
            SfCall::Query { path } | SfCall::Items { path, .. } => {
                ("GET", path.clone(), Vec::new())
            }
            SfCall::WriteBack { lines } => {
                let field = sf.writeback_field.as_deref().unwrap_or("");
                headers.push(("content-type", "application/json".to_owned()));
                (
                    "PATCH",
                    salesforce::writeback_path(&sf.api_version),
                    salesforce::writeback_body(field, lines).into_bytes(),
                )
            }
        };
        let authority = token.instance_authority.clone();
        self.dispatch(
            Pending::Sf(call),
            Call {
                id: 0,
                cluster,
                method,
                path,
                authority,
                headers,
                body,
                timeout_ms: timeout,
            },
            env,
        );
    }

    /// Send `call` (its id is assigned here) unless the deadline leaves too little time; its
    /// timeout is cut to the time left.
    #[inline(never)]
    fn dispatch(&mut self, what: Pending, mut call: Call, env: &mut Env<'_>) -> bool {
        let remaining = self.deadline_at.saturating_sub(env.now_ms);
        if remaining < MIN_CALL_MS {
            self.deadline_hit = true;
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
                self.maybe_finish(env);
                return std::mem::take(&mut self.out);
            }
            match what {
                Pending::Login { then } => self.on_login(then, resp, env),
                Pending::Sf(call) => self.on_sf(call, resp, env),
                Pending::Issue(line) => self.on_issue(line, resp, env),
                Pending::Lookup(line) => self.on_lookup(line, resp, env),
            }
            self.maybe_finish(env);
        }
        std::mem::take(&mut self.out)
    }

    /// The downstream request went away (Salesforce hung up): outstanding calls are cancelled
    /// by Envoy. Lines already marked pending stay pending; claims are released.
    pub fn on_cancel(&mut self, env: &mut Env<'_>) {
        if !self.finished {
            self.finished = true;
            self.log(
                Level::Warn,
                "request cancelled before it finished; the message will be redelivered".into(),
            );
            self.release_claims(env);
        }
    }

    /// A reply over `max_reply_bytes` (the shell reads one byte more than that, never the rest).
    fn reply_too_large(&mut self, what: Pending, env: &mut Env<'_>) {
        let why = format!(
            "reply larger than max_reply_bytes ({})",
            self.cfg.max_reply_bytes
        );
        match what {
            Pending::Login { .. } | Pending::Sf(_) => {
                self.log(Level::Warn, format!("Salesforce {why}"));
                self.sf_failed(format!("Salesforce {why}"));
            }
            Pending::Issue(idx) | Pending::Lookup(idx) => {
                // An issue call that answered too much may still have issued: the line stays
                // pending, and its call is over, so the next delivery looks it up.
                self.in_flight = self.in_flight.saturating_sub(1);
                self.call_over(idx, env);
                self.license_failed(idx, &why);
                self.pump(env);
            }
        }
    }

    fn on_login(&mut self, then: SfCall, resp: Response, env: &mut Env<'_>) {
        let Some(status) = resp.status else {
            return self.sf_failed(
                "Salesforce login failed: no response (connection reset or refused)".into(),
            );
        };
        match salesforce::parse_token(status, &resp.body) {
            Ok(token) => {
                self.count(Metric::Logins, 1);
                let key = self.token_key();
                let _ = env.store.set(&key, &token.to_shared(), None);
                self.token_cas = env.store.get(&key).map(|(_, cas)| cas);
                self.dispatch_sf(then, &token, env);
            }
            Err(e) => {
                let msg = format!("{e}");
                match e {
                    SalesforceError::LoginRefused { .. } => self.log(
                        Level::Error,
                        format!("{msg}; check the Salesforce app and credentials"),
                    ),
                    _ => self.log(Level::Warn, format!("Salesforce login failed: {msg}")),
                }
                self.sf_failed(msg);
            }
        }
    }

    #[inline(never)]
    fn sf_failed(&mut self, reason: String) {
        self.count(Metric::CalloutsFailedSalesforce, 1);
        self.failures.push(reason);
    }

    fn on_sf(&mut self, call: SfCall, resp: Response, env: &mut Env<'_>) {
        let Some(status) = resp.status else {
            let what = match call {
                SfCall::Query { .. } => "order query",
                SfCall::Items { .. } => "order products query",
                SfCall::WriteBack { .. } => "write-back",
            };
            return self.sf_failed(format!(
                "Salesforce {what} failed: no response (reset or timeout)"
            ));
        };
        if status == 401
            && salesforce::classify_error(status, &resp.body) == SalesforceError::SessionInvalid
        {
            // The cached token expired: forget it (only if it is still the one used here: CAS),
            // then retry this call once, with the token another worker stored meanwhile or
            // after a new login.
            if let Some(cas) = self.token_cas.take() {
                let _ = env.store.set(&self.token_key(), b"", Some(cas));
            }
            if self.relogged {
                return self.sf_failed("Salesforce session invalid right after a new login".into());
            }
            self.relogged = true;
            return self.sf_call(call, env);
        }
        match call {
            SfCall::Query { .. } => self.on_query_page(status, &resp.body, env),
            SfCall::Items { order, .. } => self.on_items_page(&order, status, &resp.body, env),
            SfCall::WriteBack { lines } => self.on_writeback(status, &resp.body, lines, env),
        }
    }

    fn on_query_page(&mut self, status: u16, body: &[u8], env: &mut Env<'_>) {
        let Some(i) = self.issuing() else { return };
        let (contact, field) = (i.salesforce.contact, i.salesforce.writeback_field.clone());
        match salesforce::parse_query(status, body, contact, field.as_deref()) {
            Err(e) => self.sf_failed(format!("Salesforce order query failed: {e}")),
            Ok(page) => {
                self.fetched.extend(page.orders);
                match page.next_records_url {
                    Some(next) => self.sf_call(SfCall::Query { path: next }, env),
                    None => self.next_items_page(env),
                }
            }
        }
    }

    /// Fetch the next further page of OrderItems of any order that has one; plan when none do.
    #[inline(never)]
    fn next_items_page(&mut self, env: &mut Env<'_>) {
        let next = self
            .fetched
            .iter_mut()
            .find_map(|o| Some((o.id, o.items_next.take()?)));
        match next {
            Some((order, path)) => self.sf_call(SfCall::Items { order, path }, env),
            None => self.plan(env),
        }
    }

    fn on_items_page(&mut self, order: &SfId, status: u16, body: &[u8], env: &mut Env<'_>) {
        let field = self
            .issuing()
            .and_then(|i| i.salesforce.writeback_field.clone());
        match salesforce::parse_items_page(status, body, field.as_deref()) {
            Err(e) => self.sf_failed(format!("Salesforce order products query failed: {e}")),
            Ok(page) => {
                if let Some(o) = self.fetched.iter_mut().find(|o| o.id.same_record(order)) {
                    o.items.extend(page.items);
                    o.items_next = page.next_records_url;
                }
                self.next_items_page(env);
            }
        }
    }

    /// Decide, per order line, what is left to do.
    #[inline(never)]
    fn plan(&mut self, env: &mut Env<'_>) {
        let Some(issuing) = self.cfg.issuing.as_ref() else {
            return;
        };
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
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
                match ledger.line(env.store, &item.id) {
                    LineState::Issued(keys) | LineState::WrittenBack(keys) => {
                        // Issued by an earlier delivery: only the write-back may be missing.
                        counts.add(Metric::LinesAlreadyLicensed);
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
                    // Unknown to a volatile ledger is not proof that nothing was issued.
                    LineState::Unknown => self.queue.push_back((line, !ledger.is_durable())),
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

    /// Start queued license calls up to the concurrency bound.
    #[inline(never)]
    fn pump(&mut self, env: &mut Env<'_>) {
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
    fn start_line(&mut self, idx: usize, lookup: bool, env: &mut Env<'_>) -> bool {
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
            let (Some(product), Some(order)) =
                (issuing.product(&line.code), self.orders.get(line.order))
            else {
                return false;
            };
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
            let (p, b) = license::issue_request(
                lic,
                &IssueRequest {
                    product,
                    quantity: line.quantity,
                    order_item_id: &line.item,
                    order_number: &order.order_number,
                    customer: &order.customer,
                },
            );
            (p, b, Pending::Issue(idx))
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

    fn line_item(&self, idx: usize) -> String {
        self.lines
            .get(idx)
            .map(|l| l.item.to_string())
            .unwrap_or_default()
    }

    fn on_issue(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
        self.in_flight = self.in_flight.saturating_sub(1);
        let result = match resp.status {
            // The call may still be running at the license server: the line stays busy.
            None => Err("no response (reset or refused); outcome unknown".to_owned()),
            Some(504) => Err("timed out; outcome unknown".to_owned()),
            Some(s) => {
                // An answer, even a failed one, means the call is over: a lookup settles it.
                self.call_over(idx, env);
                match license::parse_keys(s, &resp.body) {
                    Ok(keys) if !keys.is_empty() => Ok(keys),
                    Ok(_) => Err("reply carried no key".to_owned()),
                    Err(e) => Err(e.to_string()),
                }
            }
        };
        match result {
            Ok(keys) => self.line_licensed(idx, keys, Metric::LicensesIssued, env),
            Err(why) => self.license_failed(idx, &why),
        }
        self.pump(env);
    }

    #[inline(never)]
    fn license_failed(&mut self, idx: usize, why: &str) {
        let item = self.line_item(idx);
        self.count(Metric::CalloutsFailedLicense, 1);
        let msg = format!("license call for line {item} failed: {why}");
        self.log(Level::Warn, msg.clone());
        self.failures.push(msg);
    }

    /// The license call for a line has answered: it is no longer running, whatever it did.
    #[inline(never)]
    fn call_over(&mut self, idx: usize, env: &mut Env<'_>) {
        let Some(line) = self.lines.get(idx) else {
            return;
        };
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        if let LineState::Pending { .. } = ledger.line(env.store, &line.item) {
            let _ = ledger.mark_pending(env.store, &line.item, env.now_ms, env.now_ms);
        }
    }

    fn on_lookup(&mut self, idx: usize, resp: Response, env: &mut Env<'_>) {
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
    fn line_licensed(&mut self, idx: usize, keys: Vec<String>, metric: Metric, env: &mut Env<'_>) {
        let Some(line) = self.lines.get(idx) else {
            return;
        };
        let item = line.item;
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        if ledger
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

    fn on_writeback(
        &mut self,
        status: u16,
        body: &[u8],
        lines: Vec<(SfId, Vec<String>)>,
        env: &mut Env<'_>,
    ) {
        match salesforce::parse_writeback(status, body, lines.len()) {
            Err(e) => self.sf_failed(format!("write-back to Salesforce failed: {e}")),
            Ok(failed) => {
                let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
                for (i, (id, keys)) in lines.iter().enumerate() {
                    if !failed.iter().any(|f| f.index == i) {
                        let _ = ledger.mark_written(env.store, id, keys, env.now_ms);
                    }
                }
                for f in failed {
                    let id = lines.get(f.index).map(|(id, _)| id.to_string());
                    self.sf_failed(format!(
                        "write-back of line {} refused: {}",
                        id.unwrap_or_default(),
                        f.code
                    ));
                }
            }
        }
    }

    /// Everything issued, nothing in flight: write back, then reply.
    fn maybe_finish(&mut self, env: &mut Env<'_>) {
        if !self.pending.is_empty() || self.finished {
            return;
        }
        if !self.to_write.is_empty() {
            let writeback = self
                .issuing()
                .and_then(|i| i.salesforce.writeback_field.clone());
            let batch: Vec<(SfId, Vec<String>)> = if writeback.is_some() {
                let n = self.to_write.len().min(salesforce::WRITEBACK_BATCH);
                self.to_write.drain(..n).collect()
            } else {
                self.to_write.clear();
                Vec::new()
            };
            if !batch.is_empty() {
                self.sf_call(SfCall::WriteBack { lines: batch }, env);
                if !self.pending.is_empty() {
                    return;
                }
                self.failures
                    .push("deadline reached before the write-back".into());
            }
        }
        self.finish(env);
    }

    #[inline(never)]
    fn finish(&mut self, env: &mut Env<'_>) {
        let only_busy = self.failures.is_empty() && !self.busy.is_empty();
        self.failures.append(&mut self.busy);
        let reply = if self.failures.is_empty() && !self.deadline_hit {
            if !self.wanted.is_empty() {
                self.log(
                    Level::Info,
                    format!(
                        "acked: {} activated order(s), {} key(s) issued, {} found from an earlier delivery",
                        self.wanted.len(),
                        self.issued,
                        self.recovered
                    ),
                );
            }
            Reply::ack()
        } else {
            let kind = if self.deadline_hit {
                FaultKind::Deadline
            } else if only_busy {
                FaultKind::Busy
            } else {
                FaultKind::Upstream
            };
            let mut reason =
                String::from("not all activated orders were licensed; Salesforce will redeliver: ");
            let shown = self
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
            if self.failures.len() > 3 {
                reason.push_str(&format!("; and {} more", self.failures.len() - 3));
            }
            self.log(Level::Warn, reason.clone());
            Reply::fault(500, kind, &reason)
        };
        self.release_claims(env);
        self.reply(reply);
    }

    #[inline(never)]
    fn release_claims(&mut self, env: &mut Env<'_>) {
        let ledger = Ledger::new(&self.cfg.state_prefix, self.cfg.ledger);
        for id in std::mem::take(&mut self.claimed) {
            ledger.release(env.store, &id, self.owner, env.now_ms);
        }
    }

    #[inline(never)]
    fn reply(&mut self, reply: Reply) {
        self.finished = true;
        self.count(outcome_metric(&reply.outcome), 1);
        self.out.push(Command::Reply(reply));
    }

    #[inline(never)]
    fn count(&mut self, m: Metric, n: u64) {
        if n > 0 {
            self.out.push(Command::Count(m, n));
        }
    }

    #[inline(never)]
    fn log(&mut self, level: Level, msg: String) {
        self.out.push(Command::Log(level, msg));
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
