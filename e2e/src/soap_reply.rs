//! What Salesforce got back: assertions on the plugin's SOAP replies, shared by every e2e test.

use crate::http::Response;
use crate::Gateway;

pub const OUTBOUND_NS: &str = "http://soap.sforce.com/2005/09/outbound";

/// The text of the first `<name>…</name>` element of `body` (replies are flat and unprefixed
/// where the tests look).
pub fn element<'a>(body: &'a str, name: &str) -> Option<&'a str> {
    let open = format!("<{name}>");
    let start = body.find(&open)? + open.len();
    let end = body[start..].find(&format!("</{name}>"))?;
    Some(&body[start..start + end])
}

fn assert_xml(r: &Response) {
    let content_type = r.header("content-type").unwrap_or_default();
    assert!(
        content_type.starts_with("text/xml"),
        "content-type {content_type:?}, body {}",
        r.text()
    );
}

/// The documented `notificationsResponse` ack, as `text/xml`, in the outbound namespace.
pub fn assert_ack(r: &Response) {
    let body = r.text();
    assert_eq!(r.status, 200, "expected the SOAP ack, got: {body}");
    assert_xml(r);
    assert!(body.contains("notificationsResponse"), "{body}");
    assert!(
        body.contains(&format!("xmlns=\"{OUTBOUND_NS}\"")),
        "ack not in the outbound namespace: {body}"
    );
    assert!(body.contains("<Ack>true</Ack>"), "{body}");
}

/// Whether `r` is the ack (for loops that redeliver until it is, as Salesforce does).
pub fn is_ack(r: &Response) -> bool {
    r.status == 200 && element(&r.text(), "Ack") == Some("true")
}

/// Like [`assert_ack`], with the tail of Envoy's log in the failure message.
pub fn assert_ack_from(r: &Response, gw: &Gateway) {
    if r.status != 200 {
        panic!(
            "expected the SOAP ack, got {}: {}\nEnvoy log tail:\n{}",
            r.status,
            r.text(),
            gw.log_tail(20)
        );
    }
    assert_ack(r);
}

/// A SOAP fault with this status and faultcode, never an ack; returns its faultstring with the
/// XML escapes undone (for `contains`).
pub fn assert_fault(r: &Response, status: u16, faultcode: &str) -> String {
    let body = r.text();
    assert_eq!(r.status, status, "body: {body}");
    assert_xml(r);
    assert!(body.contains("Fault>"), "not a SOAP fault: {body}");
    assert!(!body.contains("<Ack>"), "a fault must not ack: {body}");
    assert_eq!(element(&body, "faultcode"), Some(faultcode), "{body}");
    let faultstring = element(&body, "faultstring").unwrap_or_default();
    assert!(!faultstring.trim().is_empty(), "empty faultstring: {body}");
    faultstring
        .replace("&apos;", "'")
        .replace("&quot;", "\"")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
}

/// A retryable fault (500, `soapenv:Server`); returns its faultstring.
pub fn assert_server_fault(r: &Response) -> String {
    assert_fault(r, 500, "soapenv:Server")
}

/// No secret reached Envoy's log.
pub fn assert_no_leaks(gw: &Gateway) {
    let leaked = gw.leaked_secrets();
    assert!(leaked.is_empty(), "secrets in Envoy's log: {leaked:?}");
}
