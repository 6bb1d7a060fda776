//! Salesforce replies: `parse_token`, `parse_query`, `parse_writeback` and `classify_error`.
//!
//! Input: byte 0 picks the parser (bits 0-1: 0 token, 1 query, 2 write-back, 3 classify_error;
//! bit 2: contact field CustomerAuthorizedBy instead of BillToContact; bit 3: the query reads
//! the write-back, state and renewal fields and reduction orders (`lifecycle`); bits 4-7: the number of records a write-back sent), bytes 1-2 are the HTTP status (big-endian u16), the rest is the body.
//! scripts/fuzz prefixes the testdata/salesforce/*.json seeds this way.
//!
//! Properties: Ok only for 2xx; a token is printable ASCII and its authority cannot smuggle a
//! header (and survives the shared-data round trip); every id is a valid SfId; nextRecordsUrl is
//! a checked data path; every error's text is printable and short; non-2xx answers of the query
//! and write-back parsers are exactly `classify_error`'s.
#![no_main]

use keygate_core::config::ContactField;
use keygate_core::salesforce::{
    checked_next_url, classify_error, parse_query, parse_token, parse_writeback, Fields,
    SalesforceError, Token,
};
use keygate_core::secret::Secret;
use keygate_fuzz::{assert_no_control, assert_reason, check_id};
use libfuzzer_sys::fuzz_target;

const WRITEBACK_FIELD: &str = "License_Keys__c";
const STATE_FIELD: &str = "License_State__c";
const RENEWAL_FIELD: &str = "Renews__c";

fuzz_target!(|data: &[u8]| {
    let [sel, s0, s1, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    let ok_status = (200..300).contains(&status);
    let contact = if sel & 4 == 0 {
        ContactField::BillToContact
    } else {
        ContactField::CustomerAuthorizedBy
    };
    let lifecycle = sel & 8 != 0;
    let writeback = lifecycle.then_some(WRITEBACK_FIELD);
    let fields = Fields {
        contact,
        writeback,
        state: lifecycle.then_some(STATE_FIELD),
        renewal: lifecycle.then_some(RENEWAL_FIELD),
        reductions: lifecycle,
    };
    let sent = usize::from(sel >> 4);
    match sel & 3 {
        0 => match parse_token(status, body) {
            Ok(token) => {
                assert!(ok_status, "token accepted with status {status}");
                check_token(&token);
            }
            Err(e) => check_error(status, &e, Source::Token),
        },
        1 => match parse_query(status, body, &fields) {
            Ok(page) => {
                assert!(ok_status, "query page accepted with status {status}");
                if let Some(url) = &page.next_records_url {
                    assert_eq!(checked_next_url(url), Some(url.as_str()));
                    assert!(url.starts_with("/services/data/") && url.len() < 512);
                }
                for order in &page.orders {
                    check_id("order id", &order.id);
                    if let Some(c) = &order.customer {
                        assert_eq!(c.full_name.trim(), c.full_name);
                    }
                    for item in &order.items {
                        check_id("order item id", &item.id);
                        assert!(item.quantity.is_finite(), "quantity {}", item.quantity);
                        if let Some(w) = &item.written_back {
                            assert!(writeback.is_some(), "written_back without a field");
                            assert!(!w.is_empty() && w.trim() == w, "written_back {w:?}");
                        }
                        if let Some(st) = &item.state {
                            assert!(lifecycle, "state without a field");
                            assert!(!st.is_empty() && st.trim() == st, "state {st:?}");
                        }
                        if let Some(r) = &item.renews {
                            assert!(lifecycle, "renews without a field");
                            check_id("renewed line id", r);
                        }
                        if let Some(o) = &item.original {
                            assert!(lifecycle, "original line without reductions");
                            check_id("original line id", &o.id);
                            assert!(o.quantity.is_finite(), "original quantity {}", o.quantity);
                        }
                    }
                }
            }
            Err(e) => {
                check_error(status, &e, Source::Rest);
                if !ok_status {
                    assert_eq!(e, classify_error(status, body));
                }
            }
        },
        2 => match parse_writeback(status, body, sent) {
            Ok(failed) => {
                assert!(ok_status, "write-back reply accepted with status {status}");
                let mut last = None;
                for f in &failed {
                    assert!(f.index < sent, "failure {} of {sent} records", f.index);
                    assert!(last < Some(f.index), "failures in request order");
                    last = Some(f.index);
                    assert_reason("failed code", &f.code);
                    assert!(f.code.chars().count() <= 65);
                    assert!(!f.code.is_empty());
                }
            }
            Err(e) => {
                check_error(status, &e, Source::Rest);
                if !ok_status {
                    assert_eq!(e, classify_error(status, body));
                }
            }
        },
        _ => {
            let e = classify_error(status, body);
            match &e {
                SalesforceError::SessionInvalid => assert_eq!(status, 401),
                SalesforceError::Status {
                    status: s,
                    error_code,
                } => {
                    assert_eq!(*s, status);
                    assert!(!(status == 401 && error_code == "INVALID_SESSION_ID"));
                    assert!(error_code.chars().count() <= 65);
                }
                other => panic!("classify_error returned {other:?}"),
            }
            check_error(status, &e, Source::Classify);
        }
    }
});

fn check_token(token: &Token) {
    let t = token.access_token.expose();
    assert!(
        !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()),
        "access token {t:?}"
    );
    let a = &token.instance_authority;
    assert!(
        !a.is_empty()
            && a
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']')),
        "instance authority {a:?}"
    );
    let shared = token.to_shared();
    let back = Token::from_shared(&shared).expect("token does not survive shared data");
    assert_eq!(back.access_token.expose(), t);
    assert_eq!(&back.instance_authority, a);
    // Debug must not depend on the token's value (so it cannot show it).
    let other = Token {
        access_token: Secret::new(format!("{t}-other")),
        instance_authority: a.clone(),
    };
    assert_eq!(
        format!("{token:?}"),
        format!("{other:?}"),
        "Debug shows the access token"
    );
}

#[derive(PartialEq)]
enum Source {
    Token,
    Rest,
    /// `classify_error` called directly: the flow calls it only for non-2xx, so any status goes.
    Classify,
}

/// Any error: printable, short Display; `Status` carries the real status and, from a parser,
/// only for non-2xx; `Unparseable` only on 2xx; `LoginRefused` only from the token parser and
/// never on 2xx.
fn check_error(status: u16, e: &SalesforceError, source: Source) {
    let ok_status = (200..300).contains(&status);
    let shown = e.to_string();
    assert_reason("SalesforceError", &shown);
    match e {
        SalesforceError::LoginRefused { error, description } => {
            assert!(
                source == Source::Token && !ok_status,
                "LoginRefused at {status}"
            );
            assert_no_control("error", error);
            assert_no_control("description", description);
        }
        SalesforceError::SessionInvalid => assert_eq!(status, 401),
        SalesforceError::Status { status: s, .. } => {
            assert_eq!(*s, status);
            assert!(
                source == Source::Classify || !ok_status,
                "Status error for {status}"
            );
        }
        SalesforceError::Unparseable(_) => {
            assert!(
                source != Source::Classify && ok_status,
                "Unparseable at {status}"
            )
        }
    }
}
