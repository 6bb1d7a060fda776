//! The stream's phase logic against a test double of the host: what goes on, what waits, what is
//! answered, and what the host is asked, callback by callback. The same logic runs in Envoy under
//! the SDK adapter; the e2e suite proves the adapter (the ABI, real headers, dispatch, trailers).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Call, Level, Response};
use keygate_core::metrics::{Gauge, Metric};
use keygate_core::store::{MemStore, Store};

use crate::port::{DispatchRefused, Host, Verdict};
use crate::stream::{Phase, Stream};

const FULL: &str = include_str!("../../../testdata/config/full.json");
const ONE: &[u8] = include_bytes!("../../../testdata/soap/valid/activated_one.xml");
const PATH: &str =
    "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?is_user=john@example.com&is_pwd=s3cret";

fn env(name: &str) -> Option<String> {
    match name {
        "KEYGATE_HOOK_USER" => Some("john@example.com".into()),
        "KEYGATE_HOOK_PASSWORD" => Some("s3cret".into()),
        _ => Some("x".into()),
    }
}

/// `full.json` with a merge of `patch`'s top-level fields.
fn config(patch: serde_json::Value) -> Rc<Config> {
    let mut v: serde_json::Value = serde_json::from_str(FULL).unwrap();
    for (k, val) in patch.as_object().unwrap() {
        if val.is_null() {
            v.as_object_mut().unwrap().remove(k);
        } else {
            v[k] = val.clone();
        }
    }
    Rc::new(Config::from_json(v.to_string().as_bytes(), &env).unwrap())
}

/// The host as the stream sees it: a request, and a record of everything asked of it.
#[derive(Default)]
struct FakeHost {
    headers: Vec<(String, String)>,
    body: Vec<u8>,
    store: MemStore,
    /// Dispatches are refused this way when set.
    refuse: Option<DispatchRefused>,
    dispatched: Vec<Call>,
    replies: Vec<(u16, String)>,
    logs: Vec<(Level, String)>,
    counts: BTreeMap<&'static str, u64>,
    header_reads: usize,
    headers_set: Vec<(String, Option<String>)>,
}

impl FakeHost {
    fn request(path: &str, body: &[u8]) -> FakeHost {
        FakeHost {
            headers: vec![
                (":method".into(), "POST".into()),
                (":path".into(), path.into()),
                ("content-type".into(), "text/xml; charset=utf-8".into()),
                ("content-length".into(), body.len().to_string()),
            ],
            body: body.to_vec(),
            ..FakeHost::default()
        }
    }

    fn reply(&self) -> &(u16, String) {
        assert_eq!(self.replies.len(), 1, "one reply: {:?}", self.replies);
        &self.replies[0]
    }
}

impl Host for FakeHost {
    fn now_ms(&self) -> u64 {
        1_000_000
    }
    fn store(&mut self) -> &mut dyn Store {
        &mut self.store
    }
    fn log(&mut self, level: Level, msg: &str) {
        self.logs.push((level, msg.to_owned()));
    }
    fn count(&mut self, metric: Metric, n: u64) {
        *self.counts.entry(metric.name()).or_default() += n;
    }
    fn gauge(&mut self, _: Gauge, _: u64) {}
    fn dispatch(&mut self, call: &Call) -> Result<u32, DispatchRefused> {
        if let Some(r) = &self.refuse {
            return Err(r.clone());
        }
        self.dispatched.push(call.clone());
        Ok(100 + self.dispatched.len() as u32)
    }
    fn request_header(&mut self, name: &str) -> Option<String> {
        self.header_reads += 1;
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.clone())
    }
    fn request_headers(&mut self) -> Vec<(String, String)> {
        self.header_reads += 1;
        self.headers.clone()
    }
    fn set_request_header(&mut self, name: &str, value: Option<&str>) {
        self.headers_set
            .push((name.to_owned(), value.map(str::to_owned)));
    }
    fn request_body(&mut self, max: usize) -> Vec<u8> {
        self.body[..self.body.len().min(max)].to_vec()
    }
    fn send_reply(&mut self, status: u16, body: &[u8]) -> bool {
        self.replies
            .push((status, String::from_utf8_lossy(body).into_owned()));
        true
    }
}

