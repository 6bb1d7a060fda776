//! The fleet's ledger on etcd (`ledger.backend: "etcd"`), against an in-memory etcd with etcd's
//! compare semantics. Replicas are deliveries with their own shared data (`MemStore`) and the
//! same etcd; the e2e fleet test (`e2e/tests/fleet.rs`) does the same with real processes.
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

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env};
use keygate_core::metrics::Metric;
use keygate_core::reply::{FaultKind, Outcome};
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::{json, Value};

fn etcd_patch(extra: Value) -> Value {
    let mut p = json!({"ledger": {"backend": "etcd",
                                  "etcd": {"cluster": "etcd", "authority": "127.0.0.1:2379"}}});
    common::merge(&mut p, extra);
    p
}

fn etcd_config(extra: Value) -> std::rc::Rc<Config> {
    config(etcd_patch(extra))
}

fn line_value(world: &World) -> String {
    let keys = world.etcd.keys("keygate/line/");
    assert_eq!(keys.len(), 1, "{keys:?}");
    assert!(keys[0].ends_with(ITEM), "{keys:?}");
    world.etcd.get(&keys[0]).unwrap()
}

#[test]
fn a_new_line_costs_one_license_call_and_etcd_ends_with_its_keys_and_no_claim() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    // Durable: a line etcd does not know was never issued, so no lookup first.
    assert_eq!(world.count("retrieve"), 0);
    assert_eq!(world.count("license"), 1);
    let key = &world.keys_issued[ITEM][0];
    assert_eq!(line_value(&world), format!("W\n{key}"));
    assert!(
        world.etcd.keys("keygate/claim/").is_empty(),
        "claim not released"
    );
    // Lease, claim + read, pending, issued + written back + release.
    assert_eq!(world.count("etcd"), 4);
}

#[test]
fn a_hundred_orders_fit_etcd_s_transaction_limit() {
    // etcd refuses a transaction with more than 128 operations in a list: the claims go in
    // parts of 64 orders, the last transaction in parts too.
    let cfg = etcd_config(json!({}));
    let mut world = family_world();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), HUNDRED);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license"), 100);
    one_key_per_line(&world);
    // Lease, two claim parts, the pending marks of all lines in two parts (64 + 36), the
    // records, the release.
    assert_eq!(world.count("etcd"), 1 + 2 + 2 + 2);
    let lines = world.etcd.keys("keygate/line/");
    assert_eq!(lines.len(), 100);
    assert!(lines
        .iter()
        .all(|k| world.etcd.get(k).unwrap().starts_with("W\n")));
    assert!(world.etcd.keys("keygate/claim/").is_empty());

    // Redelivered: nothing to do but the write-back check.
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), HUNDRED);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license") + world.count("retrieve"), 0);
}

#[test]
fn an_order_held_by_another_delivery_releases_the_orders_already_claimed() {
    let cfg = etcd_config(json!({}));
    let mut world = family_world();
    // Another delivery holds order 70, in the second part of the claims.
    world.etcd.kv.insert(
        b"keygate/claim/8015Y00000B0070QAB".to_vec(),
        common::etcd_model::Entry {
            value: b"7".to_vec(),
            create_revision: 1,
            mod_revision: 1,
            lease: 0,
        },
    );
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), HUNDRED);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy));
    assert!(
        is_fault(&run.reply, 500, "being processed by another request"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("query") + world.count("license"), 0);
    // The first part's 64 claims were released: only the other delivery's remains.
    assert_eq!(world.etcd.keys("keygate/claim/").len(), 1);
}

#[test]
fn the_envoy_s_lease_serves_later_deliveries_until_less_than_a_claim_ttl_is_left() {
    let cfg = etcd_config(json!({}));
    let ttl = cfg.ledger.claim_ttl_ms;
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver_at(&cfg, &mut world, &mut store, ONE, T, 0)
        .reply
        .is_ack());
    assert_eq!(world.etcd.leases.len(), 1);
    // Another message a claim TTL later: the same lease (it was granted for two).
    world.calls.clear();
    let run = deliver_at(&cfg, &mut world, &mut store, SEVERAL, T + ttl, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert!(world
        .calls
        .iter()
        .all(|(_, path)| path != "/v3/lease/grant"));
    // Less than a claim TTL left: a new lease, so no claim can outlive its holder's TTL.
    let run = deliver_at(&cfg, &mut world, &mut store, ONE, T + ttl + 1, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.etcd.leases.len(), 2);
}

