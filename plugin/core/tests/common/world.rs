//! The scripted world the flow tests run in: a Salesforce and a license server answering the
//! flow's calls from memory, and a driver that runs one delivery through them.

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env, Response};
use keygate_core::ledger::Ledger;
use keygate_core::metrics::Metric;
use keygate_core::reply::Reply;
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::{json, Value};

use super::etcd_model::EtcdModel;
use super::keygen_model::KeygenModel;
use super::patched_full;

pub const ONE: &[u8] = include_bytes!("../../../../testdata/soap/valid/activated_one.xml");
pub const NOT_ACTIVATED: &[u8] =
    include_bytes!("../../../../testdata/soap/valid/not_activated_one.xml");
pub const SEVERAL: &[u8] = include_bytes!("../../../../testdata/soap/valid/several.xml");
pub const HUNDRED: &[u8] = include_bytes!("../../../../testdata/soap/valid/hundred.xml");

/// The demo order's one line (testdata/soap/valid/activated_one.xml, `demo_world`).
pub const ITEM: &str = "8025Y00000AbCdEQAV";
/// How a new line's mark in Salesforce starts (before its license calls).
pub const ISSUING_MARK: &str = "Issuing; busy until ";
/// The clock of `deliver` (ms); tests that step time start from it.
pub const T: u64 = 1_000_000;

/// The calls of a delivery of one new line, shared-data ledger, write-back field, no token
/// cached: login, query, the line's issuing mark, the lookup (shared data cannot vouch for the
/// line), the issue, the keys' write-back.
pub const ONE_NEW_LINE: [&str; 6] = [
    "token",
    "query",
    "composite",
    "retrieve",
    "license",
    "composite",
];

/// Every line the license server issued for, issued once.
pub fn one_key_per_line(world: &World) {
    for (item, keys) in &world.keys_issued {
        assert_eq!(keys.len(), 1, "{item} licensed {} times", keys.len());
    }
}

pub fn env(name: &str) -> Option<String> {
    Some(format!("secret-of-{name}"))
}

pub fn config(patch: Value) -> Rc<Config> {
    Rc::new(Config::from_json(patched_full(patch).as_bytes(), &env).unwrap())
}

/// A scripted Salesforce + license server: enough behaviour to check the flow end to end.
#[derive(Default)]
pub struct World {
    pub orders: BTreeMap<String, Value>,
    pub token_valid: bool,
    pub tokens_issued: u32,
    pub keys_issued: BTreeMap<String, Vec<String>>,
    pub written: BTreeMap<String, String>,
    /// Endpoint → queued misbehaviour (a response to return instead of the real one).
    pub faults: BTreeMap<&'static str, VecDeque<Response>>,
    /// Misbehaviour *after* really issuing the key (uncertain outcome).
    pub issue_then_fail: VecDeque<Response>,
    pub calls: Vec<(String, String)>,
    /// Every call served, in order, for tests that inspect what was sent.
    pub sent: Vec<Call>,
    pub page_size: usize,
    /// Order products per page of the OrderItems subquery (Salesforce pages long orders).
    pub item_page_size: usize,
    /// Tokens Salesforce no longer accepts (the rest of `tok-*` are valid while `token_valid`).
    pub stale_tokens: Vec<String>,
    /// OrderItems whose keys a validation rule refuses (their issuing marks pass).
    pub refuse_writeback: Vec<String>,
    /// OrderItems whose issuing mark Salesforce refuses.
    pub refuse_marks: Vec<String>,
    /// What the next write-backs of keys (not of issuing marks) answer instead.
    pub keys_writeback_faults: VecDeque<Response>,
    /// What a further page of OrderItems answers instead of the page.
    pub item_page_fault: Option<Response>,
    /// The fleet's etcd (for configurations with `ledger.backend: "etcd"`).
    pub etcd: EtcdModel,
    /// Keygen (for configurations with `license_server.kind: "keygen"`).
    pub keygen: KeygenModel,
    /// Each issued key's terms as the lifecycle calls change them.
    pub key_state: BTreeMap<String, KeyState>,
    /// OrderItem → its state field (`License_State__c`) as written back.
    pub written_state: BTreeMap<String, String>,
    /// Lifecycle calls the license server refuses as a disabled feature (its server property off).
    pub lifecycle_disabled: bool,
    /// Misbehaviour *after* really applying a lifecycle change (uncertain outcome).
    pub change_then_fail: VecDeque<Response>,
}

