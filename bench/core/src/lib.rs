//! The core's hot paths as timed workloads, and the timing loop that measures them.
//!
//! The same code is built natively and for `wasm32-wasip1` (where `std::time::Instant` is WASI's
//! monotonic clock, run by Node's `node:wasi`), so `scripts/bench` can put the two side by side
//! and print the wasm/native ratio. Nothing here touches the network or a host: the flow's
//! callouts are answered from canned replies, as `plugin/core/tests/flow.rs` does.

use std::collections::VecDeque;
use std::hint::black_box;
use std::rc::Rc;
use std::time::{Duration, Instant};

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env, Response};
use keygate_core::ids::SfId;
use keygate_core::soap::{self, Limits};
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::{json, Value};

pub const HUNDRED: &[u8] = include_bytes!("../../../testdata/soap/valid/hundred.xml");
pub const ACTIVATED_ONE: &[u8] = include_bytes!("../../../testdata/soap/valid/activated_one.xml");
pub const NOT_ACTIVATED_ONE: &[u8] =
    include_bytes!("../../../testdata/soap/valid/not_activated_one.xml");
const FULL_CONFIG: &str = include_str!("../../../testdata/config/full.json");

/// How long to warm up and to measure one workload, and how long one timed batch should last.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub warmup: Duration,
    pub measure: Duration,
    pub batch: Duration,
    /// At least this many timed batches, even past `measure`.
    pub min_batches: usize,
}

impl Budget {
    pub fn full() -> Budget {
        Budget {
            warmup: Duration::from_millis(200),
            measure: Duration::from_millis(1500),
            batch: Duration::from_millis(10),
            min_batches: 15,
        }
    }

    pub fn smoke() -> Budget {
        Budget {
            warmup: Duration::from_millis(20),
            measure: Duration::from_millis(150),
            batch: Duration::from_millis(5),
            min_batches: 5,
        }
    }
}

/// One workload's timing: the median over batches of the time per iteration.
#[derive(Debug, Clone, PartialEq)]
pub struct Timing {
    pub name: String,
    pub median_ns: f64,
    pub min_ns: f64,
    pub iters_per_batch: u64,
    pub batches: usize,
}

impl Timing {
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name,
            "median_ns": self.median_ns,
            "min_ns": self.min_ns,
            "iters_per_batch": self.iters_per_batch,
            "batches": self.batches,
        })
    }
}

/// Warm-up, then batches of `n` iterations (n grown until one batch lasts `budget.batch`), until
/// `budget.measure` has passed and at least `min_batches` were timed. Median of the batches.
pub fn measure(name: &str, budget: Budget, mut f: impl FnMut() -> usize) -> Timing {
    let batch = |n: u64, f: &mut dyn FnMut() -> usize| {
        let start = Instant::now();
        for _ in 0..n {
            black_box(f());
        }
        start.elapsed()
    };
    // Calibrate: double the batch until it is long enough to time reliably.
    let mut n: u64 = 1;
    loop {
        let took = batch(n, &mut f);
        if took >= budget.batch || n >= 1 << 30 {
            break;
        }
        n = if took.is_zero() {
            n * 16
        } else {
            let wanted = budget.batch.as_nanos() * u128::from(n) / took.as_nanos();
            (wanted as u64).clamp(n + 1, n * 16)
        };
    }
    let warm_until = Instant::now() + budget.warmup;
    while Instant::now() < warm_until {
        batch(n, &mut f);
    }
    let mut per_iter: Vec<f64> = Vec::new();
    let measure_until = Instant::now() + budget.measure;
    while Instant::now() < measure_until || per_iter.len() < budget.min_batches {
        per_iter.push(batch(n, &mut f).as_nanos() as f64 / n as f64);
    }
    per_iter.sort_by(f64::total_cmp);
    Timing {
        name: name.to_owned(),
        median_ns: median(&per_iter),
        min_ns: per_iter.first().copied().unwrap_or(0.0),
        iters_per_batch: n,
        batches: per_iter.len(),
    }
}

/// Median of a sorted slice (0 when empty).
pub fn median(sorted: &[f64]) -> f64 {
    match sorted.len() {
        0 => 0.0,
        len if len % 2 == 1 => sorted[len / 2],
        len => (sorted[len / 2 - 1] + sorted[len / 2]) / 2.0,
    }
}

/// `soap::parse` of one message; returns the number of notifications.
pub fn parse(body: &[u8]) -> Result<usize, String> {
    soap::parse(body, &Limits::default())
        .map(|m| m.notifications.len())
        .map_err(|e| e.to_string())
}

/// A message and the canned replies of the calls its flow makes: login, one query for its
/// orders, one license call per line, one write-back.
pub struct FlowCase {
    cfg: Rc<Config>,
    body: &'static [u8],
    token: Vec<u8>,
    query: Vec<u8>,
    license: Vec<u8>,
    composite: Vec<u8>,
    retrieve_empty: Vec<u8>,
    /// Calls one delivery makes (login + query + lines + write-back).
    pub expected_calls: usize,
}

