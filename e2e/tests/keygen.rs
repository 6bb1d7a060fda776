//! Keygen as the license server, through a real Envoy (`license_server.kind: "keygen"`, the
//! license listener answering as Keygen's JSON:API): the order's whole life against the Keygen
//! stand-in's end state (each license's suspended flag, seats, expiry, renewals), a restart
//! between issue and write-back, a 429 storm honoured on every worker, hostile replies, and the
//! two-replica etcd fleet. The guarantees are QLM's (README, "Using Keygen instead of QLM").

use std::collections::BTreeMap;
use std::time::Duration;

use keygate_e2e::envoy::keygen_patches;
use keygate_e2e::etcd::EtcdCluster;
use keygate_e2e::exactly_once::{
    assert_ledger_holds, assert_one_license_per_line, count, deliver_until_acked, family_message,
    field_written, keygen_issued, outbound_message, short_issuing_marks, Calls, SHORT_MARK,
};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault, is_ack};
use keygate_e2e::{json, Gateway, GatewayOptions, Response};
use keygate_standins::{
    family_item_id, keygen_expiry_after, Endpoint, Fault, FaultKind, KeygenLicense, Standins,
    DEMO_ITEM_ID, DEMO_ORDER_ID, ISSUING_MARK, KEYGEN_ANNUAL_DURATION_S, KEYGEN_POLICY_ANNUAL,
    KEYGEN_POLICY_PERPETUAL, REDUCTION_ITEM_ID, REDUCTION_ORDER_ID, RENEWAL_ITEM_ID,
    RENEWAL_ORDER_ID, SUBSCRIPTION_ITEM_ID, SUBSCRIPTION_ORDER_ID,
};

const STATE_FIELD: &str = "License_State__c";

fn keygen_options() -> GatewayOptions {
    let [no_products, keygen] = keygen_patches();
    GatewayOptions::default().patch(no_products).patch(keygen)
}

fn lifecycle_gateway() -> Gateway {
    Gateway::start(keygen_options().patch(json!({
        "lifecycle": {"revoke_statuses": ["Cancelled"], "reductions": true, "renewal_field": "Renews__c"},
        "salesforce": {"state_field": STATE_FIELD},
        "products": {"002-RENEW": {"policy": KEYGEN_POLICY_ANNUAL, "renewal": true}}
    })))
}

/// One notification for `order` with `status`.
fn message(order: &str, status: &str) -> String {
    outbound_message([(order, "00000000")]).replace(
        "<sf:Status>Activated</sf:Status>",
        &format!("<sf:Status>{status}</sf:Status>"),
    )
}

fn set_and_send(gw: &Gateway, order: &str, status: &str) -> Response {
    gw.standins.set_order_status(order, status);
    gw.post_webhook(message(order, status))
}

/// The one license Keygen holds for `item`.
fn license_of(standins: &Standins, item: &str) -> KeygenLicense {
    let issued = keygen_issued(standins);
    let keys = issued
        .get(item)
        .unwrap_or_else(|| panic!("no license for {item}: {issued:?}"));
    assert_eq!(keys.len(), 1, "{item}: {keys:?}");
    standins.keygen_licenses()[&keys[0]].clone()
}