/// What the license server holds for one key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyState {
    pub revoked: bool,
    /// Activations allowed.
    pub quantity: u32,
    /// Days of validity (issue's `is_expduration` plus renewals).
    pub expiry_days: u32,
}

/// The `<expiryDate>` (`yyyy-MM-dd HH:mm`, as QLM documents it) of a key valid for `days` days
/// from the world's issue date, 2026-01-01.
pub fn expiry_date(days: u32) -> String {
    let issued = time::Date::from_calendar_date(2026, time::Month::January, 1).unwrap();
    let d = issued + time::Duration::days(i64::from(days));
    format!(
        "{:04}-{:02}-{:02} 23:59",
        d.year(),
        u8::from(d.month()),
        d.day()
    )
}

pub fn ok(body: impl Into<Vec<u8>>) -> Response {
    Response {
        status: Some(200),
        headers: Vec::new(),
        body: body.into(),
    }
}

pub fn status(s: u16, body: &str) -> Response {
    Response {
        status: Some(s),
        headers: Vec::new(),
        body: body.as_bytes().to_vec(),
    }
}

pub fn reset() -> Response {
    Response {
        status: None,
        headers: Vec::new(),
        body: Vec::new(),
    }
}

pub fn order(id: &str, number: &str, status: &str, lines: &[(&str, &str, f64)]) -> Value {
    let items: Vec<Value> = lines
        .iter()
        .map(|(item, code, q)| {
            json!({"attributes": {"type": "OrderItem"}, "Id": item, "Quantity": q,
                   "Product2": {"ProductCode": code, "Name": format!("Product {code}")},
                   "License_Keys__c": null})
        })
        .collect();
    json!({
        "attributes": {"type": "Order"}, "Id": id, "OrderNumber": number, "Status": status,
        "Account": {"Name": "Acme"},
        "BillToContact": {"FirstName": "Jane", "LastName": "Doe", "Email": "jane@acme.example", "Phone": "555"},
        "CustomerAuthorizedBy": {"FirstName": "Carl", "LastName": "Buyer", "Email": "carl@acme.example"},
        "OrderItems": {"totalSize": items.len(), "done": true, "records": items}
    })
}

impl World {
    pub fn new() -> World {
        World {
            page_size: 2000,
            item_page_size: 2000,
            ..World::default()
        }
    }

    pub fn with_order(mut self, o: Value) -> World {
        self.orders
            .insert(o["Id"].as_str().unwrap()[..15].to_owned(), o);
        self
    }

    /// The next write-back of keys (an issuing mark's call passes) answers `r`.
    pub fn fail_next_keys_writeback(&mut self, r: Response) {
        self.keys_writeback_faults.push_back(r);
    }

    pub fn fail_next(&mut self, endpoint: &'static str, r: Response) {
        self.faults.entry(endpoint).or_default().push_back(r);
    }

