//! The order-to-license flow driven natively (and in wasm under Node) with scripted responses:
//! every branch of the state machine, with the ledger over an in-memory store.
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

mod common;
use common::world::*;

use std::collections::VecDeque;

use keygate_core::flow::{Call, Command, Env};
use keygate_core::metrics::Metric;
use keygate_core::reply::{FaultKind, Outcome};
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::{json, Value};

#[test]
fn nothing_activated_is_acked_without_callouts() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED);
    assert!(run.reply.is_ack());
    assert!(world.calls.is_empty());
    assert_eq!(run.counts[&Metric::MessagesAcked], 1);
    assert_eq!(run.counts[&Metric::Notifications], 1);
    // Not activated is not "skipped": the order was never asked for.
    assert_eq!(run.counts.get(&Metric::OrdersSkipped), None);
}

#[test]
fn activated_without_issuing_configured_is_a_503_fault() {
    let cfg = config(json!({"salesforce": null, "license_server": null, "products": null}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_eq!(run.reply.status, 503);
    assert!(run.reply.body.contains("license issuing is not configured"));
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Unconfigured));
    assert!(world.calls.is_empty());
}

#[test]
fn one_order_one_line_logs_in_queries_issues_writes_back_and_acks() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    // Shared data forgets on restart and is not shared by replicas: a line it does not know is
    // marked in Salesforce (durable: a restart mid-call cannot forget it), then looked up before
    // it is issued.
    assert_eq!(world.endpoints(), ONE_NEW_LINE);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"], ["KEY01-1-QLM"]);
    assert_eq!(run.counts[&Metric::Lookups], 1);
    assert_eq!(world.written["8025Y00000AbCdEQAV"], "KEY01-1-QLM");
    assert_eq!(run.counts[&Metric::LicensesIssued], 1);
    assert_eq!(run.counts[&Metric::Logins], 1);

    // The token is shared: the next message needs no login.
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED);
    assert!(run.reply.is_ack());
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("token"), 0);
    assert_eq!(world.count("query"), 1);
}

#[test]
fn license_request_carries_mapped_arguments_quantity_customer_and_reference() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    // The second order has no BillToContact (the license is then for no person).
    world.orders.get_mut("8015Y000001MuLt").unwrap()["BillToContact"] = Value::Null;
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    // SEVERAL: the demo order, the two-order with lines 001, 002 and the unmapped 999, and a
    // Draft order that is not queried at all.
    let calls: Vec<usize> = ["token", "query", "retrieve", "license", "composite"]
        .iter()
        .map(|e| world.count(e))
        .collect();
    assert_eq!(calls, [1, 1, 3, 3, 2]);
    let query = world
        .sent
        .iter()
        .find(|c| World::endpoint(c) == "query")
        .unwrap();
    let soql = form_urlencoded::parse(query.path.split_once('?').unwrap().1.as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    assert!(soql.contains("'8015Y000001AbCdQAK'") && soql.contains("'8015Y000001MuLtQAK'"));
    assert!(
        !soql.contains("8015Y000001DrAf"),
        "the Draft order is not asked for: {soql}"
    );
    // The configured contact (BillToContact by default) and no other.
    assert!(soql.contains("BillToContact.Email"), "{soql}");
    assert!(!soql.contains("CustomerAuthorizedBy"), "{soql}");
    assert_eq!(run.counts[&Metric::Notifications], 3);
    assert_eq!(run.counts[&Metric::LicensesIssued], 3);
    assert_eq!(run.counts[&Metric::LinesSkippedUnmapped], 1);
    assert_eq!(run.counts.get(&Metric::OrdersSkipped), None);
    let seen = world.forms("license");
    // Two mapped lines on the second order + one on the first; the unmapped 999 is skipped.
    assert_eq!(seen.len(), 3);
    let first = seen
        .iter()
        .find(|f| f["is_orderid"] == "8025Y00000AbCdEQAV")
        .unwrap();
    assert_eq!(first["is_productid"], "1");
    assert_eq!(first["is_emailtemplate"], "1. New Order");
    assert_eq!(first["is_quantity"], "3");
    assert_eq!(first["is_vendor"], "salesforce");
    assert_eq!(first["is_affiliateid"], "salesforce");
    assert_eq!(first["is_fullname"], "Jane Doe");
    assert_eq!(first["is_email"], "jane@acme.example");
    assert_eq!(first["is_company"], "Acme");
    assert_eq!(first["orderNumber"], "00000114");
    assert_eq!(first["is_user"], "secret-of-KEYGATE_QLM_USER");
    assert_eq!(first["is_majorversion"], "1");
    assert_eq!(first["is_minorversion"], "0");
    assert_eq!(first["is_productname"], "MyProduct");
    assert_eq!(first["is_phone"], "555");
    assert_eq!(first["is_userdata1"], "8025Y00000AbCdEQAV");
    // Line 001 of the second order: its own quantity and reference, the same mapping.
    let l001 = seen
        .iter()
        .find(|f| f["is_orderid"] == "8025Y000001MuL1QAK")
        .unwrap();
    assert_eq!(l001["is_quantity"], "1");
    assert_eq!(l001["is_userdata1"], "8025Y000001MuL1QAK");
    assert_eq!(
        (
            l001["is_productid"].as_str(),
            l001["is_emailtemplate"].as_str()
        ),
        ("1", "1. New Order")
    );
    let second = seen
        .iter()
        .find(|f| f["is_orderid"] == "8025Y000001MuL2QAK")
        .unwrap();
    assert_eq!(second["is_productid"], "2");
    assert_eq!(second["is_majorversion"], "3");
    assert_eq!(second["is_minorversion"], "0");
    assert_eq!(second["is_productname"], "Other");
    assert!(!second.contains_key("is_emailtemplate"));
    assert_eq!(second["is_expduration"], "365");
    assert_eq!(second["is_quantity"], "2");
    // The order without a contact: no person, the Account's company, no phone.
    for f in [l001, second] {
        assert_eq!(f["orderNumber"], "00000115");
        assert_eq!(
            (f["is_fullname"].as_str(), f["is_email"].as_str()),
            ("", "")
        );
        assert_eq!(f["is_company"], "Acme");
        assert!(!f.contains_key("is_phone"));
    }
}

