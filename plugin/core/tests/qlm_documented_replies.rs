//! Every license-server reply shape QLM documents (fixtures in `testdata/license/`, our own
//! values, the source page of each in `testdata/README.md`), read as keygate reads it: the
//! reply reader is bounded but not held to the inbound SOAP's rules.
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

use keygate_core::license::{
    is_unknown_key, looks_like_key, parse_change, parse_keys, parse_ping, parse_validate,
    LicenseError, Refusal,
};
use keygate_core::xml::{Reader, Token, XmlError};

macro_rules! fixture {
    ($p:literal) => {
        include_bytes!(concat!("../../../testdata/license/", $p)).as_slice()
    };
}

#[test]
fn pinghttp_with_its_obsolete_attribute_and_comment() {
    // `<serverDate date = "…" />` (spaces around `=`) and a comment after it: as documented.
    assert_eq!(
        parse_ping(200, fixture!("ping.xml")).unwrap(),
        "18.0.25001.1"
    );
    assert!(matches!(
        parse_ping(200, fixture!("strict_auth_refused.txt")),
        Err(LicenseError::Refused(_))
    ));
    assert!(matches!(
        parse_ping(
            200,
            b"<QuickLicenseManager><result>maintenance</result></QuickLicenseManager>"
        ),
        Err(LicenseError::Unparseable(_))
    ));
    assert_eq!(
        parse_ping(503, b"no healthy upstream"),
        Err(LicenseError::Status(503))
    );
}

#[test]
fn validatelicensehttp_gives_expirydate_never_the_maintenance_or_a_property_date() {
    let v = parse_validate(200, fixture!("validate.xml")).unwrap();
    // Not maintenanceRenewalDate (2027-02-28, first in the reply), not a <Property expiryDate>.
    assert_eq!(v.expiry.as_deref(), Some("2027-03-31 23:59"));
    assert_eq!(
        v.key.as_deref(),
        Some("Q7K2M-X4P9R-T3W8N-B6J5H-C2V7L-D9F4GZ")
    );
    let revoked = parse_validate(200, fixture!("validate_revoked.xml")).unwrap();
    assert_eq!(revoked.expiry.as_deref(), Some("2027-03-31 23:59"));
    // An empty expiry is "does not expire".
    let never = parse_validate(
        200,
        b"<QuickLicenseManager>\n<maintenanceRenewalDate>2027-01-01 00:00:00</maintenanceRenewalDate>\n<expiryDate/>\n</QuickLicenseManager>",
    )
    .unwrap();
    assert_eq!(never.expiry, None);
    // The documented unknown-key refusal is a refusal that says so, not "no expiry".
    match parse_validate(200, fixture!("error_fragment.xml")) {
        Err(LicenseError::Refused(m)) => assert!(is_unknown_key(&m), "{m}"),
        other => panic!("{other:?}"),
    }
}

#[test]
fn keys_in_every_documented_wrapper() {
    assert_eq!(
        parse_keys(200, fixture!("key_asmx_string.xml")).unwrap(),
        ["Q7K2M-X4P9R-T3W8N-B6J5H-C2V7L-D9F4GZ"]
    );
    assert_eq!(
        parse_keys(200, fixture!("retrieve_found.xml")).unwrap(),
        [
            "Q7K2M-X4P9R-T3W8N-B6J5H-C2V7L-D9F4GZ",
            "H3N8D-2W6QK-Y5T1R-M9C4V-P7B2X-J8L5FS"
        ]
    );
    assert!(parse_keys(200, fixture!("retrieve_empty.xml"))
        .unwrap()
        .is_empty());
    // ValidateLicenseHttp's documented key has no dashes: 39 upper-case letters and digits.
    assert!(looks_like_key("FNR9020700G7HJKM8P9Q211JSEUB6ZKJAPHBQEP"));
    assert_eq!(
        parse_keys(
            200,
            b"<QuickLicenseManager><licenses><license><activationKey>FNR9020700G7HJKM8P9Q211JSEUB6ZKJAPHBQEP</activationKey></license></licenses></QuickLicenseManager>"
        )
        .unwrap(),
        ["FNR9020700G7HJKM8P9Q211JSEUB6ZKJAPHBQEP"]
    );
    // Still no word is a key, dashed or not.
    for word in [
        "UNAUTHORIZED",
        "OK",
        "1234567890123456",
        "ABCDEFGHIJKLMNOPQRST",
        "Fnr9020700g7hjkm8p9q",
    ] {
        assert!(!looks_like_key(word), "{word}");
    }
    // Keys read from a ValidateLicenseHttp reply as a whole: the key element, nothing nested.
    assert_eq!(
        parse_keys(200, fixture!("validate.xml")).unwrap(),
        ["Q7K2M-X4P9R-T3W8N-B6J5H-C2V7L-D9F4GZ"]
    );
}

