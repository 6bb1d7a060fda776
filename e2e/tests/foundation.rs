//! Foundation end-to-end tests: the inbound checks of the real plugin in a real Envoy, none of
//! which may call Salesforce or the license server. The activated-order flow lives in other tests.

use keygate_e2e::soap_reply::{assert_ack, assert_fault, assert_no_leaks};
use keygate_e2e::{
    json, testdata, webhook_path_with_secret, Gateway, GatewayOptions, HeadersMode, HOOK_PASSWORD,
    HOOK_USER, WEBHOOK_PATH,
};
use keygate_standins::TRUNCATED_BODY;

const OUR_ORG: &str = "00D5Y000001MPM7UAO";

fn gateway() -> Gateway {
    Gateway::start(GatewayOptions::default())
}

fn not_activated() -> String {
    testdata("soap/valid/not_activated_one.xml")
}

/// The stand-ins saw no Salesforce or license-server call.
fn assert_no_callouts(gw: &Gateway) {
    let callouts: Vec<_> = gw
        .standins
        .record()
        .into_iter()
        .filter(|e| e.service != "upstream")
        .collect();
    assert!(callouts.is_empty(), "unexpected callouts: {callouts:?}");
}

/// A valid message is still acked, nothing was called out, no secret reached Envoy's log.
fn assert_still_healthy(gw: &Gateway) {
    assert_ack(&gw.post_webhook(not_activated()));
    assert_no_callouts(gw);
    let leaked = gw.leaked_secrets();
    assert!(leaked.is_empty(), "secrets in Envoy's log: {leaked:?}");
}

#[test]
fn not_activated_order_is_acked_without_callouts() {
    let gw = gateway();
    assert_ack(&gw.post_webhook(not_activated()));
    assert!(
        gw.counter("keygate_messages_acked") >= 1,
        "stats: {:?}",
        gw.stats()
    );
    assert_still_healthy(&gw);
}

#[test]
fn floor_listener_answers_the_ack_without_the_plugin() {
    let gw = gateway();
    let r = keygate_e2e::http::request(
        gw.floor_addr,
        "POST",
        "/floor",
        &[("Content-Type", "text/xml")],
        b"<any/>",
        keygate_e2e::http::DEFAULT_TIMEOUT,
    )
    .unwrap();
    assert_ack(&r);
    assert_eq!(
        gw.counter("keygate_messages_acked"),
        0,
        "the floor must not reach the plugin"
    );
}

#[test]
fn get_is_405() {
    let gw = gateway();
    assert_fault(&gw.get(&webhook_path_with_secret()), 405, "soapenv:Client");
    assert_still_healthy(&gw);
}

#[test]
fn json_content_type_is_415() {
    let gw = gateway();
    let r = gw.request(
        "POST",
        &webhook_path_with_secret(),
        &[("Content-Type", "application/json")],
        not_activated().as_bytes(),
    );
    assert_fault(&r, 415, "soapenv:Client");
    assert_still_healthy(&gw);
}

#[test]
fn body_over_max_body_bytes_is_413() {
    let gw = Gateway::start(GatewayOptions::default().patch(json!({"max_body_bytes": 4096})));
    let big = format!("{}<!-- {} -->", not_activated(), "x".repeat(8192));
    // Content-Length announces it: refused on the headers.
    assert_fault(&gw.post_webhook(&big), 413, "soapenv:Client");
    // Chunked, no length: refused while the body is being buffered.
    let chunked = format!("{:x}\r\n{big}\r\n0\r\n\r\n", big.len());
    let headers = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("Transfer-Encoding", "chunked"),
    ];
    let r = gw.request(
        "POST",
        &webhook_path_with_secret(),
        &headers,
        chunked.as_bytes(),
    );
    assert_fault(&r, 413, "soapenv:Client");
    assert!(
        gw.counter("keygate_messages_faulted_client") >= 2,
        "stats: {:?}",
        gw.stats()
    );
    assert_still_healthy(&gw);
}

#[test]
fn malformed_xml_is_400_naming_the_problem() {
    let gw = gateway();
    // Each fault names its problem; "malformed XML" alone (every such fault says it) would not.
    for (fixture, problem) in [
        ("malformed_truncated.xml", "end of document"),
        ("malformed_mismatched_tag.xml", "sf:statu"),
    ] {
        let r = gw.post_webhook(testdata(&format!("soap/invalid/{fixture}")));
        let faultstring = assert_fault(&r, 400, "soapenv:Client");
        let lower = faultstring.to_lowercase();
        assert!(
            lower.contains("malformed xml") && lower.contains(problem),
            "{fixture}: faultstring does not say what is wrong: {faultstring:?}"
        );
    }
    assert!(
        gw.counter("keygate_messages_faulted_client") >= 2,
        "stats: {:?}",
        gw.stats()
    );
    assert_still_healthy(&gw);
}