#[test]
fn a_lease_etcd_no_longer_has_is_replaced_once() {
    let cfg = etcd_config(json!({}));
    let (mut world, mut store) = (demo_world(), MemStore::new());
    assert!(deliver(&cfg, &mut world, &mut store, ONE).reply.is_ack());
    world.etcd.expire_leases(); // revoked by an operator, or etcd restored from a backup
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    let grants = world
        .calls
        .iter()
        .filter(|(_, path)| path == "/v3/lease/grant")
        .count();
    assert_eq!(grants, 1);
    one_key_per_line(&world);
}

#[test]
fn without_write_back_another_replica_finds_the_line_in_etcd_and_calls_nobody() {
    let cfg = etcd_config(json!({"salesforce": {"writeback_field": null}}));
    let mut world = demo_world();
    assert!(deliver(&cfg, &mut world, &mut MemStore::new(), ONE)
        .reply
        .is_ack());
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license") + world.count("retrieve"), 0);
    assert_eq!(run.counts.get(&Metric::LinesAlreadyLicensed), Some(&1));
    one_key_per_line(&world);
}

#[test]
fn a_replica_restarted_between_issue_and_write_back_leaves_the_key_to_the_other() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    world.refuse_writeback.push(ITEM.to_owned());
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "write-back"),
        "{}",
        run.reply.body
    );
    let key = world.keys_issued[ITEM][0].clone();
    assert_eq!(line_value(&world), format!("I\n{key}"));

    // The redelivery reaches the other replica (empty shared data): write-back only.
    world.refuse_writeback.clear();
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license") + world.count("retrieve"), 0);
    assert_eq!(world.written[ITEM], key);
    assert_eq!(line_value(&world), format!("W\n{key}"));
}

#[test]
fn the_same_message_on_two_replicas_at_once_is_licensed_by_one() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    let mut store_a = MemStore::new();
    // Replica A: run until its license call is out (claim taken, line pending).
    let mut env = Env {
        now_ms: T,
        store: &mut store_a,
    };
    let (flow, first) = webhook::on_body(&cfg, ONE, 1, &mut env);
    let mut flow = flow.unwrap();
    let mut queue: Vec<Call> = dispatched(first);
    let license_call = loop {
        let call = queue.remove(0);
        if World::endpoint(&call) == "license" {
            break call;
        }
        let resp = world.serve(&call);
        queue.extend(dispatched(flow.on_response(call.id, resp, &mut env)));
    };

    // Replica B gets the same message meanwhile: told to retry, calls no license server.
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T, 0);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy));
    assert!(
        is_fault(&run.reply, 500, "being processed by another request"),
        "{}",
        run.reply.body
    );
    // (A's license call is still on its way: nothing has reached the license server.)
    assert_eq!(world.count("license"), 0);

    // A finishes and acks; B's redelivery then finds everything done.
    let resp = world.serve(&license_call);
    let mut out = flow.on_response(license_call.id, resp, &mut env);
    let mut reply = None;
    loop {
        let mut next = Vec::new();
        for c in out {
            match c {
                Command::Dispatch(call) => next.push(call),
                Command::Reply(r) => reply = Some(r),
                _ => {}
            }
        }
        let Some(call) = next.pop() else { break };
        assert!(next.is_empty());
        let resp = world.serve(&call);
        out = flow.on_response(call.id, resp, &mut env);
    }
    assert!(reply.unwrap().is_ack());
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T + 10, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    one_key_per_line(&world);
    assert_eq!(world.count("license"), 1);
}

fn dispatched(cmds: Vec<Command>) -> Vec<Call> {
    cmds.into_iter()
        .filter_map(|c| match c {
            Command::Dispatch(call) => Some(call),
            _ => None,
        })
        .collect()
}

#[test]
fn etcd_unreachable_is_a_retryable_fault_before_anything_else_then_recovery() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    world.etcd.down_from_call = Some(1);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert_eq!(run.reply.status, 500);
    assert!(
        is_fault(&run.reply, 500, "could not claim the orders in etcd"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts.get(&Metric::CalloutsFailedLedger), Some(&1));
    // The lease grant is safe to repeat: sent four more times. Nothing was asked of Salesforce
    // or the license server without the claim.
    assert_eq!(world.count("etcd"), 5);
    assert_eq!(world.calls.len(), 5);

    world.etcd.down_from_call = None;
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    one_key_per_line(&world);
}

#[test]
fn etcd_lost_before_the_pending_mark_means_no_license_call() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    // Grant and claim answer; the pending mark (third etcd call) gets no response.
    world.etcd.down_from_call = Some(3);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "recording it in etcd failed"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license") + world.count("retrieve"), 0);

    world.etcd.down_from_call = None;
    world.etcd.expire_leases(); // the unreleased claim runs out
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    one_key_per_line(&world);
}

