//! The hostile corpus (testdata/hostile: NAME.xml + NAME.expect, format in generate.py) through a
//! real Envoy: one gateway for the whole corpus. Each attack must get its status and SOAP fault,
//! reach neither Salesforce nor the license server (nor the pass-through upstream), put no secret
//! in Envoy's log, and leave the gateway healthy: a valid message right after it is still acked.
//! plugin/core/tests/hostile.rs checks the same corpus against the core, with the same padding and
//! auth modes.

use keygate_e2e::soap_reply::element;
use keygate_e2e::{
    duplex, repo_root, testdata, webhook_path_with_secret, Gateway, GatewayOptions, Response,
    HOOK_PASSWORD, HOOK_USER, WEBHOOK_PATH,
};
use std::collections::BTreeMap;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::time::{Duration, Instant};

/// Overall limit of one request, body included.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);
/// A refused body must be answered promptly, not after Envoy has swallowed it or timed out.
const PROMPT: Duration = Duration::from_secs(3);

struct Case {
    name: String,
    body: Vec<u8>,
    expect: BTreeMap<String, String>,
}

fn corpus() -> Vec<Case> {
    let dir = repo_root().join("testdata/hostile");
    let mut cases = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expect") {
            let expect = std::fs::read_to_string(&path).unwrap();
            let expect = expect
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.trim().to_owned(), v.to_owned()))
                .collect();
            let body = std::fs::read(path.with_extension("xml"))
                .unwrap_or_else(|e| panic!("{}: no .xml beside it: {e}", path.display()));
            cases.push(Case {
                name: path.file_stem().unwrap().to_string_lossy().into_owned(),
                body,
                expect,
            });
        }
    }
    cases.sort_by(|a, b| a.name.cmp(&b.name));
    cases
}

/// The body as sent: padded inside OrderNumber when the case asks for a huge one (as
/// plugin/core/tests/hostile.rs does).
fn padded(body: &[u8], expect: &BTreeMap<String, String>) -> Vec<u8> {
    match expect
        .get("pad-to-bytes")
        .map(|n| n.parse::<usize>().unwrap())
    {
        None => body.to_vec(),
        Some(n) => {
            let text = String::from_utf8(body.to_vec()).unwrap();
            assert!(text.contains("00000114"), "nothing to pad");
            let pad = "9".repeat(n.saturating_sub(text.len()));
            text.replacen("00000114", &format!("00000114{pad}"), 1)
                .into_bytes()
        }
    }
}

/// The webhook URL for an `auth` mode of the corpus.
fn path_for(auth: &str) -> String {
    match auth {
        "good" => webhook_path_with_secret(),
        "none" => format!("{WEBHOOK_PATH}?is_vendor=salesforce"),
        "wrong" => format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user={HOOK_USER}&is_pwd=guess"),
        "wrong-user" => {
            format!("{WEBHOOK_PATH}?is_vendor=salesforce&is_user=mallory&is_pwd={HOOK_PASSWORD}")
        }
        other => panic!("unknown auth mode {other:?} in the corpus"),
    }
}

