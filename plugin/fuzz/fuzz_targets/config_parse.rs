//! `keygate_core::config::Config::from_json` on arbitrary bytes, with an environment in which every
//! variable is set to "x".
//!
//! On Ok, the validated config honours every documented bound: handler_name one path segment,
//! org ids `00D…`, ranges of sizes and timeouts, claim TTL longer than the deadline, header and
//! state-prefix charsets, and the strings that become HTTP `:authority`/`:path` of outgoing calls
//! carry no whitespace or control characters. The outcome does not depend on the secrets' values,
//! only on whether they are set; secret values never appear in an error or in `Debug`.
#![no_main]

use keygate_core::config::{Config, Grant, LicenseServer};
use keygate_core::products::Terms;
use keygate_fuzz::{allowed, assert_no_control, check_id, contains};
use libfuzzer_sys::fuzz_target;

const SENTINEL: &str = "Zq9-fuzz-secret-value-Zq9";

fuzz_target!(|data: &[u8]| {
    let x = |_: &str| Some("x".to_owned());
    let result = Config::from_json(data, &x);
    match &result {
        Ok(cfg) => check_config(cfg),
        // The configuration is the operator's, not untrusted input: its error text (which quotes
        // the JSON, through serde) is not held to the excerpt rules of the request parsers.
        Err(_) => {}
    }

    // Same document, a recognisable secret value: same verdict, and the value never leaks.
    let sentinel = |_: &str| Some(SENTINEL.to_owned());
    let second = Config::from_json(data, &sentinel);
    assert_eq!(
        result.is_ok(),
        second.is_ok(),
        "verdict depends on the secrets' values"
    );
    if !contains(data, SENTINEL.as_bytes()) {
        let shown = match &second {
            Ok(cfg) => format!("{cfg:?}"),
            Err(e) => e.to_string(),
        };
        assert!(!shown.contains(SENTINEL), "secret value shown: {shown}");
    }

    // No variable set: only a config that needs no secret is accepted.
    if let Ok(cfg) = Config::from_json(data, &|_: &str| None) {
        assert!(
            cfg.inbound_secret.is_none() && cfg.issuing.is_none(),
            "config with secrets accepted without them"
        );
    }
});

/// Strings that become `:authority` or part of `:path` of an outgoing call (`config-header-safe`).
fn header_safe(what: &str, s: &str) {
    if allowed("config-header-safe") {
        return;
    }
    assert!(
        !s.chars().any(|c| c.is_whitespace() || c.is_control()),
        "{what} {s:?} contains whitespace or a control character"
    );
}

