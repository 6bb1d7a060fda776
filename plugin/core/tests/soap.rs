//! SOAP parsing and validation over the shared fixtures. Runs natively and, compiled to
//! wasm32-unknown-unknown, under Node with wasm-bindgen-test: same fixtures, same answers.
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

use keygate_core::soap::{self, Limits, SoapError};

macro_rules! fixture {
    ($path:literal) => {
        include_bytes!(concat!(
            env!("CARGO_MANIFEST_DIR"),
            "/../../testdata/soap/",
            $path
        ))
        .as_slice()
    };
}

fn parse(body: &[u8]) -> Result<soap::OutboundMessage<'_>, SoapError> {
    soap::parse(body, &Limits::default())
}

#[test]
fn one_activated_order() {
    let m = parse(fixture!("valid/activated_one.xml")).unwrap();
    assert_eq!(m.organization_id.as_str(), "00D5Y000001MPM7UAO");
    assert_eq!(m.action_id.as_str(), "04k5Y0000008Q1hQAE");
    assert_eq!(m.session_id, None);
    assert_eq!(
        m.enterprise_url,
        "https://mydomain.my.salesforce.com/services/Soap/c/51.0/00D5Y000001MPM7"
    );
    assert!(m.partner_url.contains("/Soap/u/51.0/"));
    assert_eq!(m.notifications.len(), 1);
    let n = &m.notifications[0];
    assert_eq!(n.id.as_str(), "04l5Y00002lRDRNQA4");
    assert_eq!(n.order.id().unwrap().as_str(), "8015Y000001AbCdQAK");
    assert_eq!(n.order.get("OrderNumber"), Some("00000114"));
    assert!(n.order.is_activated());
}

#[test]
fn not_activated_order_is_parsed_but_not_activated() {
    let m = parse(fixture!("valid/not_activated_one.xml")).unwrap();
    assert_eq!(m.notifications[0].order.status(), Some("Draft"));
    assert!(!m.notifications[0].order.is_activated());
}

#[test]
fn several_notifications_keep_their_order() {
    let m = parse(fixture!("valid/several.xml")).unwrap();
    let ids: Vec<_> = m
        .notifications
        .iter()
        .map(|n| n.order.id().unwrap().to_string())
        .collect();
    assert_eq!(
        ids,
        [
            "8015Y000001AbCdQAK",
            "8015Y000001MuLtQAK",
            "8015Y000001DrAfQAK"
        ]
    );
    let activated = m
        .notifications
        .iter()
        .filter(|n| n.order.is_activated())
        .count();
    assert_eq!(activated, 2);
}

#[test]
fn a_hundred_notifications_is_the_maximum_accepted() {
    let m = parse(fixture!("valid/hundred.xml")).unwrap();
    assert_eq!(m.notifications.len(), 100);
    assert_eq!(
        m.notifications[99].order.id().unwrap().as_str(),
        "8015Y00000B0099QAB"
    );
    assert_eq!(
        parse(fixture!("invalid/too_many_notifications.xml")),
        Err(SoapError::TooManyNotifications(100))
    );
}

#[test]
fn session_id_is_kept_when_sent() {
    let m = parse(fixture!("valid/session_id.xml")).unwrap();
    assert_eq!(
        m.session_id.as_deref(),
        Some("00D5Y000001MPM7!AQ8AQFakeSessionTokenValue")
    );
}

#[test]
fn extra_selected_fields_are_kept_by_name_with_entities_resolved() {
    let m = parse(fixture!("valid/extra_fields.xml")).unwrap();
    let o = &m.notifications[0].order;
    assert_eq!(o.get("TotalAmount"), Some("1100.0"));
    assert_eq!(o.get("EffectiveDate"), Some("2014-07-10T00:05:38.000Z"));
    assert_eq!(o.get("Description"), None);
    assert!(o
        .fields
        .iter()
        .any(|(n, v)| *n == "Description" && v.is_none()));
    assert_eq!(o.get("Name"), Some("Acme & Sons \u{263A}"));
}

#[test]
fn prefixes_are_irrelevant_only_namespaces_count() {
    let m = parse(fixture!("valid/other_prefixes.xml")).unwrap();
    assert_eq!(m.organization_id.as_str(), "00D5Y000001MPM7");
    assert_eq!(m.session_id, None);
    let o = &m.notifications[0].order;
    assert_eq!(o.id().unwrap().as_str(), "8015Y000001AbCd");
    assert!(o.is_activated());
}

