//! The start-up self-check: what it asks, one log line per problem saying what to change, the
//! readiness gauges, the schedule shared by every worker (one round at a time, backoff while
//! not ready), and a refused Salesforce login never retried within five minutes.
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
use common::world::{config, ok, reset, status};

use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Call, Command, Env, Level, Response};
use keygate_core::metrics::Gauge;
use keygate_core::salesforce;
use keygate_core::selfcheck::{self, Schedule, SelfCheck};
use keygate_core::store::{MemStore, Store};
use serde_json::json;

const T0: u64 = 1_700_000_000_000;

const PING: &[u8] = include_bytes!("../../../testdata/license/ping.xml");
const NOTHING_FOUND: &[u8] = include_bytes!("../../../testdata/license/retrieve_empty.xml");
const STRICT_REFUSED: &str = include_str!("../../../testdata/license/strict_auth_refused.txt");
const DISABLED: &str = include_str!("../../../testdata/license/method_disabled.txt");
const IP_REFUSED: &str = include_str!("../../../testdata/license/ip_not_allowed.txt");
const BAD_CREDENTIALS: &str = include_str!("../../../testdata/license/error_plain.txt");
const TOKEN: &[u8] = include_bytes!("../../../testdata/salesforce/token_ok.json");
const LOGIN_REFUSED: &[u8] =
    include_bytes!("../../../testdata/salesforce/token_invalid_grant.json");

/// One round: the calls it made and everything it said.
struct Round {
    calls: Vec<Call>,
    logs: Vec<(Level, String)>,
    gauges: Vec<(Gauge, u64)>,
}

fn start(cfg: &Rc<Config>, store: &mut MemStore, now_ms: u64) -> Option<(SelfCheck, Vec<Call>)> {
    let mut env = Env { now_ms, store };
    let (check, commands) = selfcheck::tick(cfg, &mut env)?;
    let calls = commands
        .into_iter()
        .map(|c| match c {
            Command::Dispatch(call) => call,
            other => panic!("a round starts with its calls only: {other:?}"),
        })
        .collect();
    Some((check, calls))
}

fn which(call: &Call) -> &'static str {
    if call.path.contains("/PingHttp") {
        "ping"
    } else if call.path.contains("/RetrieveActivationKeyHttp") {
        "lookup"
    } else if call.path.ends_with("/oauth2/token") {
        "login"
    } else if call.path == "/v1/accounts/acme/me" {
        "me"
    } else if call.path.starts_with("/v1/accounts/acme/policies/") {
        "policy"
    } else {
        panic!("unexpected call {call:?}")
    }
}

/// A whole round at `now_ms`, each call answered by `answer`.
fn round(
    cfg: &Rc<Config>,
    store: &mut MemStore,
    now_ms: u64,
    answer: &dyn Fn(&str) -> Response,
) -> Round {
    let (mut check, calls) = start(cfg, store, now_ms).expect("a round is due");
    let mut r = Round {
        calls: calls.clone(),
        logs: Vec::new(),
        gauges: Vec::new(),
    };
    for call in &calls {
        let mut env = Env { now_ms, store };
        for cmd in check.on_response(call.id, answer(which(call)), &mut env) {
            match cmd {
                Command::Log(l, m) => r.logs.push((l, m)),
                Command::Gauge(g, v) => r.gauges.push((g, v)),
                other => panic!("unexpected {other:?}"),
            }
        }
    }
    assert!(check.is_finished());
    for (_, line) in &r.logs {
        for secret in ["secret-of-", "standin"] {
            assert!(!line.contains(secret), "a secret in the log: {line}");
        }
    }
    r
}

fn healthy(probe: &str) -> Response {
    match probe {
        "ping" => ok(PING),
        "lookup" => ok(NOTHING_FOUND),
        _ => ok(TOKEN),
    }
}

/// `healthy`, except the lookup answers `body` (HTTP 200, as QLM answers its refusals).
fn lookup_answers(body: &'static str) -> impl Fn(&str) -> Response {
    move |probe| match probe {
        "lookup" => ok(body),
        other => healthy(other),
    }
}

fn errors(r: &Round) -> Vec<&str> {
    r.logs
        .iter()
        .filter(|(l, _)| *l == Level::Error)
        .map(|(_, m)| m.as_str())
        .collect()
}

fn ready(cfg: &Rc<Config>) -> (MemStore, Rc<Config>) {
    let mut store = MemStore::new();
    selfcheck::init(
        cfg,
        &mut Env {
            now_ms: T0,
            store: &mut store,
        },
    );
    (store, Rc::clone(cfg))
}

