//! Keygen as the license server (`license_server.kind: "keygen"`): its configuration, the
//! requests keygate sends, and the whole flow against a Keygen that keeps its licenses' end state
//! (`common::keygen_model`): one license per line across redeliveries, restarts and lost
//! answers; cancel, reactivate, reduce and renew, each once; a throttled account left alone until
//! Keygen says; failures that name what to fix and never the token.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;
use common::keygen_model::{json_reply, keygen_json, ANNUAL, PERPETUAL, TOKEN};
use common::orders::*;
use common::patched_full;
use common::world::*;

use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::Response;
use keygate_core::metrics::Metric;
use keygate_core::store::MemStore;
use serde_json::{json, Value};

fn keygen_config(extra: Value) -> Rc<Config> {
    Rc::new(Config::from_json(keygen_json(extra).as_bytes(), &env).unwrap())
}

fn refusal(extra: Value) -> String {
    Config::from_json(keygen_json(extra).as_bytes(), &env)
        .unwrap_err()
        .0
}

/// With the lifecycle on (and the state field that renewals need).
fn lifecycle_config() -> Rc<Config> {
    keygen_config(json!({
        "lifecycle": {"revoke_statuses": ["Cancelled"], "reductions": true, "renewal_field": "Renews__c"},
        "salesforce": {"state_field": "License_State__c"},
        "products": {"002-RENEW": {"policy": ANNUAL, "renewal": true}}
    }))
}

/// Calls to Keygen of one kind: `POST /licenses` is "create", an action its name, and so on.
fn calls(world: &World, what: &str) -> usize {
    world
        .sent
        .iter()
        .filter(|c| c.path.starts_with("/v1/accounts/"))
        .filter(|c| {
            let path = c.path.split('?').next().unwrap();
            match what {
                "create" => c.method == "POST" && path.ends_with("/licenses"),
                "lookup" => c.method == "GET" && path.ends_with("/licenses"),
                "read" => c.method == "GET" && path.contains("/licenses/"),
                "patch" => c.method == "PATCH" && path.contains("/licenses/"),
                action => path.ends_with(&format!("/actions/{action}")),
            }
        })
        .count()
}

#[test]
fn keygen_is_configured_with_an_account_a_token_and_policies() {
    let cfg = keygen_config(json!({}));
    let issuing = cfg.issuing.as_ref().unwrap();
    let keygen = issuing.license.keygen().unwrap();
    assert_eq!(keygen.account, "acme");
    assert!(keygen.token.matches(TOKEN));
    assert_eq!(keygen.token_env, "KEYGATE_KEYGEN_TOKEN");
    assert!(issuing.license.qlm().is_none());
    let p1 = issuing.product("001").unwrap().keygen().unwrap();
    assert_eq!(
        (p1.policy.as_str(), p1.seats_from_quantity),
        (PERPETUAL, true)
    );
    let p2 = issuing.product("002").unwrap().keygen().unwrap();
    assert_eq!(
        (p2.policy.as_str(), p2.seats_from_quantity),
        (ANNUAL, false)
    );
    // QLM stays the default.
    let qlm = config(json!({}));
    assert!(qlm.issuing.as_ref().unwrap().license.qlm().is_some());
}

