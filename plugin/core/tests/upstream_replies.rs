//! Parsing what Salesforce and the license server answer, including their error shapes.
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

use keygate_core::config::ContactField;
use keygate_core::ids::SfId;
use keygate_core::license::{parse_keys, LicenseError};
use keygate_core::salesforce::{
    self, Fields, RecordFailure, SalesforceError, WriteBack, WriteBackFields,
};

#[test]
fn token_success_and_refusals() {
    let ok = br#"{"id":"https://login.salesforce.com/id/00Dx0000000BV7z/005x00000012Q9P","issued_at":"1278448832702","instance_url":"https://na1.salesforce.com","signature":"0Cm=","access_token":"00Dx0000000BV7z!AR8AQ","token_type":"Bearer","scope":"api"}"#;
    let t = salesforce::parse_token(200, ok).unwrap();
    assert_eq!(t.instance_authority, "na1.salesforce.com");
    assert_eq!(t.access_token.expose(), "00Dx0000000BV7z!AR8AQ");
    let shared = t.to_shared();
    assert_eq!(
        salesforce::Token::from_shared(&shared)
            .unwrap()
            .instance_authority,
        "na1.salesforce.com"
    );

    let refused = br#"{"error":"invalid_grant","error_description":"authentication failure"}"#;
    assert_eq!(
        salesforce::parse_token(400, refused).unwrap_err(),
        SalesforceError::LoginRefused {
            error: "invalid_grant".into(),
            description: "authentication failure".into()
        }
    );
    assert!(matches!(
        salesforce::parse_token(200, b"{}"),
        Err(SalesforceError::Unparseable(_))
    ));
    assert!(matches!(
        salesforce::parse_token(503, b"<html>"),
        Err(SalesforceError::Status { status: 503, .. })
    ));
    let smuggle = br#"{"access_token":"a","instance_url":"https://evil.com\r\nx: y"}"#;
    assert!(salesforce::parse_token(200, smuggle).is_err());
}

#[test]
fn session_errors_are_matched_on_error_code_not_message() {
    let b = br#"[{"message":"This session is not valid for use with the REST API","errorCode":"INVALID_SESSION_ID"}]"#;
    assert_eq!(
        salesforce::classify_error(401, b),
        SalesforceError::SessionInvalid
    );
    let b = br#"[{"message":"Session expired or invalid","errorCode":"REQUEST_LIMIT_EXCEEDED"}]"#;
    assert_eq!(
        salesforce::classify_error(403, b),
        SalesforceError::Status {
            status: 403,
            error_code: "REQUEST_LIMIT_EXCEEDED".into()
        }
    );
}

#[test]
fn soql_quotes_validated_ids_and_selects_the_configured_contact() {
    let ids = [
        SfId::parse("8015Y000001AbCdQAK").unwrap(),
        SfId::parse("8015Y000001AbCe").unwrap(),
    ];
    let q = salesforce::build_soql(
        &ids,
        &Fields::basic(ContactField::CustomerAuthorizedBy, Some("License_Keys__c")),
    );
    assert!(
        q.ends_with("FROM Order WHERE Id IN ('8015Y000001AbCdQAK','8015Y000001AbCe')"),
        "{q}"
    );
    assert!(q.contains("CustomerAuthorizedBy.Email"));
    assert!(q.contains("Product2.ProductCode, Product2.Name, License_Keys__c FROM OrderItems"));
    let p = salesforce::query_path("v60.0", &q);
    assert!(p.starts_with("/services/data/v60.0/query?q=SELECT+Id%2C+OrderNumber"));
    assert!(!p.contains(' ') && !p.contains('\''));
    // Anything that is not letters and digits never becomes an id.
    assert!(SfId::parse("8015Y000001AbC'Q").is_none());
    assert!(SfId::parse("8015Y000001AbCdQ\r").is_none());
}

#[test]
fn ids_convert_between_15_and_18_characters() {
    let id = SfId::parse("00D5Y000001MPM7").unwrap();
    assert_eq!(id.to_18(), "00D5Y000001MPM7UAO");
    assert!(id.same_record(&SfId::parse("00D5Y000001MPM7UAO").unwrap()));
    assert!(!id.same_record(&SfId::parse("00D5y000001MPM7").unwrap()));
}