#[test]
fn refusals_are_told_apart_by_what_they_say() {
    let refusal = |body: &[u8]| match parse_keys(200, body) {
        Err(LicenseError::Refused(m)) => Refusal::of(&m),
        other => panic!("{other:?}"),
    };
    assert_eq!(
        refusal(fixture!("strict_auth_refused.txt")),
        Refusal::StrictAuthentication
    );
    assert_eq!(
        refusal(fixture!("method_disabled.txt")),
        Refusal::MethodDisabled
    );
    assert_eq!(
        refusal(fixture!("ip_not_allowed.txt")),
        Refusal::AddressNotAllowed
    );
    assert_eq!(refusal(fixture!("error_plain.txt")), Refusal::Credentials);
    assert_eq!(refusal(fixture!("error_fragment.xml")), Refusal::UnknownKey);
    assert_eq!(refusal(b"Error: something else entirely"), Refusal::Other);
    // A lifecycle call refused is not a success, whatever the wrapper.
    assert!(parse_change(200, fixture!("error_fragment.xml")).is_err());
    assert!(parse_change(200, fixture!("method_disabled.txt")).is_err());
    assert!(parse_change(
        200,
        b"<?xml version=\"1.0\"?><QuickLicenseManager><result>License revoked.</result></QuickLicenseManager>"
    )
    .is_ok());
}

#[test]
fn replies_stay_bounded_though_not_held_to_the_soap_rules() {
    // Inbound (the Outbound Message): a declaration inside content is refused.
    let nested = "<a><b><?xml version=\"1.0\"?><c/></b></a>";
    let mut strict = Reader::new(nested, 16);
    let mut refused = false;
    loop {
        match strict.next_token() {
            Ok(Token::Eof) => break,
            Ok(_) => {}
            Err(XmlError::Syntax { what, .. }) => {
                assert!(what.contains("XML declaration not at the start"), "{what}");
                refused = true;
                break;
            }
            Err(e) => panic!("{e}"),
        }
    }
    assert!(refused);
    // A reply: read past it, as a processing instruction.
    let mut reply = Reader::for_reply(nested, 16);
    let mut pis = 0;
    loop {
        match reply.next_token().unwrap() {
            Token::Eof => break,
            Token::ProcessingInstruction => pis += 1,
            _ => {}
        }
    }
    assert_eq!(pis, 1);
    // But a reply still has no DTD, no entity beyond the five, and a bounded depth.
    let deep = format!(
        "<QuickLicenseManager>{}{}</QuickLicenseManager>",
        "<a>".repeat(20),
        "</a>".repeat(20)
    );
    assert_eq!(
        parse_keys(200, deep.as_bytes()),
        Err(LicenseError::Unparseable("reply nested too deep".into()))
    );
    assert!(matches!(
        parse_validate(200, b"<!DOCTYPE q [<!ENTITY x \"y\">]><QuickLicenseManager><expiryDate>&x;</expiryDate></QuickLicenseManager>"),
        Err(LicenseError::Unparseable(_))
    ));
    assert!(matches!(
        parse_validate(200, b"<QuickLicenseManager><expiryDate>&x;</expiryDate></QuickLicenseManager>"),
        Err(LicenseError::Unparseable(m)) if m.contains("undefined entity")
    ));
    // Truncated: never believed in part.
    let whole = fixture!("validate.xml");
    assert!(parse_validate(200, &whole[..whole.len() / 2]).is_err());
}