    pub fn endpoint(call: &Call) -> &'static str {
        let path = call
            .path
            .split_once('?')
            .map_or(call.path.as_str(), |(p, _)| p);
        let call = &Call {
            path: path.to_owned(),
            ..call.clone()
        };
        if call.path.starts_with("/v3/") {
            "etcd"
        } else if call.path.starts_with("/v1/accounts/") {
            "keygen"
        } else if call.path.ends_with("/oauth2/token") {
            "token"
        } else if call.path.contains("/query") {
            "query"
        } else if call.path.ends_with("/composite/sobjects") {
            "composite"
        } else if call.path.ends_with("/GetActivationKeyWithExpiryDate") {
            "license"
        } else if call.path.ends_with("/RetrieveActivationKeyHttp") {
            "retrieve"
        } else if call.path.ends_with("/RevokeLicenseHttp") {
            "revoke"
        } else if call.path.ends_with("/UpdateLicenseHttp") {
            "update"
        } else if call.path.ends_with("/RenewSubscriptionHttp") {
            "renew"
        } else if call.path.ends_with("/ValidateLicenseHttp") {
            "validate"
        } else {
            "unknown"
        }
    }

    /// A license call's arguments: the query's (a strict-authentication GET) and the form's.
    pub fn form(call: &Call) -> BTreeMap<String, String> {
        let query = call.path.split_once('?').map_or("", |(_, q)| q);
        form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .chain(form_urlencoded::parse(&call.body).into_owned())
            .collect()
    }

    /// A stock QLM server's strict authentication of `RetrieveActivationKeyHttp`: a GET whose
    /// query holds every argument, with the three headers. (The hash itself is pinned against an
    /// independent computation in `upstream_replies.rs`; here its presence and form.)
    fn strictly_authenticated(call: &Call) -> bool {
        let header = |name: &str| {
            call.headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.as_str())
        };
        call.method == "GET"
            && call.body.is_empty()
            && header("x-qlm-authentication-version") == Some("2")
            && header("x-qlm-timestamp").is_some_and(|t| t.len() == 19)
            && header("x-qlm-authentication-token")
                .is_some_and(|h| h.len() == 64 && h.bytes().all(|b| b.is_ascii_hexdigit()))
    }

    pub fn serve(&mut self, call: &Call) -> Response {
        let ep = Self::endpoint(call);
        self.calls.push((ep.to_owned(), call.path.clone()));
        self.sent.push(call.clone());
        if let Some(r) = self.faults.get_mut(ep).and_then(VecDeque::pop_front) {
            return r;
        }
        if ep == "composite" && !String::from_utf8_lossy(&call.body).contains(ISSUING_MARK) {
            if let Some(r) = self.keys_writeback_faults.pop_front() {
                return r;
            }
        }
        if ep == "etcd" {
            return self.etcd.serve(call);
        }
        if ep == "keygen" {
            let resp = self.keygen.serve(call);
            // Every license Keygen holds, by line, as `one_key_per_line` reads them.
            self.keys_issued.clear();
            for l in &self.keygen.licenses {
                let item = l.metadata["salesforceOrderItemId"]
                    .as_str()
                    .unwrap_or("")
                    .to_owned();
                self.keys_issued
                    .entry(item)
                    .or_default()
                    .push(l.key.clone());
            }
            return resp;
        }
        let bearer_ok = call.headers.iter().any(|(k, v)| {
            *k == "authorization"
                && v.starts_with("Bearer tok-")
                && !self.stale_tokens.iter().any(|t| v.ends_with(t.as_str()))
        }) && self.token_valid;
        let invalid_session = || {
            status(
                401,
                r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#,
            )
        };
        match ep {
            "token" => {
                self.tokens_issued += 1;
                self.token_valid = true;
                ok(json!({"access_token": format!("tok-{}", self.tokens_issued), "instance_url": "https://mydomain.my.salesforce.com",
                          "token_type": "Bearer", "issued_at": "1278448832702", "id": "x", "signature": "s"}).to_string())
            }
            "query" if !bearer_ok => invalid_session(),
            "query" if call.path.contains("/query/items-") && self.item_page_fault.is_some() => {
                self.item_page_fault.take().unwrap()
            }
            "query" if call.path.contains("/query/items-") => {
                // A further page of one order's OrderItems: /query/items-<offset>-<order id>.
                let tail = call.path.rsplit('/').next().unwrap();
                let mut parts = tail.splitn(3, '-');
                parts.next();
                let offset: usize = parts.next().unwrap().parse().unwrap();
                let order = &self.orders[&parts.next().unwrap()[..15]];
                let all = order["OrderItems"]["records"].as_array().unwrap().clone();
                ok(self
                    .items_page(&all, offset, order["Id"].as_str().unwrap())
                    .to_string())
            }
            "query" => {
                let (ids, offset) = if let Some(q) = call.path.split("q=").nth(1) {
                    let soql: String = form_urlencoded::parse(format!("q={q}").as_bytes())
                        .next()
                        .unwrap()
                        .1
                        .into_owned();
                    let inside = soql.split("Id IN (").nth(1).unwrap().trim_end_matches(')');
                    let ids: Vec<String> = inside
                        .split(',')
                        .map(|s| s.trim_matches('\'').to_owned())
                        .collect();
                    (ids, 0usize)
                } else {
                    // nextRecordsUrl: /services/data/v60.0/query/cursor-<offset>-<ids joined by _>
                    let tail = call.path.rsplit('/').next().unwrap();
                    let mut parts = tail.splitn(3, '-');
                    parts.next();
                    let offset = parts.next().unwrap().parse().unwrap();
                    let ids = parts
                        .next()
                        .unwrap()
                        .split('_')
                        .map(str::to_owned)
                        .collect();
                    (ids, offset)
                };
                let all: Vec<Value> = ids
                    .iter()
                    .filter_map(|id| self.orders.get(&id[..15]).cloned())
                    .map(|mut o| {
                        // `"OrderItems": null`: Salesforce's answer for an order without any.
                        if o["OrderItems"].is_null() {
                            return o;
                        }
                        for it in o["OrderItems"]["records"].as_array_mut().unwrap() {
                            let id = it["Id"].as_str().unwrap().to_owned();
                            if let Some(v) = self.written.get(&id) {
                                it["License_Keys__c"] = json!(v);
                            }
                            if let Some(v) = self.written_state.get(&id) {
                                it["License_State__c"] = json!(v);
                            }
                        }
                        let items = o["OrderItems"]["records"].as_array().unwrap().clone();
                        o["OrderItems"] = self.items_page(&items, 0, o["Id"].as_str().unwrap());
                        o
                    })
                    .collect();
                let page: Vec<Value> = all
                    .iter()
                    .skip(offset)
                    .take(self.page_size)
                    .cloned()
                    .collect();
                let done = offset + page.len() >= all.len();
                let mut body = json!({"totalSize": all.len(), "done": done, "records": page});
                if !done {
                    body["nextRecordsUrl"] = json!(format!(
                        "/services/data/v60.0/query/cursor-{}-{}",
                        offset + self.page_size,
                        ids.join("_")
                    ));
                }
                ok(body.to_string())
            }
            "composite" if !bearer_ok => invalid_session(),
            "composite" => {
                let body: Value = serde_json::from_slice(&call.body).unwrap();
                let mut results = Vec::new();
                for r in body["records"].as_array().unwrap() {
                    let id = r["id"].as_str().unwrap().to_owned();
                    let is_mark = [&r["License_Keys__c"], &r["License_State__c"]]
                        .iter()
                        .any(|v| v.as_str().is_some_and(|v| v.starts_with(ISSUING_MARK)));
                    let refused = if is_mark {
                        &self.refuse_marks
                    } else {
                        &self.refuse_writeback
                    };
                    if refused.contains(&id) {
                        // As Salesforce does: no `id` in a failed record's result.
                        results.push(json!({"success": false, "errors": [{"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "Keys are locked", "fields": []}]}));
                        continue;
                    }
                    if let Some(keys) = r["License_Keys__c"].as_str() {
                        self.written.insert(id.clone(), keys.to_owned());
                    }
                    if let Some(state) = r["License_State__c"].as_str() {
                        self.written_state.insert(id.clone(), state.to_owned());
                    }
                    results.push(json!({"id": id, "success": true, "errors": []}));
                }
                ok(Value::Array(results).to_string())
            }
            "license" => {
                let f = Self::form(call);
                assert_eq!(f["is_pwd"], "secret-of-KEYGATE_QLM_PASSWORD");
                assert!(
                    !call.path.contains("is_pwd"),
                    "credentials must not be in the URL"
                );
                let n = self.keys_issued.values().map(Vec::len).sum::<usize>() + 1;
                let key = format!("KEY{n:02}-{}-QLM", f["is_productid"]);
                // A stock server records what its pages document: `is_userdata1`, not
                // `is_orderid` (undocumented for this method).
                assert_eq!(f["is_orderid"], f["is_userdata1"]);
                self.keys_issued
                    .entry(f["is_userdata1"].clone())
                    .or_default()
                    .push(key.clone());
                self.key_state.insert(
                    key.clone(),
                    KeyState {
                        revoked: false,
                        quantity: f["is_quantity"].parse().unwrap_or(1),
                        expiry_days: f.get("is_expduration").map_or(0, |d| d.parse().unwrap()),
                    },
                );
                if let Some(r) = self.issue_then_fail.pop_front() {
                    return r;
                }
                ok(format!("<?xml version=\"1.0\"?><QuickLicenseManager><licenses><license><activationKey>{key}</activationKey></license></licenses></QuickLicenseManager>"))
            }
            "retrieve" if !Self::strictly_authenticated(call) => ok(
                "<?xml version=\"1.0\"?><QuickLicenseManager><error>Strict authentication failed.</error></QuickLicenseManager>",
            ),
            "retrieve" => {
                let f = Self::form(call);
                assert_eq!(f["is_pwd"], "secret-of-KEYGATE_QLM_PASSWORD");
                // By one reference alone: QLM matches every reference it is given.
                assert!(!f.contains_key("is_orderid"), "looked up by is_userdata1 alone");
                let keys = self
                    .keys_issued
                    .get(&f["is_userdata1"])
                    .cloned()
                    .unwrap_or_default();
                let inner: String = keys
                    .iter()
                    .map(|k| format!("<license><activationKey>{k}</activationKey></license>"))
                    .collect();
                ok(format!(
                    "<QuickLicenseManager><licenses>{inner}</licenses></QuickLicenseManager>"
                ))
            }
            "revoke" | "update" | "renew" | "validate" => self.lifecycle(ep, call),
            _ => status(404, "not found"),
        }
    }

    /// QLM's lifecycle methods over `key_state`, answering as the license stand-in does.
    fn lifecycle(&mut self, ep: &str, call: &Call) -> Response {
        let f = Self::form(call);
        assert_eq!(f["is_pwd"], "secret-of-KEYGATE_QLM_PASSWORD");
        let xml = |inner: String| {
            ok(format!(
                "<?xml version=\"1.0\"?><QuickLicenseManager>{inner}</QuickLicenseManager>"
            ))
        };
        if self.lifecycle_disabled && ep != "validate" {
            return xml(
                "<error>This feature is disabled. Set the server property to true.</error>".into(),
            );
        }
        let Some(k) = self.key_state.get_mut(&f["is_avkey"]) else {
            return xml("<error>The license key does not exist.</error>".into());
        };
        match ep {
            "revoke" => k.revoked = f["is_revoke"] == "true",
            "update" => k.quantity = f["is_quantity"].parse().unwrap(),
            "renew" => k.expiry_days += f["is_expduration"].parse::<u32>().unwrap(),
            _ => {
                // ValidateLicenseHttp's documented shape, cut to what matters: a maintenance
                // date before the expiry, the expiry, a nested document whose properties have
                // expiry dates of their own.
                return ok(format!(
                    "<QuickLicenseManager>\n<maintenanceRenewalDate>2020-01-01 00:00:00</maintenanceRenewalDate>\n<status>{}</status>\n<numActivationsAllowed>{}</numActivationsAllowed>\n<expiryDate>{}</expiryDate>\n<activationKey>{}</activationKey>\n<productProperties><?xml version=\"1.0\" encoding=\"utf-8\"?><ProductProperties><Property name=\"p\" expiryDate=\"0001-01-01 00:00:00\"></Property></ProductProperties></productProperties>\n<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\"><SignatureValue>c2ln</SignatureValue></Signature>\n</QuickLicenseManager>",
                    if k.revoked { 4 } else { 2 },
                    k.quantity,
                    expiry_date(k.expiry_days),
                    f["is_avkey"]
                ));
            }
        }
        if let Some(r) = self.change_then_fail.pop_front() {
            return r;
        }
        xml("<result>done</result>".into())
    }

    /// The OrderItems subquery result from `offset`: done, or a page and its nextRecordsUrl.
    pub fn items_page(&self, all: &[Value], offset: usize, order: &str) -> Value {
        let page: Vec<Value> = all
            .iter()
            .skip(offset)
            .take(self.item_page_size)
            .cloned()
            .collect();
        let done = offset + page.len() >= all.len();
        let mut v = json!({"totalSize": all.len(), "done": done, "records": page});
        if !done {
            v["nextRecordsUrl"] = json!(format!(
                "/services/data/v60.0/query/items-{}-{order}",
                offset + self.item_page_size
            ));
        }
        v
    }

    /// The write-back field's values that are keys, not issuing marks.
    pub fn keys_written(&self) -> BTreeMap<&str, &str> {
        self.written
            .iter()
            .filter(|(_, v)| !v.starts_with(ISSUING_MARK))
            .map(|(k, v)| (k.as_str(), v.as_str()))
            .collect()
    }

    /// The endpoints called so far, in order.
    pub fn endpoints(&self) -> Vec<&str> {
        self.calls.iter().map(|(e, _)| e.as_str()).collect()
    }

    pub fn count(&self, ep: &str) -> usize {
        self.calls.iter().filter(|(e, _)| e == ep).count()
    }

    /// The forms of every call to one endpoint, in order.
    pub fn forms(&self, ep: &str) -> Vec<BTreeMap<String, String>> {
        self.sent
            .iter()
            .filter(|c| World::endpoint(c) == ep)
            .map(World::form)
            .collect()
    }
}

/// Runs one delivery: feeds the body, answers calls from the world (in arrival order, keeping
/// up to `hold` calls open at once to exercise concurrency), and returns the reply.
pub struct Run {
    pub reply: Reply,
    pub counts: BTreeMap<Metric, u64>,
    pub logs: Vec<String>,
    pub max_in_flight: usize,
    pub commands_after_reply: usize,
}

pub fn deliver(cfg: &Rc<Config>, world: &mut World, store: &mut MemStore, body: &[u8]) -> Run {
    deliver_at(cfg, world, store, body, T, 0)
}

pub fn deliver_at(
    cfg: &Rc<Config>,
    world: &mut World,
    store: &mut MemStore,
    body: &[u8],
    now: u64,
    step_ms: u64,
) -> Run {
    let mut now = now;
    // As the shell does at configure time: name this store's Envoy lifetime (each new store is a
    // new Envoy), begun long enough ago that no restart quarantine applies unless a test set one.
    if Ledger::new(&cfg.state_prefix, cfg.ledger)
        .instance(store)
        .is_none()
    {
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let nonce = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        Ledger::new(&cfg.state_prefix, cfg.ledger).init(store, 0, nonce);
    }
    let mut env = Env { now_ms: now, store };
    let (mut flow, first) = webhook::on_body(cfg, body, 42, &mut env);
    let mut queue: VecDeque<Call> = VecDeque::new();
    let mut run = Run {
        reply: Reply::ack(),
        counts: BTreeMap::new(),
        logs: Vec::new(),
        max_in_flight: 0,
        commands_after_reply: 0,
    };
    let mut replied = false;
    let absorb =
        |cmds: Vec<Command>, queue: &mut VecDeque<Call>, run: &mut Run, replied: &mut bool| {
            for c in cmds {
                if *replied {
                    run.commands_after_reply += 1;
                }
                match c {
                    Command::Dispatch(call) => queue.push_back(call),
                    Command::Reply(r) => {
                        assert!(!*replied, "two replies");
                        *replied = true;
                        run.reply = r;
                    }
                    Command::Count(m, n) => *run.counts.entry(m).or_default() += n,
                    Command::Log(_, m) => run.logs.push(m),
                    Command::Gauge(g, _) => panic!("a delivery set the gauge {g:?}"),
                }
            }
        };
    absorb(first, &mut queue, &mut run, &mut replied);
    while let Some(call) = queue.pop_front() {
        run.max_in_flight = run.max_in_flight.max(queue.len() + 1);
        now += step_ms;
        let resp = world.serve(&call);
        let flow = flow.as_mut().expect("calls without a flow");
        let mut env = Env { now_ms: now, store };
        let cmds = flow.on_response(call.id, resp, &mut env);
        absorb(cmds, &mut queue, &mut run, &mut replied);
    }
    assert!(replied, "flow ended without a reply");
    assert_eq!(run.commands_after_reply, 0, "commands after the reply");
    // `env` resolves every secret to `secret-of-<NAME>`: none may reach a log line or the reply.
    for line in run.logs.iter().chain([&run.reply.body]) {
        assert!(!line.contains("secret-of-"), "a secret in: {line}");
    }
    run
}

pub fn demo_world() -> World {
    World::new()
        .with_order(order(
            "8015Y000001AbCdQAK",
            "00000114",
            "Activated",
            &[("8025Y00000AbCdEQAV", "001", 3.0)],
        ))
        .with_order(order(
            "8015Y000001MuLtQAK",
            "00000115",
            "Activated",
            &[
                ("8025Y000001MuL1QAK", "001", 1.0),
                ("8025Y000001MuL2QAK", "002", 2.0),
                ("8025Y000001MuL3QAK", "999", 5.0),
            ],
        ))
}

/// The delivery was acked (the fault's text when not).
pub fn assert_ack(run: &Run) {
    assert!(run.reply.is_ack(), "{}", run.reply.body);
}

pub fn is_fault(r: &Reply, status: u16, needle: &str) -> bool {
    r.status == status
        && r.body.contains("<faultcode>soapenv:Server</faultcode>")
        && r.body.contains(needle)
}

/// The hundred family orders, each with one line of product 001.
pub fn family_world() -> World {
    let mut world = World::new();
    for i in 0..100 {
        world = world.with_order(order(
            &format!("8015Y00000B{i:04}QAB"),
            &format!("{:08}", 1000 + i),
            "Activated",
            &[(&format!("8025Y00000B{i:04}QAB"), "001", 1.0)],
        ));
    }
    world
}

pub fn family_message(i: usize) -> Vec<u8> {
    String::from_utf8(ONE.to_vec())
        .unwrap()
        .replace("8015Y000001AbCdQAK", &format!("8015Y00000B{i:04}QAB"))
        .into_bytes()
}