#[test]
fn a_prefix_rebound_to_another_namespace_is_not_trusted() {
    // `sf` means the sObject namespace on the outer element but is re-bound on sObject itself.
    let body = String::from_utf8(fixture!("valid/activated_one.xml").to_vec())
        .unwrap()
        .replace(
            r#"xsi:type="sf:Order" xmlns:sf="urn:sobject.enterprise.soap.sforce.com""#,
            r#"xsi:type="sf:Order" xmlns:sf="urn:partner.soap.sforce.com""#,
        );
    assert_eq!(parse(body.as_bytes()).unwrap_err().code(), "not_an_order");
}

fn activated_one_with(from: &str, to: &str) -> String {
    let body = String::from_utf8(fixture!("valid/activated_one.xml").to_vec()).unwrap();
    assert!(body.contains(from), "fixture lacks {from:?}");
    body.replace(from, to)
}

#[test]
fn xsi_type_given_twice_through_two_prefixes_is_refused() {
    let body = activated_one_with(
        r#"xsi:type="sf:Order""#,
        r#"xsi:type="sf:Order" xmlns:x2="http://www.w3.org/2001/XMLSchema-instance" x2:type="sf:Order""#,
    );
    let err = parse(body.as_bytes()).unwrap_err();
    assert_eq!(err.code(), "duplicate_element");
    assert!(err.to_string().contains("xsi:type"), "{}", err.to_string());
}

#[test]
fn xsi_type_is_found_under_any_prefix_even_one_starting_with_xmlns() {
    // `xmlnsx:type` is an ordinary prefixed attribute, not a namespace declaration.
    let body = activated_one_with(
        r#"xsi:type="sf:Order""#,
        r#"xmlns:xmlnsx="http://www.w3.org/2001/XMLSchema-instance" xmlnsx:type="sf:Order""#,
    );
    assert!(parse(body.as_bytes()).unwrap().notifications[0]
        .order
        .is_activated());
}

#[test]
fn a_value_in_pieces_is_assembled_and_its_line_ends_normalised() {
    let body = activated_one_with(
        "<sf:OrderNumber>00000114</sf:OrderNumber>",
        "<sf:OrderNumber>000<!-- split -->00<![CDATA[1]]>14\r\nx</sf:OrderNumber>",
    );
    let m = parse(body.as_bytes()).unwrap();
    assert_eq!(
        m.notifications[0].order.get("OrderNumber"),
        Some("00000114\nx")
    );
}

#[test]
fn characters_xml_forbids_are_malformed_even_inside_a_value() {
    for bad in ["\u{1}", "\u{FFFE}", "]]>"] {
        let body = activated_one_with("00000114", &format!("0000{bad}0114"));
        assert_eq!(code(body.as_bytes()), "malformed_xml", "{bad:?}");
    }
}

fn code(body: &[u8]) -> &'static str {
    match parse(body) {
        Ok(_) => "parsed",
        Err(e) => e.code(),
    }
}

#[test]
fn each_invalid_class_has_its_own_named_error() {
    let cases: &[(&[u8], &str)] = &[
        (fixture!("invalid/malformed_truncated.xml"), "malformed_xml"),
        (
            fixture!("invalid/malformed_mismatched_tag.xml"),
            "malformed_xml",
        ),
        (fixture!("invalid/doctype.xml"), "doctype"),
        (fixture!("invalid/undefined_entity.xml"), "entity_reference"),
        (
            fixture!("invalid/wrong_envelope_ns.xml"),
            "wrong_envelope_namespace",
        ),
        (
            fixture!("invalid/wrong_notifications_ns.xml"),
            "wrong_notifications_namespace",
        ),
        (fixture!("invalid/missing_body.xml"), "missing_element"),
        (
            fixture!("invalid/missing_organization_id.xml"),
            "missing_element",
        ),
        (
            fixture!("invalid/too_many_notifications.xml"),
            "too_many_notifications",
        ),
        (fixture!("invalid/not_an_order.xml"), "not_an_order"),
        (fixture!("invalid/type_other_namespace.xml"), "not_an_order"),
        (fixture!("invalid/missing_type.xml"), "missing_type"),
        (fixture!("invalid/invalid_org_id.xml"), "invalid_id"),
        (
            fixture!("invalid/invalid_order_id_injection.xml"),
            "invalid_id",
        ),
        (fixture!("invalid/not_an_order_id.xml"), "not_an_order_id"),
        (
            fixture!("invalid/duplicate_notification_id.xml"),
            "duplicate_notification_id",
        ),
        (
            fixture!("invalid/duplicate_organization_id.xml"),
            "duplicate_element",
        ),
        (
            fixture!("invalid/unexpected_element.xml"),
            "unexpected_element",
        ),
        (fixture!("invalid/too_deep.xml"), "too_deep"),
        (fixture!("invalid/no_notifications.xml"), "no_notifications"),
        (fixture!("invalid/trailing_content.xml"), "trailing_content"),
        (fixture!("invalid/wrong_root.xml"), "wrong_root"),
        (fixture!("invalid/empty.xml"), "empty_body"),
        (fixture!("invalid/invalid_utf8.xml"), "invalid_utf8"),
        (
            fixture!("invalid/utf16_declared.xml"),
            "unsupported_encoding",
        ),
    ];
    for (body, want) in cases {
        assert_eq!(code(body), *want, "fixture expected {want}");
    }
}