#[test]
fn another_route_goes_on_after_one_header_read_and_its_body_too() {
    let mut host = FakeHost::request("/api/orders?x=QlmWebHookHandler", b"{}");
    let mut s = Stream::new(config(serde_json::json!({})), 1);
    assert_eq!(s.on_headers(&mut host, false), Verdict::Continue);
    assert_eq!(host.header_reads, 1);
    assert_eq!(s.on_body(&mut host, 2, true), Verdict::Continue);
    assert_eq!(s.on_trailers(&mut host), Verdict::Continue);
    assert!(host.replies.is_empty() && host.dispatched.is_empty());
}

#[test]
fn a_refused_head_is_answered_at_once_and_its_body_is_swallowed() {
    let mut host = FakeHost::request(
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?is_user=john@example.com&is_pwd=wrong",
        ONE,
    );
    let mut s = Stream::new(config(serde_json::json!({})), 1);
    assert_eq!(s.on_headers(&mut host, false), Verdict::Pause);
    assert_eq!(host.reply().0, 401);
    assert_eq!(s.phase(), Phase::Replied);
    // The body that follows never goes upstream.
    assert_eq!(s.on_body(&mut host, ONE.len(), true), Verdict::Pause);
    assert_eq!(s.on_trailers(&mut host), Verdict::Pause);
    assert_eq!(host.replies.len(), 1);
}

#[test]
fn held_head_waits_for_the_body_then_the_message_is_answered() {
    // Without Salesforce and the license server an activated order is a 503 fault: the flow ran.
    let cfg = config(serde_json::json!({
        "hold_request_headers": true, "salesforce": null, "license_server": null, "products": null
    }));
    let mut host = FakeHost::request(PATH, ONE);
    let mut s = Stream::new(cfg, 1);
    assert_eq!(s.on_headers(&mut host, false), Verdict::Pause);
    assert!(host.headers_set.is_empty(), "a held head is not touched");
    assert_eq!(s.on_body(&mut host, 100, false), Verdict::Pause);
    assert!(
        host.replies.is_empty(),
        "answered before the body was whole"
    );
    assert_eq!(s.on_body(&mut host, ONE.len(), true), Verdict::Pause);
    assert_eq!(host.reply().0, 503);
    assert_eq!(s.phase(), Phase::Replied);
}

#[test]
fn a_forwarded_head_loses_its_query_and_secret_header_and_trailers_end_the_message() {
    let cfg = config(serde_json::json!({
        "salesforce": null, "license_server": null, "products": null,
        "inbound_secret": {"password_env": "KEYGATE_HOOK_PASSWORD", "header": "x-keygate-secret"}
    }));
    let mut host = FakeHost::request(
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?a=1",
        ONE,
    );
    host.headers
        .push(("x-keygate-secret".into(), "s3cret".into()));
    let mut s = Stream::new(cfg, 1);
    assert_eq!(s.on_headers(&mut host, false), Verdict::Continue);
    assert_eq!(
        host.headers_set,
        vec![
            (
                ":path".to_owned(),
                Some("/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler".to_owned())
            ),
            ("x-keygate-secret".to_owned(), None),
        ]
    );
    // Trailers, never an end-of-stream body: the message is complete only now.
    assert_eq!(s.on_body(&mut host, ONE.len(), false), Verdict::Pause);
    assert!(host.replies.is_empty());
    assert_eq!(s.on_trailers(&mut host), Verdict::Pause);
    assert_eq!(host.reply().0, 503);
}