#[test]
fn a_healthy_round_asks_what_a_delivery_asks_and_sets_both_gauges() {
    let (mut store, cfg) = ready(&config(json!({})));
    let r = round(&cfg, &mut store, T0, &healthy);
    let kinds: Vec<&str> = r.calls.iter().map(which).collect();
    assert_eq!(kinds, ["ping", "lookup", "login"]);
    // The lookup is signed as deliveries sign it, for a reference no line has.
    let lookup = &r.calls[1];
    assert_eq!(lookup.method, "GET");
    assert!(lookup.path.contains("is_userdata1=keygate-self-check&"));
    assert!(lookup
        .headers
        .iter()
        .any(|(k, v)| *k == "x-qlm-authentication-token" && v.len() == 64));
    assert_eq!(r.calls[0].method, "GET");
    assert_eq!(r.calls[0].cluster, "license_server");
    assert_eq!(r.calls[2].cluster, "salesforce");
    assert!(errors(&r).is_empty(), "{:?}", r.logs);
    assert_eq!(
        r.gauges,
        [(Gauge::LicenseReady, 1), (Gauge::SalesforceReady, 1)]
    );
    assert!(r.logs.iter().any(|(_, m)| m.contains("reachable (QLM ")));
    // Every call says it is the self-check's; the token is not kept (deliveries log in as
    // they always do, whether a round ran first or not).
    for call in &r.calls {
        assert!(
            call.headers
                .contains(&(selfcheck::PROBE_HEADER, "1".to_owned())),
            "{call:?}"
        );
    }
    assert!(store.get(&salesforce::token_key("keygate")).is_none());
    // Checked again in an hour, not before.
    let s = Schedule::read(
        &cfg,
        &Env {
            now_ms: T0,
            store: &mut store,
        },
    )
    .unwrap();
    assert_eq!(s.due_ms, T0 + selfcheck::RECHECK_MS);
    assert!(start(&cfg, &mut store, T0 + selfcheck::RECHECK_MS - 1).is_none());
    assert!(start(&cfg, &mut store, T0 + selfcheck::RECHECK_MS).is_some());
}

#[test]
fn one_worker_runs_a_round_and_nothing_runs_before_the_configuration_is_set_up() {
    let cfg = config(json!({}));
    let mut store = MemStore::new();
    assert!(start(&cfg, &mut store, T0).is_none(), "no schedule yet");
    selfcheck::init(
        &cfg,
        &mut Env {
            now_ms: T0,
            store: &mut store,
        },
    );
    // init on a second worker does not reset a schedule already there.
    let (_check, calls) = start(&cfg, &mut store, T0).unwrap();
    assert_eq!(calls.len(), 3);
    selfcheck::init(
        &cfg,
        &mut Env {
            now_ms: T0,
            store: &mut store,
        },
    );
    assert!(
        start(&cfg, &mut store, T0 + 1).is_none(),
        "the round is claimed"
    );
    // Without issuing there is nothing to check.
    let off = Rc::new(
        Config::from_json(
            include_bytes!("../../../testdata/config/minimal.json"),
            &common::world::env,
        )
        .unwrap(),
    );
    let mut s2 = MemStore::new();
    selfcheck::init(
        &off,
        &mut Env {
            now_ms: T0,
            store: &mut s2,
        },
    );
    assert!(start(&off, &mut s2, T0).is_none());
}