#[test]
fn fault_strings_say_what_was_wrong() {
    let e = parse(fixture!("invalid/doctype.xml")).unwrap_err();
    assert_eq!(e.to_string(), "DOCTYPE declarations are not allowed");
    let e = parse(fixture!("invalid/not_an_order.xml")).unwrap_err();
    assert!(e.to_string().contains("Opportunity"), "{}", e.to_string());
    let e = parse(fixture!("invalid/wrong_envelope_ns.xml")).unwrap_err();
    assert!(
        e.to_string()
            .contains("http://www.w3.org/2003/05/soap-envelope"),
        "{}",
        e.to_string()
    );
}

#[test]
fn ack_and_fault_render_as_soap_1_1() {
    let ack = soap::ack();
    assert!(ack.contains(
        r#"<notificationsResponse xmlns="http://soap.sforce.com/2005/09/outbound"><Ack>true</Ack>"#
    ));
    let f = soap::fault(soap::FaultCode::Client, "bad <thing> & \"more\"");
    assert!(f.contains("<faultcode>soapenv:Client</faultcode>"));
    assert!(f.contains("<faultstring>bad &lt;thing&gt; &amp; &quot;more&quot;</faultstring>"));
    // Characters XML 1.0 does not allow never reach a fault.
    let f = soap::fault(soap::FaultCode::Client, "x\u{ffff}y\u{fffe}\u{1}");
    assert!(f.contains("x\u{fffd}y\u{fffd}\u{fffd}"));
    // The fault is itself well-formed XML that our strict parser reads as a non-message.
    assert_eq!(
        parse(f.as_bytes()).unwrap_err().code(),
        "unexpected_element"
    );
}

#[test]
fn huge_text_values_are_refused() {
    let big = "9".repeat(40 * 1024);
    let body = String::from_utf8(fixture!("valid/activated_one.xml").to_vec())
        .unwrap()
        .replace("00000114", &big);
    assert_eq!(code(body.as_bytes()), "value_too_long");
}

/// Inputs the fuzzers found (testdata/fuzz-found), kept as regressions.
#[test]
fn fuzz_findings_stay_fixed() {
    // Two spellings of one notification id (case differs, same 18-character record).
    let dup = include_bytes!(
        "../../../testdata/fuzz-found/soap_parse-duplicate-notification-other-case.bin"
    );
    assert_eq!(parse(dup).unwrap_err().code(), "duplicate_notification_id");
    // A non-character in an element name: the fault must stay well-formed XML 1.0.
    let nonchar = include_bytes!("../../../testdata/fuzz-found/soap_parse-fault-noncharacter.bin");
    let e = parse(nonchar).unwrap_err();
    let f = soap::fault(soap::FaultCode::Client, &e.to_string());
    assert!(!f.contains('\u{ffff}') && !f.contains('\u{fffe}'), "{f}");
}

#[test]
fn an_element_without_a_local_name_is_malformed() {
    let body = String::from_utf8(fixture!("valid/activated_one.xml").to_vec())
        .unwrap()
        .replace(
            "<sf:Status>Activated</sf:Status>",
            "<sf:Status>Activated</sf:Status><sf:/>",
        );
    let e = parse(body.as_bytes()).unwrap_err();
    assert_eq!(e.code(), "malformed_xml", "{e:?}");
    assert!(e.to_string().contains("has no local name"), "{e:?}");
    // The input the fuzzer found.
    let found = include_bytes!("../../../testdata/fuzz-found/soap_parse-empty-local-name.bin");
    assert!(parse(found).is_err());
}
