//! The order lifecycle (`lifecycle`): a cancelled order's keys are revoked, a reactivated order
//! gets the same keys back, a reduction order lowers the reduced line's key, a renewal line
//! renews the renewed line's key — each once, across redeliveries, restarts and failures.
//! Every test asserts on the license server's end state (revoked flag, activations, expiry) and
//! on what Salesforce holds (keys and state field), not only on the calls.
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
use common::orders::*;
use common::world::*;

use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::metrics::Metric;
use keygate_core::store::MemStore;
use serde_json::{json, Value};

fn lifecycle_config() -> Rc<Config> {
    config(json!({
        "lifecycle": {"revoke_statuses": ["Cancelled"], "reductions": true, "renewal_field": "Renews__c"},
        "salesforce": {"state_field": "License_State__c"},
        "products": {"002-RENEW": {"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                                   "args": {"is_expduration": "365"}}}
    }))
}

/// The one key the license server issued for `item`.
fn key_of(world: &World, item: &str) -> String {
    assert_eq!(
        world.keys_issued[item].len(),
        1,
        "{item}: {:?}",
        world.keys_issued
    );
    world.keys_issued[item][0].clone()
}

/// One delivery of `body` on a replica (or an Envoy after a restart): empty shared data.
fn deliver_fresh(cfg: &Rc<Config>, world: &mut World, body: &[u8]) -> Run {
    deliver(cfg, world, &mut MemStore::new(), body)
}

/// The lifecycle world with the subscription licensed (on `store`); its key.
fn subscribed(cfg: &Rc<Config>, store: &mut MemStore) -> (World, String) {
    let mut world = lifecycle_world(-1.0, 2.0);
    assert_ack(&deliver(
        cfg,
        &mut world,
        store,
        &message(SUBSCRIPTION, "Activated"),
    ));
    let key = key_of(&world, SUBSCRIPTION_LINE);
    assert_eq!(world.key_state[&key].expiry_days, 365);
    (world, key)
}

#[test]
fn a_cancelled_order_revokes_its_key_once_and_salesforce_shows_it() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    let key = key_of(&world, ITEM);
    assert_eq!(world.written_state[ITEM], "Issued");

    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert!(
        world.key_state[&key].revoked,
        "the key is revoked at the license server"
    );
    assert_eq!(world.forms("revoke")[0]["is_avkey"], key);
    assert_eq!(world.forms("revoke")[0]["is_revoke"], "true");
    assert_eq!(run.counts[&Metric::LicensesRevoked], 1);
    assert_eq!(world.written_state[ITEM], "Revoked");
    assert_eq!(world.written[ITEM], key, "the keys stay in Salesforce");

    // Salesforce redelivers (the ack was lost): nothing is repeated.
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(world.count("revoke"), 1);
    assert_eq!(world.count("license"), 1, "never a new key");
}

#[test]
fn after_a_restart_a_cancellation_takes_the_keys_from_salesforce_or_a_lookup() {
    for writeback in [true, false] {
        let patch = if writeback {
            json!({})
        } else {
            json!({"salesforce": {"writeback_field": null}})
        };
        let mut base: Value = serde_json::from_str(&common::patched_full(json!({
            "lifecycle": {"revoke_statuses": ["Cancelled"]},
            "salesforce": {"state_field": "License_State__c"}
        })))
        .unwrap();
        common::merge(&mut base, patch);
        let cfg = Rc::new(Config::from_json(base.to_string().as_bytes(), &env).unwrap());
        let mut world = demo_world();
        assert_ack(&deliver_fresh(&cfg, &mut world, ONE));
        let key = key_of(&world, ITEM);
        set_status(&mut world, ORDER, "Cancelled");
        // Envoy restarted: shared data is empty.
        let run = deliver_fresh(&cfg, &mut world, &message(ORDER, "Cancelled"));
        assert_ack(&run);
        assert!(world.key_state[&key].revoked, "write-back {writeback}");
        assert_eq!(
            world.count("retrieve"),
            usize::from(!writeback) + 1,
            "write-back {writeback}"
        );
        assert_eq!(world.count("revoke"), 1);
    }
}

#[test]
fn a_reactivated_order_gets_the_same_key_back_and_never_a_new_one() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    let key = key_of(&world, ITEM);
    set_status(&mut world, ORDER, "Cancelled");
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(ORDER, "Cancelled"),
    ));
    assert!(world.key_state[&key].revoked);

    set_status(&mut world, ORDER, "Activated");
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_ack(&run);
    assert!(!world.key_state[&key].revoked, "restored");
    assert_eq!(world.forms("revoke")[1]["is_revoke"], "false");
    assert_eq!(run.counts[&Metric::LicensesRestored], 1);
    assert_eq!(world.written_state[ITEM], "Restored");
    assert_eq!(world.count("license"), 1, "the same key, no new one");
    key_of(&world, ITEM);

    // A redelivery of the reactivation changes nothing.
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    assert_eq!(world.count("revoke"), 2);
    assert_eq!(world.count("license"), 1);
}