#[test]
fn each_license_server_problem_is_one_line_saying_what_to_change() {
    let cases: [(&str, serde_json::Value, &str); 6] = [
        (
            STRICT_REFUSED,
            json!({"license_server": {"strict_auth": null}}),
            "requires strict authentication (Error: Strict authentication failed: invalid hash.): set license_server.strict_auth with the API key of the 3rd-party extension 'salesforce'",
        ),
        (
            "<?xml version=\"1.0\"?><QuickLicenseManager><error>Strict authentication failed: invalid hash.</error></QuickLicenseManager>",
            json!({}),
            "strict authentication refused for RetrieveActivationKeyHttp (Strict authentication failed: invalid hash.): check the API key in the variable license_server.strict_auth.api_key_env names against the 3rd-party extension 'salesforce', strict_auth.url_base (signed as https://licenses.example.com/qlmLicenseServer/qlmservice.asmx;",
        ),
        (
            DISABLED,
            json!({}),
            "RetrieveActivationKeyHttp is disabled (Error: This feature is disabled. Set the server property enableR…): set the server property enableRetrieveActivationKeyHttp to true",
        ),
        (
            IP_REFUSED,
            json!({}),
            "this gateway's address is not allowed to call RetrieveActivationKeyHttp (Error: The IP address 127.0.0.1 is not allowed to call RetrieveA…): add the gateway's egress address",
        ),
        (
            BAD_CREDENTIALS,
            json!({}),
            "credentials refused for RetrieveActivationKeyHttp (Error: invalid user or password): check the variables license_server.user_env and password_env name",
        ),
        (
            "<html><body>Service Unavailable</body></html>",
            json!({}),
            "license server: RetrieveActivationKeyHttp: license server reply not understood: unexpected root element html",
        ),
    ];
    for (reply, patch, expected) in cases {
        let (mut store, cfg) = ready(&config(patch));
        let r = round(&cfg, &mut store, T0, &lookup_answers(reply));
        let e = errors(&r);
        assert_eq!(e.len(), 1, "{reply}: {e:?}");
        assert!(
            e[0].contains(expected),
            "{reply}:\n{}\nshould contain\n{expected}",
            e[0]
        );
        assert_eq!(
            r.gauges,
            [(Gauge::LicenseReady, 0), (Gauge::SalesforceReady, 1)],
            "{reply}"
        );
    }
}

#[test]
fn an_unreachable_or_misplaced_license_server_is_named_by_its_cluster_or_path() {
    for (answer, expected) in [
        (
            reset(),
            "license server unreachable: PingHttp got no answer through cluster 'license_server'",
        ),
        (
            status(503, "no healthy upstream"),
            "PingHttp answered HTTP 503 through cluster 'license_server'",
        ),
        (status(404, "<html/>"), "check license_server.path_prefix"),
    ] {
        let (mut store, cfg) = ready(&config(json!({})));
        let answer = answer.clone();
        let r = round(&cfg, &mut store, T0, &move |p: &str| match p {
            "ping" => answer.clone(),
            "lookup" => reset(),
            other => healthy(other),
        });
        let e = errors(&r);
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains(expected), "{}", e[0]);
        assert!(
            e[1].contains("RetrieveActivationKeyHttp got no answer"),
            "{}",
            e[1]
        );
        assert_eq!(r.gauges[0], (Gauge::LicenseReady, 0));
    }
}

#[test]
fn while_not_ready_rounds_back_off_from_five_seconds_to_five_minutes() {
    let (mut store, cfg) = ready(&config(json!({})));
    let failing = lookup_answers("Error: invalid user or password");
    let mut now = T0;
    let mut waits = Vec::new();
    for _ in 0..9 {
        round(&cfg, &mut store, now, &failing);
        let due = Schedule::read(
            &cfg,
            &Env {
                now_ms: now,
                store: &mut store,
            },
        )
        .unwrap()
        .due_ms;
        assert!(start(&cfg, &mut store, due - 1).is_none());
        waits.push((due - now) / 1000);
        now = due;
    }
    assert_eq!(waits, [5, 10, 20, 40, 80, 160, 300, 300, 300]);
    // Fixed: the next round passes and the backoff starts over.
    let r = round(&cfg, &mut store, now, &healthy);
    assert_eq!(r.gauges[0], (Gauge::LicenseReady, 1));
    let s = Schedule::read(
        &cfg,
        &Env {
            now_ms: now,
            store: &mut store,
        },
    )
    .unwrap();
    assert_eq!((s.due_ms - now, s.backoff_ms), (selfcheck::RECHECK_MS, 0));
}

#[test]
fn a_refused_salesforce_login_is_not_tried_again_for_five_minutes() {
    let (mut store, cfg) = ready(&config(json!({})));
    let refused = |p: &str| match p {
        "login" => status(400, std::str::from_utf8(LOGIN_REFUSED).unwrap()),
        other => healthy(other),
    };
    let r = round(&cfg, &mut store, T0, &refused);
    let e = errors(&r);
    assert_eq!(e.len(), 1);
    assert!(
        e[0].contains("Salesforce login refused (invalid_grant: authentication failure): check salesforce.grant"),
        "{}",
        e[0]
    );
    assert_eq!(r.gauges[1], (Gauge::SalesforceReady, 0));
    // The rounds within five minutes retry the license server but not the login.
    let mut now = T0;
    let mut logins = 1;
    while now < T0 + 600_000 {
        now = Schedule::read(
            &cfg,
            &Env {
                now_ms: now,
                store: &mut store,
            },
        )
        .unwrap()
        .due_ms;
        let r = round(&cfg, &mut store, now, &refused);
        let tried = r.calls.iter().any(|c| which(c) == "login");
        if tried {
            logins += 1;
            assert!(
                now >= T0 + selfcheck::LOGIN_REFUSED_PAUSE_MS,
                "login retried at +{} ms",
                now - T0
            );
        } else {
            assert!(errors(&r)
                .iter()
                .any(|l| l.contains("the last login was refused; not tried again")));
        }
        assert_eq!(r.gauges[1], (Gauge::SalesforceReady, 0));
    }
    assert_eq!(logins, 2, "one login per five minutes in ten minutes");
    assert!(store.get(&salesforce::token_key("keygate")).is_none());
}