#[test]
fn query_pages_orders_lines_contacts_and_written_back_values() {
    let body = br#"{"totalSize":2,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gD0000002HU6KIAW-2000","records":[
      {"attributes":{"type":"Order"},"Id":"8015Y000001AbCdQAK","OrderNumber":"00000114","Status":"Activated",
       "Account":{"attributes":{"type":"Account"},"Name":"Acme"},
       "BillToContact":{"FirstName":"Jane","LastName":"Doe","Email":"jane@acme.com","Phone":null},
       "OrderItems":{"totalSize":2,"done":true,"records":[
         {"Id":"8025Y00000AbCdEQAV","Quantity":3.0,"Product2":{"ProductCode":"001","Name":"MyProduct"},"License_Keys__c":null},
         {"Id":"8025Y00000AbCdFQAV","Quantity":1.0,"Product2":null,"License_Keys__c":"K1\nK2"}]}},
      {"Id":"8015Y000001AbCeQAK","OrderNumber":"00000115","Status":"Activated","BillToContact":null,"OrderItems":null}]}"#;
    let page = salesforce::parse_query(
        200,
        body,
        &Fields::basic(ContactField::BillToContact, Some("License_Keys__c")),
    )
    .unwrap();
    assert_eq!(
        page.next_records_url.as_deref(),
        Some("/services/data/v60.0/query/01gD0000002HU6KIAW-2000")
    );
    let o = &page.orders[0];
    let c = o.customer.as_ref().unwrap();
    assert_eq!(
        (c.full_name.as_str(), c.email.as_str(), c.company.as_str()),
        ("Jane Doe", "jane@acme.com", "Acme")
    );
    assert_eq!(o.items[0].quantity, 3.0);
    assert_eq!(o.items[0].product_code.as_deref(), Some("001"));
    assert_eq!(o.items[0].written_back, None);
    assert_eq!(o.items[1].product_code, None);
    assert_eq!(o.items[1].written_back.as_deref(), Some("K1\nK2"));
    assert!(page.orders[1].customer.is_none());
    assert!(page.orders[1].items.is_empty());

    let evil = br#"{"done":false,"nextRecordsUrl":"http://evil.example/x","records":[]}"#;
    assert!(
        salesforce::parse_query(200, evil, &Fields::basic(ContactField::BillToContact, None))
            .is_err()
    );
}

#[test]
fn query_reads_the_lifecycle_fields_and_refuses_a_configured_field_that_is_not_text() {
    let fields = Fields {
        contact: ContactField::BillToContact,
        writeback: Some("License_Keys__c"),
        state: Some("License_State__c"),
        renewal: Some("Renews__c"),
        reductions: true,
    };
    let body = br#"{"done":true,"records":[
      {"Id":"8015Y000001AbCdQAK","Status":"Activated","IsReductionOrder":true,"OrderItems":{"done":true,"records":[
        {"Id":"8025Y00000AbCdEQAV","Quantity":-1.0,"license_state__c":" Revoked ","Renews__c":"8025Y000001MuL1QAK",
         "Renews__r":{"Name":"x"},"Count__c":3,"OriginalOrderItemId":"8025Y000001MuL2QAK",
         "OriginalOrderItem":{"Quantity":3.0,"AvailableQuantity":2.0}}]}}]}"#;
    let page = salesforce::parse_query(200, body, &fields).unwrap();
    let o = &page.orders[0];
    assert!(o.is_reduction);
    let item = &o.items[0];
    // Field names are matched case-insensitively; values trimmed; other fields skipped unread.
    assert_eq!(item.state.as_deref(), Some("Revoked"));
    assert_eq!(
        item.renews.map(|r| r.to_string()).as_deref(),
        Some("8025Y000001MuL1QAK")
    );
    let original = item.original.as_ref().unwrap();
    assert_eq!(original.id.to_string(), "8025Y000001MuL2QAK");
    assert_eq!((original.quantity, original.available), (3.0, Some(2.0)));
    // Without `reductions` the reduced line is not read.
    let basic = Fields {
        reductions: false,
        ..fields
    };
    assert!(
        salesforce::parse_query(200, body, &basic).unwrap().orders[0].items[0]
            .original
            .is_none()
    );

    let not_text = br#"{"done":true,"records":[{"Id":"8015Y000001AbCdQAK","Status":"Activated","OrderItems":{"done":true,"records":[
        {"Id":"8025Y00000AbCdEQAV","Quantity":1.0,"License_State__c":{"x":1}}]}}]}"#;
    let e = salesforce::parse_query(200, not_text, &fields).unwrap_err();
    assert!(e.to_string().contains("is not a string"), "{e}");
}

