//! The order-to-license flow driven natively (and in wasm under Node) with scripted responses:
//! every branch of the state machine, with the ledger over an in-memory store.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(target_arch = "wasm32")]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;
use common::patched_full;

use std::collections::{BTreeMap, VecDeque};
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env, Response};
use keygate_core::metrics::Metric;
use keygate_core::reply::{FaultKind, Outcome, Reply};
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::{json, Value};

const ONE: &[u8] = include_bytes!("../../../testdata/soap/valid/activated_one.xml");
const NOT_ACTIVATED: &[u8] = include_bytes!("../../../testdata/soap/valid/not_activated_one.xml");
const SEVERAL: &[u8] = include_bytes!("../../../testdata/soap/valid/several.xml");
const HUNDRED: &[u8] = include_bytes!("../../../testdata/soap/valid/hundred.xml");

fn env(name: &str) -> Option<String> {
    Some(format!("secret-of-{name}"))
}

fn config(patch: Value) -> Rc<Config> {
    Rc::new(Config::from_json(patched_full(patch).as_bytes(), &env).unwrap())
}

/// A scripted Salesforce + license server: enough behaviour to check the flow end to end.
#[derive(Default)]
struct World {
    orders: BTreeMap<String, Value>,
    token_valid: bool,
    tokens_issued: u32,
    keys_issued: BTreeMap<String, Vec<String>>,
    written: BTreeMap<String, String>,
    /// Endpoint → queued misbehaviour (a response to return instead of the real one).
    faults: BTreeMap<&'static str, VecDeque<Response>>,
    /// Misbehaviour *after* really issuing the key (uncertain outcome).
    issue_then_fail: VecDeque<Response>,
    calls: Vec<(String, String)>,
    /// Every call served, in order, for tests that inspect what was sent.
    sent: Vec<Call>,
    page_size: usize,
}

fn ok(body: impl Into<Vec<u8>>) -> Response {
    Response {
        status: Some(200),
        body: body.into(),
    }
}

fn status(s: u16, body: &str) -> Response {
    Response {
        status: Some(s),
        body: body.as_bytes().to_vec(),
    }
}

fn reset() -> Response {
    Response {
        status: None,
        body: Vec::new(),
    }
}

fn order(id: &str, number: &str, status: &str, lines: &[(&str, &str, f64)]) -> Value {
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
    fn new() -> World {
        World {
            page_size: 2000,
            ..World::default()
        }
    }

    fn with_order(mut self, o: Value) -> World {
        self.orders
            .insert(o["Id"].as_str().unwrap()[..15].to_owned(), o);
        self
    }

    fn fail_next(&mut self, endpoint: &'static str, r: Response) {
        self.faults.entry(endpoint).or_default().push_back(r);
    }

    fn endpoint(call: &Call) -> &'static str {
        if call.path.ends_with("/oauth2/token") {
            "token"
        } else if call.path.contains("/query") {
            "query"
        } else if call.path.ends_with("/composite/sobjects") {
            "composite"
        } else if call.path.ends_with("/GetActivationKeyWithExpiryDate") {
            "license"
        } else if call.path.ends_with("/RetrieveActivationKeyHttp") {
            "retrieve"
        } else {
            "unknown"
        }
    }

    fn form(call: &Call) -> BTreeMap<String, String> {
        form_urlencoded::parse(&call.body).into_owned().collect()
    }

    fn serve(&mut self, call: &Call) -> Response {
        let ep = Self::endpoint(call);
        self.calls.push((ep.to_owned(), call.path.clone()));
        self.sent.push(call.clone());
        if let Some(r) = self.faults.get_mut(ep).and_then(VecDeque::pop_front) {
            return r;
        }
        let bearer_ok = call
            .headers
            .iter()
            .any(|(k, v)| *k == "authorization" && v.starts_with("Bearer tok-"))
            && self.token_valid;
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
                        for it in o["OrderItems"]["records"].as_array_mut().unwrap() {
                            let id = it["Id"].as_str().unwrap().to_owned();
                            if let Some(v) = self.written.get(&id) {
                                it["License_Keys__c"] = json!(v);
                            }
                        }
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
                    self.written.insert(
                        id.clone(),
                        r["License_Keys__c"].as_str().unwrap().to_owned(),
                    );
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
                let key = format!("KEY{n:02}-{}", f["is_productid"]);
                self.keys_issued
                    .entry(f["is_orderid"].clone())
                    .or_default()
                    .push(key.clone());
                if let Some(r) = self.issue_then_fail.pop_front() {
                    return r;
                }
                ok(format!("<?xml version=\"1.0\"?><QuickLicenseManager><licenses><license><activationKey>{key}</activationKey></license></licenses></QuickLicenseManager>"))
            }
            "retrieve" => {
                let f = Self::form(call);
                let keys = self
                    .keys_issued
                    .get(&f["is_orderid"])
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
            _ => status(404, "not found"),
        }
    }

    fn count(&self, ep: &str) -> usize {
        self.calls.iter().filter(|(e, _)| e == ep).count()
    }

    /// The forms of every call to one endpoint, in order.
    fn forms(&self, ep: &str) -> Vec<BTreeMap<String, String>> {
        self.sent
            .iter()
            .filter(|c| World::endpoint(c) == ep)
            .map(World::form)
            .collect()
    }
}