#[test]
fn a_field_of_the_other_server_is_refused_by_name() {
    let cases = [
        (
            json!({"license_server": {"user_env": "KEYGATE_QLM_USER"}}),
            "license_server.user_env is a QLM field, but license_server.kind is \"keygen\"",
        ),
        (
            json!({"license_server": {"strict_auth": {"api_key_env": "K"}}}),
            "license_server.strict_auth is a QLM field, but license_server.kind is \"keygen\"",
        ),
        (
            json!({"license_server": {"kind": "qlm"}}),
            "license_server.account is a Keygen field, but license_server.kind is \"qlm\"",
        ),
        (
            json!({"license_server": {"kind": "keygen2"}}),
            "license_server.kind 'keygen2' is not \"qlm\" or \"keygen\"",
        ),
        (
            json!({"license_server": {"account": null}}),
            "license_server.account is required with kind \"keygen\" (the account's slug or id)",
        ),
        (
            json!({"license_server": {"account": "acme/../x"}}),
            "license_server.account must be the Keygen account's slug or id (letters, digits, '-', '_')",
        ),
        (
            json!({"license_server": {"token_env": null}}),
            "license_server.token_env is required with kind \"keygen\" (the variable holding a product, environment or admin token)",
        ),
        (
            json!({"products": {"003": "&is_productid=3&is_majorversion=1&is_minorversion=0"}}),
            "products.003: must be a Keygen policy, {\"policy\": \"<policy id>\"} (license_server.kind is \"keygen\")",
        ),
        (
            json!({"products": {"003": {"policy": "p", "seats": "per-user"}}}),
            "products.003: seats must be \"quantity\" (maxMachines follows the line's Quantity) or left out (the policy's own limits)",
        ),
        (
            json!({"products": {"003": {"policy": "p", "productid": 3}}}),
            "products.003.productid: unknown field `productid`, expected one of `policy`, `seats`, `renewal`",
        ),
    ];
    for (patch, expected) in cases {
        assert_eq!(refusal(patch.clone()), expected, "{patch}");
    }
    // A Keygen policy under QLM.
    let e = Config::from_json(
        patched_full(json!({"products": {"003": {"policy": PERPETUAL}}})).as_bytes(),
        &env,
    )
    .unwrap_err();
    assert_eq!(
        e.0,
        "products.003: is a Keygen policy, but license_server.kind is \"qlm\""
    );
}

#[test]
fn an_activated_line_gets_one_license_under_its_policy_with_the_line_in_metadata() {
    let cfg = keygen_config(json!({}));
    let mut world = demo_world();
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert_ack(&run);

    let create = world
        .sent
        .iter()
        .find(|c| c.method == "POST" && c.path == "/v1/accounts/acme/licenses")
        .expect("a create");
    let headers: Vec<(&str, &str)> = create
        .headers
        .iter()
        .map(|(k, v)| (*k, v.as_str()))
        .collect();
    assert_eq!(
        headers,
        [
            ("authorization", "Bearer secret-of-KEYGATE_KEYGEN_TOKEN"),
            ("accept", "application/vnd.api+json"),
            ("content-type", "application/vnd.api+json"),
        ]
    );
    let body: Value = serde_json::from_slice(&create.body).unwrap();
    assert_eq!(
        body,
        json!({"data": {"type": "licenses",
            "attributes": {"name": "Salesforce order 00000114", "maxMachines": 3,
                "metadata": {"salesforceOrderItemId": ITEM, "salesforceOrderNumber": "00000114",
                             "contactName": "Jane Doe", "contactEmail": "jane@acme.example",
                             "company": "Acme"}},
            "relationships": {"policy": {"data": {"type": "policies", "id": PERPETUAL}}}}})
    );
    // Keygen's end state: one active license, three seats; its key is what Salesforce holds.
    let keys = world.keygen.keys_of(ITEM);
    assert_eq!(keys.len(), 1);
    let license = world.keygen.by_key(&keys[0]);
    assert_eq!((license.suspended, license.max_machines), (false, Some(3)));
    assert_eq!(world.keys_written()[ITEM], keys[0]);
    assert_eq!(run.counts[&Metric::LicensesIssued], 1);

    // Redelivered, and after a restart (a new Envoy's empty shared data): never a second license.
    assert_ack(&deliver(&cfg, &mut world, &mut store, ONE));
    assert_ack(&deliver(&cfg, &mut world, &mut MemStore::new(), ONE));
    assert_eq!(calls(&world, "create"), 1);
    assert_eq!(world.keygen.licenses.len(), 1);
    one_key_per_line(&world);
}