#[test]
fn write_back_body_and_partial_failures() {
    let id = SfId::parse("8025Y00000AbCdEQAV").unwrap();
    let line = WriteBack {
        item: id,
        keys: vec!["A".into(), "B".into()],
        state: "Issued".into(),
    };
    let keys_only = WriteBackFields {
        keys: Some("License_Keys__c"),
        state: None,
    };
    let body = salesforce::writeback_body(keys_only, std::slice::from_ref(&line));
    let v: serde_json::Value = serde_json::from_str(&body).unwrap();
    assert_eq!(v["allOrNone"], false);
    assert_eq!(v["records"][0]["attributes"]["type"], "OrderItem");
    assert_eq!(v["records"][0]["License_Keys__c"], "A\nB");
    assert_eq!(v["records"][0].as_object().unwrap().len(), 3, "{body}");
    // With a state field: both fields in the one record; the state alone without a keys field.
    let both = WriteBackFields {
        keys: Some("License_Keys__c"),
        state: Some("License_State__c"),
    };
    let v: serde_json::Value = serde_json::from_str(&salesforce::writeback_body(
        both,
        std::slice::from_ref(&line),
    ))
    .unwrap();
    assert_eq!(v["records"][0]["License_State__c"], "Issued");
    assert_eq!(v["records"][0]["License_Keys__c"], "A\nB");
    let state_only = WriteBackFields {
        keys: None,
        state: Some("License_State__c"),
    };
    let v: serde_json::Value =
        serde_json::from_str(&salesforce::writeback_body(state_only, &[line])).unwrap();
    assert_eq!(v["records"][0]["License_State__c"], "Issued");
    assert!(v["records"][0].get("License_Keys__c").is_none());
    // Salesforce leaves `id` out of a failed record's result: results match by position.
    let reply = br#"[{"id":"8025Y00000AbCdEQAV","success":true,"errors":[]},{"success":false,"errors":[{"statusCode":"FIELD_CUSTOM_VALIDATION_EXCEPTION","message":"x"}]}]"#;
    let failed = salesforce::parse_writeback(200, reply, 2).unwrap();
    assert_eq!(
        failed,
        vec![RecordFailure {
            index: 1,
            code: "FIELD_CUSTOM_VALIDATION_EXCEPTION".to_owned()
        }]
    );
    // Results that cannot be matched to the records sent are a failure of the whole call.
    let err = salesforce::parse_writeback(200, reply, 3).unwrap_err();
    assert!(err.to_string().contains("2 results for 3 records"), "{err}");
}

#[test]
fn further_pages_of_order_products_and_field_names_in_any_case() {
    let first = br#"{"totalSize":1,"done":true,"records":[{"attributes":{"type":"Order"},"Id":"8015Y000001AbCdQAK","OrderNumber":"1","Status":"Activated","OrderItems":{"totalSize":3,"done":false,"nextRecordsUrl":"/services/data/v60.0/query/01gD0000002HU6KIAW-1","records":[{"Id":"8025Y00000AbCdEQAV","Quantity":1,"license_keys__C":"AAAAA-11111-C"}]}}]}"#;
    let page = salesforce::parse_query(
        200,
        first,
        &Fields::basic(ContactField::BillToContact, Some("License_Keys__c")),
    )
    .unwrap();
    let o = &page.orders[0];
    assert_eq!(
        o.items_next.as_deref(),
        Some("/services/data/v60.0/query/01gD0000002HU6KIAW-1")
    );
    assert_eq!(o.items[0].written_back.as_deref(), Some("AAAAA-11111-C"));
    let more = br#"{"totalSize":3,"done":true,"records":[{"Id":"8025Y00000AbCdFQAV","Quantity":2},{"Id":"8025Y00000AbCdGQAV","Quantity":3}]}"#;
    let next = salesforce::parse_items_page(
        200,
        more,
        &Fields::basic(ContactField::BillToContact, Some("License_Keys__c")),
    )
    .unwrap();
    assert_eq!(next.items.len(), 2);
    assert_eq!(next.items[1].quantity, 3.0);
    assert_eq!(next.next_records_url, None);
    let evil = br#"{"done":false,"nextRecordsUrl":"//evil.example/x","records":[]}"#;
    assert!(salesforce::parse_items_page(
        200,
        evil,
        &Fields::basic(ContactField::BillToContact, None)
    )
    .is_err());
    assert_eq!(
        salesforce::parse_items_page(
            401,
            b"[{\"errorCode\":\"INVALID_SESSION_ID\"}]",
            &Fields::basic(ContactField::BillToContact, None)
        ),
        Err(SalesforceError::SessionInvalid)
    );
}