#[test]
fn missing_secret_is_401() {
    let gw = gateway();
    assert_fault(
        &gw.post_soap(WEBHOOK_PATH, not_activated()),
        401,
        "soapenv:Client",
    );
    let no_password = format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user={HOOK_USER}");
    assert_fault(
        &gw.post_soap(&no_password, not_activated()),
        401,
        "soapenv:Client",
    );
    assert!(
        gw.counter("keygate_messages_faulted_auth") >= 2,
        "stats: {:?}",
        gw.stats()
    );
    assert_still_healthy(&gw);
}

#[test]
fn wrong_secret_is_401_in_query_and_header() {
    let gw = gateway();
    let wrong_password =
        format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user={HOOK_USER}&is_pwd=wrong-password");
    assert_fault(
        &gw.post_soap(&wrong_password, not_activated()),
        401,
        "soapenv:Client",
    );
    let wrong_user =
        format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user=somebody&is_pwd={HOOK_PASSWORD}");
    assert_fault(
        &gw.post_soap(&wrong_user, not_activated()),
        401,
        "soapenv:Client",
    );

    let soap = |secret: &str| {
        let headers = [
            ("Content-Type", "text/xml; charset=utf-8"),
            ("x-keygate-secret", secret),
        ];
        gw.request("POST", WEBHOOK_PATH, &headers, not_activated().as_bytes())
    };
    assert_fault(&soap("wrong-password"), 401, "soapenv:Client");
    assert_ack(&soap(HOOK_PASSWORD)); // the header form with the right secret works
    assert_still_healthy(&gw);
}

#[test]
fn foreign_org_is_403() {
    let gw = gateway();
    let message = not_activated();
    assert!(
        message.contains(OUR_ORG),
        "fixture no longer carries org {OUR_ORG}"
    );
    for foreign in [
        "00D000000000001AAA",
        "00D000000000001EAA",
        "00D000000000001",
        "00D5Y000001MPM8UAO",
    ] {
        let r = gw.post_webhook(message.replace(OUR_ORG, foreign));
        assert_fault(&r, 403, "soapenv:Client");
    }
    assert!(
        gw.counter("keygate_messages_faulted_auth") >= 4,
        "stats: {:?}",
        gw.stats()
    );
    // 15-character form of our own org is the same org.
    assert_ack(&gw.post_webhook(message.replace(OUR_ORG, &OUR_ORG[..15])));
    assert_still_healthy(&gw);
}