fn check_config(cfg: &Config) {
    let h = &cfg.handler_name;
    assert!(!h.is_empty(), "empty handler_name");
    assert!(
        !h.contains(['/', '?', '#']),
        "handler_name {h:?} not one segment"
    );
    assert!(
        !h.chars().any(|c| c.is_whitespace() || c.is_control()),
        "handler_name {h:?}"
    );
    assert!((1024..=16 * 1024 * 1024).contains(&cfg.max_body_bytes));
    assert!(!cfg.allowed_orgs.is_empty(), "no allowed org");
    for org in &cfg.allowed_orgs {
        check_id("allowed org", org);
        assert_eq!(org.key_prefix(), "00D", "org id {org} accepted");
    }
    assert!((1_000..=58_000).contains(&cfg.deadline_ms));
    assert!((1..=1_000_000).contains(&cfg.ledger.max_lines));
    assert!(cfg.ledger.claim_ttl_ms > cfg.deadline_ms);
    let p = &cfg.state_prefix;
    assert!(
        !p.is_empty()
            && p.bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'),
        "state_prefix {p:?}"
    );
    if let Some(s) = &cfg.inbound_secret {
        assert!(
            !s.header.is_empty()
                && s.header.bytes().all(|b| b.is_ascii_lowercase()
                    || b.is_ascii_digit()
                    || b == b'-'
                    || b == b'_'),
            "secret header {:?}",
            s.header
        );
        assert!(!s.password.expose().is_empty());
        if let Some(u) = &s.user {
            assert!(!u.expose().is_empty());
        }
    }
    if let Some(i) = &cfg.issuing {
        let sf = &i.salesforce;
        assert!(!sf.cluster.is_empty());
        assert!(!sf.authority.is_empty());
        assert!(!sf.authority.contains(['/', '?', '#', '@']));
        header_safe("salesforce.authority", &sf.authority);
        assert!((100..=60_000).contains(&sf.timeout_ms));
        let v = sf
            .api_version
            .strip_prefix('v')
            .expect("api_version without v");
        let (a, b) = v.split_once('.').expect("api_version without '.'");
        assert!(!a.is_empty() && !b.is_empty());
        assert!(a.bytes().chain(b.bytes()).all(|c| c.is_ascii_digit()));
        if let Some(f) = &sf.writeback_field {
            assert!(f.len() <= 80 && f.bytes().next().is_some_and(|b| b.is_ascii_alphabetic()));
            assert!(f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'));
        }
        match &sf.grant {
            Grant::ClientCredentials {
                client_id,
                client_secret,
            } => {
                assert!(!client_id.expose().is_empty() && !client_secret.expose().is_empty());
            }
            Grant::Password {
                username, password, ..
            } => {
                assert!(!username.expose().is_empty() && !password.expose().is_empty());
            }
        }
        let lic = &i.license;
        assert!(!lic.cluster.is_empty());
        assert!(!lic.authority.is_empty());
        assert!(!lic.authority.contains(['/', '?', '#', '@']));
        header_safe("license_server.authority", &lic.authority);
        assert!((1..=32).contains(&lic.max_concurrency));
        assert!((100..=60_000).contains(&lic.timeout_ms));
        match &lic.server {
            LicenseServer::Qlm(qlm) => {
                let pp = &qlm.path_prefix;
                assert!(pp.is_empty() || pp.starts_with('/'), "path_prefix {pp:?}");
                assert!(!pp.ends_with('/'), "path_prefix {pp:?} ends with '/'");
                assert!(!pp.contains(['?', '#']), "path_prefix {pp:?}");
                header_safe("license_server.path_prefix", pp);
                assert!(!qlm.vendor.is_empty());
                if let Some(a) = &qlm.affiliate_id {
                    assert!(!a.is_empty());
                }
            }
            LicenseServer::Keygen(keygen) => {
                // It goes into every path.
                let a = &keygen.account;
                assert!(
                    !a.is_empty()
                        && a.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_'),
                    "account {a:?}"
                );
                assert!(!keygen.token.expose().is_empty());
            }
        }
        for (code, product) in &i.products {
            assert!(
                !code.is_empty() && code.len() <= 255,
                "product code {code:?}"
            );
            // Every product is in the configured server's terms.
            let args = match (&lic.server, &product.terms) {
                (LicenseServer::Qlm(_), Terms::Qlm(args)) => args,
                (LicenseServer::Keygen(_), Terms::Keygen(k)) => {
                    assert!(!k.policy.is_empty() && k.policy.bytes().all(|b| b.is_ascii_graphic()));
                    continue;
                }
                (server, terms) => panic!("product {code:?}: {terms:?} under {server:?}"),
            };
            for required in ["is_productid", "is_majorversion", "is_minorversion"] {
                let v = args
                    .get(required)
                    .unwrap_or_else(|| panic!("product {code:?} has no {required}"));
                assert!(!v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()));
            }
            let mut keys = std::collections::HashSet::new();
            for (k, _) in args.args() {
                assert!(k.starts_with("is_"), "product {code:?} argument {k:?}");
                assert!(
                    keys.insert(k.as_str()),
                    "product {code:?} argument {k:?} twice"
                );
                for reserved in [
                    "is_user",
                    "is_pwd",
                    "is_quantity",
                    "is_orderid",
                    "is_vendor",
                ] {
                    assert_ne!(k, reserved, "product {code:?} maps reserved {k}");
                }
            }
        }
    }
    assert_no_control("state_prefix", &cfg.state_prefix);
}