#[test]
fn license_keys_from_xml_plain_text_and_asmx_string() {
    let xml = b"<?xml version=\"1.0\"?><QuickLicenseManager><licenses><license><activationKey>FGGH0-S0K00-71B18-S868R-1F1J2-UQKPUN</activationKey></license><license><activationKey>K2-0001-X</activationKey></license></licenses></QuickLicenseManager>";
    assert_eq!(
        parse_keys(200, xml).unwrap(),
        ["FGGH0-S0K00-71B18-S868R-1F1J2-UQKPUN", "K2-0001-X"]
    );
    assert_eq!(
        parse_keys(200, b"  AAAAA-BBBB1-CCCCC \r\n").unwrap(),
        ["AAAAA-BBBB1-CCCCC"]
    );
    // One key per seat: one per line.
    assert_eq!(
        parse_keys(200, b"AAAAA-11111-C\nBBBBB-22222-D\n").unwrap(),
        ["AAAAA-11111-C", "BBBBB-22222-D"]
    );
    assert_eq!(
        parse_keys(
            200,
            b"<string xmlns=\"http://tempuri.org/\">KEY-1-A</string>"
        )
        .unwrap(),
        ["KEY-1-A"]
    );
    assert_eq!(
        parse_keys(
            200,
            b"<QuickLicenseManager><licenses/></QuickLicenseManager>"
        )
        .unwrap(),
        Vec::<String>::new()
    );
}

#[test]
fn license_errors_are_failures_never_keys() {
    assert!(matches!(
        parse_keys(200, b"Error: invalid user or password"),
        Err(LicenseError::Refused(_))
    ));
    assert!(matches!(
        parse_keys(
            200,
            b"<QuickLicenseManager><error>Product not found</error></QuickLicenseManager>"
        ),
        Err(LicenseError::Refused(_))
    ));
    assert_eq!(parse_keys(500, b"AAAA"), Err(LicenseError::Status(500)));
    assert!(matches!(
        parse_keys(200, b""),
        Err(LicenseError::Unparseable(_))
    ));
    assert!(matches!(
        parse_keys(200, b"two words"),
        Err(LicenseError::Unparseable(_))
    ));
    // One word is not a key, however plausible the status: it must never be written back.
    for word in [&b"Unauthorized"[..], b"OK", b"true", b"12345", b"Bad-Request", b"<string xmlns=\"http://tempuri.org/\">Unauthorized</string>", b"<QuickLicenseManager><licenses><license><activationKey>Unauthorized</activationKey></license></licenses></QuickLicenseManager>"] {
        assert!(
            matches!(parse_keys(200, word), Err(LicenseError::Unparseable(_))),
            "{}",
            String::from_utf8_lossy(word)
        );
    }
    // An error inside `<QuickLicenseManager>` is not "nothing issued".
    for reply in [
        &b"<QuickLicenseManager>Error: strict authentication required</QuickLicenseManager>"[..],
        b"<QuickLicenseManager><licenses/><errorMessage>RetrieveActivationKeyHttp is disabled</errorMessage></QuickLicenseManager>",
        b"<QuickLicenseManager><Error>invalid user</Error></QuickLicenseManager>",
    ] {
        assert!(
            matches!(parse_keys(200, reply), Err(LicenseError::Refused(_))),
            "{}",
            String::from_utf8_lossy(reply)
        );
    }
    assert!(matches!(
        parse_keys(
            200,
            b"<QuickLicenseManager>maintenance</QuickLicenseManager>"
        ),
        Err(LicenseError::Unparseable(_))
    ));
    assert!(matches!(
        parse_keys(200, b"<html><body>502</body></html>"),
        Err(LicenseError::Unparseable(_))
    ));
    assert!(matches!(
        parse_keys(200, b"<!DOCTYPE x><QuickLicenseManager/>"),
        Err(LicenseError::Unparseable(_))
    ));
    // Cut off after a complete key: a reply that did not arrive whole is not believed in part.
    assert!(matches!(
        parse_keys(
            200,
            b"<QuickLicenseManager><licenses><license><activationKey>K1</activationKey>"
        ),
        Err(LicenseError::Unparseable(_))
    ));
}