#[test]
fn a_reactivation_after_a_restart_restores_from_the_state_salesforce_holds() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    assert_ack(&deliver_fresh(&cfg, &mut world, ONE));
    let key = key_of(&world, ITEM);
    set_status(&mut world, ORDER, "Cancelled");
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(ORDER, "Cancelled"),
    ));
    set_status(&mut world, ORDER, "Activated");
    // A fresh ledger: only Salesforce's state field says the key was revoked.
    let run = deliver_fresh(&cfg, &mut world, ONE);
    assert_ack(&run);
    assert!(!world.key_state[&key].revoked);
    assert_eq!(world.count("license"), 1);
    assert_eq!(world.written_state[ITEM], "Restored");
}

#[test]
fn a_cancelled_order_that_was_never_licensed_is_nothing_to_do() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver_fresh(&cfg, &mut world, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(world.count("retrieve"), 1, "looked up");
    assert_eq!(world.count("revoke") + world.count("license"), 0);
    assert!(world.written_state.is_empty());
}

#[test]
fn a_status_that_is_neither_activated_nor_a_revoke_status_changes_nothing() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    set_status(&mut world, ORDER, "Draft");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Draft"));
    assert_ack(&run);
    assert_eq!(world.count("revoke"), 0);
    assert!(world.key_state.values().all(|k| !k.revoked));
}

#[test]
fn a_reduction_lowers_the_original_key_whichever_sign_salesforce_uses() {
    for reduced in [-1.0, 1.0] {
        let cfg = lifecycle_config();
        let mut world = lifecycle_world(reduced, 2.0);
        let mut store = MemStore::new();
        assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
        let key = key_of(&world, ITEM);
        assert_eq!(world.key_state[&key].quantity, 3);

        let run = deliver(
            &cfg,
            &mut world,
            &mut store,
            &message(REDUCTION, "Activated"),
        );
        assert_ack(&run);
        assert_eq!(
            world.key_state[&key].quantity, 2,
            "reduced by 1 (sign {reduced})"
        );
        assert_eq!(world.forms("update")[0]["is_quantity"], "2");
        assert_eq!(run.counts[&Metric::LicensesReduced], 1);
        assert_eq!(world.written_state[REDUCTION_LINE], "Reduced to 2");
        assert_eq!(world.written[REDUCTION_LINE], key);
        assert_eq!(
            world.count("license"),
            1,
            "a reduction line gets no key of its own"
        );

        // Redelivered: Salesforce holds the reduction line's keys, so nothing is repeated.
        assert_ack(&deliver_fresh(
            &cfg,
            &mut world,
            &message(REDUCTION, "Activated"),
        ));
        assert_eq!(world.count("update"), 1);
    }
}