#[test]
fn a_hundred_lines_are_marked_64_at_a_time_each_part_all_or_none() {
    let cfg = etcd_config(json!({}));
    let mut world = family_world();
    // Grant, two claim parts; the second part of the marks (the fifth call) gets no response,
    // nor does anything after it.
    world.etcd.down_from_call = Some(5);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), HUNDRED);
    assert!(
        is_fault(&run.reply, 500, "recording it in etcd failed"),
        "{}",
        run.reply.body
    );
    // The first 64 lines are marked and licensed; the other 36 have no mark, so no call.
    assert_eq!(world.count("license"), 64);
    assert_eq!(world.count("retrieve"), 0);
    let pending: Vec<String> = world
        .etcd
        .keys("keygate/line/")
        .iter()
        .map(|k| world.etcd.get(k).unwrap())
        .collect();
    assert_eq!(pending.len(), 64);
    // Their records never reached etcd: pending, and with more lines than calls at once (4),
    // busy until the deadline (45 s) and the grace (30 s), then looked up.
    let until = (T + 45_000 + 30_000).to_string();
    assert!(
        pending
            .iter()
            .all(|v| v.starts_with("P\n") && v.contains(&until)),
        "{:?}",
        pending.first()
    );
}

#[test]
fn a_call_envoy_could_not_connect_is_sent_again_and_a_lost_last_transaction_too() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    // The claim (call 2) and the last transaction (call 4, then its retry) hit a dead member.
    world.etcd.unreachable_calls = vec![2, 5];
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("etcd"), 6);
    let key = &world.keys_issued[ITEM][0];
    assert_eq!(line_value(&world), format!("W\n{key}"));
    assert!(world.etcd.keys("keygate/claim/").is_empty());

    // The claim went through but its answer was lost: sent again, the claim is recognised as
    // this delivery's own (same owner, same lease) and the delivery goes on.
    let mut world = demo_world();
    world.etcd.lost_reply_calls = vec![2];
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    one_key_per_line(&world);

    // A pending mark whose answer was lost is not sent again (it may have been written, and a
    // second compare-and-swap would fail): no license call, and the line is busy for its window.
    let mut world = demo_world();
    world.etcd.lost_reply_calls = vec![3];
    let mut store = MemStore::new();
    let run = deliver_at(&cfg, &mut world, &mut store, ONE, T, 0);
    assert!(
        is_fault(&run.reply, 500, "recording it in etcd failed"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license"), 0);
    world.etcd.expire_leases();
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T + 1000, 0);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy));
    assert_eq!(world.count("license") + world.count("retrieve"), 0);
}

#[test]
fn an_etcd_reply_over_max_reply_bytes_is_refused_and_nothing_follows() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    world.fail_next("etcd", ok(vec![b' '; cfg.max_reply_bytes + 1]));
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "reply larger than max_reply_bytes"),
        "{}",
        run.reply.body
    );
    assert_eq!(run.counts.get(&Metric::CalloutsFailedLedger), Some(&1));
    assert_eq!(world.calls.len(), 1);
}

#[test]
fn a_claim_that_expired_mid_delivery_stops_the_license_call() {
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    // Right after the claim, the lease runs out: the pending mark's lease compare fails.
    world.etcd.expire_after_call = Some(2);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "claim expired"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license"), 0);
    assert!(world.etcd.keys("keygate/line/").is_empty());
}

#[test]
fn a_claim_is_held_until_the_time_written_in_it_then_taken_over_though_its_lease_lives() {
    // An Envoy died holding the order; its lease is alive (etcd renews every lease's TTL when
    // its leader changes, so a lease may outlive its holder by minutes). Its claim's own time
    // decides.
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    world.etcd.leases.push(99);
    world
        .etcd
        .put_claim("8015Y000001AbCdQAK", &format!("777 {}", T + 1), 99);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy));
    assert!(
        is_fault(&run.reply, 500, "being processed by another request"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("query") + world.count("license"), 0);
    assert_eq!(
        world.etcd.get("keygate/claim/8015Y000001AbCdQAK").unwrap(),
        format!("777 {}", T + 1)
    );

    // At the time it names, the claim is taken over: licensed once, and released.
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T + 1, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("license"), 1);
    assert!(run
        .logs
        .iter()
        .any(|l| l.contains("taking over a claim that expired")));
    assert!(world.etcd.keys("keygate/claim/").is_empty());
    one_key_per_line(&world);
}

