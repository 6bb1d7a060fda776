//! Shared state of the three listeners, request dispatch (faults → endpoint → record) and the
//! `/_standin/` control API.

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread;
use std::time::{Duration, Instant};

use serde::Deserialize;
use serde_json::{json, Map, Value};

use crate::faults::{Fault, FaultKind, Faults};
use crate::http::{Handler, Outcome, Request, Response};
use crate::ids::Rng;
use crate::record::{record_of, Endpoint, EndpointStats, RecordedRequest, Service};
use crate::strict::IpRule;
use crate::{keygen, license, salesforce};

/// Everything that changes while the stand-ins run. One lock: contention is irrelevant at test
/// volumes, and one lock makes every control operation atomic.
pub struct State {
    pub page_size: usize,
    /// Records per page of an order's OrderItems subquery (Salesforce pages long orders too).
    pub items_page_size: usize,
    pub plain_text_keys: bool,
    /// OrderItems (18-character ids) whose write-back a validation rule refuses.
    pub refuse_writeback: BTreeSet<String>,
    /// OrderItems whose issuing mark (keygate's write before its license calls) is refused.
    pub refuse_marks: BTreeSet<String>,
    pub record: Vec<RecordedRequest>,
    /// keygate's self-check calls, apart from `record` (they answer no delivery).
    pub probes: Vec<RecordedRequest>,
    pub stats: BTreeMap<String, EndpointStats>,
    pub faults: Faults,
    pub tokens: HashSet<String>,
    /// Order reference (`is_userdata1`) → keys issued under it, in issue order.
    pub issued: BTreeMap<String, Vec<String>>,
    /// Every key ever issued by this process, so keys stay unique across resets too.
    pub all_keys: HashSet<String>,
    /// Each issued key's terms as the lifecycle methods change them.
    pub keys: BTreeMap<String, license::KeyState>,
    /// What else the license server keeps about each key (issue order, product, maintenance).
    pub key_meta: HashMap<String, license::KeyMeta>,
    /// Keys issued since the last reset (the lookup answers in issue order).
    pub key_seq: u64,
    /// The license server's server properties: strict authentication, disabled methods,
    /// allowed IP addresses, what issue keeps.
    pub license: license::Switches,
    /// Order id (18 characters) → the Status it has now, replacing the fixture's (an admin
    /// cancelling or reactivating the order).
    pub order_status: BTreeMap<String, String>,
    /// OrderItem id → fields written by sObject Collections updates.
    pub writebacks: BTreeMap<String, Map<String, Value>>,
    /// Query locator → the full result it pages through (a snapshot, as Salesforce's cursors
    /// are) and its page size.
    pub cursors: HashMap<String, (Vec<Value>, usize)>,
    /// The Keygen stand-in's licenses and throttle.
    pub keygen: keygen::KeygenState,
    pub rng: Rng,
}

impl State {
    pub fn issue_keys(&mut self, order: &str, count: u64) -> Vec<String> {
        let mut keys = Vec::new();
        while (keys.len() as u64) < count {
            let key = self.rng.activation_key();
            if self.all_keys.insert(key.clone()) {
                keys.push(key);
            }
        }
        self.issued
            .entry(order.to_owned())
            .or_default()
            .extend(keys.iter().cloned());
        keys
    }
}

/// The header keygate's start-up self-check sends with each of its calls.
pub const SELF_CHECK_HEADER: &str = "x-keygate-self-check";

/// Salesforce's own page size for a parent-to-child subquery is not documented; this is large
/// enough that the fixture's orders fit one page unless a test asks for less.
pub const DEFAULT_ITEMS_PAGE_SIZE: usize = 2000;
/// The recorded body of a request whose body never arrived (the client closed after the head).
pub const TRUNCATED_BODY: &str = "(closed before the body arrived)";
/// What an `oversize` fault pads a reply to.
pub const OVERSIZE_BYTES: usize = 8 * 1024 * 1024;