/// The wire samples captured from the stand-ins parse the same way here.
#[test]
fn shared_wire_samples_parse() {
    macro_rules! sample {
        ($p:literal) => {
            include_bytes!(concat!(env!("CARGO_MANIFEST_DIR"), "/../../testdata/", $p)).as_slice()
        };
    }
    let t = salesforce::parse_token(200, sample!("salesforce/token_ok.json")).unwrap();
    assert_eq!(t.instance_authority, "127.0.0.1:18081");
    assert!(matches!(
        salesforce::parse_token(400, sample!("salesforce/token_invalid_grant.json")),
        Err(SalesforceError::LoginRefused { .. })
    ));
    let p1 = salesforce::parse_query(
        200,
        sample!("salesforce/query_page1.json"),
        &Fields::basic(ContactField::BillToContact, Some("License_Keys__c")),
    )
    .unwrap();
    assert!(p1.next_records_url.is_some());
    assert_eq!(p1.orders.len(), 1);
    let p2 = salesforce::parse_query(
        200,
        sample!("salesforce/query_page2.json"),
        &Fields::basic(ContactField::CustomerAuthorizedBy, Some("License_Keys__c")),
    )
    .unwrap();
    assert!(p2.next_records_url.is_none());
    assert!(p2.orders[0].customer.is_some());
    assert_eq!(
        salesforce::parse_query(
            401,
            sample!("salesforce/query_invalid_session.json"),
            &Fields::basic(ContactField::BillToContact, None)
        ),
        Err(SalesforceError::SessionInvalid)
    );
    assert!(
        salesforce::parse_writeback(200, sample!("salesforce/composite_ok.json"), 2)
            .unwrap()
            .is_empty()
    );
    let failed =
        salesforce::parse_writeback(200, sample!("salesforce/composite_partial_failure.json"), 4)
            .unwrap();
    assert_eq!(failed.iter().map(|f| f.index).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(
        parse_keys(200, sample!("license/key_xml.xml"))
            .unwrap()
            .len(),
        1
    );
    assert_eq!(
        parse_keys(200, sample!("license/key_xml_multi.xml"))
            .unwrap()
            .len(),
        3
    );
    assert_eq!(
        parse_keys(200, sample!("license/key_plain.txt"))
            .unwrap()
            .len(),
        1
    );
    assert!(parse_keys(200, sample!("license/error_plain.txt")).is_err());
    assert!(parse_keys(200, sample!("license/retrieve_empty.xml"))
        .unwrap()
        .is_empty());
}

#[test]
fn eighteen_character_ids_compare_without_regard_to_case() {
    let exact = SfId::parse("00D5Y000001MPM7UAO").unwrap();
    assert!(exact.same_record(&SfId::parse("00d5y000001mpm7uao").unwrap()));
    assert!(exact.same_record(&SfId::parse("00D5Y000001MPM7").unwrap()));
    // A 15-character id is case-sensitive: this is another record.
    assert!(!exact.same_record(&SfId::parse("00d5Y000001MPM7").unwrap()));
    // A suffix that is not made of checksum characters is not an id.
    assert!(SfId::parse("00D5Y000001MPM7UA9").is_none());
    assert_eq!(
        SfId::parse("00d5y000001mpm7uao").unwrap().to_18(),
        "00D5Y000001MPM7UAO"
    );
}