#[test]
fn a_claim_taken_over_on_the_same_lease_stops_the_license_call() {
    // Another worker of the same Envoy (same lease) took the claim over right after this
    // delivery claimed: the pending mark compares the claim's revision, not its lease.
    let cfg = etcd_config(json!({}));
    let mut world = demo_world();
    world.etcd.retake_after_call = Some(2);
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "claim expired"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license"), 0);
    assert!(world.etcd.keys("keygate/line/").is_empty());
    // The other delivery's claim is left to it.
    assert_eq!(
        world.etcd.get("keygate/claim/8015Y000001AbCdQAK").unwrap(),
        "12345 99999999999999"
    );
}

#[test]
fn a_slow_license_server_keeps_the_line_busy_on_every_replica_then_it_is_looked_up() {
    let cfg = etcd_config(
        json!({"license_server": {"timeout_ms": 1000}, "ledger": {"pending_grace_ms": 3000}}),
    );
    let mut world = demo_world();
    world.issue_then_fail.push_back(reset());
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T, 0);
    assert!(
        is_fault(&run.reply, 500, "outcome unknown"),
        "{}",
        run.reply.body
    );
    assert_eq!(world.keys_issued[ITEM].len(), 1);

    // Another replica, right after: busy, no call.
    world.calls.clear();
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T + 500, 0);
    assert_eq!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy));
    assert_eq!(world.count("license") + world.count("retrieve"), 0);

    // After etcd timeout + call timeout + grace: looked up, found, written back.
    let run = deliver_at(&cfg, &mut world, &mut MemStore::new(), ONE, T + 7000, 0);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.count("retrieve"), 1);
    one_key_per_line(&world);
    assert_eq!(world.written[ITEM], world.keys_issued[ITEM][0]);
}

#[test]
fn with_etcd_authentication_the_token_is_cached_and_renewed_once_when_refused() {
    let cfg = etcd_config(
        json!({"ledger": {"etcd": {"user_env": "KEYGATE_ETCD_USER", "password_env": "KEYGATE_ETCD_PASSWORD"}}}),
    );
    let mut world = demo_world();
    world.etcd.auth = Some((
        "secret-of-KEYGATE_ETCD_USER".into(),
        "secret-of-KEYGATE_ETCD_PASSWORD".into(),
    ));
    let mut store = MemStore::new();
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.etcd.tokens.len(),
        1,
        "one login for the whole delivery"
    );
    // No credential in any log line.
    assert!(run.logs.iter().all(|l| !l.contains("secret-of")));

    // etcd forgets the token (restart, revoked): refused once, a new login, then on.
    world.etcd.tokens.clear();
    let run = deliver(&cfg, &mut world, &mut store, SEVERAL);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.etcd.tokens.len(), 1);

    // Wrong password: a clear fault, nothing else called.
    world.etcd.auth = Some(("secret-of-KEYGATE_ETCD_USER".into(), "other".into()));
    world.etcd.tokens.clear();
    world.calls.clear();
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(&run.reply, 500, "could not claim the orders in etcd"),
        "{}",
        run.reply.body
    );
    assert!(run
        .logs
        .iter()
        .any(|l| l.contains("check the etcd user and password")));
    assert_eq!(world.calls.len(), 1);
}

#[test]
fn etcd_configuration_is_checked() {
    let bad = |patch: Value, needle: &str| {
        let text = common::patched_full(patch);
        let e = Config::from_json(text.as_bytes(), &env).unwrap_err();
        assert!(e.0.contains(needle), "{} lacks {needle}", e.0);
    };
    bad(
        json!({"ledger": {"backend": "etcd"}}),
        "needs a ledger.etcd section",
    );
    bad(
        json!({"ledger": {"backend": "redis"}}),
        "must be \"shared_data\" or \"etcd\"",
    );
    bad(
        json!({"ledger": {"etcd": {"cluster": "etcd", "authority": "e:2379"}}}),
        "ledger.backend is not \"etcd\"",
    );
    bad(
        etcd_patch(json!({"ledger": {"etcd": {"prefix": "keygate"}}})),
        "ending in '/'",
    );
    bad(
        etcd_patch(json!({"ledger": {"etcd": {"user_env": "KEYGATE_ETCD_USER"}}})),
        "go together",
    );
    bad(
        etcd_patch(json!({"ledger": {"etcd": {"timeout_ms": 50}}})),
        "ledger.etcd.timeout_ms",
    );
    bad(
        etcd_patch(json!({"ledger": {"etcd": {"endpoints": []}}})),
        "ledger.etcd.endpoints: unknown field `endpoints`",
    );
    let cfg = etcd_config(json!({}));
    let etcd = cfg.etcd.as_ref().unwrap();
    assert_eq!(
        (
            etcd.prefix.as_str(),
            etcd.timeout_ms,
            etcd.credentials.is_none()
        ),
        ("keygate/", 2000, true)
    );
}
