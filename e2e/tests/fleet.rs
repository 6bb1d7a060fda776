//! A fleet: two Envoy processes (replicas) in front of the same stand-ins, sharing the ledger on a
//! real 3-member etcd cluster on loopback (`ledger.backend: "etcd"`). Salesforce may deliver a
//! message to either replica, and redelivers every fault; in every case each order line gets
//! exactly one key, and no message is acked before its lines are licensed.

use keygate_e2e::etcd::EtcdCluster;
use keygate_e2e::exactly_once::{
    assert_ledger_holds, assert_one_key_per_line, deliver_until_acked, family_message, Calls,
};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault, is_ack};
use keygate_e2e::{json, Gateway, GatewayOptions};
use keygate_standins::family_item_id;
use std::time::Duration;

fn fleet(etcd: &EtcdCluster) -> (Gateway, Gateway) {
    let a = Gateway::start(GatewayOptions::default().etcd(&etcd.client_ports()));
    let b = a.replica();
    (a, b)
}

fn lines(orders: std::ops::Range<usize>) -> Vec<String> {
    orders.map(family_item_id).collect()
}

#[test]
fn the_same_message_at_both_replicas_at_once_is_licensed_once() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = fleet(&etcd);
    let message = family_message(0..5);
    let (ra, rb) = std::thread::scope(|s| {
        let ta = s.spawn(|| a.post_webhook(&message));
        let tb = s.spawn(|| b.post_webhook(&message));
        (ta.join().unwrap(), tb.join().unwrap())
    });
    // One replica holds the orders; the other is told to retry, or (if the first was already
    // done) finds every line written back.
    assert!(is_ack(&ra) || is_ack(&rb), "{}\n{}", ra.text(), rb.text());
    for r in [&ra, &rb] {
        if !is_ack(r) {
            let why = assert_server_fault(r);
            assert!(why.contains("being processed by another request"), "{why}");
        }
    }
    let faults = deliver_until_acked(&[&b, &a], &message, Duration::from_secs(10));
    assert!(faults.is_empty(), "{faults:?}");
    let keys = assert_one_key_per_line(&a.standins, &lines(0..5));
    // The ledger is durable: no line needed a lookup, each one license call.
    assert_eq!(Calls::of(&a.standins.record()).license, 5);
    assert_eq!(Calls::of(&a.standins.record()).retrieve, 0);
    assert_ledger_holds(&etcd, &keys);
    assert_no_leaks(&a);
    assert_no_leaks(&b);
}

#[test]
fn a_replica_restarted_between_issue_and_write_back_leaves_only_the_write_back_to_the_other() {
    let etcd = EtcdCluster::start(3);
    let (a, b) = fleet(&etcd);
    let refused = family_item_id(1);
    a.standins.refuse_writeback(&[&refused]);
    let message = family_message(0..3);
    let why = assert_server_fault(&a.post_webhook(&message));
    assert!(why.contains("refused"), "{why}");

    // A deploy restarts replica A; Salesforce's redelivery reaches B.
    let a = a.restart_envoy();
    a.standins.refuse_writeback(&[]);
    let mark = a.standins.record().len();
    assert_ack_from(&b.post_webhook(&message), &b);
    let redelivery = Calls::of(&a.standins.record()[mark..]);
    // Everything the license server did is in etcd: no issue, no lookup, one write-back.
    assert_eq!(
        (
            redelivery.license,
            redelivery.retrieve,
            redelivery.composite
        ),
        (0, 0, 1),
        "{redelivery}"
    );
    let keys = assert_one_key_per_line(&a.standins, &lines(0..3));
    assert_ledger_holds(&etcd, &keys);
}