/// Runs one delivery: feeds the body, answers calls from the world (in arrival order, keeping
/// up to `hold` calls open at once to exercise concurrency), and returns the reply.
struct Run {
    reply: Reply,
    counts: BTreeMap<Metric, u64>,
    logs: Vec<String>,
    max_in_flight: usize,
    commands_after_reply: usize,
}

fn deliver(cfg: &Rc<Config>, world: &mut World, store: &mut MemStore, body: &[u8]) -> Run {
    deliver_at(cfg, world, store, body, 1_000_000, 0)
}

fn deliver_at(
    cfg: &Rc<Config>,
    world: &mut World,
    store: &mut MemStore,
    body: &[u8],
    now: u64,
    step_ms: u64,
) -> Run {
    let mut now = now;
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
    run
}

fn demo_world() -> World {
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

fn is_fault(r: &Reply, status: u16, needle: &str) -> bool {
    r.status == status
        && r.body.contains("<faultcode>soapenv:Server</faultcode>")
        && r.body.contains(needle)
}

#[test]
fn nothing_activated_is_acked_without_callouts() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED);
    assert!(run.reply.is_ack());
    assert!(world.calls.is_empty());
    assert_eq!(run.counts[&Metric::MessagesAcked], 1);
    assert_eq!(run.counts[&Metric::Notifications], 1);
}

#[test]
fn activated_without_issuing_configured_is_a_503_fault() {
    let cfg = config(json!({"salesforce": null, "license_server": null, "products": null}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_eq!(run.reply.status, 503);
    assert!(run.reply.body.contains("license issuing is not configured"));
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Unconfigured));
    assert!(world.calls.is_empty());
}

#[test]
fn one_order_one_line_logs_in_queries_issues_writes_back_and_acks() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    let order: Vec<&str> = world.calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(order, ["token", "query", "license", "composite"]);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"], ["KEY01-1"]);
    assert_eq!(world.written["8025Y00000AbCdEQAV"], "KEY01-1");
    assert_eq!(run.counts[&Metric::LicensesIssued], 1);
    assert_eq!(run.counts[&Metric::Logins], 1);

    // The token is shared: the next message needs no login.
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED);
    assert!(run.reply.is_ack());
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("token"), 0);
    assert_eq!(world.count("query"), 1);
}

#[test]
fn license_request_carries_mapped_arguments_quantity_customer_and_reference() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver(&cfg, &mut world, &mut store, SEVERAL)
        .reply
        .is_ack());
    let seen = world.forms("license");
    // Two mapped lines on the second order + one on the first; the unmapped 999 is skipped.
    assert_eq!(seen.len(), 3);
    let first = seen
        .iter()
        .find(|f| f["is_orderid"] == "8025Y00000AbCdEQAV")
        .unwrap();
    assert_eq!(first["is_productid"], "1");
    assert_eq!(first["is_emailtemplate"], "1. New Order");
    assert_eq!(first["is_quantity"], "3");
    assert_eq!(first["is_vendor"], "salesforce");
    assert_eq!(first["is_affiliateid"], "salesforce");
    assert_eq!(first["is_fullname"], "Jane Doe");
    assert_eq!(first["is_email"], "jane@acme.example");
    assert_eq!(first["is_company"], "Acme");
    assert_eq!(first["orderNumber"], "00000114");
    assert_eq!(first["is_user"], "secret-of-KEYGATE_QLM_USER");
    let second = seen
        .iter()
        .find(|f| f["is_orderid"] == "8025Y000001MuL2QAK")
        .unwrap();
    assert_eq!(second["is_productid"], "2");
    assert_eq!(second["is_majorversion"], "3");
    assert_eq!(second["is_expduration"], "365");
    assert_eq!(second["is_quantity"], "2");
}