pub struct Shared {
    pub orders: salesforce::Orders,
    /// `http://127.0.0.1:PORT` of the Salesforce listener: the token's `instance_url`.
    pub salesforce_url: String,
    pub default_page_size: usize,
    pub default_plain_text_keys: bool,
    pub writeback_field: String,
    pub log_requests: bool,
    seq: AtomicU64,
    /// License-server calls being served now (deliveries', not the self-check's), and the most
    /// ever at once since the last reset: the ceiling a soak checks.
    license_in_flight: AtomicU64,
    license_max_in_flight: AtomicU64,
    state: Mutex<State>,
}

impl Shared {
    pub fn new(
        orders: salesforce::Orders,
        salesforce_url: String,
        page_size: usize,
        plain_text_keys: bool,
        writeback_field: String,
        log_requests: bool,
    ) -> Shared {
        Shared {
            orders,
            salesforce_url,
            default_page_size: page_size.max(1),
            default_plain_text_keys: plain_text_keys,
            writeback_field,
            log_requests,
            seq: AtomicU64::new(0),
            license_in_flight: AtomicU64::new(0),
            license_max_in_flight: AtomicU64::new(0),
            state: Mutex::new(State {
                page_size: page_size.max(1),
                items_page_size: DEFAULT_ITEMS_PAGE_SIZE,
                plain_text_keys,
                refuse_writeback: BTreeSet::new(),
                refuse_marks: BTreeSet::new(),
                record: Vec::new(),
                probes: Vec::new(),
                stats: BTreeMap::new(),
                faults: Faults::default(),
                tokens: HashSet::new(),
                issued: BTreeMap::new(),
                all_keys: HashSet::new(),
                keys: BTreeMap::new(),
                key_meta: HashMap::new(),
                key_seq: 0,
                license: license::Switches::default(),
                order_status: BTreeMap::new(),
                writebacks: BTreeMap::new(),
                cursors: HashMap::new(),
                keygen: keygen::KeygenState::default(),
                rng: Rng::new(),
            }),
        }
    }

    /// The state lock. A panicking handler (caught per request) must not wedge every later
    /// request, so a poisoned lock is simply taken over.
    pub fn lock(&self) -> MutexGuard<'_, State> {
        self.state.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub fn record(&self) -> Vec<RecordedRequest> {
        let mut record = self.lock().record.clone();
        record.sort_by_key(|r| r.seq);
        record
    }

    /// The most license-server calls served at once since the start or the last reset.
    pub fn license_in_flight(&self) -> u64 {
        self.license_in_flight.load(Ordering::SeqCst)
    }

    pub fn license_max_in_flight(&self) -> u64 {
        self.license_max_in_flight.load(Ordering::SeqCst)
    }

    /// The self-check's calls (`x-keygate-self-check`), in arrival order.
    pub fn probes(&self) -> Vec<RecordedRequest> {
        let mut probes = self.lock().probes.clone();
        probes.sort_by_key(|r| r.seq);
        probes
    }

    pub fn issued(&self) -> BTreeMap<String, Vec<String>> {
        self.lock().issued.clone()
    }

    pub fn keys(&self) -> BTreeMap<String, license::KeyState> {
        self.lock().keys.clone()
    }

    pub fn writeback_fields(&self) -> BTreeMap<String, Map<String, Value>> {
        self.lock().writebacks.clone()
    }

    /// OrderItem id → the written value of `writeback_field`, or of the only field written when
    /// the call used another name. Strings as they are, anything else as JSON text.
    pub fn writebacks(&self) -> BTreeMap<String, String> {
        self.lock()
            .writebacks
            .iter()
            .filter_map(|(id, fields)| {
                let value = fields.get(&self.writeback_field).or_else(|| {
                    (fields.len() == 1)
                        .then(|| fields.values().next())
                        .flatten()
                })?;
                let text = value
                    .as_str()
                    .map_or_else(|| value.to_string(), str::to_owned);
                Some((id.clone(), text))
            })
            .collect()
    }

    pub fn stats(&self) -> BTreeMap<String, EndpointStats> {
        self.lock().stats.clone()
    }

