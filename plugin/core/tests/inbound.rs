//! The gate on request headers: route match, method, content type, size, shared secret.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

// Under Node through wasm-bindgen on wasm32-unknown-unknown; plain libtest natively and on
// wasm32-wasip1 (under Node's WASI: scripts/run-wasi.mjs).
#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

use keygate_core::config::Config;
use keygate_core::inbound::{is_webhook_path, on_headers, HeadDecision, RequestHead};

const FULL: &str = include_str!("../../../testdata/config/full.json");
const MINIMAL: &str = include_str!("../../../testdata/config/minimal.json");

fn env(name: &str) -> Option<String> {
    match name {
        "KEYGATE_HOOK_USER" => Some("john@example.com".into()),
        "KEYGATE_HOOK_PASSWORD" => Some("s3cret pwd".into()),
        _ => Some("x".into()),
    }
}

fn cfg(json: &str) -> Config {
    Config::from_json(json.as_bytes(), &env).unwrap()
}

const PATH: &str = "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?is_vendor=salesforce&is_user=john@example.com&is_pwd=s3cret%20pwd&is_affiliateid=salesforce";

fn head(method: &'static str, path: &'static str) -> RequestHead<'static> {
    RequestHead {
        method,
        path,
        content_type: Some("text/xml; charset=UTF-8"),
        content_length: Some(900),
        secret_header: None,
    }
}

fn status(d: HeadDecision) -> u16 {
    match d {
        HeadDecision::PassThrough => 0,
        HeadDecision::ReadBody => 1,
        HeadDecision::Reply(r) => r.status,
    }
}

#[test]
fn only_the_handler_route_is_ours_query_ignored() {
    let c = cfg(FULL);
    assert!(is_webhook_path(&c, "/QlmWebHookHandler"));
    assert!(is_webhook_path(
        &c,
        "/a/b/qlmwebhookhandler?x=QlmWebHookHandler/"
    ));
    assert!(is_webhook_path(&c, PATH));
    assert!(!is_webhook_path(&c, "/QlmWebHookHandler/more"));
    assert!(!is_webhook_path(&c, "/hello?next=/QlmWebHookHandler"));
    assert!(!is_webhook_path(&c, "/QlmWebHookHandlerX"));
    // Every spelling a web server behind us would read as the handler is ours too.
    for sneaky in [
        "/qlmservice.asmx/QlmWebHook%48andler",
        "/qlmservice.asmx/QlmWebHookHandler/.",
        "/qlmservice.asmx/QlmWebHookHandler/x/..",
        "/qlmservice.asmx/QlmWebHookHandler%2F",
        "/qlmservice.asmx/QlmWebHookHandler%20",
        "/qlmservice.asmx/QlmWebHookHandler\\",
        "/qlmservice.asmx\\QlmWebHookHandler",
        "/qlmservice.asmx/QlmWebHookHandler;jsessionid=1",
    ] {
        assert!(
            is_webhook_path(&c, sneaky),
            "{sneaky} slipped past the gate"
        );
    }
    assert!(!is_webhook_path(&c, "/QlmWebHookHandler/../hello"));
    assert!(!is_webhook_path(&c, "/a%2Fb"));
    assert_eq!(status(on_headers(&c, &head("GET", "/hello"))), 0);
}

#[test]
fn qlm_url_credentials_are_accepted() {
    let c = cfg(FULL);
    assert_eq!(status(on_headers(&c, &head("POST", PATH))), 1);
}

#[test]
fn wrong_or_missing_credentials_are_401() {
    let c = cfg(FULL);
    for path in [
        "/QlmWebHookHandler",
        "/QlmWebHookHandler?is_user=john@example.com",
        "/QlmWebHookHandler?is_user=john@example.com&is_pwd=wrong",
        "/QlmWebHookHandler?is_user=mallory@example.com&is_pwd=s3cret%20pwd",
        "/QlmWebHookHandler?is_pwd=s3cret%20pwd",
    ] {
        let d = on_headers(&c, &head("POST", path));
        let HeadDecision::Reply(r) = d else {
            panic!("{path} accepted")
        };
        assert_eq!(r.status, 401, "{path}");
        assert!(!r.body.contains("s3cret"), "the secret must not be echoed");
    }
}

#[test]
fn the_secret_header_works_and_a_wrong_one_fails_even_with_a_good_query() {
    let c = cfg(FULL);
    let mut h = head("POST", "/QlmWebHookHandler");
    h.secret_header = Some("s3cret pwd");
    assert_eq!(status(on_headers(&c, &h)), 1);
    h.secret_header = Some("s3cret pwe");
    assert_eq!(status(on_headers(&c, &h)), 401);
    let mut h = head("POST", PATH);
    h.secret_header = Some("nope");
    assert_eq!(status(on_headers(&c, &h)), 401);
}

#[test]
fn method_content_type_and_size_are_checked_before_the_body() {
    let c = cfg(MINIMAL);
    assert_eq!(
        status(on_headers(&c, &head("GET", "/QlmWebHookHandler"))),
        405
    );
    assert_eq!(
        status(on_headers(&c, &head("PUT", "/QlmWebHookHandler"))),
        405
    );
    for (ct, want) in [
        (Some("application/json"), 415),
        (None, 415),
        (Some("text/xml; charset=ISO-8859-1"), 415),
        (Some("TEXT/XML;charset=\"utf-8\""), 1),
        (Some("application/soap+xml; charset=utf-8"), 1),
        (Some("text/xml"), 1),
    ] {
        let mut h = head("POST", "/QlmWebHookHandler");
        h.content_type = ct;
        assert_eq!(status(on_headers(&c, &h)), want, "{ct:?}");
    }
    let mut h = head("POST", "/QlmWebHookHandler");
    h.content_length = Some(1024 * 1024 + 1);
    assert_eq!(status(on_headers(&c, &h)), 413);
    h.content_length = None; // chunked: the body callback enforces the limit
    assert_eq!(status(on_headers(&c, &h)), 1);
}

#[test]
fn the_405_fault_is_soap_client() {
    let c = cfg(MINIMAL);
    let HeadDecision::Reply(r) = on_headers(&c, &head("GET", "/QlmWebHookHandler")) else {
        panic!()
    };
    assert!(r.body.contains("<faultcode>soapenv:Client</faultcode>"));
    assert!(r.body.contains("method GET not allowed"));
}