#[test]
fn a_body_over_the_limit_is_refused_as_it_grows() {
    let cfg = config(serde_json::json!({"max_body_bytes": 1024, "hold_request_headers": true}));
    let mut host = FakeHost::request(PATH, ONE);
    host.headers.retain(|(k, _)| k != "content-length");
    let mut s = Stream::new(cfg, 1);
    assert_eq!(s.on_headers(&mut host, false), Verdict::Pause);
    assert_eq!(s.on_body(&mut host, 1025, false), Verdict::Pause);
    assert_eq!(host.reply().0, 413);
    assert!(host.dispatched.is_empty());
}

#[test]
fn a_dispatch_envoy_fails_before_sending_reaches_the_core_as_not_sent() {
    let mut host = FakeHost::request(PATH, ONE);
    host.refuse = Some(DispatchRefused::FailedBeforeSending);
    let mut s = Stream::new(config(serde_json::json!({"hold_request_headers": true})), 7);
    s.on_headers(&mut host, false);
    s.on_body(&mut host, ONE.len(), true);
    // The Salesforce login was never sent: a retryable fault, logged as Envoy's refusal.
    assert_eq!(host.reply().0, 500);
    assert!(
        host.logs.iter().any(|(l, m)| *l == Level::Warn
            && m.starts_with("keygate[7]: dispatch to cluster 'salesforce' refused: Envoy failed it before sending")),
        "{:?}",
        host.logs
    );
}

#[test]
fn a_missing_cluster_is_logged_as_an_error_naming_it() {
    let mut host = FakeHost::request(PATH, ONE);
    host.refuse = Some(DispatchRefused::Other("BadArgument".into()));
    let mut s = Stream::new(config(serde_json::json!({"hold_request_headers": true})), 7);
    s.on_headers(&mut host, false);
    s.on_body(&mut host, ONE.len(), true);
    assert_eq!(host.reply().0, 500);
    assert!(host.logs.iter().any(|(l, m)| *l == Level::Error
        && m.contains("cluster 'salesforce' refused: BadArgument: is the cluster defined?")));
}

#[test]
fn answers_go_to_the_flow_by_token_and_a_hang_up_cancels_it() {
    let mut host = FakeHost::request(PATH, ONE);
    let mut s = Stream::new(config(serde_json::json!({"hold_request_headers": true})), 3);
    s.on_headers(&mut host, false);
    s.on_body(&mut host, ONE.len(), true);
    assert_eq!(host.dispatched.len(), 1, "the Salesforce login");
    assert_eq!(host.dispatched[0].cluster, "salesforce");
    // An answer under a token the host never gave is ignored.
    s.on_call_response(
        &mut host,
        999,
        Response {
            status: Some(200),
            headers: Vec::new(),
            body: Vec::new(),
        },
    );
    assert!(host.replies.is_empty() && host.dispatched.len() == 1);
    // Salesforce hangs up before the reply: the flow is cancelled, and that is logged.
    s.on_done(&mut host);
    assert!(host.replies.is_empty());
    assert!(host.logs.iter().any(|(_, m)| m
        == "keygate[3]: downstream went away before the reply; Salesforce will redeliver"));
    // A refused login answered under the right token is a fault reply.
    let mut host = FakeHost::request(PATH, ONE);
    let mut s = Stream::new(config(serde_json::json!({"hold_request_headers": true})), 4);
    s.on_headers(&mut host, false);
    s.on_body(&mut host, ONE.len(), true);
    s.on_call_response(
        &mut host,
        101,
        Response {
            status: Some(400),
            headers: Vec::new(),
            body: br#"{"error":"invalid_grant","error_description":"authentication failure"}"#
                .to_vec(),
        },
    );
    assert_eq!(host.reply().0, 500);
    assert!(
        host.reply().1.contains("invalid_grant"),
        "{}",
        host.reply().1
    );
    s.on_done(&mut host);
    assert!(!host.logs.iter().any(|(_, m)| m.contains("went away")));
}
