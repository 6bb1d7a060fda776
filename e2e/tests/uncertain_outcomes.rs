//! One key per line when an outcome is uncertain, through a real Envoy: a restart between issue
//! and write-back, a license server slower than the timeout that issues anyway, a one-word reply,
//! order products beyond the first page, a reply too large to read. Each case once ended with a
//! second key for a line or an ack without one.

use keygate_e2e::exactly_once::{
    assert_one_key_per_line, keys_written_back, refs_of, settle, short_issuing_marks, Calls,
    SHORT_MARK,
};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault};
use keygate_e2e::{json, testdata, Gateway, GatewayOptions};
use keygate_standins::{
    Endpoint, Fault, FaultKind, DEMO_ITEM_ID, MULTI_LINE_ITEM_IDS, MULTI_LINE_ORDER_ID,
    OVERSIZE_BYTES,
};
use std::time::{Duration, Instant};

fn several() -> String {
    testdata("soap/valid/several.xml")
}

fn several_lines() -> Vec<String> {
    vec![
        DEMO_ITEM_ID.to_owned(),
        MULTI_LINE_ITEM_IDS[0].to_owned(),
        MULTI_LINE_ITEM_IDS[1].to_owned(),
    ]
}

/// Salesforce's validation rule refuses one record of the write-back (its result has no `id`);
/// Envoy restarts (shared data gone) and Salesforce redelivers. The redelivery looks the line up
/// and writes back the key the license server already has: no second key.
#[test]
fn a_refused_write_back_then_a_restart_finds_the_key() {
    let gw = Gateway::start(GatewayOptions::default().patch(short_issuing_marks()));
    let refused = MULTI_LINE_ITEM_IDS[0];
    gw.standins.refuse_writeback(&[refused]);
    let started = Instant::now();
    let why = assert_server_fault(&gw.post_webhook(several()));
    assert!(
        why.contains(&format!(
            "write-back of line {refused} refused: FIELD_CUSTOM_VALIDATION_EXCEPTION"
        )),
        "{why}"
    );
    assert_eq!(
        keys_written_back(&gw.standins).len(),
        2,
        "the other lines are written back"
    );

    let gw = gw.restart_envoy();
    // The refused line still shows its issuing mark: the new Envoy waits it out, then looks.
    std::thread::sleep(SHORT_MARK.saturating_sub(started.elapsed()));
    gw.standins.refuse_writeback(&[]);
    let mark = gw.standins.record().len();
    assert_ack_from(&gw.post_webhook(several()), &gw);
    let record = gw.standins.record();
    let redelivery = &record[mark..];
    assert_one_key_per_line(&gw.standins, &several_lines());
    // Only the line Salesforce does not hold a key for is looked up; none is issued.
    assert_eq!(
        refs_of(redelivery, Endpoint::Retrieve),
        vec![refused.to_owned()]
    );
    assert_eq!(
        Calls::of(redelivery),
        Calls::new(1, 1, 0, 1, 2),
        "{redelivery:#?}"
    );
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
    assert_no_leaks(&gw);
}

/// Without write-back only the ledger remembers a line, and a restart empties it: the lookup
/// before every first issue is what keeps the second delivery from issuing again.
#[test]
fn without_write_back_a_restart_never_issues_a_second_key() {
    // No durable place for an issuing mark: after each start, a line the ledger does not know
    // waits out one call's time and grace (1 s here) before it is looked up.
    let quarantine = Duration::from_millis(1100);
    let gw = Gateway::start(GatewayOptions::default().patch(json!({
        "salesforce": {"writeback_field": null},
        "license_server": {"timeout_ms": 1000},
        "ledger": {"pending_grace_ms": 0},
    })));
    std::thread::sleep(quarantine);
    assert_ack_from(
        &gw.post_webhook(testdata("soap/valid/activated_one.xml")),
        &gw,
    );
    let gw = gw.restart_envoy();
    let busy = assert_server_fault(&gw.post_webhook(testdata("soap/valid/activated_one.xml")));
    assert!(busy.contains("may still be running"), "{busy}");
    std::thread::sleep(quarantine);
    assert_ack_from(
        &gw.post_webhook(testdata("soap/valid/activated_one.xml")),
        &gw,
    );
    let issued = gw.standins.issued();
    assert_eq!(issued[DEMO_ITEM_ID].len(), 1, "{issued:?}");
    assert_eq!(Calls::of(&gw.standins.record()), Calls::new(2, 3, 1, 2, 0));
}