/// How a fault text appears in the SOAP body (the same escaping as plugin/core/tests/hostile.rs).
fn xml_escaped(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('\'', "&apos;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// Nothing reached any stand-in: not Salesforce, not the license server, not the upstream
/// (but for the head of the request, without its body, when the filter may not hold headers;
/// see foundation.rs `the_route_upstream_never_receives_a_webhook_body`).
fn assert_nothing_called(gw: &Gateway, what: &str) {
    let mut record: Vec<_> = gw
        .standins
        .record()
        .into_iter()
        .filter(|r| r.service != "upstream")
        .collect();
    record.extend(gw.upstream_received());
    assert!(
        record.is_empty(),
        "{what}: the stand-ins were called: {:?}",
        record
            .iter()
            .map(|r| format!("{} {} {} {}", r.service, r.endpoint, r.method, r.path))
            .collect::<Vec<_>>()
    );
}

fn assert_ack(r: &Response, what: &str) {
    let body = r.text();
    assert_eq!(r.status, 200, "{what}: expected the ack, got {body}");
    assert!(body.contains("<Ack>true</Ack>"), "{what}: {body}");
}

/// One case: returns the status it got and how sending ended (for the per-case line).
fn run_case(gw: &Gateway, case: &Case) -> (u16, String) {
    let name = &case.name;
    let want_status: u16 = case.expect["status"]
        .parse()
        .unwrap_or_else(|_| panic!("{name}: bad status"));
    let want_fault = case
        .expect
        .get("fault")
        .unwrap_or_else(|| panic!("{name}: no fault"));
    let method = case
        .expect
        .get("method")
        .map(String::as_str)
        .unwrap_or("POST");
    let content_type = case
        .expect
        .get("content-type")
        .map(String::as_str)
        .unwrap_or("text/xml; charset=utf-8");
    let path = path_for(
        case.expect
            .get("auth")
            .map(String::as_str)
            .unwrap_or("good"),
    );
    let body = padded(&case.body, &case.expect);

    gw.standins.reset();
    let headers = [("Content-Type", content_type), ("SOAPAction", "\"\"")];
    let exchange = duplex::request(
        gw.gateway_addr,
        method,
        &path,
        &headers,
        &body,
        REQUEST_TIMEOUT,
    )
    .unwrap_or_else(|e| panic!("{name}: no reply: {e}\n{}", gw.log_tail(10)));
    let r = &exchange.response;
    let text = r.text();

    assert_eq!(r.status, want_status, "{name}: {text}");
    if let Some(e) = &exchange.write_error {
        // Only an early refusal may cut the request short (Envoy closes after its reply).
        assert!(
            r.status >= 400,
            "{name}: the body could not be sent ({e}) yet the reply is {}",
            r.status
        );
    }
    assert!(
        exchange.complete,
        "{name}: reply cut short after the status line: {text:?}"
    );
    if body.len() > 1 << 20 {
        assert!(
            exchange.elapsed < PROMPT,
            "{name}: a {} byte body took {:?} to be refused",
            body.len(),
            exchange.elapsed
        );
    }
    assert!(
        r.header("content-type")
            .is_some_and(|c| c.starts_with("text/xml")),
        "{name}: content type {:?}: {text}",
        r.header("content-type")
    );
    assert!(text.contains("Fault>"), "{name}: not a SOAP fault: {text}");
    let code = if want_status >= 500 {
        "soapenv:Server"
    } else {
        "soapenv:Client"
    };
    assert_eq!(element(&text, "faultcode"), Some(code), "{name}: {text}");
    let escaped = xml_escaped(want_fault);
    assert!(
        element(&text, "faultstring").is_some_and(|f| f.contains(&escaped)),
        "{name}: the faultstring should contain {escaped:?}: {text}"
    );
    assert!(
        !text.contains(HOOK_PASSWORD),
        "{name}: secret echoed: {text}"
    );
    assert_nothing_called(gw, name);

    // Still healthy: a valid message is acked (not activated: no callout either).
    let after = gw.post_webhook(testdata("soap/valid/not_activated_one.xml"));
    assert_ack(&after, &format!("valid message after {name}"));
    assert_nothing_called(gw, &format!("valid message after {name}"));

    let leaked = gw.leaked_secrets();
    assert!(
        leaked.is_empty(),
        "{name}: secrets in Envoy's log: {leaked:?}"
    );
    let sent = match &exchange.write_error {
        None => format!("{} bytes sent", body.len()),
        Some(e) => format!("{} byte body cut short: {e}", body.len()),
    };
    (r.status, sent)
}

#[test]
fn every_hostile_message_gets_its_fault_through_envoy() {
    let cases = corpus();
    // Exact: a case deleted (or added without its .expect) must show here.
    assert_eq!(
        cases.len(),
        58,
        "the corpus in testdata/hostile has changed"
    );
    let gw = Gateway::start(GatewayOptions::default());
    let started = Instant::now();
    let mut failed = Vec::new();
    for case in &cases {
        let t = Instant::now();
        match catch_unwind(AssertUnwindSafe(|| run_case(&gw, case))) {
            Ok((status, sent)) => eprintln!(
                "hostile {:<36} {status} ok ({} ms; {sent})",
                case.name,
                t.elapsed().as_millis()
            ),
            Err(panic) => {
                let msg = panic
                    .downcast_ref::<String>()
                    .cloned()
                    .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
                    .unwrap_or_default();
                eprintln!("hostile {:<36} FAILED", case.name);
                failed.push(format!("{}: {msg}", case.name));
            }
        }
    }
    eprintln!(
        "hostile: {} cases in {:?}, {} failed",
        cases.len(),
        started.elapsed(),
        failed.len()
    );
    let counted =
        gw.counter("keygate_messages_faulted_client") + gw.counter("keygate_messages_faulted_auth");
    assert!(
        failed.is_empty(),
        "{} of {} hostile cases failed:\n{}",
        failed.len(),
        cases.len(),
        failed.join("\n")
    );
    assert_eq!(
        counted,
        cases.len() as u64,
        "every hostile message is counted as a client or auth fault: {:?}",
        gw.stats()
    );
    assert_eq!(gw.counter("keygate_messages_acked"), cases.len() as u64);
}
