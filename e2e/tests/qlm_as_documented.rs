//! keygate against a license server that behaves as Soraco documents a stock QLM server (the
//! stand-in's defaults): strict authentication on `RetrieveActivationKeyHttp`, `is_orderid`
//! dropped on issue, the documented reply shapes. And the start-up self-check's word on each
//! misconfiguration, and an access log (the shipped one) that holds no secret.

use keygate_e2e::exactly_once::{keys_written_back, short_issuing_marks, SHORT_MARK};
use keygate_e2e::soap_reply::{assert_ack_from, assert_no_leaks, assert_server_fault};
use keygate_e2e::{json, testdata, Gateway, GatewayOptions, HOOK_PASSWORD, SECRET_ENV};
use keygate_standins::{Endpoint, DEMO_ITEM_ID, MULTI_LINE_ITEM_IDS};
use std::time::Duration;

/// The first round starts one tick (1 s) after the configuration; its calls are on loopback.
const ROUND: Duration = Duration::from_secs(8);

fn one() -> String {
    testdata("soap/valid/activated_one.xml")
}

/// Waits for the first self-check round to end (its summary line); Envoy's log so far.
fn first_round(gw: &Gateway) -> String {
    assert!(
        gw.wait_for_log(
            "keygate: self-check: Salesforce and the license server are ready",
            ROUND
        ) || gw.wait_for_log("keygate: self-check: not ready", Duration::from_millis(1)),
        "no self-check round ended:\n{}",
        gw.log_tail(30)
    );
    gw.envoy_log()
}

fn gauges(gw: &Gateway) -> (u64, u64) {
    (
        gw.counter("keygate_upstream_ready_license"),
        gw.counter("keygate_upstream_ready_salesforce"),
    )
}

/// Lines of the self-check that name a problem.
fn problems(log: &str) -> Vec<&str> {
    log.lines()
        .filter(|l| {
            l.contains("keygate: self-check: ")
                && !l.contains("ready")
                && !l.contains("reachable (QLM")
        })
        .collect()
}

#[test]
fn a_new_order_is_acked_with_one_key_after_a_signed_lookup() {
    let gw = Gateway::start(GatewayOptions::default());
    assert_ack_from(&gw.post_webhook(one()), &gw);
    let record = gw.standins.record();
    let lookups: Vec<_> = record
        .iter()
        .filter(|r| r.endpoint == Endpoint::Retrieve)
        .collect();
    assert_eq!(lookups.len(), 1, "{record:#?}");
    // Accepted by the stock server's strict authentication: a signed GET, by is_userdata1.
    assert_eq!(
        (lookups[0].method.as_str(), lookups[0].status),
        ("GET", 200)
    );
    assert_eq!(
        lookups[0].form.get("is_userdata1").map(String::as_str),
        Some(DEMO_ITEM_ID)
    );
    assert!(lookups[0]
        .headers
        .contains_key("x-qlm-authentication-token"));
    let issued = gw.standins.issued();
    assert_eq!(issued[DEMO_ITEM_ID].len(), 1, "{issued:?}");
    // The stock server dropped is_orderid: the key is known by is_userdata1 alone.
    let key = &issued[DEMO_ITEM_ID][0];
    assert_eq!(gw.standins.keys()[key].orderid, None);
    assert_eq!(gw.standins.writebacks()[DEMO_ITEM_ID], *key);
    assert_no_leaks(&gw);
}

/// Issued, the write-back refused, Envoy restarted (the ledger gone), Salesforce redelivers: the
/// signed lookup by the documented reference finds the key; still one key.
#[test]
fn after_a_refused_write_back_and_a_restart_the_lookup_finds_the_key() {
    let gw = Gateway::start(GatewayOptions::default().patch(short_issuing_marks()));
    gw.standins.refuse_writeback(&[DEMO_ITEM_ID]);
    let started = std::time::Instant::now();
    let why = assert_server_fault(&gw.post_webhook(one()));
    assert!(why.contains("FIELD_CUSTOM_VALIDATION_EXCEPTION"), "{why}");
    let gw = gw.restart_envoy();
    // The new Envoy waits out the first delivery's issuing mark, then looks the line up.
    std::thread::sleep(SHORT_MARK.saturating_sub(started.elapsed()));
    gw.standins.refuse_writeback(&[]);
    let mark = gw.standins.record().len();
    assert_ack_from(&gw.post_webhook(one()), &gw);
    let issued = gw.standins.issued();
    assert_eq!(issued[DEMO_ITEM_ID].len(), 1, "{issued:?}");
    let redelivery = &gw.standins.record()[mark..];
    let found = redelivery
        .iter()
        .find(|r| r.endpoint == Endpoint::Retrieve)
        .expect("a lookup");
    assert_eq!(found.status, 200);
    assert!(!redelivery.iter().any(|r| r.endpoint == Endpoint::License));
    assert_eq!(
        gw.standins.writebacks()[DEMO_ITEM_ID],
        issued[DEMO_ITEM_ID][0]
    );
    assert_eq!(gw.counter("keygate_licenses_recovered"), 1);
}