#[test]
fn unmapped_lines_and_vanished_or_deactivated_orders_are_skipped_and_acked() {
    let cfg = config(json!({}));
    let mut world = World::new()
        .with_order(order(
            "8015Y000001AbCdQAK",
            "00000114",
            "Activated",
            &[("8025Y00000AbCdEQAV", "999", 1.0)],
        ))
        .with_order(order(
            "8015Y000001MuLtQAK",
            "00000115",
            "Draft",
            &[("8025Y000001MuL1QAK", "001", 1.0)],
        ));
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license"), 0);
    assert_eq!(world.count("composite"), 0);
    assert_eq!(run.counts[&Metric::LinesSkippedUnmapped], 1);
    assert_eq!(run.counts[&Metric::OrdersSkipped], 1);

    let mut empty = World::new();
    let run = deliver(&cfg, &mut empty, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack());
    assert_eq!(run.counts[&Metric::OrdersSkipped], 1);
    assert!(run.logs.iter().any(|l| l.contains("not found")));
}

#[test]
fn the_contact_variant_chooses_who_the_license_is_for() {
    let cfg = config(json!({"salesforce": {"contact": "CustomerAuthorizedBy"}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver(&cfg, &mut world, &mut store, ONE).reply.is_ack());
    let query = world
        .sent
        .iter()
        .find(|c| World::endpoint(c) == "query")
        .unwrap();
    assert!(
        query.path.contains("CustomerAuthorizedBy.Email"),
        "{}",
        query.path
    );
    let f = &world.forms("license")[0];
    assert_eq!(f["is_fullname"], "Carl Buyer");
    assert_eq!(f["is_email"], "carl@acme.example");
}

#[test]
fn password_grant_posts_username_and_password() {
    let cfg = config(
        json!({"salesforce": {"grant": "password", "username_env": "U", "password_env": "P"}}),
    );
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (_flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let Some(Command::Dispatch(login)) =
        cmds.into_iter().find(|c| matches!(c, Command::Dispatch(_)))
    else {
        panic!("no login")
    };
    let f = World::form(&login);
    assert_eq!(login.path, "/services/oauth2/token");
    assert_eq!(login.authority, "mydomain.my.salesforce.com");
    assert_eq!(f["grant_type"], "password");
    assert_eq!(f["username"], "secret-of-U");
    assert_eq!(f["password"], "secret-of-P");
    assert_eq!(f["client_secret"], "secret-of-KEYGATE_SF_CLIENT_SECRET");
    assert!(
        format!("{login:?}").find("secret-of").is_none(),
        "Debug of a call must hide its body"
    );
}

#[test]
fn an_expired_token_means_one_new_login_and_one_retry_and_no_duplicate_key() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED)
        .reply
        .is_ack());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack());
    world.token_valid = false; // Salesforce expired the session
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    let order: Vec<&str> = world.calls.iter().map(|(e, _)| e.as_str()).collect();
    assert_eq!(&order[..3], ["query", "token", "query"]);
    assert_eq!(world.count("token"), 1);
    // The first order's line was licensed in the earlier delivery and is not licensed again.
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
}

#[test]
fn a_session_invalid_twice_in_a_row_is_a_fault_not_a_loop() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let bad = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
    world.fail_next("query", status(401, bad));
    world.fail_next("query", status(401, bad));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "session invalid"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("token"), 2);
    assert_eq!(world.count("license"), 0);
}

#[test]
fn a_refused_login_is_a_fault_with_the_reason() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next(
        "token",
        status(
            400,
            r#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
        ),
    );
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "invalid_grant (authentication failure)"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::FaultedUpstream], 1);
    assert_eq!(world.count("query"), 0);
    assert!(run.logs.iter().any(|l| l.contains("login refused")));
}

