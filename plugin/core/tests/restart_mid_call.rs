//! An Envoy stopped (a deploy) while a license call is still running at the license server: the
//! shared-data ledger's pending mark dies with the process, and the redelivery reaches a new
//! Envoy before the license server has finished. Looked up then, the line shows nothing and would
//! be issued a second time. What was in flight must be knowable by the next process: the issuing
//! mark in Salesforce (state field, else write-back field), written before any license call; or,
//! with neither field, every line the ledger does not know is busy until the restart is older
//! than a call's time and its grace.
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
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env};
use keygate_core::ledger::Ledger;
use keygate_core::reply::{FaultKind, Outcome};
use keygate_core::store::MemStore;
use keygate_core::webhook;
use serde_json::json;

/// `deadline_ms` (45 s) + `pending_grace_ms` (30 s) in the test configuration.
const BUSY_FOR_MS: u64 = 45_000 + 30_000;

/// Runs a delivery until it sends its issue call, and returns that call unanswered: the process
/// dies there (the flow is dropped with it) while the license server is still working on it.
fn die_during_the_issue(cfg: &Rc<Config>, world: &mut World, store: &mut MemStore) -> Call {
    Ledger::new(&cfg.state_prefix, cfg.ledger).init(store, 0, 0xdead_0001);
    let mut env = Env { now_ms: T, store };
    let (flow, first) = webhook::on_body(cfg, ONE, 42, &mut env);
    let mut flow = flow.expect("a flow with calls");
    let mut queue: VecDeque<Call> = first
        .into_iter()
        .filter_map(|c| match c {
            Command::Dispatch(call) => Some(call),
            _ => None,
        })
        .collect();
    while let Some(call) = queue.pop_front() {
        if World::endpoint(&call) == "license" {
            return call;
        }
        let resp = world.serve(&call);
        let mut env = Env { now_ms: T, store };
        for c in flow.on_response(call.id, resp, &mut env) {
            if let Command::Dispatch(next) = c {
                queue.push_back(next);
            }
        }
    }
    panic!("the delivery never sent its issue call")
}

fn assert_busy(run: &Run) {
    assert_eq!(run.reply.status, 500, "{}", run.reply.body);
    assert!(
        matches!(run.reply.outcome, Outcome::Faulted(FaultKind::Busy)),
        "{:?}: {}",
        run.reply.outcome,
        run.reply.body
    );
    assert!(
        run.reply.body.contains(&format!(
            "line {ITEM}: an earlier license call may still be running"
        )),
        "{}",
        run.reply.body
    );
}

/// The scenario the soak found, with the mark in each durable place: one key, never two.
#[test]
fn a_restart_while_the_license_server_is_still_issuing_never_gives_a_second_key() {
    for (name, patch, marked_field) in [
        ("write-back field", json!({}), "written"),
        (
            "state field",
            json!({"salesforce": {"state_field": "License_State__c"}}),
            "state",
        ),
    ] {
        let cfg = config(patch);
        let mut world = demo_world();
        let held = die_during_the_issue(&cfg, &mut world, &mut MemStore::new());
        // Before the issue call: the mark, with when the delivery's calls are over.
        let mark = match marked_field {
            "written" => world.written[ITEM].clone(),
            _ => world.written_state[ITEM].clone(),
        };
        assert!(
            mark.starts_with("Issuing; busy until ")
                && mark.contains(&format!("({}, gateway ", T + BUSY_FOR_MS)),
            "{name}: {mark}"
        );
        let composite_at = world.calls.iter().position(|(e, _)| e == "composite");
        assert!(composite_at.is_some(), "{name}");
        assert_eq!(
            world.count("license"),
            0,
            "{name}: the issue is still running"
        );

        // The new Envoy (empty shared data) gets the redelivery a second later: busy, no call.
        let mut restarted = MemStore::new();
        let calls_before = world.calls.len();
        let run = deliver_at(&cfg, &mut world, &mut restarted, ONE, T + 1_000, 0);
        assert_busy(&run);
        let asked: Vec<&str> = world.calls[calls_before..]
            .iter()
            .map(|(e, _)| e.as_str())
            .collect();
        assert!(
            !asked.contains(&"license") && !asked.contains(&"retrieve"),
            "{name}: {asked:?}"
        );

        // The license server finishes the first call; once its time is over the line is looked
        // up and its one key found.
        world.serve(&held);
        let run = deliver_at(
            &cfg,
            &mut world,
            &mut restarted,
            ONE,
            T + BUSY_FOR_MS + 1,
            0,
        );
        assert!(run.reply.is_ack(), "{name}: {}", run.reply.body);
        one_key_per_line(&world);
        assert_eq!(world.keys_issued[ITEM].len(), 1, "{name}");
        assert_eq!(world.written[ITEM], world.keys_issued[ITEM][0], "{name}");
    }
}

/// Neither field: nothing durable holds the mark, so after a restart every line the ledger does
/// not know waits out one call's time and its grace, counted from the restart.
#[test]
fn without_a_durable_field_a_restart_makes_unknown_lines_wait_out_a_call() {
    let cfg = config(json!({"salesforce": {"writeback_field": null}}));
    let mut world = demo_world();
    let held = die_during_the_issue(&cfg, &mut world, &mut MemStore::new());
    assert_eq!(world.count("composite"), 0, "no mark without a field");

    let restart_at = T + 500;
    let mut restarted = MemStore::new();
    Ledger::new("keygate", cfg.ledger).init(&mut restarted, restart_at, 0xdead_0002);
    let run = deliver_at(&cfg, &mut world, &mut restarted, ONE, T + 1_000, 0);
    assert_busy(&run);
    assert_eq!(world.count("license"), 0);
    assert_eq!(
        world.count("retrieve"),
        1,
        "only the first delivery's lookup"
    );

    world.serve(&held);
    // license_server.timeout_ms 10 s + pending_grace_ms 30 s after the restart.
    let run = deliver_at(
        &cfg,
        &mut world,
        &mut restarted,
        ONE,
        restart_at + 40_001,
        0,
    );
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(world.keys_issued[ITEM].len(), 1);
}

/// A first order on a fresh install is not delayed: with a write-back field (the README's and the
/// demo's configuration) the mark costs one Salesforce call, and nothing waits.
#[test]
fn a_fresh_install_acks_its_first_order_at_once_for_one_more_salesforce_call() {
    let cfg = config(json!({}));
    let mut world = demo_world();
    let mut store = MemStore::new();
    Ledger::new("keygate", cfg.ledger).init(&mut store, T, 0xdead_0003);
    let run = deliver(&cfg, &mut world, &mut store, ONE);
    assert!(run.reply.is_ack(), "{}", run.reply.body);
    assert_eq!(
        world.endpoints(),
        ONE_NEW_LINE,
        "the mark, then the license calls, then the keys"
    );
    assert_eq!(world.written[ITEM], world.keys_issued[ITEM][0]);

    // Salesforce refusing the mark for a line (a validation rule): no license call for it.
    let mut world = demo_world();
    world.refuse_marks.push(ITEM.to_owned());
    let run = deliver(&cfg, &mut world, &mut MemStore::new(), ONE);
    assert!(
        is_fault(
            &run.reply,
            500,
            &format!("could not mark line {ITEM} in Salesforce before licensing it: refused: FIELD_CUSTOM_VALIDATION_EXCEPTION")
        ),
        "{}",
        run.reply.body
    );
    assert_eq!(world.count("license") + world.count("retrieve"), 0);
}