/// Looked up by `is_orderid` against a stock server (which dropped it on issue) the lookup finds
/// nothing: why `is_userdata1` is the default. With a server that keeps it, both work.
#[test]
fn the_line_reference_is_configurable_and_the_default_is_the_documented_one() {
    let gw = Gateway::start(
        GatewayOptions::default()
            .patch(short_issuing_marks())
            .patch(json!({"license_server": {"line_reference": "is_orderid"}})),
    );
    gw.standins.set_issue_keeps_orderid(true);
    gw.standins.refuse_writeback(&[DEMO_ITEM_ID]);
    let started = std::time::Instant::now();
    assert_server_fault(&gw.post_webhook(one()));
    let gw = gw.restart_envoy();
    std::thread::sleep(SHORT_MARK.saturating_sub(started.elapsed()));
    gw.standins.refuse_writeback(&[]);
    assert_ack_from(&gw.post_webhook(one()), &gw);
    assert_eq!(gw.standins.issued()[DEMO_ITEM_ID].len(), 1);
    let lookups: Vec<_> = gw
        .standins
        .record()
        .into_iter()
        .filter(|r| r.endpoint == Endpoint::Retrieve)
        .collect();
    assert!(
        lookups.iter().all(
            |r| r.form.get("is_orderid").map(String::as_str) == Some(DEMO_ITEM_ID)
                && !r.form.contains_key("is_userdata1")
        ),
        "{lookups:#?}"
    );
}

/// A wrong API key: the lookup is refused, the message faults naming strict authentication, and
/// nothing is issued (no lookup answer, no issue).
#[test]
fn a_wrong_api_key_faults_naming_strict_authentication_and_issues_nothing() {
    let gw =
        Gateway::start(GatewayOptions::default().env("KEYGATE_QLM_API_KEY", "not-the-api-key"));
    let why = assert_server_fault(&gw.post_webhook(testdata("soap/valid/several.xml")));
    assert!(
        why.contains("Strict authentication failed: invalid hash"),
        "{why}"
    );
    assert!(gw.standins.issued().is_empty());
    let record = gw.standins.record();
    assert!(
        !record.iter().any(|r| r.endpoint == Endpoint::License),
        "{record:#?}"
    );
    let lines: Vec<String> = vec![
        DEMO_ITEM_ID.into(),
        MULTI_LINE_ITEM_IDS[0].into(),
        MULTI_LINE_ITEM_IDS[1].into(),
    ];
    let written = keys_written_back(&gw.standins);
    for line in &lines {
        assert!(!written.contains_key(line), "{written:?}");
    }
    // The self-check says the same, with what to change.
    let log = first_round(&gw);
    // One problem, one line a round (a second round may have run: it backs off from 5 s).
    let p = problems(&log);
    assert!(!p.is_empty());
    for line in &p {
        assert!(
            line.contains("strict authentication refused for RetrieveActivationKeyHttp (Error: Strict authentication failed: invalid hash.)"),
            "{line}"
        );
    }
    assert_eq!(gauges(&gw), (0, 1));
    assert_no_leaks(&gw);
}