#[test]
fn a_failed_query_is_a_fault_and_nothing_is_issued() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next(
        "query",
        status(
            500,
            r#"[{"message":"boom","errorCode":"UNKNOWN_EXCEPTION"}]"#,
        ),
    );
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "UNKNOWN_EXCEPTION"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license"), 0);
}

#[test]
fn query_pages_are_followed() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.page_size = 1;
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("query"), 2);
    assert_eq!(world.count("license"), 3);
}

#[test]
fn license_failure_is_a_fault_then_redelivery_looks_up_and_issues_exactly_once() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("license", status(500, "Server Error"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(
            &run.reply,
            500,
            "license call for line 8025Y00000AbCdEQAV failed"
        ),
        "{}",
        run.reply.body
    );
    assert!(world.keys_issued.is_empty());

    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.count("retrieve"),
        1,
        "an unknown outcome is looked up before issuing again"
    );
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
}

#[test]
fn a_key_issued_then_lost_in_transit_is_found_not_issued_twice() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.issue_then_fail.push_back(reset());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_eq!(run.reply.status, 500);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);

    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.keys_issued["8025Y00000AbCdEQAV"].len(),
        1,
        "no second key"
    );
    assert_eq!(run.counts[&Metric::LicensesRecovered], 1);
    assert_eq!(
        world.written["8025Y00000AbCdEQAV"],
        world.keys_issued["8025Y00000AbCdEQAV"][0]
    );
}

#[test]
fn a_garbage_license_reply_is_a_failure() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("license", ok("<html><body>oops</body></html>"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "not understood"),
        "{}",
        run.reply.body
    );
    world.fail_next("license", ok("Error: invalid product"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "Error: invalid product"),
        "{}",
        run.reply.body
    );
}

#[test]
fn write_back_failure_is_a_fault_and_redelivery_only_writes_back() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next(
        "composite",
        status(500, r#"[{"message":"x","errorCode":"SERVER_UNAVAILABLE"}]"#),
    );
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "write-back"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 0);
    assert_eq!(world.count("retrieve"), 0);
    assert_eq!(world.count("composite"), 1);
    assert_eq!(
        world.written["8025Y00000AbCdEQAV"],
        world.keys_issued["8025Y00000AbCdEQAV"][0]
    );
}

#[test]
fn the_write_back_in_salesforce_protects_lines_across_gateways() {
    let cfg = config(json!({}));
    let mut world = demo_world();
    assert!(deliver(&cfg, &mut world, &mut MemStore::new(), ONE)
        .reply
        .is_ack());
    // Another replica: empty ledger, but Salesforce shows the key on the line.
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 0);
    assert_eq!(run.counts[&Metric::LinesAlreadyLicensed], 1);
}

#[test]
fn without_write_back_no_composite_call_is_made() {
    let cfg = config(json!({"salesforce": {"writeback_field": null}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("composite"), 0);
    assert!(!world
        .calls
        .iter()
        .any(|(_, p)| p.contains("License_Keys__c")));
    // The ledger alone prevents a second key on redelivery to the same gateway.
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 3);
}

#[test]
fn a_hundred_orders_take_one_query_bounded_concurrency_and_one_write_back() {
    let cfg = config(json!({"license_server": {"max_concurrency": 3}}));
    let mut world = family_world();
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, HUNDRED);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("query"), 1);
    assert_eq!(world.count("license"), 100);
    assert_eq!(world.count("composite"), 1);
    assert!(run.max_in_flight <= 3, "in flight {}", run.max_in_flight);
    assert_eq!(world.written.len(), 100);
}