fn id18(base15: &str) -> String {
    SfId::parse(base15).map_or_else(|| base15.to_owned(), |id| id.to_18())
}

/// A query-result record of an Activated order with one line of product `001` × 1, in the shape
/// the stand-ins (and Salesforce) return.
fn order_record(order: &str, number: &str, item: &str) -> Value {
    json!({
        "attributes": {"type": "Order", "url": format!("/services/data/v60.0/sobjects/Order/{order}")},
        "Id": order, "OrderNumber": number, "Status": "Activated",
        "Account": {"attributes": {"type": "Account"}, "Name": "Initech"},
        "BillToContact": {"attributes": {"type": "Contact"}, "FirstName": "Pat", "LastName": "Family",
                          "Email": "pat@initech.example", "Phone": "+1 212 555 0199"},
        "CustomerAuthorizedBy": null,
        "OrderItems": {"totalSize": 1, "done": true, "records": [{
            "attributes": {"type": "OrderItem", "url": format!("/services/data/v60.0/sobjects/OrderItem/{item}")},
            "Id": item, "Quantity": 1.0,
            "Product2": {"attributes": {"type": "Product2"}, "ProductCode": "001", "Name": "MyProduct"},
            "License_Keys__c": null
        }]}
    })
}

impl FlowCase {
    /// `testdata/soap/valid/activated_one.xml`: the demo order, one line.
    pub fn activated_one() -> FlowCase {
        FlowCase::new(
            ACTIVATED_ONE,
            &[(
                "8015Y000001AbCdQAK".to_owned(),
                "00000114".to_owned(),
                "8025Y00000AbCdEQAV".to_owned(),
            )],
        )
    }

    /// `testdata/soap/valid/not_activated_one.xml`: acked at once, no callout (time it with
    /// `ack_only`; its canned replies and `expected_calls` are never used).
    pub fn not_activated_one() -> FlowCase {
        FlowCase::new(NOT_ACTIVATED_ONE, &[])
    }

    /// `testdata/soap/valid/hundred.xml`: the family of 100 orders, one line each.
    pub fn hundred() -> FlowCase {
        let orders: Vec<(String, String, String)> = (0..100)
            .map(|n| {
                (
                    id18(&format!("8015Y00000B{n:04}")),
                    format!("{:08}", 1000 + n),
                    id18(&format!("8025Y00000B{n:04}")),
                )
            })
            .collect();
        FlowCase::new(HUNDRED, &orders)
    }

    fn new(body: &'static [u8], orders: &[(String, String, String)]) -> FlowCase {
        let env = |name: &str| Some(format!("secret-of-{name}"));
        let cfg = Config::from_json(FULL_CONFIG.as_bytes(), &env)
            .unwrap_or_else(|e| panic!("testdata/config/full.json: {e:?}"));
        let token = json!({"access_token": "tok-1", "instance_url": "https://mydomain.my.salesforce.com",
                           "token_type": "Bearer", "issued_at": "1278448832702", "id": "x", "signature": "s"});
        let records: Vec<Value> = orders
            .iter()
            .map(|(o, n, i)| order_record(o, n, i))
            .collect();
        let query = json!({"totalSize": records.len(), "done": true, "records": records});
        let composite: Vec<Value> = orders
            .iter()
            .map(|(_, _, i)| json!({"id": i, "success": true, "errors": []}))
            .collect();
        FlowCase {
            cfg: Rc::new(cfg),
            body,
            token: token.to_string().into_bytes(),
            query: query.to_string().into_bytes(),
            license: b"<?xml version=\"1.0\"?><QuickLicenseManager><licenses><license><activationKey>A1B2C-D3E4F-G5H6J-K7L8M-N9P0Q-RSTUVW</activationKey></license></licenses></QuickLicenseManager>".to_vec(),
            composite: Value::Array(composite).to_string().into_bytes(),
            retrieve_empty: b"<?xml version=\"1.0\"?><QuickLicenseManager><licenses/></QuickLicenseManager>".to_vec(),
            // Login, query, the new lines' issuing marks, write-back, and per line a lookup (the
            // ledger is new) and an issue.
            expected_calls: 2 * orders.len() + 4,
        }
    }

    fn serve(&self, call: &Call) -> Response {
        // A signed lookup (QLM's strict authentication) is a GET with its arguments in the query.
        let path = call
            .path
            .split_once('?')
            .map_or(call.path.as_str(), |(p, _)| p);
        let body = if path.ends_with("/oauth2/token") {
            &self.token
        } else if path.contains("/query") {
            &self.query
        } else if path.ends_with("/composite/sobjects") {
            &self.composite
        } else if path.ends_with("/GetActivationKeyWithExpiryDate") {
            &self.license
        } else if path.ends_with("/RetrieveActivationKeyHttp") {
            &self.retrieve_empty
        } else {
            return Response {
                status: Some(404),
                headers: Vec::new(),
                body: Vec::new(),
            };
        };
        Response {
            status: Some(200),
            headers: Vec::new(),
            body: body.clone(),
        }
    }

