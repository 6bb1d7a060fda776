//! The order lifecycle through a real Envoy: cancel → revoke, reactivate → restore, a reduction
//! order, a renewal, each under the fault matrix (the license server failing mid-action, the
//! answer lost after the change was made, a redelivery, an Envoy restart). Every test asserts on
//! the SOAP reply, on the license stand-in's end state (each key's revoked flag, activations,
//! expiry) and on what Salesforce holds (keys and `License_State__c`).

use keygate_e2e::exactly_once::{count, field_written, outbound_message, settle};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault};
use keygate_e2e::{json, Gateway, GatewayOptions};
use keygate_standins::{
    Endpoint, Fault, FaultKind, KeyState, Standins, DEMO_ITEM_ID, DEMO_ORDER_ID, REDUCTION_ITEM_ID,
    REDUCTION_ORDER_ID, RENEWAL_ITEM_ID, RENEWAL_ORDER_ID, SUBSCRIPTION_ITEM_ID,
    SUBSCRIPTION_ORDER_ID,
};

const STATE_FIELD: &str = "License_State__c";

fn lifecycle_gateway() -> Gateway {
    Gateway::start(GatewayOptions::default().patch(json!({
        "lifecycle": {"revoke_statuses": ["Cancelled"], "reductions": true, "renewal_field": "Renews__c"},
        "salesforce": {"state_field": STATE_FIELD},
        "products": {"002-RENEW": {"renewal": true, "productid": 2, "majorversion": 3, "minorversion": 0,
                                   "args": {"is_expduration": "365"}}}
    })))
}

/// One notification for `order` with `status` (the Outbound Message carries the new Status).
fn message(order: &str, status: &str) -> String {
    outbound_message([(order, "00000000")]).replace(
        "<sf:Status>Activated</sf:Status>",
        &format!("<sf:Status>{status}</sf:Status>"),
    )
}

/// An admin sets the order's Status; Salesforce sends the Outbound Message.
fn set_and_send(gw: &Gateway, order: &str, status: &str) -> keygate_e2e::Response {
    gw.standins.set_order_status(order, status);
    gw.post_webhook(message(order, status))
}

/// The one key the license server issued for `item`, and its state there.
fn key_of(standins: &Standins, item: &str) -> (String, KeyState) {
    let issued = standins.issued();
    let keys = issued
        .get(item)
        .unwrap_or_else(|| panic!("no key for {item}: {issued:?}"));
    assert_eq!(keys.len(), 1, "{item}: {keys:?}");
    let key = keys[0].clone();
    let state = standins.keys()[&key].clone();
    (key, state)
}