#[test]
fn a_second_delivery_of_an_order_in_progress_is_refused_as_busy() {
    let cfg = config(json!({}));
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (first, _) = webhook::on_body(&cfg, ONE, 1, &mut env);
    assert!(first.is_some());
    let mut env = Env {
        now_ms: 10,
        store: &mut store,
    };
    let (second, cmds) = webhook::on_body(&cfg, SEVERAL, 2, &mut env);
    assert!(second.is_none());
    let Some(Command::Reply(r)) = cmds.last() else {
        panic!("no reply")
    };
    assert!(
        is_fault(r, 500, "being processed by another request"),
        "{}",
        r.body
    );
    // Its claim on the other order was released: that order can be worked on.
    let other = String::from_utf8(ONE.to_vec())
        .unwrap()
        .replace("8015Y000001AbCdQAK", "8015Y000001MuLtQAK");
    let mut env = Env {
        now_ms: 20,
        store: &mut store,
    };
    let (third, _) = webhook::on_body(&cfg, other.as_bytes(), 3, &mut env);
    assert!(third.is_some(), "the other order must not stay claimed");
    // Claims expire: long after the TTL the order can be taken over.
    let mut env = Env {
        now_ms: 10_000_000,
        store: &mut store,
    };
    let (fourth, _) = webhook::on_body(&cfg, ONE, 4, &mut env);
    assert!(fourth.is_some());
}