    /// Forgets the record, stats, issued keys, write-backs, faults, tokens, cursors and the
    /// Keygen licenses, and restores the configured page sizes, key format, write-back
    /// acceptance and every license server switch (strict authentication, disabled methods,
    /// allowed IPs, issue_keeps_orderid, the Keygen throttle).
    pub fn reset(&self) {
        let mut s = self.lock();
        s.record.clear();
        s.probes.clear();
        self.license_max_in_flight.store(0, Ordering::SeqCst);
        s.stats.clear();
        s.faults.clear();
        s.tokens.clear();
        s.issued.clear();
        s.keys.clear();
        s.key_meta.clear();
        s.key_seq = 0;
        s.license = license::Switches::default();
        s.order_status.clear();
        s.writebacks.clear();
        s.cursors.clear();
        s.keygen.reset();
        s.page_size = self.default_page_size;
        s.items_page_size = DEFAULT_ITEMS_PAGE_SIZE;
        s.plain_text_keys = self.default_plain_text_keys;
        s.refuse_writeback.clear();
        s.refuse_marks.clear();
        self.seq.store(0, Ordering::SeqCst);
    }

    pub fn inject_fault(&self, fault: Fault) -> Result<(), String> {
        fault.validate()?;
        self.lock().faults.push(fault);
        Ok(())
    }

    pub fn pending_faults(&self) -> Vec<Fault> {
        self.lock().faults.pending()
    }

    pub fn clear_faults(&self) {
        self.lock().faults.clear();
    }

    pub fn expire_tokens(&self) {
        self.lock().tokens.clear();
    }

    pub fn set_page_size(&self, n: usize) {
        self.lock().page_size = n.max(1);
    }

    pub fn set_plain_text_keys(&self, on: bool) {
        self.lock().plain_text_keys = on;
    }

    pub fn keygen_licenses(&self) -> BTreeMap<String, keygen::KeygenLicense> {
        self.lock().keygen.licenses()
    }

    pub fn set_keygen_rate_limit(&self, limit: Option<keygen::KeygenRateLimit>) {
        self.lock().keygen.set_rate_limit(limit);
    }

    fn route(&self, service: Service, req: &Request) -> (Endpoint, String) {
        match service {
            Service::Salesforce => {
                let (endpoint, version) = salesforce::route(&req.path);
                (endpoint, version.to_owned())
            }
            Service::License if keygen::is_keygen_path(&req.path) => {
                (keygen::route(&req.method, &req.path), String::new())
            }
            Service::License => (license::route(&req.path), String::new()),
            Service::Upstream => (Endpoint::Echo, String::new()),
        }
    }

    /// The endpoint's normal answer (this is where keys are issued and write-backs stored).
    fn serve(
        &self,
        service: Service,
        endpoint: Endpoint,
        version: &str,
        req: &Request,
    ) -> Response {
        match endpoint {
            Endpoint::Token => salesforce::token(self, req),
            Endpoint::Query => salesforce::query(self, req, version),
            Endpoint::QueryMore => salesforce::query_more(self, req, version),
            Endpoint::Composite => salesforce::composite(self, req),
            Endpoint::License => license::get_activation_key(self, req),
            Endpoint::Retrieve => license::retrieve(self, req),
            Endpoint::Revoke => license::revoke(self, req),
            Endpoint::Update => license::update(self, req),
            Endpoint::Renew => license::renew(self, req),
            Endpoint::Validate => license::validate(self, req),
            Endpoint::Ping => license::ping(self, req),
            Endpoint::KeygenCreate
            | Endpoint::KeygenList
            | Endpoint::KeygenRead
            | Endpoint::KeygenUpdate
            | Endpoint::KeygenSuspend
            | Endpoint::KeygenReinstate
            | Endpoint::KeygenRenew
            | Endpoint::KeygenPolicy
            | Endpoint::KeygenMe => keygen::serve(self, endpoint, req),
            Endpoint::Echo => {
                Response::text(200, format!("upstream: {} {}", req.method, req.target))
            }
            Endpoint::Other => match service {
                Service::License if keygen::is_keygen_path(&req.path) => {
                    keygen::serve(self, endpoint, req)
                }
                Service::License => license::unrouted(&req.path),
                _ => salesforce::not_found(),
            },
        }
    }