#[test]
fn a_reduction_to_zero_revokes_the_key() {
    let cfg = lifecycle_config();
    let mut world = lifecycle_world(-3.0, 0.0);
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    let key = key_of(&world, ITEM);
    let run = deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(REDUCTION, "Activated"),
    );
    assert_ack(&run);
    assert!(world.key_state[&key].revoked);
    assert_eq!(world.count("update"), 0);
    assert_eq!(run.counts[&Metric::LicensesRevoked], 1);
    assert_eq!(world.written_state[REDUCTION_LINE], "Reduced to 0");
}

#[test]
fn a_renewal_line_renews_the_key_it_names_exactly_once() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);

    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert_ack(&run);
    assert_eq!(world.key_state[&key].expiry_days, 730);
    assert_eq!(world.forms("renew")[0]["is_avkey"], key);
    assert_eq!(world.forms("renew")[0]["is_expduration"], "365");
    assert_eq!(run.counts[&Metric::LicensesRenewed], 1);
    assert_eq!(world.written_state[RENEWAL_LINE], "Renewed +365 d");
    assert_eq!(world.written[RENEWAL_LINE], key);
    assert!(
        !world.keys_issued.contains_key(RENEWAL_LINE),
        "no key for the renewal line"
    );

    // Redelivered, also after a restart: no second renewal.
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(RENEWAL, "Activated"),
    ));
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(RENEWAL, "Activated"),
    ));
    assert_eq!(world.count("renew"), 1);
    assert_eq!(world.key_state[&key].expiry_days, 730);
}

#[test]
fn a_renewal_whose_answer_was_lost_is_not_applied_twice() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);

    // The renewal is applied, then the connection resets: the outcome is unknown.
    world.change_then_fail.push_back(reset());
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert!(
        is_fault(&run.reply, 500, "outcome unknown"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.key_state[&key].expiry_days, 730);

    // Redelivered once the call's time is up: the expiry moved, so it was applied.
    let later = T + 120_000;
    let run = deliver_at(
        &cfg,
        &mut world,
        &mut store,
        &message(RENEWAL, "Activated"),
        later,
        0,
    );
    assert_ack(&run);
    assert_eq!(world.count("renew"), 1, "not renewed again");
    assert_eq!(world.key_state[&key].expiry_days, 730);
    assert_eq!(world.written_state[RENEWAL_LINE], "Renewed +365 d");
}

#[test]
fn a_renewal_that_never_reached_the_server_is_sent_again() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);

    world.fail_next("renew", reset());
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert!(!run.reply.is_ack());
    assert_eq!(world.key_state[&key].expiry_days, 365, "not applied");

    let later = T + 120_000;
    let run = deliver_at(
        &cfg,
        &mut world,
        &mut store,
        &message(RENEWAL, "Activated"),
        later,
        0,
    );
    assert_ack(&run);
    assert_eq!(world.count("renew"), 2);
    assert_eq!(
        world.key_state[&key].expiry_days, 730,
        "applied once in all"
    );
}

#[test]
fn a_license_server_failing_mid_revoke_is_finished_by_the_redelivery() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, SEVERAL));
    set_status(&mut world, "8015Y000001MuLtQAK", "Cancelled");
    let cancel = message("8015Y000001MuLtQAK", "Cancelled");
    world.fail_next("revoke", status(500, "Server Error"));
    let run = deliver(&cfg, &mut world, &mut store, &cancel);
    assert!(
        is_fault(&run.reply, 500, "RevokeLicenseHttp"),
        "{}",
        run.reply.body
    );
    let revoked = world.key_state.values().filter(|k| k.revoked).count();
    assert_eq!(
        revoked, 1,
        "one of the two mapped lines revoked before the redelivery"
    );

    let run = deliver(&cfg, &mut world, &mut store, &cancel);
    assert_ack(&run);
    for item in ["8025Y000001MuL1QAK", "8025Y000001MuL2QAK"] {
        assert!(world.key_state[&key_of(&world, item)].revoked, "{item}");
        assert_eq!(world.written_state[item], "Revoked");
    }
    assert_eq!(
        world.count("revoke"),
        3,
        "the revoked line is not revoked again"
    );
    assert!(
        !world.key_state[&key_of(&world, ITEM)].revoked,
        "another order's key is untouched"
    );
}