    /// The validate + ack path (row 2): `webhook::on_body` of a message that needs no callout.
    /// Returns the reply's body length, or why it was not an immediate ack.
    pub fn ack_only(&self) -> Result<usize, String> {
        let mut store = MemStore::new();
        let mut env = Env {
            now_ms: 1_000_000,
            store: &mut store,
        };
        let (_, cmds) = webhook::on_body(&self.cfg, self.body, 42, &mut env);
        cmds.iter()
            .find_map(|c| match c {
                Command::Reply(r) if r.is_ack() => Some(r.body.len()),
                _ => None,
            })
            .ok_or_else(|| "no immediate ack".into())
    }

    /// One delivery on a fresh store (so it logs in, queries, licenses every line and writes
    /// back): `webhook::on_body`, then every call's canned reply through `Flow::on_response`.
    /// Returns the number of calls made, or why the message was not acked.
    pub fn deliver(&self) -> Result<usize, String> {
        let mut store = MemStore::new();
        let mut env = Env {
            now_ms: 1_000_000,
            store: &mut store,
        };
        let (mut flow, first) = webhook::on_body(&self.cfg, self.body, 42, &mut env);
        let mut queue: VecDeque<Call> = VecDeque::new();
        let mut reply = None;
        let mut absorb = |cmds: Vec<Command>, queue: &mut VecDeque<Call>| {
            for c in cmds {
                match c {
                    Command::Dispatch(call) => queue.push_back(call),
                    Command::Reply(r) => reply = Some(r),
                    Command::Log(..) | Command::Count(..) | Command::Gauge(..) => {}
                }
            }
        };
        absorb(first, &mut queue);
        let mut calls = 0;
        while let Some(call) = queue.pop_front() {
            calls += 1;
            let resp = self.serve(&call);
            let Some(flow) = flow.as_mut() else {
                return Err("a call without a flow".into());
            };
            let mut env = Env {
                now_ms: 1_000_000,
                store: &mut store,
            };
            absorb(flow.on_response(call.id, resp, &mut env), &mut queue);
        }
        match reply {
            Some(r) if r.is_ack() => Ok(calls),
            Some(r) => Err(format!("not acked: HTTP {} {}", r.status, r.body)),
            None => Err("no reply".into()),
        }
    }
}

/// One iteration of a workload; returns something derived from its result (kept from the optimiser).
pub type Workload = Box<dyn FnMut() -> usize>;

/// The workloads, by name (`check` verifies them before anything is timed).
pub fn workloads() -> Vec<(&'static str, Workload)> {
    let one = FlowCase::activated_one();
    let hundred = FlowCase::hundred();
    let ack = FlowCase::not_activated_one();
    vec![
        (
            "parse/hundred",
            Box::new(|| parse(HUNDRED).unwrap_or(0)) as Workload,
        ),
        (
            "parse/activated_one",
            Box::new(|| parse(ACTIVATED_ONE).unwrap_or(0)),
        ),
        (
            "webhook/not_activated_one",
            Box::new(move || ack.ack_only().unwrap_or(0)),
        ),
        (
            "flow/activated_one",
            Box::new(move || one.deliver().unwrap_or(0)),
        ),
        (
            "flow/hundred",
            Box::new(move || hundred.deliver().unwrap_or(0)),
        ),
    ]
}

/// Checks every workload does what its name says (a parse that fails, or a flow that is not
/// acked, would time an error path).
pub fn check() -> Result<(), String> {
    if parse(HUNDRED)? != 100 {
        return Err("hundred.xml: not 100 notifications".into());
    }
    if parse(ACTIVATED_ONE)? != 1 {
        return Err("activated_one.xml: not 1 notification".into());
    }
    FlowCase::not_activated_one()
        .ack_only()
        .map_err(|e| format!("webhook/not_activated_one: {e}"))?;
    for (name, case) in [
        ("flow/activated_one", FlowCase::activated_one()),
        ("flow/hundred", FlowCase::hundred()),
    ] {
        let calls = case.deliver().map_err(|e| format!("{name}: {e}"))?;
        if calls != case.expected_calls {
            return Err(format!(
                "{name}: {calls} calls, expected {}",
                case.expected_calls
            ));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workloads_do_what_they_say() {
        check().unwrap();
    }

    #[test]
    fn measure_reports_a_median() {
        let t = measure("spin", Budget::smoke(), || black_box(3) + 4);
        assert!(t.median_ns > 0.0 && t.min_ns <= t.median_ns);
        assert!(t.batches >= Budget::smoke().min_batches);
        assert_eq!(median(&[1.0, 2.0, 10.0]), 2.0);
        assert_eq!(median(&[1.0, 3.0]), 2.0);
    }
}