#[test]
fn other_paths_pass_through_to_the_upstream() {
    let gw = gateway();
    let r = gw.get("/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "upstream: GET /hello"));
    // The handler name in a query string does not make a path the webhook.
    let r = gw.get("/hello?next=QlmWebHookHandler");
    assert_eq!(r.status, 200, "{}", r.text());
    assert!(r.text().starts_with("upstream: GET /hello"), "{}", r.text());
    assert_eq!(gw.counter("keygate_messages_acked"), 0);
    assert_still_healthy(&gw);
}

#[test]
fn query_string_is_ignored_for_route_matching() {
    let gw = gateway();
    let with_query = format!(
        "{WEBHOOK_PATH}?is_vendor=salesforce&is_user={HOOK_USER}&is_pwd={HOOK_PASSWORD}&is_extra=1"
    );
    assert_ack(&gw.post_soap(&with_query, not_activated()));
    // Only the last path segment matters, not the prefix.
    let other_prefix =
        format!("/hooks/QlmWebHookHandler?is_user={HOOK_USER}&is_pwd={HOOK_PASSWORD}");
    assert_ack(&gw.post_soap(&other_prefix, not_activated()));
    assert_still_healthy(&gw);
}

#[test]
fn activated_order_without_issuing_configured_is_503() {
    let gw = Gateway::start(
        GatewayOptions::default()
            .patch(json!({"salesforce": null, "license_server": null, "products": null})),
    );
    let r = gw.post_webhook(testdata("soap/valid/activated_one.xml"));
    assert_fault(&r, 503, "soapenv:Server");
    assert!(
        gw.counter("keygate_messages_faulted_unconfigured") >= 1,
        "stats: {:?}",
        gw.stats()
    );
    assert_still_healthy(&gw);
}

/// Headers with bytes that are not UTF-8 (testdata/fuzz-found/shell-request-header-not-utf8.http)
/// once panicked the VM: every later request, pass-through included, got a 503. Each is answered
/// now, and the gateway keeps serving.
#[test]
fn headers_that_are_not_utf8_do_not_take_the_gateway_down() {
    use std::io::{Read, Write};
    let gw = gateway();
    let raw = std::fs::read(
        keygate_e2e::repo_root().join("testdata/fuzz-found/shell-request-header-not-utf8.http"),
    )
    .unwrap();
    for _ in 0..3 {
        let mut s = std::net::TcpStream::connect(gw.gateway_addr).unwrap();
        s.set_read_timeout(Some(std::time::Duration::from_secs(5)))
            .unwrap();
        s.write_all(&raw).unwrap();
        let mut reply = Vec::new();
        let _ = s.read_to_end(&mut reply);
        let head = String::from_utf8_lossy(&reply);
        assert!(head.starts_with("HTTP/1.1 "), "no answer: {head}");
        assert!(!head.starts_with("HTTP/1.1 503"), "the VM failed: {head}");
    }
    let r = gw.get("/hello");
    assert_eq!((r.status, r.text().as_str()), (200, "upstream: GET /hello"));
    assert!(!gw.envoy_log().contains("panic"), "{}", gw.log_tail(20));
    assert_still_healthy(&gw);
}

/// Spellings of the webhook path that a server behind us would read as the handler never pass
/// through to the upstream: Envoy normalises the path and the plugin's gate decodes it.
#[test]
fn encoded_and_dotted_webhook_paths_do_not_slip_past_the_plugin() {
    let gw = gateway();
    for path in [
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHook%48andler",
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler/.",
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler/x/..",
        "/qlmLicenseServer//qlmservice.asmx/QlmWebHookHandler",
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler%20",
        // The shipped configs let only paths that might be the webhook into the VM: these must be.
        "/qlmLicenseServer/qlmservice.asmx/QLMWEBHOOKHANDLER",
        "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler;jsessionid=1",
        "/qlmLicenseServer/qlmservice.asmx/QlmWeb%48ook%48andler",
    ] {
        let r = gw.post_soap(
            &format!("{path}?is_user={HOOK_USER}&is_pwd={HOOK_PASSWORD}"),
            not_activated(),
        );
        assert!(
            !r.text().starts_with("upstream:"),
            "{path} reached the upstream"
        );
        assert_ack(&r);
    }
    assert!(
        gw.upstream_received().is_empty(),
        "{:#?}",
        gw.upstream_received()
    );
    assert_still_healthy(&gw);
}

/// A chunked POST with a trailer: its body is complete only at the trailers, so the plugin must
/// check and answer it there. Forwarding at the trailers would let it past the gate unchecked.
fn post_with_trailer(gw: &Gateway, body: &[u8]) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(gw.gateway_addr).unwrap();
    s.set_read_timeout(Some(std::time::Duration::from_secs(10)))
        .unwrap();
    let mut req = format!(
        "POST {} HTTP/1.1\r\nHost: gateway\r\nContent-Type: text/xml; charset=utf-8\r\n\
         Transfer-Encoding: chunked\r\nTrailer: x-checksum\r\nConnection: close\r\n\r\n{:x}\r\n",
        keygate_e2e::webhook_path_with_secret(),
        body.len()
    )
    .into_bytes();
    req.extend_from_slice(body);
    req.extend_from_slice(b"\r\n0\r\nx-checksum: 1\r\n\r\n");
    s.write_all(&req).unwrap();
    let mut reply = String::new();
    let _ = s.read_to_string(&mut reply);
    reply
}

#[test]
fn a_message_with_trailers_is_checked_and_answered_never_forwarded() {
    let gw = gateway();
    let refused = post_with_trailer(&gw, testdata("hostile/foreign_org_id.xml").as_bytes());
    assert!(refused.starts_with("HTTP/1.1 403"), "{refused}");
    assert!(refused.contains("is not allowed"), "{refused}");
    let acked = post_with_trailer(&gw, not_activated().as_bytes());
    assert!(acked.starts_with("HTTP/1.1 200"), "{acked}");
    assert!(acked.contains("<Ack>true</Ack>"), "{acked}");
    let forwarded = gw.upstream_received();
    assert!(forwarded.is_empty(), "reached the upstream: {forwarded:?}");
    assert_still_healthy(&gw);
}