#[test]
fn a_disabled_lifecycle_method_faults_naming_the_server_property() {
    let cfg = lifecycle_config();
    let mut world = lifecycle_world(-1.0, 2.0);
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    world.lifecycle_disabled = true;
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert!(
        is_fault(&run.reply, 500, "enableRevokeLicense"),
        "{}",
        run.reply.body
    );
    set_status(&mut world, ORDER, "Activated");
    let run = deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(REDUCTION, "Activated"),
    );
    assert!(
        is_fault(&run.reply, 500, "enableUpgradeLicense"),
        "{}",
        run.reply.body
    );
    assert!(world
        .key_state
        .values()
        .all(|k| !k.revoked && k.quantity == 3));
}

#[test]
fn a_key_the_license_server_does_not_know_is_skipped_for_good() {
    let cfg = lifecycle_config();
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    world.key_state.clear(); // deleted at the license server
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(run.counts[&Metric::LinesSkippedUnknownKey], 1);
    assert!(
        run.logs
            .iter()
            .any(|l| l.contains("unknown to the license server")),
        "{:?}",
        run.logs
    );
}

#[test]
fn without_lifecycle_a_cancelled_order_is_ignored_as_before() {
    let cfg = config(json!({}));
    let mut world = demo_world();
    let mut store = MemStore::new();
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(
        world.count("revoke") + world.count("query"),
        1,
        "no call but the first query"
    );
}

/// The lifecycle on the fleet's etcd ledger, without a write-back field: only etcd remembers.
fn fleet_config() -> Rc<Config> {
    config(json!({
        "ledger": {"backend": "etcd", "etcd": {"cluster": "etcd", "authority": "127.0.0.1:2379"}},
        "lifecycle": {"revoke_statuses": ["Cancelled"], "renewal_field": "Renews__c"},
        "salesforce": {"writeback_field": null},
        "products": {"002-RENEW": {"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                                   "args": {"is_expduration": "365"}}}
    }))
}

#[test]
fn across_replicas_on_etcd_a_renewal_with_a_lost_answer_is_applied_once() {
    let cfg = fleet_config();
    let (mut world, key) = subscribed(&cfg, &mut MemStore::new());

    // Replica A renews; the answer is lost.
    world.change_then_fail.push_back(reset());
    let run = deliver_fresh(&cfg, &mut world, &message(RENEWAL, "Activated"));
    assert!(!run.reply.is_ack());
    // Replica B gets the redelivery: etcd's pending mark and the expiry settle it.
    let later = T + 120_000;
    let run = deliver_at(
        &cfg,
        &mut world,
        &mut MemStore::new(),
        &message(RENEWAL, "Activated"),
        later,
        0,
    );
    assert_ack(&run);
    // Replica C gets one more redelivery: etcd says done.
    assert_ack(&deliver_at(
        &cfg,
        &mut world,
        &mut MemStore::new(),
        &message(RENEWAL, "Activated"),
        later,
        0,
    ));
    assert_eq!(world.count("renew"), 1);
    assert_eq!(world.key_state[&key].expiry_days, 730);
}

#[test]
fn across_replicas_on_etcd_cancel_and_reactivate_keep_one_key() {
    let cfg = fleet_config();
    let mut world = demo_world();
    assert_ack(&deliver_fresh(&cfg, &mut world, ONE));
    let key = key_of(&world, ITEM);
    set_status(&mut world, ORDER, "Cancelled");
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(ORDER, "Cancelled"),
    ));
    assert!(world.key_state[&key].revoked);
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(ORDER, "Cancelled"),
    ));
    assert_eq!(
        world.count("revoke"),
        1,
        "the second replica knows from etcd"
    );
    set_status(&mut world, ORDER, "Activated");
    assert_ack(&deliver_fresh(&cfg, &mut world, ONE));
    assert!(!world.key_state[&key].revoked);
    assert_eq!(world.count("license"), 1);
    assert_eq!(world.count("retrieve"), 0, "etcd knew every key");
}