    fn dispatch(&self, service: Service, req: &Request) -> Outcome {
        let seq = self.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let started = Instant::now();
        let (endpoint, version) = self.route(service, req);
        // keygate's start-up self-check marks its calls: served like any other, but kept apart
        // from the record and the stats, and never given a fault meant for a delivery.
        let probe = req.header(SELF_CHECK_HEADER).is_some();
        let fault = match endpoint {
            Endpoint::Other => None,
            _ if probe => None,
            e => self.lock().faults.take(e),
        };
        let counted = service == Service::License && !probe;
        if counted {
            let now = self.license_in_flight.fetch_add(1, Ordering::SeqCst) + 1;
            self.license_max_in_flight.fetch_max(now, Ordering::SeqCst);
        }
        let sleep = |f: &Fault| thread::sleep(Duration::from_millis(f.delay_ms));
        let outcome = match &fault {
            None => Outcome::Reply(self.serve(service, endpoint, &version, req)),
            Some(f) => match f.kind {
                FaultKind::Status => Outcome::Reply(self.fault_reply(service, endpoint, f.status)),
                FaultKind::Delay => {
                    sleep(f);
                    Outcome::Reply(self.serve(service, endpoint, &version, req))
                }
                FaultKind::Reset => Outcome::Reset,
                FaultKind::Garbage if endpoint.is_keygen() => Outcome::Reply(keygen::garbage()),
                FaultKind::Garbage => Outcome::Reply(garbage(service)),
                FaultKind::Word => Outcome::Reply(Response::new(
                    200,
                    "text/plain; charset=utf-8",
                    "Unauthorized",
                )),
                FaultKind::IssueThenReset => {
                    let _ = self.serve(service, endpoint, &version, req);
                    Outcome::Reset
                }
                FaultKind::Oversize => {
                    let mut resp = self.serve(service, endpoint, &version, req);
                    resp.body.resize(OVERSIZE_BYTES, b' ');
                    Outcome::Reply(resp)
                }
                FaultKind::IssueThenDelay => {
                    let resp = self.serve(service, endpoint, &version, req);
                    sleep(f);
                    Outcome::Reply(resp)
                }
                FaultKind::WrongContentType => {
                    let mut resp = self.serve(service, endpoint, &version, req);
                    resp.content_type = "text/html; charset=utf-8".to_owned();
                    Outcome::Reply(resp)
                }
            },
        };
        if counted {
            self.license_in_flight.fetch_sub(1, Ordering::SeqCst);
        }
        let service_us = u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX);
        let mut entry = record_of(seq, service, endpoint, req);
        entry.status = match &outcome {
            Outcome::Reply(r) => r.status,
            Outcome::Reset => 0,
        };
        entry.fault = fault.map(|f| f.kind);
        entry.service_us = service_us;
        if self.log_requests {
            log_line(&entry);
        }
        // Recorded before the reply is written: a client that has its answer sees it recorded.
        let mut state = self.lock();
        if probe {
            state.probes.push(entry);
            return outcome;
        }
        let stats = state.stats.entry(endpoint.as_str().to_owned()).or_default();
        stats.count += 1;
        stats.service_us_total += service_us;
        state.record.push(entry);
        outcome
    }

    fn control(&self, req: &Request) -> Response {
        let name = req.path.trim_start_matches("/_standin/");
        let ok = || Response::json(200, &json!({ "ok": true }));
        let bad = |msg: String| Response::json(400, &json!({ "error": msg }));
        let as_json = |v: Result<Value, serde_json::Error>| match v {
            Ok(v) => Response::json(200, &v),
            Err(e) => Response::json(500, &json!({ "error": e.to_string() })),
        };
        match (req.method.as_str(), name) {
            ("GET", "record") => as_json(serde_json::to_value(self.record())),
            ("GET", "probes") => as_json(serde_json::to_value(self.probes())),
            ("GET", "issued") => as_json(serde_json::to_value(self.issued())),
            ("GET", "keys") => as_json(serde_json::to_value(self.keys())),
            ("GET", "writebacks") => as_json(serde_json::to_value(self.writebacks())),
            ("GET", "writeback_fields") => as_json(serde_json::to_value(self.writeback_fields())),
            ("GET", "stats") => as_json(serde_json::to_value(self.stats())),
            ("GET", "keygen_licenses") => as_json(serde_json::to_value(self.keygen_licenses())),
            ("GET", "faults") => as_json(serde_json::to_value(self.pending_faults())),
            ("GET", "orders") => as_json(serde_json::to_value(self.orders.ids())),
            ("GET", "config") => Response::json(200, &self.lock().config_json()),
            ("POST", "reset") => {
                self.reset();
                ok()
            }
            ("POST", "expire_tokens") => {
                self.expire_tokens();
                ok()
            }
            ("POST", "fault") => match serde_json::from_slice::<Fault>(&req.body) {
                Ok(fault) => match self.inject_fault(fault) {
                    Ok(()) => ok(),
                    Err(e) => bad(e),
                },
                Err(e) => bad(format!("fault: {e}")),
            },
            ("POST", "config") => match serde_json::from_slice::<ConfigChange>(&req.body) {
                Ok(change) if change.page_size == Some(0) || change.items_page_size == Some(0) => {
                    bad("page sizes must be at least 1".into())
                }
                Ok(ConfigChange {
                    keygen_rate_limit: Some(Some(keygen::KeygenRateLimit { window_s: 0, .. })),
                    ..
                }) => bad("keygen_rate_limit: window_s must be at least 1".into()),
                Ok(change) => {
                    // Checked before anything changes: a bad list refuses the whole change.
                    if let Some(e) = change.bad_ip() {
                        return bad(e);
                    }
                    let mut s = self.lock();
                    if let Some(n) = change.page_size {
                        s.page_size = n;
                    }
                    if let Some(n) = change.items_page_size {
                        s.items_page_size = n;
                    }
                    if let Some(p) = change.plain_text_keys {
                        s.plain_text_keys = p;
                    }
                    if let Some(methods) = change.disabled_methods {
                        s.license.disabled_methods = methods.into_iter().collect();
                    }
                    if let Some(on) = change.lifecycle_enabled {
                        s.license.set_lifecycle_enabled(on);
                    }
                    if let Some(methods) = change.strict_auth_methods {
                        s.license.strict_auth_methods = methods;
                    }
                    if let Some(base) = change.strict_url_base {
                        s.license.strict_url_base = base;
                    }
                    if let Some(secs) = change.strict_timestamp_tolerance_s {
                        s.license.strict_timestamp_tolerance_s = secs;
                    }
                    if let Some(ips) = change.allowed_ips {
                        if let Err(e) = s.license.set_allowed_ips(ips) {
                            return bad(e);
                        }
                    }
                    if let Some(on) = change.issue_keeps_orderid {
                        s.license.issue_keeps_orderid = on;
                    }
                    if let Some(limit) = change.keygen_rate_limit {
                        s.keygen.set_rate_limit(limit);
                    }
                    if let Some(ids) = change.refuse_writeback {
                        let full = ids.iter().map(|id| self.orders.item_id18(id));
                        s.refuse_writeback = full.collect();
                    }
                    if let Some(ids) = change.refuse_marks {
                        let full = ids.iter().map(|id| self.orders.item_id18(id));
                        s.refuse_marks = full.collect();
                    }
                    for (order, status) in change.order_status.unwrap_or_default() {
                        match self.orders.order_id18(&order) {
                            Some(id) => {
                                s.order_status.insert(id, status);
                            }
                            None => return bad(format!("order_status: no order {order}")),
                        }
                    }
                    Response::json(200, &s.config_json())
                }
                Err(e) => bad(format!("config: {e}")),
            },
            (
                _,
                "record" | "probes" | "issued" | "keys" | "writebacks" | "writeback_fields"
                | "stats" | "faults" | "orders" | "config" | "reset" | "expire_tokens" | "fault"
                | "keygen_licenses",
            ) => Response::json(405, &json!({ "error": "method not allowed" })),
            _ => Response::json(404, &json!({ "error": "no such control endpoint" })),
        }
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ConfigChange {
    page_size: Option<usize>,
    items_page_size: Option<usize>,
    plain_text_keys: Option<bool>,
    /// Off: RevokeLicenseHttp, UpdateLicenseHttp and RenewSubscriptionHttp are refused as QLM
    /// refuses them when their server property is not enabled (added to `disabled_methods`);
    /// on: taken out of it. Applied after `disabled_methods`.
    lifecycle_enabled: Option<bool>,
    /// Replaces the methods whose `enable…` server property is off.
    disabled_methods: Option<Vec<String>>,
    /// Replaces `security/strictAuthenticationHttpMethods` (`[]`: strict authentication off).
    strict_auth_methods: Option<Vec<String>>,
    /// The URL base strict authentication hashes; `null`: `https://{Host}{prefix}`.
    #[serde(default, deserialize_with = "present")]
    strict_url_base: Option<Option<String>>,
    /// `security/strictAuthenticationTimestampTolerance`, seconds.
    strict_timestamp_tolerance_s: Option<u64>,
    /// `httpAdminMethodsAllowedIPAddresses` (addresses or CIDR blocks); `null`: no restriction.
    #[serde(default, deserialize_with = "present")]
    allowed_ips: Option<Option<Vec<String>>>,
    /// Record `is_orderid` on issue (a stock server drops it: not a documented argument).
    issue_keeps_orderid: Option<bool>,
    /// Replaces the set of OrderItems whose write-back is refused.
    refuse_writeback: Option<Vec<String>>,
    refuse_marks: Option<Vec<String>>,
    /// Order id (15 or 18 characters) → its Status from now on (merged into earlier changes).
    order_status: Option<BTreeMap<String, String>>,
    /// Keygen's throttle: `{"limit": N, "window_s": S}` (N calls per S-second window), or
    /// `null` for none (the default).
    #[serde(default, deserialize_with = "present")]
    keygen_rate_limit: Option<Option<keygen::KeygenRateLimit>>,
}

impl ConfigChange {
    /// Why an `allowed_ips` entry is neither an address nor a CIDR block.
    fn bad_ip(&self) -> Option<String> {
        self.allowed_ips
            .iter()
            .flatten()
            .flatten()
            .find_map(|ip| IpRule::parse(ip).err())
    }
}

/// A field that is present, `null` included: `Some(None)` for `null`, `None` when absent.
fn present<'de, D, T>(d: D) -> Result<Option<Option<T>>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    Option::<T>::deserialize(d).map(Some)
}