/// The same over HTTP/2 cleartext (prior knowledge), as a client with request trailers sends it:
/// a HEADERS frame, DATA, then a trailers HEADERS frame ending the stream (`e2e/h2c_post.py`).
fn h2c_post_with_trailer(gw: &Gateway, body: &str) -> (String, String) {
    let file = gw.dir().join("h2c-body.xml");
    std::fs::write(&file, body).unwrap();
    let out = std::process::Command::new(keygate_e2e::repo_root().join(".venv/bin/python"))
        .arg(keygate_e2e::repo_root().join("e2e/h2c_post.py"))
        .arg("127.0.0.1")
        .arg(gw.gateway_addr.port().to_string())
        .arg(keygate_e2e::webhook_path_with_secret())
        .arg(&file)
        .output()
        .expect(".venv/bin/python with h2 (scripts/setup)");
    assert!(
        out.status.success(),
        "h2c client: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (status, body) = text.split_once('\n').unwrap_or((&text, ""));
    (status.to_owned(), body.to_owned())
}

#[test]
fn an_h2c_message_with_trailers_is_checked_and_answered_never_forwarded() {
    let gw = gateway();
    let (status, body) = h2c_post_with_trailer(&gw, &testdata("hostile/foreign_org_id.xml"));
    assert_eq!(status, "403", "{body}");
    assert!(body.contains("is not allowed"), "{body}");
    let (status, body) = h2c_post_with_trailer(&gw, &not_activated());
    assert_eq!(status, "200", "{body}");
    assert!(body.contains("<Ack>true</Ack>"), "{body}");
    let forwarded = gw.upstream_received();
    assert!(forwarded.is_empty(), "reached the upstream: {forwarded:?}");
    assert_still_healthy(&gw);
}

/// The webhook route's upstream never receives a webhook body, whatever the filter's
/// `allow_on_headers_stop_iteration` (run once per `KEYGATE_E2E_HEADERS` mode by scripts/test).
/// Holding the headers, it sees nothing at all. Without the flag (Istio, Envoy Gateway), it may see
/// the head of a request that passed the head checks — path without query, no secret header —
/// and then the connection closes before any body: never a request it could act on.
#[test]
fn the_route_upstream_never_receives_a_webhook_body() {
    let gw = gateway();
    let (user, secret) = (HOOK_USER, HOOK_PASSWORD);
    let headers = [
        ("Content-Type", "text/xml; charset=utf-8"),
        ("SOAPAction", "\"\""),
    ];
    // An ack after callouts (time for an upstream connection), a malformed message, a message
    // with the secret in a header, and one refused at the head (no secret).
    let activated = testdata("soap/valid/activated_one.xml");
    assert_ack(&gw.post_webhook(&activated));
    assert_fault(&gw.post_webhook("<not-soap/>"), 400, "soapenv:Client");
    let in_header = [headers[0], headers[1], ("x-keygate-secret", secret)];
    let r = gw.request("POST", WEBHOOK_PATH, &in_header, not_activated().as_bytes());
    assert_ack(&r);
    let r = gw.request("POST", WEBHOOK_PATH, &headers, not_activated().as_bytes());
    assert_fault(&r, 401, "soapenv:Client");
    std::thread::sleep(std::time::Duration::from_millis(300));

    let upstream: Vec<_> = gw
        .standins
        .record()
        .into_iter()
        .filter(|r| r.service == "upstream")
        .collect();
    match gw.headers_mode() {
        HeadersMode::Hold => assert!(upstream.is_empty(), "the upstream saw: {upstream:#?}"),
        HeadersMode::Forward => {
            assert!(
                upstream.len() <= 3,
                "more heads than forwarded requests: {upstream:#?}"
            );
            for r in &upstream {
                assert_eq!(
                    r.body, TRUNCATED_BODY,
                    "a webhook body reached the upstream: {r:#?}"
                );
                assert_eq!(r.path, WEBHOOK_PATH, "{r:#?}");
                assert!(
                    r.query.is_empty(),
                    "the query (QLM's is_pwd) went upstream: {r:#?}"
                );
                assert!(!r.headers.contains_key("x-keygate-secret"), "{r:#?}");
                let seen = format!("{r:?}");
                assert!(!seen.contains(secret) && !seen.contains(user), "{seen}");
            }
            println!("the upstream saw {} head(s) without a body", upstream.len());
        }
    }
    assert_no_leaks(&gw);
}