#[test]
fn unmapped_lines_and_vanished_or_deactivated_orders_are_skipped_and_acked() {
    let cfg = config(json!({}));
    let mut world = World::new()
        .with_order(order(
            "8015Y000001AbCdQAK",
            "00000114",
            "Activated",
            &[("8025Y00000AbCdEQAV", "999", 1.0)],
        ))
        .with_order(order(
            "8015Y000001MuLtQAK",
            "00000115",
            "Draft",
            &[("8025Y000001MuL1QAK", "001", 1.0)],
        ));
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    // An unmapped line is not even looked up.
    assert_eq!(world.endpoints(), ["token", "query"]);
    assert_eq!(run.counts[&Metric::LinesSkippedUnmapped], 1);
    assert_eq!(run.counts[&Metric::OrdersSkipped], 1);
    assert_eq!(run.counts[&Metric::MessagesAcked], 1);
    assert_eq!(run.counts.get(&Metric::LicensesIssued), None);

    // An order Salesforce no longer has: logged, skipped, nothing but the query.
    let mut empty = World::new();
    let run = deliver(&cfg, &mut empty, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack());
    assert_eq!(empty.endpoints(), ["token", "query"]);
    assert_eq!(run.counts[&Metric::OrdersSkipped], 1);
    assert!(run.logs.iter().any(|l| l.contains("not found")));
    for m in [
        Metric::LicensesIssued,
        Metric::LinesSkippedUnmapped,
        Metric::FaultedUpstream,
    ] {
        assert_eq!(run.counts.get(&m), None, "{m:?}");
    }
}

#[test]
fn an_activated_order_without_order_products_is_acked_with_the_query_alone() {
    let cfg = config(json!({}));
    let mut o = order("8015Y000001AbCdQAK", "00000114", "Activated", &[]);
    o["OrderItems"] = Value::Null;
    let mut world = World::new().with_order(o);
    let mut store = MemStore::new();
    // A token cached by an earlier message: this one needs no login.
    assert!(deliver(&cfg, &mut world, &mut store, ONE).reply.is_ack());
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.endpoints(), ["query"]);
    assert_eq!(run.counts.get(&Metric::OrdersSkipped), None);
    assert_eq!(run.counts.get(&Metric::LicensesIssued), None);
}