#[test]
fn a_renewal_whose_answer_was_lost_before_a_restart_is_not_applied_twice() {
    let cfg = lifecycle_config();
    let (mut world, key) = subscribed(&cfg, &mut MemStore::new());

    world.change_then_fail.push_back(reset());
    let run = deliver_fresh(&cfg, &mut world, &message(RENEWAL, "Activated"));
    assert!(!run.reply.is_ack());
    // Before the call, Salesforce got the mark: the expiry the key had.
    assert_eq!(
        world.written_state[RENEWAL_LINE],
        format!(
            "Renewing; expiry before: {}",
            common::world::expiry_date(365)
        )
    );
    let renew_at = world.calls.iter().position(|(e, _)| e == "renew").unwrap();
    let mark_at = world
        .calls
        .iter()
        .rposition(|(e, _)| e == "composite")
        .unwrap();
    assert!(
        mark_at < renew_at,
        "the mark is written before the renewal is sent"
    );

    // Envoy restarted (shared data gone), then Salesforce redelivers.
    let run = deliver_fresh(&cfg, &mut world, &message(RENEWAL, "Activated"));
    assert_ack(&run);
    assert_eq!(
        world.count("renew"),
        1,
        "the mark and the expiry show it was applied"
    );
    assert_eq!(world.key_state[&key].expiry_days, 730);
    assert_eq!(world.written_state[RENEWAL_LINE], "Renewed +365 d");
}

#[test]
fn a_renewal_whose_mark_salesforce_refused_is_not_sent() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);
    world.refuse_writeback.push(RENEWAL_LINE.to_owned());
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert!(
        is_fault(&run.reply, 500, "mark failed"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("renew"), 0);
    world.refuse_writeback.clear();
    // The redelivery does not wait for a call that never ran.
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert_ack(&run);
    assert_eq!(world.key_state[&key].expiry_days, 730);
}

#[test]
fn renewals_need_a_durable_mark() {
    let renewal = json!({"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                         "args": {"is_expduration": "365"}});
    let try_config = |patch: Value| {
        Config::from_json(common::patched_full(patch).as_bytes(), &env)
            .err()
            .map(|e| e.to_string())
    };
    let without_state = try_config(json!({
        "lifecycle": {"renewal_field": "Renews__c"}, "products": {"002-RENEW": renewal.clone()}
    }));
    assert!(
        without_state
            .as_deref()
            .is_some_and(|e| e.contains("salesforce.state_field")),
        "{without_state:?}"
    );
    let with_etcd = try_config(json!({
        "lifecycle": {"renewal_field": "Renews__c"}, "products": {"002-RENEW": renewal},
        "ledger": {"backend": "etcd", "etcd": {"cluster": "etcd", "authority": "127.0.0.1:2379"}}
    }));
    assert_eq!(with_etcd, None);
}

#[test]
fn without_a_write_back_field_the_state_field_alone_says_a_renewal_is_done() {
    let cfg = config(json!({
        "lifecycle": {"renewal_field": "Renews__c"},
        "salesforce": {"writeback_field": null, "state_field": "License_State__c"},
        "products": {"002-RENEW": {"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                                   "args": {"is_expduration": "365"}}}
    }));
    let (mut world, key) = subscribed(&cfg, &mut MemStore::new());
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(RENEWAL, "Activated"),
    ));
    assert_eq!(world.written_state[RENEWAL_LINE], "Renewed +365 d");
    assert!(!world.written.contains_key(RENEWAL_LINE));
    // After a restart only Salesforce's state field remembers the renewal.
    assert_ack(&deliver_fresh(
        &cfg,
        &mut world,
        &message(RENEWAL, "Activated"),
    ));
    assert_eq!(world.count("renew"), 1);
    assert_eq!(world.key_state[&key].expiry_days, 730);
}