#[test]
fn the_deadline_stops_new_callouts_and_faults() {
    let cfg = config(json!({"deadline_ms": 1000, "license_server": {"max_concurrency": 1}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    // Each call takes 300 ms of the 1 s budget.
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, 1_000_000, 300);
    assert_eq!(
        run.reply.outcome,
        Outcome::Faulted(FaultKind::Deadline),
        "{}",
        run.reply.body
    );
    assert!(run.reply.body.contains("deadline"));
    assert!(world.count("license") < 3);
    // What finished was recorded: the redelivery completes without duplicates.
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    for keys in world.keys_issued.values() {
        assert_eq!(keys.len(), 1);
    }
    assert_eq!(world.keys_issued.len(), 3);
}

#[test]
fn call_timeouts_never_exceed_the_time_left() {
    // Every call of the flow (login, query, license, write-back), with the clock moving on
    // 1.2 s per call against a 5 s deadline: each timeout is the configured 10 s cut to what
    // is left, and no call starts with less than the minimum left.
    let cfg = config(json!({"deadline_ms": 5000}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let mut now = 0;
    let mut env = Env {
        now_ms: now,
        store: &mut store,
    };
    let (mut flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let mut pending: VecDeque<Command> = cmds.into();
    let mut seen = 0;
    while let Some(cmd) = pending.pop_front() {
        let Command::Dispatch(call) = cmd else {
            continue;
        };
        seen += 1;
        assert_eq!(
            call.timeout_ms,
            (5000 - now).min(10_000),
            "call {seen} ({call:?}) at {now} ms"
        );
        now += 1200;
        let resp = world.serve(&call);
        let mut env = Env {
            now_ms: now,
            store: &mut store,
        };
        if let Some(f) = flow.as_mut() {
            pending.extend(f.on_response(call.id, resp, &mut env));
        }
        if flow.as_ref().is_some_and(|f| f.is_finished()) {
            flow = None;
        }
    }
    assert_eq!(
        seen, 4,
        "login, query, license and write-back were all timed"
    );
}

#[test]
fn a_cancelled_request_releases_its_claims_and_leaves_lines_pending() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let mut flow = flow.unwrap();
    let mut queue: VecDeque<Call> = cmds
        .into_iter()
        .filter_map(|c| {
            if let Command::Dispatch(c) = c {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    // Serve login and query; the license call goes out and the client hangs up.
    for _ in 0..2 {
        let call = queue.pop_front().unwrap();
        let resp = world.serve(&call);
        let mut env = Env {
            now_ms: 0,
            store: &mut store,
        };
        queue.extend(
            flow.on_response(call.id, resp, &mut env)
                .into_iter()
                .filter_map(|c| {
                    if let Command::Dispatch(c) = c {
                        Some(c)
                    } else {
                        None
                    }
                }),
        );
    }
    let license = queue.pop_front().unwrap();
    assert_eq!(World::endpoint(&license), "license");
    world.serve(&license); // the key is issued, the answer never arrives
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    flow.on_cancel(&mut env);
    assert!(flow.is_finished());
    // Redelivery right away: not busy, finds the key, issues nothing new.
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
}

#[test]
fn sender_checks_run_before_any_callout() {
    let cfg = config(json!({"allowed_org_ids": ["00D000000000001AAA"]}));
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    assert!(flow.is_none());
    assert!(!cmds.iter().any(|c| matches!(c, Command::Dispatch(_))));
    let Some(Command::Reply(r)) = cmds.last() else {
        panic!()
    };
    assert_eq!(r.status, 403);
    assert!(r
        .body
        .contains("organization 00D5Y000001MPM7UAO is not allowed"));
}

#[test]
fn invalid_quantities_are_skipped_permanently() {
    let cfg = config(json!({}));
    let mut world = World::new().with_order(order(
        "8015Y000001AbCdQAK",
        "1",
        "Activated",
        &[("8025Y00000AbCdEQAV", "001", 1.5)],
    ));
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack());
    assert_eq!(run.counts[&Metric::LinesSkippedInvalid], 1);
    assert_eq!(world.count("license"), 0);
}

#[test]
fn no_response_at_all_from_salesforce_is_a_fault() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("token", reset());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "no response"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::CalloutsFailedSalesforce], 1);
}

#[test]
fn the_company_comes_from_the_account_even_without_a_contact() {
    let cfg = config(json!({}));
    let mut o = order(
        "8015Y000001AbCdQAK",
        "00000114",
        "Activated",
        &[("8025Y00000AbCdEQAV", "001", 1.0)],
    );
    o["BillToContact"] = Value::Null;
    let mut world = World::new().with_order(o);
    assert!(deliver(&cfg, &mut world, &mut MemStore::new(), ONE)
        .reply
        .is_ack());
    let f = &world.forms("license")[0];
    assert_eq!(f["is_company"], "Acme");
    assert_eq!(f["is_fullname"], "");
}

/// The hundred family orders, each with one line of product 001.
fn family_world() -> World {
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

fn family_message(i: usize) -> Vec<u8> {
    String::from_utf8(ONE.to_vec())
        .unwrap()
        .replace("8015Y000001AbCdQAK", &format!("8015Y00000B{i:04}QAB"))
        .into_bytes()
}

#[test]
fn unfinished_lines_are_never_evicted_from_a_full_ledger() {
    let cfg = config(json!({"ledger": {"max_lines": 2}}));
    let (mut world, mut store) = (family_world(), MemStore::new());
    // Line 0: issued, then the answer is lost (pending). Line 1: issued, write-back refused (issued).
    world.issue_then_fail.push_back(reset());
    assert_eq!(
        deliver(&cfg, &mut world, &mut store, &family_message(0))
            .reply
            .status,
        500
    );
    world.fail_next(
        "composite",
        status(500, r#"[{"message":"x","errorCode":"SERVER_UNAVAILABLE"}]"#),
    );
    assert_eq!(
        deliver(&cfg, &mut world, &mut store, &family_message(1))
            .reply
            .status,
        500
    );
    // The ledger is full of unfinished lines: a new line is refused rather than one forgotten.
    let run = deliver(&cfg, &mut world, &mut store, &family_message(2));
    assert!(
        is_fault(&run.reply, 500, "the ledger is full of unfinished lines"),
        "{}",
        run.reply.body
    );
    assert!(!world.keys_issued.contains_key("8025Y00000B0002QAB"));
    // Redeliveries finish the unfinished lines without a second key...
    assert!(deliver(&cfg, &mut world, &mut store, &family_message(0))
        .reply
        .is_ack());
    assert!(deliver(&cfg, &mut world, &mut store, &family_message(1))
        .reply
        .is_ack());
    // ...and once written back they make room for new lines.
    for i in 2..6 {
        let run = deliver(&cfg, &mut world, &mut store, &family_message(i));
        assert!(run.reply.is_ack(), "{i}: {}", run.reply.body);
    }
    for (item, keys) in &world.keys_issued {
        assert_eq!(keys.len(), 1, "{item} licensed twice");
    }
    assert_eq!(world.keys_issued.len(), 6);
    assert!(
        store.len() < 20,
        "the ledger stays bounded: {:?}",
        store.keys()
    );
}

#[test]
fn a_line_the_deadline_kept_from_starting_is_not_marked_uncertain() {
    let cfg = config(json!({"deadline_ms": 1000, "license_server": {"max_concurrency": 1}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, 1_000_000, 300);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Deadline));
    let started = world.count("license");
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    // Only lines whose call went out may need a lookup; none of those failed here.
    assert_eq!(
        world.count("retrieve"),
        0,
        "lines never started were looked up"
    );
    assert_eq!(world.count("license"), 3 - started);
}