#[test]
fn the_contact_variant_chooses_who_the_license_is_for() {
    let cfg = config(json!({"salesforce": {"contact": "CustomerAuthorizedBy"}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    // Names and a company that form encoding must carry whole (non-ASCII, `'`, `&`); the demo
    // order has no CustomerAuthorizedBy at all.
    let multi = world.orders.get_mut("8015Y000001MuLt").unwrap();
    multi["CustomerAuthorizedBy"] =
        json!({"FirstName": "Seán", "LastName": "O'Brien", "Email": "sean@globex.example"});
    multi["Account"] = json!({"Name": "Globex & Søn"});
    world.orders.get_mut("8015Y000001AbCd").unwrap()["CustomerAuthorizedBy"] = Value::Null;
    assert!(deliver(&cfg, &mut world, &mut store, SEVERAL)
        .reply
        .is_ack());
    let query = world
        .sent
        .iter()
        .find(|c| World::endpoint(c) == "query")
        .unwrap();
    let soql = form_urlencoded::parse(query.path.split_once('?').unwrap().1.as_bytes())
        .next()
        .unwrap()
        .1
        .into_owned();
    for field in [
        "CustomerAuthorizedById",
        "CustomerAuthorizedBy.FirstName",
        "CustomerAuthorizedBy.LastName",
        "CustomerAuthorizedBy.Email",
    ] {
        assert!(soql.contains(field), "{field} not in {soql}");
    }
    assert!(!soql.contains("BillToContact"), "{soql}");
    let forms = world.forms("license");
    for line in ["8025Y000001MuL1QAK", "8025Y000001MuL2QAK"] {
        let f = forms.iter().find(|f| f["is_userdata1"] == line).unwrap();
        assert_eq!(f["is_fullname"], "Seán O'Brien");
        assert_eq!(f["is_email"], "sean@globex.example");
        assert_eq!(f["is_company"], "Globex & Søn");
        assert!(!f.contains_key("is_phone"));
    }
    let demo = forms
        .iter()
        .find(|f| f["is_userdata1"] == "8025Y00000AbCdEQAV")
        .unwrap();
    assert_eq!(
        (demo["is_fullname"].as_str(), demo["is_email"].as_str()),
        ("", "")
    );
    assert_eq!(demo["is_company"], "Acme");
}

#[test]
fn password_grant_posts_username_and_password() {
    let cfg = config(
        json!({"salesforce": {"grant": "password", "username_env": "U", "password_env": "P"}}),
    );
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (_flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let Some(Command::Dispatch(login)) =
        cmds.into_iter().find(|c| matches!(c, Command::Dispatch(_)))
    else {
        panic!("no login")
    };
    let f = World::form(&login);
    assert_eq!(login.path, "/services/oauth2/token");
    assert_eq!(login.authority, "mydomain.my.salesforce.com");
    assert_eq!(f["grant_type"], "password");
    assert_eq!(f["username"], "secret-of-U");
    assert_eq!(f["password"], "secret-of-P");
    assert_eq!(f["client_secret"], "secret-of-KEYGATE_SF_CLIENT_SECRET");
    assert_eq!(f["client_id"], "secret-of-KEYGATE_SF_CLIENT_ID");
    assert!(
        format!("{login:?}").find("secret-of").is_none(),
        "Debug of a call must hide its body"
    );
    // And the whole delivery under it, as under client credentials.
    let mut world = demo_world();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.endpoints(), ONE_NEW_LINE);
    assert_eq!(run.counts[&Metric::Logins], 1);
    one_key_per_line(&world);
}

#[test]
fn an_expired_token_means_one_new_login_and_one_retry_and_no_duplicate_key() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver(&cfg, &mut world, &mut store, NOT_ACTIVATED)
        .reply
        .is_ack());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack());
    world.token_valid = false; // Salesforce expired the session
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    let order = world.endpoints();
    assert_eq!(&order[..3], ["query", "token", "query"]);
    assert_eq!(
        world.calls[0].1, world.calls[2].1,
        "the refused query is sent again as it was"
    );
    assert_eq!(world.count("token"), 1);
    assert_eq!(run.counts[&Metric::Logins], 1);
    // The first order's line was licensed in the earlier delivery and is not licensed again.
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
}