impl State {
    fn config_json(&self) -> Value {
        let l = &self.license;
        json!({
            "page_size": self.page_size,
            "items_page_size": self.items_page_size,
            "plain_text_keys": self.plain_text_keys,
            "refuse_writeback": self.refuse_writeback,
            "refuse_marks": self.refuse_marks,
            "lifecycle_enabled": l.lifecycle_enabled(),
            "order_status": self.order_status,
            "strict_auth_methods": l.strict_auth_methods,
            "strict_url_base": l.strict_url_base,
            "strict_timestamp_tolerance_s": l.strict_timestamp_tolerance_s,
            "disabled_methods": l.disabled_methods,
            "allowed_ips": l.allowed_ips.as_ref().map(|(list, _)| list),
            "issue_keeps_orderid": l.issue_keeps_orderid,
            "keygen_rate_limit": self.keygen.rate_limit,
        })
    }
}

impl Shared {
    /// What an injected `status` fault answers: each service's own error shape (Keygen's
    /// JSON:API errors, with the throttle's headers for a 429).
    fn fault_reply(&self, service: Service, endpoint: Endpoint, status: u16) -> Response {
        match service {
            Service::License if endpoint.is_keygen() => {
                let mut s = self.lock();
                let request_id = keygen::request_id(&mut s.rng);
                keygen::fault_reply(status, s.keygen.rate_limit, &request_id)
            }
            Service::Salesforce => salesforce::fault_reply(endpoint, status),
            Service::License => license::fault_reply(status),
            Service::Upstream => Response::text(status, format!("upstream fault: {status}\n")),
        }
    }
}