/// The license server takes 2.5 s against a 1 s timeout and issues anyway. The redelivery right
/// after the fault is told "busy" (no license call at all); once the call's timeout and the
/// grace are over, the line is looked up and its key found.
#[test]
fn a_slow_license_server_gets_busy_then_a_lookup_never_a_second_key() {
    let gw = Gateway::start(GatewayOptions::default().patch(json!({
        "license_server": {"timeout_ms": 1000},
        "ledger": {"pending_grace_ms": 2000},
    })));
    let body = testdata("soap/valid/activated_one.xml");
    gw.standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::IssueThenDelay).delay_ms(2500))
        .unwrap();
    let started = Instant::now();
    let why = assert_server_fault(&gw.post_webhook(&body));
    assert!(why.contains("outcome unknown"), "{why}");

    let mark = gw.standins.record().len();
    let busy = assert_server_fault(&gw.post_webhook(&body));
    assert!(
        busy.contains(&format!(
            "line {DEMO_ITEM_ID}: an earlier license call may still be running"
        )),
        "{busy}"
    );
    assert_eq!(gw.counter("keygate_messages_faulted_busy"), 1);
    let record = gw.standins.record();
    assert_eq!(
        Calls::of(&record[mark..]),
        Calls::new(0, 1, 0, 0, 0),
        "busy: no license call"
    );

    settle(&gw.standins, 1);
    assert_eq!(
        gw.standins.issued()[DEMO_ITEM_ID].len(),
        1,
        "the slow call issued its key"
    );
    // Past timeout (1 s) + grace (2 s) after the call started.
    let window = Duration::from_millis(3100);
    std::thread::sleep(window.saturating_sub(started.elapsed()));
    let mark = gw.standins.record().len();
    assert_ack_from(&gw.post_webhook(&body), &gw);
    let record = gw.standins.record();
    assert_eq!(
        Calls::of(&record[mark..]),
        Calls::new(0, 1, 0, 1, 2),
        "the line marked again, looked up, written back: {:#?}",
        &record[mark..]
    );
    assert_one_key_per_line(&gw.standins, &[DEMO_ITEM_ID.to_owned()]);
    assert_no_leaks(&gw);
}

/// Salesforce pages a long order's OrderItems (here one per page): every page is read, every
/// line licensed, one query for the orders plus one per further page.
#[test]
fn order_products_beyond_the_first_page_are_all_licensed() {
    let gw = Gateway::start(GatewayOptions::default());
    gw.standins.set_items_page_size(1);
    assert_ack_from(&gw.post_webhook(several()), &gw);
    assert_one_key_per_line(&gw.standins, &several_lines());
    let record = gw.standins.record();
    // The multi-line order has 3 order products: 2 further pages (query_more), each a GET of
    // Salesforce's `nextRecordsUrl` through Envoy (the top-level query's pages are the same
    // call: core flow.rs `query_pages_are_followed`).
    let more: Vec<_> = record
        .iter()
        .filter(|r| r.endpoint == Endpoint::QueryMore)
        .collect();
    assert_eq!(more.len(), 2, "{record:#?}");
    for r in &more {
        assert_eq!((r.method.as_str(), r.status), ("GET", 200), "{r:?}");
        assert!(r.path.starts_with("/services/data/"), "{r:?}");
    }
    let pages = more.len();
    let mut calls = Calls::of(&record);
    calls.other -= pages;
    assert_eq!(calls, Calls::new(1, 1, 3, 3, 2), "{record:#?}");
}