#[test]
fn a_session_invalid_twice_in_a_row_is_a_fault_not_a_loop() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let bad = r#"[{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}]"#;
    world.fail_next("query", status(401, bad));
    world.fail_next("query", status(401, bad));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "session invalid"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("token"), 2);
    assert_eq!(world.count("license"), 0);
}

#[test]
fn a_refused_login_is_a_fault_with_the_reason() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next(
        "token",
        status(
            400,
            r#"{"error":"invalid_grant","error_description":"authentication failure"}"#,
        ),
    );
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "invalid_grant (authentication failure)"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::FaultedUpstream], 1);
    assert_eq!(run.counts[&Metric::CalloutsFailedSalesforce], 1);
    assert_eq!(run.counts.get(&Metric::Logins), None);
    assert_eq!(world.count("query"), 0);
    assert!(run.logs.iter().any(|l| l.contains("login refused")));
}

#[test]
fn a_failed_query_is_a_fault_and_nothing_is_issued() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next(
        "query",
        status(
            500,
            r#"[{"message":"boom","errorCode":"UNKNOWN_EXCEPTION"}]"#,
        ),
    );
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "UNKNOWN_EXCEPTION"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license"), 0);
}

#[test]
fn query_pages_are_followed() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.page_size = 1;
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("query"), 2);
    assert_eq!(world.count("license"), 3);
    one_key_per_line(&world);
    assert_eq!(world.keys_written().len(), 3);
    assert_eq!(run.counts[&Metric::MessagesAcked], 1);
    assert_eq!(run.counts[&Metric::LicensesIssued], 3);
    assert_eq!(run.counts[&Metric::LinesSkippedUnmapped], 1);
}

#[test]
fn license_failures_on_every_line_fault_then_the_redelivery_looks_each_up_and_issues_once() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    for _ in 0..3 {
        world.fail_next("license", status(500, "Server Error"));
    }
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(
        is_fault(&run.reply, 500, "license server answered HTTP 500"),
        "{}",
        run.reply.body
    );
    // The issuing marks went out; no key was written back.
    assert_eq!(
        (
            world.count("composite"),
            world.count("retrieve"),
            world.count("license")
        ),
        (1, 3, 3)
    );
    assert!(world.keys_written().is_empty());
    assert_eq!(run.counts[&Metric::CalloutsFailedLicense], 3);
    assert_eq!(run.counts[&Metric::FaultedUpstream], 1);

    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        (
            world.count("composite"),
            world.count("retrieve"),
            world.count("license")
        ),
        (3, 6, 6)
    );
    assert_eq!(run.counts[&Metric::LicensesIssued], 3);
    one_key_per_line(&world);
    assert_eq!(world.keys_written().len(), 3);
}

#[test]
fn license_failure_is_a_fault_then_redelivery_looks_up_and_issues_exactly_once() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("license", status(500, "Server Error"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(
            &run.reply,
            500,
            "license call for line 8025Y00000AbCdEQAV failed"
        ),
        "{}",
        run.reply.body
    );
    assert!(world.keys_issued.is_empty());

    // The server answered, so its call is over: the redelivery looks up at once, no waiting.
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.count("retrieve"),
        1,
        "an unknown outcome is looked up before issuing again"
    );
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
}

#[test]
fn a_key_issued_then_lost_in_transit_is_found_not_issued_twice() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.issue_then_fail.push_back(reset());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_eq!(run.reply.status, 500);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);

    // A reset: the call may still be running. Past its timeout and the grace, look it up.
    let run = deliver_at(&cfg, &mut world, &mut store, ONE, 1_000_000 + 40_000, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.keys_issued["8025Y00000AbCdEQAV"].len(),
        1,
        "no second key"
    );
    assert_eq!(run.counts[&Metric::LicensesRecovered], 1);
    assert_eq!(
        world.written["8025Y00000AbCdEQAV"],
        world.keys_issued["8025Y00000AbCdEQAV"][0]
    );
}

#[test]
fn a_garbage_license_reply_is_a_failure() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("license", ok("<html><body>oops</body></html>"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "not understood"),
        "{}",
        run.reply.body
    );
    world.fail_next("license", ok("Error: invalid product"));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "Error: invalid product"),
        "{}",
        run.reply.body
    );
}