#[test]
fn a_create_whose_answer_was_lost_is_found_by_its_metadata_not_created_again() {
    let cfg = keygen_config(json!({}));
    for lost in [
        reset(),
        status(502, "<html>Bad gateway</html>"),
        status(504, ""),
    ] {
        let mut world = demo_world();
        let mut store = MemStore::new();
        world.keygen.then_fail.push_back(lost.clone());
        let run = deliver(&cfg, &mut world, &mut store, ONE);
        assert!(!run.reply.is_ack(), "{lost:?}: acked");
        assert_eq!(
            world.keygen.licenses.len(),
            1,
            "created before the answer was lost"
        );

        // Redelivered once the call's time is up: looked up by the line, found, written back.
        let run = deliver_at(&cfg, &mut world, &mut store, ONE, T + 120_000, 0);
        assert_ack(&run);
        assert_eq!(calls(&world, "create"), 1, "{lost:?}: created twice");
        let lookup = world
            .sent
            .iter()
            .rfind(|c| c.method == "GET" && c.path.contains("/licenses?"))
            .expect("a lookup");
        assert_eq!(
            lookup.path,
            format!("/v1/accounts/acme/licenses?metadata%5BsalesforceOrderItemId%5D={ITEM}&page%5Bsize%5D=100&page%5Bnumber%5D=1")
        );
        assert_eq!(run.counts[&Metric::LicensesRecovered], 1);
        assert_eq!(world.keys_written()[ITEM], world.keygen.keys_of(ITEM)[0]);
    }
}

#[test]
fn a_throttled_account_is_left_alone_until_keygen_says_on_every_worker() {
    // One call at a time, so the throttled create is the only one that reaches Keygen.
    let cfg = keygen_config(json!({"license_server": {"max_concurrency": 1}}));
    let mut world = demo_world();
    let mut store = MemStore::new();
    let reset_at_s = (T + 60_000) / 1000;
    world.keygen.throttle.push_back(vec![
        ("x-ratelimit-reset", reset_at_s.to_string()),
        ("retry-after", "30".to_owned()),
    ]);
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(
        is_fault(&run.reply, 500, "rate-limiting this account until"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts[&Metric::LicenseThrottled], 1);
    assert!(
        world.keygen.licenses.is_empty(),
        "a throttled call does nothing"
    );
    let keygen_calls = |w: &World| w.sent.iter().filter(|c| c.path.starts_with("/v1/")).count();
    assert_eq!(keygen_calls(&world), 1, "nothing more once throttled");

    // Another worker (same shared data) before the reset: no call to Keygen at all.
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, T + 59_000, 0);
    assert!(!run.reply.is_ack());
    assert_eq!(keygen_calls(&world), 1);

    // After it: every line licensed, once.
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, T + 61_000, 0);
    assert_ack(&run);
    assert_eq!(calls(&world, "create"), world.keygen.licenses.len());
    assert_eq!(world.keys_written().len(), world.keygen.licenses.len());
    one_key_per_line(&world);
}

#[test]
fn a_refused_token_is_named_by_its_variable_never_shown() {
    let cfg = keygen_config(json!({"license_server": {"token_env": "KEYGATE_OTHER_TOKEN"}}));
    let mut world = demo_world();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(
            &run.reply,
            500,
            "HTTP 401 Unauthorized: You must be authenticated to complete the request (code TOKEN_INVALID): is the token in KEYGATE_OTHER_TOKEN a product, environment or admin token of account acme?"
        ),
        "{}",
        run.reply.body
    );
    assert!(!run.reply.body.contains("secret-of-"));
    assert!(run.logs.iter().all(|l| !l.contains("secret-of-")));
}

#[test]
fn hostile_keygen_replies_are_refused_and_nothing_is_acked() {
    let cfg = keygen_config(json!({}));
    let html = Response {
        status: Some(201),
        headers: vec![("content-type", "text/html; charset=utf-8".to_owned())],
        body: b"<html>{\"data\":{}}</html>".to_vec(),
    };
    let truncated = Response {
        body: br#"{"data":{"id":"x","type":"licenses","attributes":{"key":"AB"#.to_vec(),
        ..json_reply(201, &json!({}))
    };
    let key_not_string = json_reply(
        201,
        &json!({"data": {"id": "x", "type": "licenses", "attributes": {"key": 42}}}),
    );
    let no_data = json_reply(201, &json!({"meta": {}}));
    let key_with_a_line_break = json_reply(
        201,
        &json!({"data": {"id": "x", "type": "licenses", "attributes": {"key": "AB\nCD"}}}),
    );
    let cases = [
        (
            html,
            "HTTP 201 with content type text/html; charset=utf-8, not JSON:API",
        ),
        (
            truncated,
            "not a Keygen license document: EOF while parsing a string",
        ),
        (
            key_not_string,
            "not a Keygen license document: invalid type: integer `42`, expected a string",
        ),
        (
            no_data,
            "not a Keygen license document: missing field `data`",
        ),
        (
            key_with_a_line_break,
            "a license key that is not printable ASCII of 1 to 4096 bytes: AB?CD",
        ),
    ];
    for (reply, expected) in cases {
        let mut world = demo_world();
        world.keygen.then_fail.push_back(reply);
        let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
        assert!(
            is_fault(&run.reply, 500, expected),
            "{expected}: {}",
            run.reply.body
        );
        assert!(
            world.keys_written().is_empty(),
            "nothing written for {expected}"
        );
    }
}