/// 200 with a body that is neither JSON, XML nor a key: truncated markup plus invalid UTF-8.
fn garbage(service: Service) -> Response {
    let (content_type, body): (&str, &[u8]) = match service {
        Service::Salesforce => (
            "application/json;charset=UTF-8",
            b"{\"totalSize\":1,\"done\":tr\xff\xfe<html>",
        ),
        Service::License => (
            "text/xml; charset=utf-8",
            b"<?xml version=\"1.0\"?><QuickLicenseManager><licenses><lic\xff\xfe",
        ),
        Service::Upstream => ("text/plain", b"\xff\xfe\x00garbage"),
    };
    Response::new(200, content_type, body.to_vec())
}

fn log_line(r: &RecordedRequest) {
    let query = if r.query.is_empty() {
        String::new()
    } else {
        format!("?{}", r.query)
    };
    let fault = r
        .fault
        .map(|k| {
            format!(
                " [fault {}]",
                serde_json::to_string(&k)
                    .unwrap_or_default()
                    .trim_matches('"')
            )
        })
        .unwrap_or_default();
    let status = if r.status == 0 {
        "reset".to_owned()
    } else {
        r.status.to_string()
    };
    println!(
        "{} {} {} {}{} -> {} ({}us){}",
        r.service, r.endpoint, r.method, r.path, query, status, r.service_us, fault
    );
}