/// A reply larger than `max_reply_bytes` is read no further than the cap and is a failure; the
/// license call answered, so the redelivery looks the line up at once and finds the key.
#[test]
fn a_reply_over_max_reply_bytes_is_refused_and_nothing_is_lost() {
    let gw = Gateway::start(GatewayOptions::default());
    let body = testdata("soap/valid/activated_one.xml");
    let cap = gw.plugin_config["max_reply_bytes"]
        .as_u64()
        .unwrap_or(4 * 1024 * 1024);
    assert!((cap as usize) < OVERSIZE_BYTES);
    gw.standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::Oversize))
        .unwrap();
    let why = assert_server_fault(&gw.post_webhook(&body));
    assert!(
        why.contains(&format!("reply larger than max_reply_bytes ({cap})")),
        "{why}"
    );
    assert_ack_from(&gw.post_webhook(&body), &gw);
    assert_one_key_per_line(&gw.standins, &[DEMO_ITEM_ID.to_owned()]);

    gw.standins
        .inject_fault(Fault::new(Endpoint::Query, FaultKind::Oversize))
        .unwrap();
    let why = assert_server_fault(&gw.post_webhook(several()));
    assert!(
        why.contains("Salesforce reply larger than max_reply_bytes"),
        "{why}"
    );
    assert_no_leaks(&gw);
}

/// Envoy stopped (a deploy) while the license server is still issuing: the shared-data ledger's
/// pending mark dies with the process, and the redelivery reaches the new Envoy before the
/// license server has finished. The issuing mark written to Salesforce before the call tells
/// the new Envoy to wait ("busy"); once the delivery's calls are over, the lookup finds the one
/// key. (Found by a soak: a lookup here used to find nothing and issue a second key.)
#[test]
fn a_restart_while_the_license_server_is_still_issuing_never_gives_a_second_key() {
    // The mark's time: the deadline (4 s) + grace (1 s) from the delivery's start. The busy
    // redelivery logs in and reads the order (a new Envoy: a new token), then stops.
    restart_while_issuing(
        GatewayOptions::default(),
        &format!("line {DEMO_ITEM_ID}: an earlier license call may still be running"),
        Calls::new(1, 1, 0, 0, 0),
        Duration::from_millis(5_500),
    );
}

/// The same deploy with the fleet's ledger: etcd's claim and pending mark, written before the
/// call, are durable already. The dead Envoy's claim holds the order until the time written in
/// it (the claim TTL, 14 s, from the delivery's start), though its lease lives on; then the
/// redelivery takes the claim over, finds the line's pending mark past its time and looks it up.
#[test]
fn with_etcd_a_restart_while_the_license_server_is_still_issuing_never_gives_a_second_key() {
    let etcd = keygate_e2e::etcd::EtcdCluster::start(1);
    restart_while_issuing(
        GatewayOptions::default().etcd(&etcd.client_ports()),
        "is being processed by another request",
        Calls::new(0, 0, 0, 0, 0),
        Duration::from_millis(14_500),
    );
}

fn restart_while_issuing(
    options: GatewayOptions,
    busy: &str,
    busy_calls: Calls,
    busy_for: Duration,
) {
    // A short deadline and grace so the marks' time passes within the test.
    let gw = Gateway::start(options.patch(json!({
        "deadline_ms": 4000,
        "license_server": {"timeout_ms": 3000},
        "ledger": {"pending_grace_ms": 1000, "claim_ttl_ms": 14000},
    })));
    let body = testdata("soap/valid/activated_one.xml");
    // The license server takes 2.5 s and issues at the end of it.
    gw.standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::Delay).delay_ms(2500))
        .unwrap();
    let addr = gw.gateway_addr;
    let first = {
        let body = body.clone();
        std::thread::spawn(move || {
            let headers = [
                ("Content-Type", "text/xml; charset=utf-8"),
                ("SOAPAction", "\"\""),
            ];
            keygate_e2e::http::request(
                addr,
                "POST",
                &keygate_e2e::webhook_path_with_secret(),
                &headers,
                body.as_bytes(),
                Duration::from_secs(10),
            )
        })
    };
    let started = Instant::now();
    // 0.8 s in, the issue call is at the license server (the query answered long before), then
    // deploy.
    while !gw
        .standins
        .record()
        .iter()
        .any(|r| r.endpoint == Endpoint::Query)
        || started.elapsed() < Duration::from_millis(800)
    {
        assert!(started.elapsed() < Duration::from_secs(2), "no query");
        std::thread::sleep(Duration::from_millis(20));
    }
    let gw = gw.restart_envoy();
    let _ = first.join();
    assert!(
        gw.standins.issued().is_empty(),
        "the license server is still working on it"
    );

    // The redelivery at once: busy, no lookup and no issue.
    let mark = gw.standins.record().len();
    let why = assert_server_fault(&gw.post_webhook(&body));
    assert!(why.contains(busy), "{why}");
    let record = gw.standins.record();
    assert_eq!(Calls::of(&record[mark..]), busy_calls, "{record:#?}");

    // The license server finishes; once the delivery's calls are over the lookup finds it.
    while started.elapsed() < busy_for {
        std::thread::sleep(Duration::from_millis(50));
    }
    assert_eq!(gw.standins.issued()[DEMO_ITEM_ID].len(), 1);
    assert_ack_from(&gw.post_webhook(&body), &gw);
    assert_one_key_per_line(&gw.standins, &[DEMO_ITEM_ID.to_owned()]);
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
}