#[test]
fn write_back_failure_is_a_fault_and_redelivery_only_writes_back() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next_keys_writeback(status(
        500,
        r#"[{"message":"x","errorCode":"SERVER_UNAVAILABLE"}]"#,
    ));
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "write-back"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 0);
    assert_eq!(world.count("retrieve"), 0);
    assert_eq!(
        world.count("composite"),
        1,
        "the line is known: no mark, only its keys"
    );
    assert_eq!(
        world.written["8025Y00000AbCdEQAV"],
        world.keys_issued["8025Y00000AbCdEQAV"][0]
    );
}

#[test]
fn the_write_back_in_salesforce_protects_lines_across_gateways() {
    let cfg = config(json!({}));
    let mut world = demo_world();
    assert!(deliver(&cfg, &mut world, &mut MemStore::new(), ONE)
        .reply
        .is_ack());
    // Another replica: empty ledger, but Salesforce shows the key on the line.
    world.calls.clear();
    let mut replica = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut replica, ONE);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 0);
    assert_eq!((world.count("retrieve"), world.count("composite")), (0, 0));
    assert_eq!(run.counts[&Metric::LinesAlreadyLicensed], 1);
    // That replica, redelivered: the query alone (its token cached).
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut replica, ONE);
    assert!(run.reply.is_ack());
    assert_eq!(world.endpoints(), ["query"]);
    assert_eq!(run.counts[&Metric::LinesAlreadyLicensed], 1);
}

#[test]
fn without_write_back_no_composite_call_is_made() {
    let cfg = config(json!({"salesforce": {"writeback_field": null}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("composite"), 0);
    assert!(!world
        .calls
        .iter()
        .any(|(_, p)| p.contains("License_Keys__c")));
    // The ledger alone prevents a second key on redelivery to the same gateway.
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack());
    assert_eq!(world.count("license"), 3);
}

#[test]
fn a_hundred_orders_take_one_query_bounded_concurrency_and_one_write_back() {
    let cfg = config(json!({"license_server": {"max_concurrency": 3}}));
    let mut world = family_world();
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, HUNDRED);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("query"), 1);
    assert_eq!(world.count("license"), 100);
    // The issuing marks of the 100 new lines, then their keys: two sObject Collections calls.
    assert_eq!(world.count("composite"), 2);
    assert!(run.max_in_flight <= 3, "in flight {}", run.max_in_flight);
    assert_eq!(world.written.len(), 100);
}

#[test]
fn a_second_delivery_of_an_order_in_progress_is_refused_as_busy() {
    let cfg = config(json!({}));
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (first, _) = webhook::on_body(&cfg, ONE, 1, &mut env);
    assert!(first.is_some());
    let mut env = Env {
        now_ms: 10,
        store: &mut store,
    };
    let (second, cmds) = webhook::on_body(&cfg, SEVERAL, 2, &mut env);
    assert!(second.is_none());
    let Some(Command::Reply(r)) = cmds.last() else {
        panic!("no reply")
    };
    assert!(
        is_fault(r, 500, "being processed by another request"),
        "{}",
        r.body
    );
    // Its claim on the other order was released: that order can be worked on.
    let other = String::from_utf8(ONE.to_vec())
        .unwrap()
        .replace("8015Y000001AbCdQAK", "8015Y000001MuLtQAK");
    let mut env = Env {
        now_ms: 20,
        store: &mut store,
    };
    let (third, _) = webhook::on_body(&cfg, other.as_bytes(), 3, &mut env);
    assert!(third.is_some(), "the other order must not stay claimed");
    // Claims expire: long after the TTL the order can be taken over.
    let mut env = Env {
        now_ms: 10_000_000,
        store: &mut store,
    };
    let (fourth, _) = webhook::on_body(&cfg, ONE, 4, &mut env);
    assert!(fourth.is_some());
}

