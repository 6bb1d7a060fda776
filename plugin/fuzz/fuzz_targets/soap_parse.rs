//! `keygate_core::soap::parse` on arbitrary bytes (the webhook body as Salesforce — or anyone — sends it).
//!
//! Round trip: an accepted message, written out again plainly (`keygate_fuzz::render_soap`),
//! parses to the same message.
//!
//! Differential: the same answer as an independent reference parser (quick-xml's NsReader)
//! (`keygate_fuzz::reference_soap`). On Ok: 1..=100 notifications, valid and unique ids, Order ids start with 801, fields within the
//! limits. On Err: the reason is short and printable, and its fault renders to well-formed XML in
//! which the reason reads back unchanged (no raw '<' from the input). Also: `SfId::parse`/`to_18`
//! on slices of the input, and `soap::fault` escaping of the raw input itself.
#![no_main]

use std::collections::HashSet;

use keygate_core::soap::{self, FaultCode, Limits, OutboundMessage, SoapError};
use keygate_fuzz::{
    allowed, assert_reason, check_fault, check_id, fuzz_id, reference_soap, render_soap,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let limits = Limits::default();
    let ours = soap::parse(data, &limits);
    match &ours {
        Ok(msg) => {
            check_message(data, msg, &limits);
            round_trip(msg, &limits);
        }
        Err(e) => {
            assert!(!e.code().is_empty());
            let reason = e.to_string();
            assert_reason("SoapError reason", &reason);
            check_fault(FaultCode::Client, &reason);
        }
    }
    differential(&ours, data, &limits);

    // Escaping of untrusted text as such: the first 4 KiB of the input, lossily decoded.
    let head = String::from_utf8_lossy(&data[..data.len().min(4096)]);
    check_fault(FaultCode::Server, &head);

    // SfId::parse / to_18 on the first 15 and 18 bytes and on the whole input when it is short.
    for n in [15, 18] {
        if let Some(s) = data.get(..n).and_then(|b| std::str::from_utf8(b).ok()) {
            fuzz_id(s);
        }
    }
    if data.len() <= 32 {
        if let Ok(s) = std::str::from_utf8(data) {
            fuzz_id(s);
        }
    }
});

/// Against the reference parser (quick-xml's NsReader, its own namespace handling): whatever we accept, it
/// accepts with the same content; whatever it accepts, we accept too, unless we refuse it as not
/// well-formed (our reader also refuses control characters, `]]>` in text, names that are not XML
/// names, `xmlns:p=""`, and an attribute that is `xsi:nil`/`xsi:type` twice through two prefixes).
fn differential(ours: &Result<OutboundMessage<'_>, SoapError>, data: &[u8], limits: &Limits) {
    if allowed("differential") {
        return;
    }
    let theirs = reference_soap::parse(data, limits);
    match (ours, &theirs) {
        (Ok(a), Ok(b)) => assert!(
            reference_soap::same_message(a, b),
            "the parsers read different messages:\nours: {a:?}\nreference: {b:?}"
        ),
        (Ok(_), Err(e)) => panic!(
            "accepted a message the reference parser refuses ({}): {}",
            e.code(),
            e.to_string()
        ),
        (Err(e), Ok(_)) => {
            let stricter = e.code() == "malformed_xml"
                || matches!(e, SoapError::DuplicateElement(what) if what.starts_with("attribute xsi:"));
            assert!(
                stricter,
                "refused ({}) a message the reference parser accepts: {}",
                e.code(),
                e.to_string()
            );
        }
        (Err(_), Err(_)) => {}
    }
}

/// Whatever was accepted parses again, from a plain rendering of it, to the same message.
fn round_trip(msg: &OutboundMessage<'_>, limits: &Limits) {
    let again = render_soap::render(msg);
    match soap::parse(again.as_bytes(), limits) {
        Ok(back) => assert!(
            back == *msg,
            "re-parsed differently:\nfirst:  {msg:?}\nsecond: {back:?}\nfrom: {again}"
        ),
        Err(e) => panic!(
            "an accepted message, rendered again, was refused ({}): {}\nrendering: {again}",
            e.code(),
            e.to_string()
        ),
    }
}

fn check_message(data: &[u8], msg: &OutboundMessage<'_>, limits: &Limits) {
    assert!(
        std::str::from_utf8(data).is_ok(),
        "accepted a body that is not UTF-8"
    );
    let n = msg.notifications.len();
    assert!(
        (1..=limits.max_notifications).contains(&n),
        "{n} notifications accepted"
    );
    // The same record in another spelling (an 18-character id in other case) is a duplicate too.
    if !allowed("id-canonical") {
        for (i, note) in msg.notifications.iter().enumerate() {
            if let Some(other) = msg.notifications[..i]
                .iter()
                .find(|o| o.id.same_record(&note.id))
            {
                panic!(
                    "notification ids {} and {} name the same record and were both accepted",
                    other.id, note.id
                );
            }
        }
    }
    check_id("OrganizationId", &msg.organization_id);
    check_id("ActionId", &msg.action_id);
    if let Some(s) = &msg.session_id {
        assert!(!s.is_empty(), "empty SessionId kept as Some");
    }
    let mut seen = HashSet::new();
    for note in &msg.notifications {
        check_id("Notification Id", &note.id);
        assert!(
            seen.insert(note.id.to_18()),
            "duplicate notification id {} accepted",
            note.id
        );

        let fields = &note.order.fields;
        assert!(
            fields.len() <= limits.max_fields,
            "{} fields accepted",
            fields.len()
        );
        let mut names = HashSet::new();
        for (name, value) in fields {
            assert!(!name.is_empty(), "empty field name");
            assert!(names.insert(*name), "duplicate field {name} accepted");
            if let Some(v) = value {
                assert!(
                    v.len() <= limits.max_value_len,
                    "value of {name} is {} bytes",
                    v.len()
                );
                assert_eq!(v.trim(), v, "value of {name} not trimmed");
            }
        }
        if let Some(raw) = note.order.get("Id") {
            let id = note
                .order
                .id()
                .unwrap_or_else(|| panic!("sObject Id {raw:?} accepted but does not parse"));
            check_id("sObject Id", &id);
            assert!(
                raw.starts_with("801"),
                "sObject Id {raw:?} accepted but is not an Order id"
            );
        }
        let _ = note.order.is_activated();
    }
}