/// Each misconfiguration gets one self-check line saying what to change, and its gauge at 0; a
/// correct one gets both gauges at 1. The self-check's calls never reach the record (they are
/// marked) and take no fault meant for a delivery.
#[test]
fn the_self_check_names_each_misconfiguration() {
    let gw = Gateway::start(GatewayOptions::default());
    let log = first_round(&gw);
    assert!(problems(&log).is_empty(), "{:#?}", problems(&log));
    assert_eq!(gauges(&gw), (1, 1));
    assert!(
        gw.standins.record().is_empty(),
        "the self-check is not in the record"
    );
    let probes = gw.standins.probes();
    let kinds: Vec<&str> = probes.iter().map(|p| p.endpoint.as_str()).collect();
    assert!(
        kinds.contains(&"ping") && kinds.contains(&"retrieve") && kinds.contains(&"token"),
        "{kinds:?}"
    );
    drop(gw);

    /// (name, options, the stand-in's switch, the line expected, the gauges (license, salesforce)).
    type Case = (
        &'static str,
        GatewayOptions,
        fn(&Gateway),
        &'static str,
        (u64, u64),
    );
    let cases: [Case; 6] = [
        (
            "strict_auth not configured",
            GatewayOptions::default().patch(json!({"license_server": {"strict_auth": null}})),
            |_| {},
            "RetrieveActivationKeyHttp requires strict authentication (Error: Strict authentication failed: missing header",
            (0, 1),
        ),
        (
            "lookup method disabled",
            GatewayOptions::default(),
            |gw| gw.standins.set_disabled_methods(&["RetrieveActivationKeyHttp"]),
            "set the server property enableRetrieveActivationKeyHttp to true",
            (0, 1),
        ),
        (
            "gateway address not allowed",
            GatewayOptions::default(),
            |gw| gw.standins.set_allowed_ips(Some(&["10.1.2.0/24"])).unwrap(),
            "this gateway's address is not allowed to call RetrieveActivationKeyHttp",
            (0, 1),
        ),
        (
            "wrong QLM password",
            GatewayOptions::default().env("KEYGATE_QLM_PASSWORD", "wrong-qlm-password"),
            |_| {},
            "credentials refused for RetrieveActivationKeyHttp (Error: invalid user or password): check the variables license_server.user_env and password_env",
            (0, 1),
        ),
        (
            "license cluster missing",
            GatewayOptions::default().patch(json!({"license_server": {"cluster": "no_such_cluster"}})),
            |_| {},
            "license server unreachable: PingHttp got no answer through cluster 'no_such_cluster'",
            (0, 1),
        ),
        (
            "Salesforce secret wrong",
            GatewayOptions::default().env("KEYGATE_SF_CLIENT_SECRET", "wrong-client-secret"),
            |_| {},
            "Salesforce login refused (invalid_client: invalid client credentials): check salesforce.grant",
            (1, 0),
        ),
    ];
    for (name, options, setup, expected, expected_gauges) in cases {
        // The stand-in's switch must be on before the first round (one tick after start).
        let gw = Gateway::start(options);
        setup(&gw);
        let log = first_round(&gw);
        let p = problems(&log);
        assert!(
            p.iter().any(|l| l.contains(expected)),
            "{name}: expected\n{expected}\nin\n{p:#?}"
        );
        if name == "strict_auth not configured" {
            assert!(
                p.iter()
                    .any(|l| l.contains("): set license_server.strict_auth with the API key")),
                "{p:#?}"
            );
        }
        assert_eq!(gauges(&gw), expected_gauges, "{name}");
        assert_no_leaks(&gw);
    }
}

/// A refused Salesforce login is not tried again by the self-check for five minutes, however
/// often the license server's side is checked meanwhile (a wrong password never locks the user).
#[test]
fn a_refused_login_is_not_retried_by_the_self_check_within_five_minutes() {
    let gw = Gateway::start(
        GatewayOptions::default()
            .env("KEYGATE_SF_CLIENT_SECRET", "wrong-client-secret")
            .patch(json!({"license_server": {"strict_auth": null}})),
    );
    // Rounds at ~1 s, then 5 s and 10 s later (both upstreams fail, so it backs off).
    assert!(
        gw.wait_for_log(
            "the last login was refused; not tried again",
            Duration::from_secs(12)
        ),
        "{}",
        gw.log_tail(20)
    );
    let logins = gw
        .standins
        .probes()
        .iter()
        .filter(|p| p.endpoint == Endpoint::Token)
        .count();
    let pings = gw
        .standins
        .probes()
        .iter()
        .filter(|p| p.endpoint == Endpoint::Ping)
        .count();
    assert_eq!(logins, 1);
    assert!(pings >= 2, "{pings}");
}

/// The production access log (the shipped block, `%REQ_WITHOUT_QUERY%`) holds the webhook's path
/// but none of the secrets in its query, and none of the secrets keygate sends upstream.
#[test]
fn the_shipped_access_log_holds_no_secret() {
    let gw = Gateway::start(GatewayOptions::default().access_log());
    assert_ack_from(&gw.post_webhook(one()), &gw);
    assert!(
        gw.wait_for_log(
            "POST /qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler HTTP/1.1\" 200",
            Duration::from_secs(5)
        ),
        "{}",
        gw.log_tail(10)
    );
    let log = gw.envoy_log();
    assert!(!log.contains(HOOK_PASSWORD));
    assert!(!log.contains("is_pwd"), "a query string in the log");
    for (name, value) in SECRET_ENV {
        if name.ends_with("PASSWORD") || name.ends_with("SECRET") || name.ends_with("API_KEY") {
            assert!(!log.contains(value), "{name} in the log");
        }
    }
}