/// Envoy's circuit breaker on the license cluster refuses calls beyond its ceiling. Envoy fails
/// such a call while it is being dispatched and then refuses the dispatch: the call never left
/// Envoy, and the core is told so (not "no response"), so nothing is taken for uncertain; the
/// delivery is a fault and the redelivery goes on at once. (What the ledger does with a call
/// never sent: core `exactly_once.rs`, `…_never_sent_…`.)
#[test]
fn a_call_the_license_cluster_s_circuit_breaker_refuses_was_never_sent_and_is_retried() {
    let gw = Gateway::start(GatewayOptions::default().license_breakers(2));
    // Another delivery's two lookups hold both slots for 1.5 s.
    gw.standins
        .inject_fault(
            Fault::new(Endpoint::Retrieve, FaultKind::Delay)
                .delay_ms(1500)
                .times(2),
        )
        .unwrap();
    let addr = gw.gateway_addr;
    let blocker = std::thread::spawn(move || {
        let body = keygate_e2e::exactly_once::outbound_message([(MULTI_LINE_ORDER_ID, "00000115")]);
        keygate_e2e::http::request(
            addr,
            "POST",
            &keygate_e2e::webhook_path_with_secret(),
            &[
                ("Content-Type", "text/xml; charset=utf-8"),
                ("SOAPAction", "\"\""),
            ],
            body.as_bytes(),
            Duration::from_secs(10),
        )
    });
    let started = Instant::now();
    while gw.standins.license_in_flight() < 2 {
        assert!(started.elapsed() < Duration::from_secs(1), "no lookups");
        std::thread::sleep(Duration::from_millis(10));
    }

    let body = testdata("soap/valid/activated_one.xml");
    let why = assert_server_fault(&gw.post_webhook(&body));
    assert!(
        why.contains(&format!(
            "license call for line {DEMO_ITEM_ID} failed: lookup not sent (Envoy's circuit \
             breaker on the license cluster is open"
        )),
        "{why}"
    );
    let overflows: u64 = gw
        .admin_get("/stats?filter=^cluster%5C.license_server%5C..*_overflow$")
        .text()
        .lines()
        .filter_map(|l| l.split_once(": ")?.1.trim().parse::<u64>().ok())
        .sum();
    assert_eq!(overflows, 1, "Envoy refused one call");
    // The other delivery may have met the ceiling too (its two issue calls, made as its lookups
    // answer): redelivered, as Salesforce would, until both messages are acked.
    let blocked = blocker.join().unwrap().unwrap();
    let other = keygate_e2e::exactly_once::outbound_message([(MULTI_LINE_ORDER_ID, "00000115")]);
    let mut acked = (blocked.status == 200, false);
    for _ in 0..5 {
        if !acked.0 {
            acked.0 = gw.post_webhook(&other).status == 200;
        }
        if !acked.1 {
            acked.1 = gw.post_webhook(&body).status == 200;
        }
    }
    assert_eq!(acked, (true, true), "not licensed after 5 redeliveries");
    let mut lines = several_lines();
    lines.sort();
    assert_one_key_per_line(&gw.standins, &lines);
    assert_no_leaks(&gw);
}
