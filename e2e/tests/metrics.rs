//! The counters as an operator's Prometheus reads them: labels from the shipped `stats_tags`, and
//! every series the alerting rules (host-config/prometheus/keygate-rules.yaml) query exists in a
//! real Envoy's /stats/prometheus.

use keygate_e2e::soap_reply::{assert_ack_from, assert_server_fault};
use keygate_e2e::{repo_root, testdata, Gateway, GatewayOptions};
use keygate_standins::{Endpoint, Fault, FaultKind};
use std::collections::BTreeSet;

/// `name{labels} value` lines of the exposition format, without comments.
fn samples(text: &str) -> Vec<(String, f64)> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .filter_map(|l| {
            let (series, value) = l.rsplit_once(' ')?;
            // Envoy writes an untagged series as `name{}`; Prometheus reads it as `name`.
            let series = series.strip_suffix("{}").unwrap_or(series);
            Some((series.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The `keygate_…` metric names an expression file mentions.
fn names_in(rules: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = rules;
    while let Some(i) = rest.find("keygate_") {
        let tail = &rest[i..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        names.insert(tail[..end].to_owned());
        rest = &tail[end..];
    }
    names
}

#[test]
fn counters_carry_labels_and_every_series_the_alerts_use_exists() {
    let gw = Gateway::start(GatewayOptions::default());
    let body = testdata("soap/valid/activated_one.xml");
    gw.standins
        .inject_fault(Fault::new(Endpoint::License, FaultKind::Status))
        .unwrap();
    assert_server_fault(&gw.post_webhook(&body));
    assert_ack_from(&gw.post_webhook(&body), &gw);

    // The self-check's first round (one tick after start) sets the readiness gauges.
    assert!(gw.wait_for_log(
        "self-check: Salesforce and the license server are ready",
        std::time::Duration::from_secs(8)
    ));
    let text = gw.admin_get("/stats/prometheus").text();
    let got = samples(&text);
    let value = |series: &str| {
        got.iter()
            .find(|(s, _)| s == series)
            .map(|(_, v)| *v)
            .unwrap_or_else(|| panic!("{series} not in /stats/prometheus:\n{text}"))
    };
    assert_eq!(value(r#"keygate_messages_faulted{reason="upstream"}"#), 1.0);
    assert_eq!(value(r#"keygate_messages_faulted{reason="auth"}"#), 0.0);
    assert_eq!(value(r#"keygate_callouts_failed{upstream="license"}"#), 1.0);
    assert_eq!(
        value(r#"keygate_callouts_failed{upstream="salesforce"}"#),
        0.0
    );
    assert_eq!(value(r#"keygate_callouts_failed{upstream="ledger"}"#), 0.0);
    assert_eq!(value(r#"keygate_upstream_ready{upstream="license"}"#), 1.0);
    assert_eq!(
        value(r#"keygate_upstream_ready{upstream="salesforce"}"#),
        1.0
    );
    assert_eq!(value(r#"keygate_lines_skipped{cause="unmapped"}"#), 0.0);
    assert_eq!(value(r#"keygate_lines_skipped{cause="unknown_key"}"#), 0.0);
    // The lifecycle's counters exist before the first lifecycle call.
    for name in [
        "keygate_licenses_revoked",
        "keygate_licenses_restored",
        "keygate_licenses_reduced",
        "keygate_licenses_renewed",
    ] {
        assert_eq!(value(name), 0.0, "{name}");
    }
    assert!(
        !gw.envoy_log().contains("Skipping duplicate tag"),
        "a stats_tags specifier was dropped:\n{}",
        gw.log_tail(20)
    );
    assert_eq!(value("keygate_messages_acked"), 1.0);
    assert_eq!(value("keygate_licenses_issued"), 1.0);
    // No counter is left under its untagged name.
    assert!(
        !text.contains("keygate_messages_faulted_")
            && !text.contains("keygate_callouts_failed_")
            && !text.contains("keygate_lines_skipped_")
            && !text.contains("keygate_upstream_ready_"),
        "{text}"
    );

    let rules =
        std::fs::read_to_string(repo_root().join("host-config/prometheus/keygate-rules.yaml"))
            .expect("rules file");
    let families: BTreeSet<String> = got
        .iter()
        .map(|(s, _)| s.split('{').next().unwrap_or_default().to_owned())
        .collect();
    let queried = names_in(&rules);
    // Exactly the families the rules name today: a rule that stops naming one is noticed.
    assert_eq!(queried.len(), 8, "{queried:?}");
    let missing: Vec<&String> = queried.iter().filter(|n| !families.contains(*n)).collect();
    assert!(
        missing.is_empty(),
        "the alerting rules query series Envoy does not export: {missing:?}"
    );
}