const KEYGEN_ME: &[u8] = include_bytes!("../../../testdata/keygen/me.json");
const KEYGEN_POLICY: &[u8] = include_bytes!("../../../testdata/keygen/policy.json");
const KEYGEN_TOKEN_INVALID: &[u8] = include_bytes!("../../../testdata/keygen/token_invalid.json");
const KEYGEN_NOT_FOUND: &[u8] = include_bytes!("../../../testdata/keygen/not_found.json");

fn keygen_reply(status: u16, body: &[u8]) -> Response {
    Response {
        status: Some(status),
        headers: vec![(
            "content-type",
            "application/vnd.api+json; charset=utf-8".to_owned(),
        )],
        body: body.to_vec(),
    }
}

fn keygen_cfg() -> Rc<Config> {
    use common::keygen_model::keygen_json;
    Rc::new(Config::from_json(keygen_json(json!({})).as_bytes(), &common::world::env).unwrap())
}

#[test]
fn with_keygen_a_round_checks_the_token_the_account_and_every_mapped_policy() {
    use common::keygen_model::{ANNUAL, PERPETUAL};
    let (mut store, cfg) = ready(&keygen_cfg());
    let healthy = |probe: &str| match probe {
        "me" => keygen_reply(200, KEYGEN_ME),
        "policy" => keygen_reply(200, KEYGEN_POLICY),
        other => healthy(other),
    };
    let r = round(&cfg, &mut store, T0, &healthy);
    let paths: Vec<&str> = r.calls.iter().map(|c| c.path.as_str()).collect();
    assert_eq!(
        paths,
        [
            "/v1/accounts/acme/me".to_owned(),
            format!("/v1/accounts/acme/policies/{PERPETUAL}"),
            format!("/v1/accounts/acme/policies/{ANNUAL}"),
            salesforce::TOKEN_PATH.to_owned(),
        ]
    );
    assert!(r.calls[..3].iter().all(|c| c.cluster == "license_server"
        && c.headers.contains(&(
            "authorization",
            "Bearer secret-of-KEYGATE_KEYGEN_TOKEN".to_owned()
        ))));
    assert!(errors(&r).is_empty(), "{:?}", r.logs);
    assert_eq!(
        r.gauges,
        [(Gauge::LicenseReady, 1), (Gauge::SalesforceReady, 1)]
    );

    // A refused token, named by its variable; a policy Keygen does not have, with its products.
    let (mut store, cfg) = ready(&keygen_cfg());
    let refused = |probe: &str| match probe {
        "me" => keygen_reply(401, KEYGEN_TOKEN_INVALID),
        "policy" => keygen_reply(404, KEYGEN_NOT_FOUND),
        other => healthy(other),
    };
    let r = round(&cfg, &mut store, T0, &refused);
    let errors = errors(&r);
    assert_eq!(errors.len(), 3, "{errors:?}");
    assert!(errors[0].starts_with("self-check: license server: Keygen refused the token for GET /me (HTTP 401 Unauthorized: You must be authenticated to complete the request (code TOKEN_INVALID)): check the variable KEYGATE_KEYGEN_TOKEN holds a product, environment or admin token of account acme"), "{}", errors[0]);
    assert!(
        errors[1].starts_with(&format!(
            "self-check: license server: Keygen has no policy {PERPETUAL} (HTTP 404 Not found: "
        )),
        "{}",
        errors[1]
    );
    assert!(
        errors[1].ends_with(
            "products 001 map to it; check the policy's id (and that the token's product owns it)"
        ),
        "{}",
        errors[1]
    );
    assert!(
        errors[2].contains("products 002 map to it"),
        "{}",
        errors[2]
    );
    assert_eq!(
        r.gauges,
        [(Gauge::LicenseReady, 0), (Gauge::SalesforceReady, 1)]
    );
}