/// The lifecycle world with `ITEM` licensed on `store` (three seats); its key.
fn licensed(cfg: &Rc<Config>, store: &mut MemStore) -> (World, String) {
    let mut world = lifecycle_world(-1.0, 2.0);
    assert_ack(&deliver(
        cfg,
        &mut world,
        store,
        &message(ORDER, "Activated"),
    ));
    let key = world.keygen.keys_of(ITEM)[0].clone();
    (world, key)
}

#[test]
fn cancel_suspends_and_reactivation_reinstates_each_once() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = licensed(&cfg, &mut store);

    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert!(world.keygen.by_key(&key).suspended);
    assert_eq!(world.written_state[ITEM], "Revoked");
    assert_eq!(run.counts[&Metric::LicensesRevoked], 1);
    let suspend = world
        .sent
        .iter()
        .find(|c| c.path.ends_with("/actions/suspend"))
        .unwrap();
    assert_eq!(
        (suspend.method, suspend.path.as_str()),
        (
            "POST",
            format!("/v1/accounts/acme/licenses/{key}/actions/suspend").as_str()
        )
    );

    // Redelivered, and on a replica: Salesforce and the ledger know it is done.
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(ORDER, "Cancelled"),
    ));
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut MemStore::new(),
        &message(ORDER, "Cancelled"),
    ));
    assert_eq!(calls(&world, "suspend"), 1);
    assert!(world.keygen.by_key(&key).suspended);

    set_status(&mut world, ORDER, "Activated");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Activated"));
    assert_ack(&run);
    assert!(!world.keygen.by_key(&key).suspended);
    assert_eq!(calls(&world, "reinstate"), 1);
    assert_eq!(run.counts[&Metric::LicensesRestored], 1);
    assert_eq!(
        world.keygen.licenses.len(),
        1,
        "the same license back, not a new one"
    );
}

#[test]
fn suspending_a_license_keygen_already_suspended_is_done_not_failed() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = licensed(&cfg, &mut store);
    // Suspended by hand in Keygen's dashboard before the order was cancelled.
    world
        .keygen
        .licenses
        .iter_mut()
        .for_each(|l| l.suspended = true);
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(
        calls(&world, "suspend"),
        1,
        "answered 422: already suspended"
    );
    assert!(world.keygen.by_key(&key).suspended);
    assert_eq!(world.written_state[ITEM], "Revoked");
    // And reinstating one that is not suspended, likewise.
    world
        .keygen
        .licenses
        .iter_mut()
        .for_each(|l| l.suspended = false);
    set_status(&mut world, ORDER, "Activated");
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(ORDER, "Activated"),
    ));
    assert_eq!(calls(&world, "reinstate"), 1);
    assert!(!world.keygen.by_key(&key).suspended);
}

#[test]
fn a_reduction_lowers_the_seats_when_they_follow_the_quantity() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = licensed(&cfg, &mut store);
    let run = deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(REDUCTION, "Activated"),
    );
    assert_ack(&run);
    assert_eq!(world.keygen.by_key(&key).max_machines, Some(2));
    let patch = world
        .sent
        .iter()
        .find(|c| c.method == "PATCH" && c.path.starts_with("/v1/"))
        .unwrap();
    assert_eq!(patch.path, format!("/v1/accounts/acme/licenses/{key}"));
    assert_eq!(
        serde_json::from_slice::<Value>(&patch.body).unwrap(),
        json!({"data": {"type": "licenses", "attributes": {"maxMachines": 2}}})
    );
    assert_eq!(world.written_state[REDUCTION_LINE], "Reduced to 2");
    // Redelivered: once.
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(REDUCTION, "Activated"),
    ));
    assert_eq!(calls(&world, "patch"), 1);
}