#[test]
fn the_deadline_stops_new_callouts_and_faults() {
    let cfg = config(json!({"deadline_ms": 1000, "license_server": {"max_concurrency": 1}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    // Each call takes 300 ms of the 1 s budget.
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, 1_000_000, 300);
    assert_eq!(
        run.reply.outcome,
        Outcome::Faulted(FaultKind::Deadline),
        "{}",
        run.reply.body
    );
    assert!(run.reply.body.contains("deadline"));
    assert!(world.count("license") < 3);
    // What finished was recorded: the redelivery completes without duplicates.
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    for keys in world.keys_issued.values() {
        assert_eq!(keys.len(), 1);
    }
    assert_eq!(world.keys_issued.len(), 3);
}

#[test]
fn call_timeouts_never_exceed_the_time_left() {
    // Every call of the flow (login, query, lookup, license, write-back), with the clock moving on
    // 1.2 s per call against a 5 s deadline: each timeout is the configured 10 s cut to what
    // is left, and no call starts with less than the minimum left.
    let cfg = config(json!({"deadline_ms": 5000}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let mut now = 0;
    let mut env = Env {
        now_ms: now,
        store: &mut store,
    };
    let (mut flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let mut pending: VecDeque<Command> = cmds.into();
    let mut seen = 0;
    while let Some(cmd) = pending.pop_front() {
        let Command::Dispatch(call) = cmd else {
            continue;
        };
        seen += 1;
        assert_eq!(
            call.timeout_ms,
            (5000 - now).min(10_000),
            "call {seen} ({call:?}) at {now} ms"
        );
        now += 1200;
        let resp = world.serve(&call);
        let mut env = Env {
            now_ms: now,
            store: &mut store,
        };
        if let Some(f) = flow.as_mut() {
            pending.extend(f.on_response(call.id, resp, &mut env));
        }
        if flow.as_ref().is_some_and(|f| f.is_finished()) {
            flow = None;
        }
    }
    assert_eq!(
        seen, 5,
        "login, query, lookup, license and write-back were all timed"
    );
}

#[test]
fn a_cancelled_request_releases_its_claims_and_leaves_lines_pending() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let mut flow = flow.unwrap();
    let mut queue: VecDeque<Call> = cmds
        .into_iter()
        .filter_map(|c| {
            if let Command::Dispatch(c) = c {
                Some(c)
            } else {
                None
            }
        })
        .collect();
    // Serve login, query, the issuing mark and the lookup; the license call goes out and the
    // client hangs up.
    for _ in 0..4 {
        let call = queue.pop_front().unwrap();
        let resp = world.serve(&call);
        let mut env = Env {
            now_ms: 0,
            store: &mut store,
        };
        queue.extend(
            flow.on_response(call.id, resp, &mut env)
                .into_iter()
                .filter_map(|c| {
                    if let Command::Dispatch(c) = c {
                        Some(c)
                    } else {
                        None
                    }
                }),
        );
    }
    let license = queue.pop_front().unwrap();
    assert_eq!(World::endpoint(&license), "license");
    world.serve(&license); // the key is issued, the answer never arrives
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    flow.on_cancel(&mut env);
    assert!(flow.is_finished());
    // Redelivery while the license call may still be running (its 10 s timeout + 30 s grace):
    // the order is not claimed any more, but the line is busy: no lookup, no second issue.
    world.calls.clear();
    let run = deliver_at(&cfg, &mut world, &mut store, ONE, 39_000, 0);
    assert_eq!(
        run.reply.outcome,
        Outcome::Faulted(FaultKind::Busy),
        "{}",
        run.reply.body
    );
    assert!(
        is_fault(&run.reply, 500, "may still be running; retry in 1 s"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::LinesBusy], 1);
    assert_eq!(world.count("retrieve") + world.count("license"), 0);
    // After it: looked up, found, not issued again.
    let run = deliver_at(&cfg, &mut world, &mut store, ONE, 40_000, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.keys_issued["8025Y00000AbCdEQAV"].len(), 1);
    assert_eq!(run.counts[&Metric::LicensesRecovered], 1);
}

#[test]
fn sender_checks_run_before_any_callout() {
    let cfg = config(json!({"allowed_org_ids": ["00D000000000001AAA"]}));
    let mut store = MemStore::new();
    let mut env = Env {
        now_ms: 0,
        store: &mut store,
    };
    let (flow, cmds) = webhook::on_body(&cfg, ONE, 1, &mut env);
    assert!(flow.is_none());
    assert!(!cmds.iter().any(|c| matches!(c, Command::Dispatch(_))));
    let Some(Command::Reply(r)) = cmds.last() else {
        panic!()
    };
    assert_eq!(r.status, 403);
    assert!(r
        .body
        .contains("organization 00D5Y000001MPM7UAO is not allowed"));
}

#[test]
fn invalid_quantities_are_skipped_permanently() {
    let cfg = config(json!({}));
    let mut world = World::new().with_order(order(
        "8015Y000001AbCdQAK",
        "1",
        "Activated",
        &[("8025Y00000AbCdEQAV", "001", 1.5)],
    ));
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack());
    assert_eq!(run.counts[&Metric::LinesSkippedInvalid], 1);
    assert_eq!(world.count("license"), 0);
}

#[test]
fn no_response_at_all_from_salesforce_is_a_fault() {
    let cfg = config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    world.fail_next("token", reset());
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(
        is_fault(&run.reply, 500, "no response"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::CalloutsFailedSalesforce], 1);
}

#[test]
fn the_company_comes_from_the_account_even_without_a_contact() {
    let cfg = config(json!({}));
    let mut o = order(
        "8015Y000001AbCdQAK",
        "00000114",
        "Activated",
        &[("8025Y00000AbCdEQAV", "001", 1.0)],
    );
    o["BillToContact"] = Value::Null;
    o["Account"] = json!({"Name": "Globex & Søn"});
    let mut world = World::new().with_order(o);
    assert!(deliver(&cfg, &mut world, &mut MemStore::new(), ONE)
        .reply
        .is_ack());
    let f = &world.forms("license")[0];
    assert_eq!(f["is_company"], "Globex & Søn");
    assert_eq!(
        (f["is_fullname"].as_str(), f["is_email"].as_str()),
        ("", "")
    );
    assert!(!f.contains_key("is_phone"));
}

#[test]
fn lines_whose_call_may_still_run_are_never_evicted_from_a_full_ledger() {
    let cfg = config(json!({"ledger": {"max_lines": 2}}));
    let (mut world, mut store) = (family_world(), MemStore::new());
    let t = 1_000_000;
    // Lines 0 and 1: issued, then the answer is lost: pending until timeout + grace (40 s).
    for i in 0..2 {
        world.issue_then_fail.push_back(reset());
        let run = deliver_at(&cfg, &mut world, &mut store, &family_message(i), t, 0);
        assert_eq!(run.reply.status, 500);
    }
    // The ledger is full of such lines: a new line is refused rather than one forgotten.
    let run = deliver_at(&cfg, &mut world, &mut store, &family_message(2), t, 0);
    assert!(
        is_fault(&run.reply, 500, "the ledger is full of unfinished lines"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::LedgerFull], 1);
    assert!(!world.keys_issued.contains_key("8025Y00000B0002QAB"));
    // Once their calls cannot be running any more, redeliveries find their keys...
    for i in 0..2 {
        let run = deliver_at(
            &cfg,
            &mut world,
            &mut store,
            &family_message(i),
            t + 40_000,
            0,
        );
        assert!(run.reply.is_ack(), "{i}: {}", run.reply.body);
        assert_eq!(run.counts[&Metric::LicensesRecovered], 1);
    }
    // ...and new lines take the place of old ones: a forgotten line is looked up, never
    // issued twice.
    for i in (2..6).chain(0..2) {
        let run = deliver_at(
            &cfg,
            &mut world,
            &mut store,
            &family_message(i),
            t + 41_000,
            0,
        );
        assert!(run.reply.is_ack(), "{i}: {}", run.reply.body);
    }
    for (item, keys) in &world.keys_issued {
        assert_eq!(keys.len(), 1, "{item} licensed twice");
    }
    assert_eq!(world.keys_issued.len(), 6);
    let lines = store.keys().iter().filter(|k| k.contains(":line:")).count();
    assert!(lines <= 2, "the ledger stays bounded: {:?}", store.keys());
}

#[test]
fn a_line_the_deadline_kept_from_starting_is_not_marked_uncertain() {
    let cfg = config(json!({"deadline_ms": 1000, "license_server": {"max_concurrency": 1}}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, 1_000_000, 300);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Deadline));
    let started = world.count("license");
    world.calls.clear();
    // At once: a line marked pending that was never sent would be "busy" for 40 s.
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(run.counts.get(&Metric::LinesBusy), None);
    assert_eq!(world.count("license"), 3 - started);
}