#[test]
fn cancel_revokes_and_reactivation_restores_the_same_key() {
    let gw = lifecycle_gateway();
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (key, state) = key_of(&gw.standins, DEMO_ITEM_ID);
    assert!(!state.revoked);
    assert_eq!(
        field_written(&gw.standins, DEMO_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Issued")
    );

    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Cancelled"), &gw);
    assert!(
        gw.standins.keys()[&key].revoked,
        "revoked at the license server"
    );
    assert_eq!(
        field_written(&gw.standins, DEMO_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Revoked")
    );
    assert_eq!(
        gw.standins.writebacks()[DEMO_ITEM_ID],
        key,
        "the key stays in Salesforce"
    );
    assert_eq!(gw.counter("keygate_licenses_revoked"), 1);
    // A redelivery of the cancellation repeats nothing.
    assert_ack_from(&gw.post_webhook(message(DEMO_ORDER_ID, "Cancelled")), &gw);
    assert_eq!(count(&gw.standins, Endpoint::Revoke), 1);

    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (same, state) = key_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(same, key, "the same key, never a new one");
    assert!(!state.revoked, "restored");
    assert_eq!(
        field_written(&gw.standins, DEMO_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Restored")
    );
    assert_eq!(gw.counter("keygate_licenses_restored"), 1);
    assert_eq!(count(&gw.standins, Endpoint::License), 1);
    assert_no_leaks(&gw);
}

#[test]
fn after_an_envoy_restart_cancel_and_reactivation_still_find_the_key() {
    let gw = lifecycle_gateway();
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (key, _) = key_of(&gw.standins, DEMO_ITEM_ID);
    let gw = gw.restart_envoy();
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Cancelled"), &gw);
    assert!(gw.standins.keys()[&key].revoked);
    let gw = gw.restart_envoy();
    // Shared data is gone: Salesforce's state field says the key is revoked.
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (same, state) = key_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(same, key);
    assert!(!state.revoked);
    assert_eq!(count(&gw.standins, Endpoint::License), 1);
}

#[test]
fn a_reduction_order_lowers_the_original_key() {
    let gw = lifecycle_gateway();
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (key, state) = key_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(state.quantity, 3);
    assert_ack_from(
        &gw.post_webhook(message(REDUCTION_ORDER_ID, "Activated")),
        &gw,
    );
    assert_eq!(gw.standins.keys()[&key].quantity, 2, "3 − 1 activations");
    assert_eq!(gw.standins.writebacks()[REDUCTION_ITEM_ID], key);
    assert_eq!(
        field_written(&gw.standins, REDUCTION_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Reduced to 2")
    );
    assert_eq!(gw.counter("keygate_licenses_reduced"), 1);
    // Redelivered after a restart: Salesforce holds the reduction line's key; nothing repeats.
    let gw = gw.restart_envoy();
    assert_ack_from(
        &gw.post_webhook(message(REDUCTION_ORDER_ID, "Activated")),
        &gw,
    );
    assert_eq!(count(&gw.standins, Endpoint::Update), 1);
    assert!(
        !gw.standins.issued().contains_key(REDUCTION_ITEM_ID),
        "no key of its own"
    );
}

#[test]
fn a_renewal_adds_its_time_once_even_when_the_answer_is_lost() {
    let gw = lifecycle_gateway();
    assert_ack_from(
        &gw.post_webhook(message(SUBSCRIPTION_ORDER_ID, "Activated")),
        &gw,
    );
    let (key, state) = key_of(&gw.standins, SUBSCRIPTION_ITEM_ID);
    assert_eq!(state.expiry_days, Some(365));

    // The license server renews, then the connection drops (Envoy answers the call 503): for
    // the plugin the outcome is unknown.
    gw.standins
        .inject_fault(Fault::new(Endpoint::Renew, FaultKind::IssueThenReset))
        .unwrap();
    let why = assert_server_fault(&gw.post_webhook(message(RENEWAL_ORDER_ID, "Activated")));
    assert!(why.contains("RenewSubscriptionHttp"), "{why}");
    settle(&gw.standins, 1);
    assert_eq!(gw.standins.keys()[&key].expiry_days, Some(730));

    // Salesforce redelivers after an Envoy restart.
    let gw = gw.restart_envoy();
    // Shared data is gone; the mark written to Salesforce before the call, and the expiry,
    // show the renewal was applied.
    assert_ack_from(
        &gw.post_webhook(message(RENEWAL_ORDER_ID, "Activated")),
        &gw,
    );
    assert_eq!(count(&gw.standins, Endpoint::Renew), 1, "renewed once");
    assert_eq!(gw.standins.keys()[&key].expiry_days, Some(730));
    assert_eq!(gw.standins.writebacks()[RENEWAL_ITEM_ID], key);
    assert_eq!(
        field_written(&gw.standins, RENEWAL_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Renewed +365 d")
    );
    assert!(!gw.standins.issued().contains_key(RENEWAL_ITEM_ID));
}

#[test]
fn a_reduction_and_a_restore_whose_call_failed_are_finished_by_the_redelivery() {
    let gw = lifecycle_gateway();
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"), &gw);
    let (key, _) = key_of(&gw.standins, DEMO_ITEM_ID);

    // The reduction: the license server fails once, then Salesforce redelivers.
    gw.standins
        .inject_fault(Fault::new(Endpoint::Update, FaultKind::Status))
        .unwrap();
    let why = assert_server_fault(&gw.post_webhook(message(REDUCTION_ORDER_ID, "Activated")));
    assert!(why.contains("UpdateLicenseHttp"), "{why}");
    assert_eq!(
        gw.standins.keys()[&key].quantity,
        3,
        "not acked, not reduced"
    );
    assert_ack_from(
        &gw.post_webhook(message(REDUCTION_ORDER_ID, "Activated")),
        &gw,
    );
    assert_eq!(gw.standins.keys()[&key].quantity, 2);

    // Cancel, then a reactivation whose restore is answered too late to count; the
    // redelivery restores (setting the revoked flag again does no harm).
    assert_ack_from(&set_and_send(&gw, DEMO_ORDER_ID, "Cancelled"), &gw);
    gw.standins
        .inject_fault(Fault::new(Endpoint::Revoke, FaultKind::IssueThenReset))
        .unwrap();
    assert_server_fault(&set_and_send(&gw, DEMO_ORDER_ID, "Activated"));
    settle(&gw.standins, 1);
    assert_ack_from(&gw.post_webhook(message(DEMO_ORDER_ID, "Activated")), &gw);
    let (same, state) = key_of(&gw.standins, DEMO_ITEM_ID);
    assert_eq!(same, key);
    assert!(!state.revoked);
    assert_eq!(state.quantity, 2, "the reduction stays");
    assert_eq!(
        field_written(&gw.standins, DEMO_ITEM_ID, STATE_FIELD).as_deref(),
        Some("Restored")
    );
    assert_eq!(count(&gw.standins, Endpoint::License), 1, "never a new key");
}