/// The `http::Handler` of one listener.
pub struct Listener {
    pub shared: Arc<Shared>,
    pub service: Service,
}

impl Handler for Listener {
    fn handle(&self, req: &Request) -> Outcome {
        if req.path.starts_with("/_standin/") {
            let resp = self.shared.control(req);
            if self.shared.log_requests {
                println!(
                    "{} control {} {} -> {}",
                    self.service, req.method, req.path, resp.status
                );
            }
            return Outcome::Reply(resp);
        }
        self.shared.dispatch(self.service, req)
    }

    /// Recorded as endpoint `other`, status 0, body [`TRUNCATED_BODY`]: a head without its body.
    fn truncated(&self, head: &Request) {
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let mut entry = record_of(seq, self.service, Endpoint::Other, head);
        entry.body = TRUNCATED_BODY.to_owned();
        entry.status = 0;
        if self.shared.log_requests {
            println!(
                "{} {} {} -> closed before the body",
                self.service, head.method, head.path
            );
        }
        let mut state = self.shared.lock();
        state
            .stats
            .entry(Endpoint::Other.as_str().to_owned())
            .or_default()
            .count += 1;
        state.record.push(entry);
    }

    fn bad_request(&self, status: u16, reason: &str) {
        let seq = self.shared.seq.fetch_add(1, Ordering::SeqCst) + 1;
        let entry = RecordedRequest {
            seq,
            service: self.service,
            endpoint: Endpoint::Other,
            method: String::new(),
            path: String::new(),
            query: String::new(),
            headers: BTreeMap::new(),
            body: format!("unparseable request: {reason}"),
            form: BTreeMap::new(),
            status,
            fault: None,
            service_us: 0,
        };
        if self.shared.log_requests {
            println!("{} bad request -> {status} ({reason})", self.service);
        }
        let mut state = self.shared.lock();
        let stats = state
            .stats
            .entry(Endpoint::Other.as_str().to_owned())
            .or_default();
        stats.count += 1;
        state.record.push(entry);
    }
}