#[test]
fn a_reduction_leaves_a_policy_s_own_seats_alone() {
    let cfg = keygen_config(json!({
        "lifecycle": {"reductions": true},
        "products": {"001": {"seats": null}}
    }));
    let mut store = MemStore::new();
    let (mut world, key) = licensed(&cfg, &mut store);
    assert_eq!(
        world.keygen.by_key(&key).max_machines,
        Some(1),
        "the policy's"
    );
    let run = deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(REDUCTION, "Activated"),
    );
    assert_ack(&run);
    assert_eq!(calls(&world, "patch"), 0);
    assert!(run.logs.iter().any(
        |l| l.contains("the license's seats are its policy's, not the Quantity: nothing to change")
    ));
}

/// The subscription (policy of 365 days) licensed on `store`; its key.
fn subscribed(cfg: &Rc<Config>, store: &mut MemStore) -> (World, String) {
    let mut world = lifecycle_world(-1.0, 2.0);
    assert_ack(&deliver(
        cfg,
        &mut world,
        store,
        &message(SUBSCRIPTION, "Activated"),
    ));
    let key = world.keygen.keys_of(SUBSCRIPTION_LINE)[0].clone();
    assert_eq!(world.keygen.by_key(&key).expiry_days, Some(365));
    (world, key)
}

#[test]
fn a_renewal_renews_once_across_redeliveries_and_restarts() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert_ack(&run);
    assert_eq!(world.keygen.by_key(&key).expiry_days, Some(730));
    assert_eq!(run.counts[&Metric::LicensesRenewed], 1);
    assert_eq!(world.written_state[RENEWAL_LINE], "Renewed");
    assert_eq!(world.written[RENEWAL_LINE], key);
    assert_eq!(
        world.keygen.keys_of(RENEWAL_LINE),
        Vec::<String>::new(),
        "no license for the renewal line"
    );

    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut store,
        &message(RENEWAL, "Activated"),
    ));
    assert_ack(&deliver(
        &cfg,
        &mut world,
        &mut MemStore::new(),
        &message(RENEWAL, "Activated"),
    ));
    assert_eq!(calls(&world, "renew"), 1);
    assert_eq!(world.keygen.by_key(&key).expiry_days, Some(730));
}

#[test]
fn a_renewal_whose_answer_was_lost_is_not_applied_twice() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);
    world.keygen.then_fail.push_back(reset());
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert!(
        is_fault(&run.reply, 500, "outcome unknown"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.keygen.by_key(&key).expiry_days, Some(730));

    // Redelivered once the call's time is up: the expiry moved, so it was applied.
    let run = deliver_at(
        &cfg,
        &mut world,
        &mut store,
        &message(RENEWAL, "Activated"),
        T + 120_000,
        0,
    );
    assert_ack(&run);
    assert_eq!(calls(&world, "renew"), 1, "not renewed again");
    assert_eq!(world.keygen.by_key(&key).expiry_days, Some(730));
    let read = world
        .sent
        .iter()
        .rfind(|c| c.method == "GET" && c.path.contains("/licenses/"))
        .unwrap();
    assert_eq!(read.path, format!("/v1/accounts/acme/licenses/{key}"));
}

#[test]
fn a_renewal_under_a_policy_without_duration_is_refused_with_what_to_check() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, key) = subscribed(&cfg, &mut store);
    world
        .keygen
        .licenses
        .iter_mut()
        .for_each(|l| l.expiry_days = None);
    let run = deliver(&cfg, &mut world, &mut store, &message(RENEWAL, "Activated"));
    assert!(
        is_fault(&run.reply, 500, "renew: HTTP 422 Unprocessable entity: cannot be renewed because the policy does not have a duration; Keygen renews by the license&apos;s policy: does the policy have a duration?"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.keygen.by_key(&key).expiry_days, None);
}

#[test]
fn a_key_keygen_no_longer_knows_is_skipped_not_retried() {
    let cfg = lifecycle_config();
    let mut store = MemStore::new();
    let (mut world, _) = licensed(&cfg, &mut store);
    world.keygen.licenses.clear();
    set_status(&mut world, ORDER, "Cancelled");
    let run = deliver(&cfg, &mut world, &mut store, &message(ORDER, "Cancelled"));
    assert_ack(&run);
    assert_eq!(run.counts[&Metric::LinesSkippedUnknownKey], 1);
}