#[test]
fn activate_cancel_reactivate_reduce_and_renew_each_reach_keygen_once() {
    let gw = lifecycle_gateway();

    // Activated: one license under the product's policy, three seats, the line in metadata.
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let license = license_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(license.policy, KEYGEN_POLICY_PERPETUAL);
    assert_eq!((license.suspended, license.max_machines), (false, Some(3)));
    // The order number as Salesforce's query gives it.
    assert_eq!(license.metadata["salesforceOrderNumber"], "00000114");
    assert_eq!(gw.standins.writebacks()[DEMO_ITEM_ID], license.key);
    let create = gw
        .standins
        .record()
        .into_iter()
        .find(|r| r.endpoint == Endpoint::KeygenCreate)
        .unwrap();
    assert_eq!(create.headers["content-type"], "application/vnd.api+json");
    assert_eq!(create.headers["accept"], "application/vnd.api+json");
    assert_eq!(create.status, 201);

    // Cancelled: suspended, once.
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Cancelled"), &gw);
    assert!(gw.standins.keygen_licenses()[&license.key].suspended);
    assert_eq!(
        field_written(&gw.standins, DEMO_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Revoked")
    );
    assert_ack_from(&gw.post_webhook(message(DEMO_ORDER_ID, "Cancelled")), &gw);
    assert_eq!(count(&gw.standins, Endpoint::KeygenSuspend), 1);

    // Activated again: the same license reinstated, never a new one.
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let same = license_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(same.key, license.key);
    assert!(!same.suspended);
    assert_eq!(count(&gw.standins, Endpoint::KeygenReinstate), 1);

    // A reduction order of one seat: maxMachines 3 → 2.
    assert_ack_from(&set_and_send(&gw, REDUCTION_ORDER_ID, "Activated"), &gw);
    assert_eq!(
        gw.standins.keygen_licenses()[&license.key].max_machines,
        Some(2)
    );
    assert_eq!(
        field_written(&gw.standins, REDUCTION_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Reduced to 2")
    );

    // A subscription and its renewal: the policy's year added once, across a redelivery.
    assert_ack_from(&set_and_send(&gw, SUBSCRIPTION_ORDER_ID, "Activated"), &gw);
    let subscription = license_of(&gw.standins, SUBSCRIPTION_ITEM_ID);
    assert_eq!(subscription.policy, KEYGEN_POLICY_ANNUAL);
    let expiry = subscription
        .expiry
        .clone()
        .expect("an annual license expires");
    assert_ack_from(&set_and_send(&gw, RENEWAL_ORDER_ID, "Activated"), &gw);
    assert_ack_from(
        &gw.post_webhook(message(RENEWAL_ORDER_ID, "Activated")),
        &gw,
    );
    let renewed = &gw.standins.keygen_licenses()[&subscription.key];
    assert_eq!(renewed.renewals, 1);
    assert_eq!(
        renewed.expiry,
        keygen_expiry_after(&expiry, KEYGEN_ANNUAL_DURATION_S)
    );
    assert_eq!(
        field_written(&gw.standins, RENEWAL_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Renewed")
    );
    assert!(!keygen_issued(&gw.standins).contains_key(RENEWAL_ITEM_ID));

    assert_eq!(gw.standins.keygen_licenses().len(), 2);
    for (counter, n) in [
        ("keygate_licenses_issued", 2),
        ("keygate_licenses_revoked", 1),
        ("keygate_licenses_restored", 1),
        ("keygate_licenses_reduced", 1),
        ("keygate_licenses_renewed", 1),
    ] {
        assert_eq!(gw.counter(counter), n, "{counter}");
    }
    assert_no_leaks(&gw);
}

#[test]
fn a_restart_between_issue_and_write_back_finds_the_license_by_its_metadata() {
    // Issuing marks that expire soon: the restarted Envoy waits out the first one's.
    let gw = Gateway::start(keygen_options().patch(short_issuing_marks()));
    gw.standins.refuse_writeback(&[DEMO_ITEM_ID]);
    let why = assert_server_fault(&gw.post_webhook(message(DEMO_ORDER_ID, "Activated")));
    assert!(why.contains("refused"), "{why}");
    let license = license_of(&gw.standins, DEMO_ITEM_ID);

    let gw = gw.restart_envoy();
    gw.standins.refuse_writeback(&[]);
    std::thread::sleep(SHORT_MARK);
    let mark = gw.standins.record().len();
    assert_ack_from(&gw.post_webhook(message(DEMO_ORDER_ID, "Activated")), &gw);
    let redelivery = Calls::of(&gw.standins.record()[mark..]);
    // The restarted Envoy forgot the line: Keygen is asked by metadata, which finds it.
    assert_eq!(
        (redelivery.license, redelivery.retrieve),
        (0, 1),
        "{redelivery}"
    );
    assert_eq!(license_of(&gw.standins, DEMO_ITEM_ID).key, license.key);
    assert_eq!(gw.standins.writebacks()[DEMO_ITEM_ID], license.key);
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
}

#[test]
fn a_429_storm_is_honoured_no_worker_calls_keygen_until_the_reset() {
    // One call at a time, so the throttled call is the last one that reaches Keygen; issuing
    // marks that expire soon, for the restarted Envoy.
    let gw = Gateway::start(
        keygen_options()
            .patch(short_issuing_marks())
            .patch(json!({"license_server": {"max_concurrency": 1}})),
    );
    assert!(
        gw.wait_for_log(
            "self-check: Salesforce and the license server are ready",
            Duration::from_secs(10)
        ),
        "{}",
        gw.log_tail(20)
    );
    // One Keygen call per hour-long window (the plugin waits at most 10 minutes).
    gw.standins.set_keygen_rate_limit(Some((1, 3600)));
    let lines: Vec<String> = (0..3).map(family_item_id).collect();
    let message = family_message(0..3);
    let why = assert_server_fault(&gw.post_webhook(&message));
    assert!(why.contains("rate-limiting this account until"), "{why}");
    let keygen_calls = |gw: &Gateway| {
        gw.standins
            .record()
            .iter()
            .filter(|r| r.endpoint.is_keygen())
            .map(|r| (r.endpoint, r.status))
            .collect::<Vec<_>>()
    };
    // The first line's lookup (shared data vouches for nothing), then its create: throttled.
    let throttled = [(Endpoint::KeygenList, 200), (Endpoint::KeygenCreate, 429)];
    assert_eq!(keygen_calls(&gw), throttled);

    // Redelivered, to whichever worker: a fault, and not one call to Keygen.
    for _ in 0..4 {
        let why = assert_server_fault(&gw.post_webhook(&message));
        assert!(why.contains("rate-limiting this account until"), "{why}");
    }
    assert_eq!(keygen_calls(&gw), throttled);
    assert_eq!(gw.counter("keygate_license_throttled"), 1);

    // Keygen lifts the limit; a new Envoy (its shared data empty) licenses the rest, once.
    gw.standins.set_keygen_rate_limit(None);
    let gw = gw.restart_envoy();
    deliver_until_acked(&[&gw], &message, Duration::from_secs(20));
    assert_one_license_per_line(&gw.standins, &lines);
    assert_no_leaks(&gw);
}

#[test]
fn hostile_keygen_replies_are_refused_never_written_back_and_then_recovered() {
    let gw = Gateway::start(keygen_options().patch(short_issuing_marks()));
    let cases = [
        (FaultKind::WrongContentType, "not JSON:API"),
        (FaultKind::Garbage, "not a Keygen license document"),
        (FaultKind::Oversize, "larger than"),
        // Envoy answers a reset upstream with its own 503: a failure, and the line in doubt.
        (
            FaultKind::IssueThenReset,
            "license server answered HTTP 503",
        ),
    ];
    let mut expected: BTreeMap<String, String> = BTreeMap::new();
    for (n, (kind, needle)) in cases.into_iter().enumerate() {
        gw.standins
            .inject_fault(Fault::new(Endpoint::KeygenCreate, kind))
            .unwrap();
        let message = family_message(n..n + 1);
        let why = assert_server_fault(&gw.post_webhook(&message));
        assert!(why.contains(needle), "{kind:?}: {why}");
        let line = family_item_id(n);
        // Salesforce holds the line's issuing mark, never a key from the hostile reply.
        let held = gw
            .standins
            .writebacks()
            .get(&line)
            .cloned()
            .unwrap_or_default();
        assert!(held.starts_with(ISSUING_MARK), "{kind:?}: {held}");
        // Redelivered once the faulted call's time is up: one license, whatever Keygen did.
        deliver_until_acked(&[&gw], &message, Duration::from_secs(60));
        expected.insert(line.clone(), String::new());
    }
    let lines: Vec<String> = expected.into_keys().collect();
    assert_one_license_per_line(&gw.standins, &lines);
    assert_no_leaks(&gw);
}

#[test]
fn a_two_replica_etcd_fleet_licenses_each_line_once_with_keygen() {
    let etcd = EtcdCluster::start(3);
    let a = Gateway::start(keygen_options().etcd(&etcd.client_ports()));
    let b = a.replica();
    let message = family_message(0..5);
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.post_webhook(&message));
        let tb = s.spawn(|| b.post_webhook(&message));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    assert!(is_ack(&ra) || is_ack(&rb), "{}\n{}", ra.text(), rb.text());
    for r in [&ra, &rb] {
        if !is_ack(r) {
            let why = assert_server_fault(r);
            assert!(why.contains("being processed by another request"), "{why}");
        }
    }
    let faults = deliver_until_acked(&[&b, &a], &message, Duration::from_secs(10));
    assert!(faults.is_empty(), "{faults:?}");
    let lines: Vec<String> = (0..5).map(family_item_id).collect();
    let keys = assert_one_license_per_line(&a.standins, &lines);
    // Durable ledger: each line one create, no lookup.
    let all = Calls::of(&a.standins.record());
    assert_eq!((all.license, all.retrieve), (5, 0), "{all}");
    assert_ledger_holds(&etcd, &keys);
    assert_no_leaks(&a);
    assert_no_leaks(&b);
}