#[test]
fn an_etcd_member_killed_mid_run_loses_nothing() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = fleet(&etcd);
    let messages: Vec<String> = (0..8).map(|n| family_message(n..n + 1)).collect();
    let (killed_tx, killed_rx) = std::sync::mpsc::channel();
    let faults = std::thread::scope(|s| {
        let sender = s.spawn(|| {
            let mut faults = Vec::new();
            for (i, m) in messages.iter().enumerate() {
                if i == 3 {
                    // Three acked; the member dies while the next ones are under way.
                    killed_tx.send(()).unwrap();
                }
                let order = if i % 2 == 0 { [&a, &b] } else { [&b, &a] };
                faults.extend(deliver_until_acked(&order, m, Duration::from_secs(15)));
            }
            faults
        });
        killed_rx.recv().unwrap();
        etcd.kill(0);
        sender.join().unwrap()
    });
    // A call in flight to the killed member may fault its message; the redelivery licenses it.
    for why in &faults {
        assert!(why.contains("etcd"), "{why}");
    }
    // Once Envoy's health check has taken the member out, two members serve as three did.
    std::thread::sleep(Duration::from_millis(2500));
    for n in 8..10 {
        let faults = deliver_until_acked(&[&a, &b], &family_message(n..n + 1), Duration::ZERO);
        assert!(faults.is_empty(), "{faults:?}");
    }
    let keys = assert_one_key_per_line(&a.standins, &lines(0..10));
    assert_ledger_holds(&etcd, &keys);
}

#[test]
fn with_all_of_etcd_down_messages_fault_untouched_then_are_licensed_once_it_is_back() {
    let mut etcd = EtcdCluster::start(3);
    let (a, b) = fleet(&etcd);
    etcd.kill_all();
    let message = family_message(10..12);
    for gw in [&a, &b] {
        let why = assert_server_fault(&gw.post_webhook(&message));
        assert!(why.contains("could not claim the orders in etcd"), "{why}");
    }
    // Without the claim nothing was asked of Salesforce or the license server.
    assert_eq!(
        Calls::of(&a.standins.record()),
        Calls::default(),
        "calls made without the ledger"
    );
    assert!(a.counter("keygate_callouts_failed_ledger") >= 1);

    etcd.restart_all();
    // Envoy's health checks see the members again within a second or two.
    deliver_until_acked(&[&b, &a], &message, Duration::from_secs(20));
    let keys = assert_one_key_per_line(&a.standins, &lines(10..12));
    assert_ledger_holds(&etcd, &keys);
}

#[test]
fn with_etcd_authentication_each_replica_logs_in_and_the_password_never_shows() {
    const PASSWORD: &str = "etcd-ledger-password";
    let mut etcd = EtcdCluster::start_with(3, true);
    etcd.enable_auth("etcd-root-password", "keygate", PASSWORD, "keygate/");
    let options = GatewayOptions::default()
        .etcd(&etcd.client_ports())
        .patch(json!({"ledger": {"etcd": {"user_env": "KEYGATE_ETCD_USER",
                                          "password_env": "KEYGATE_ETCD_PASSWORD"}}}))
        .env("KEYGATE_ETCD_USER", "keygate")
        .env("KEYGATE_ETCD_PASSWORD", PASSWORD);
    let a = Gateway::start(options);
    let b = a.replica();
    // The tokens are JWTs, good on every member Envoy picks.
    for n in 20..24 {
        let gw = if n % 2 == 0 { &a } else { &b };
        assert_ack_from(&gw.post_webhook(family_message(n..n + 1)), gw);
    }
    let keys = assert_one_key_per_line(&a.standins, &lines(20..24));
    assert_ledger_holds(&etcd, &keys);
    for gw in [&a, &b] {
        assert!(
            !gw.envoy_log().contains(PASSWORD),
            "the etcd password is in a log"
        );
        assert_no_leaks(gw);
    }

    // A wrong password: a clear fault, nothing called.
    let c = Gateway::start(
        GatewayOptions::default()
            .etcd(&etcd.client_ports())
            .patch(json!({"ledger": {"etcd": {"user_env": "KEYGATE_ETCD_USER",
                                              "password_env": "KEYGATE_ETCD_PASSWORD"}}}))
            .env("KEYGATE_ETCD_USER", "keygate")
            .env("KEYGATE_ETCD_PASSWORD", "not-the-password"),
    );
    let why = assert_server_fault(&c.post_webhook(family_message(30..31)));
    assert!(why.contains("could not claim the orders in etcd"), "{why}");
    assert!(c.envoy_log().contains("check the etcd user and password"));
    assert_eq!(Calls::of(&c.standins.record()), Calls::default());
}
