//! License-server requests on the wire: which calls are form POSTs and which are signed GETs
//! (QLM's strict authentication), the signature against values computed independently, the
//! line reference, and that no credential shows where it could be logged.
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
use common::world::config;

use keygate_core::ids::SfId;
use keygate_core::license::{self, qlm_timestamp, sign, Customer, IssueRequest, KeyChange};
use keygate_core::secret::Secret;
use serde_json::json;

/// 2023-11-14 22:13:20 UTC.
const NOW_MS: u64 = 1_700_000_000_123;
const ITEM: &str = "8025Y00000AbCdEQAV";

fn form(bytes: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(bytes).into_owned().collect()
}

fn header<'a>(req: &'a license::HttpRequest, name: &str) -> Option<&'a str> {
    req.headers
        .iter()
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v.as_str())
}

#[test]
fn the_timestamp_is_utc_in_qlms_format() {
    assert_eq!(qlm_timestamp(NOW_MS), "2023-11-14 22:13:20");
    assert_eq!(qlm_timestamp(0), "1970-01-01 00:00:00");
    // A leap day, and the last second of a year.
    assert_eq!(qlm_timestamp(951_782_400_000), "2000-02-29 00:00:00");
    assert_eq!(qlm_timestamp(1_735_689_599_999), "2024-12-31 23:59:59");
}

/// The hash against values computed by an independent HMAC-SHA256 (Python's `hmac` module):
///
/// ```text
/// python3 -c "import hmac,hashlib; print(hmac.new(KEY, URL + '&X-Qlm-Timestamp:' + TS
///             + '&X-Qlm-Authentication-Version:2', hashlib.sha256).hexdigest())"
/// ```
#[test]
fn the_signature_matches_an_independent_hmac_sha256() {
    // The URL of QLM's own how-to, with its API key `123456` and its timestamp.
    let url = "http://localhost:55555/qlmservice.asmx/RetrieveActivationKeyHttp?is_orderid=1234&is_userdata1=99999&is_user=ralph&is_pwd=123456&is_format=json";
    assert_eq!(
        sign(&Secret::new("123456".into()), url, "2023-10-30 23:59:00"),
        "5dec5226a201db4fde476a1b4a9c000b3113163be75e7503e144f83727e24ff6"
    );
    // The lookup keygate sends for the demo line, signed end to end by `to_http`.
    let cfg = config(json!({}));
    let lic = cfg.issuing.as_ref().unwrap().license.qlm().unwrap();
    let req = license::lookup(lic, ITEM).to_http(lic, NOW_MS);
    assert_eq!(req.verb, "GET");
    assert_eq!(
        req.path,
        "/qlmLicenseServer/qlmservice.asmx/RetrieveActivationKeyHttp?is_userdata1=8025Y00000AbCdEQAV&is_format=xml&is_vendor=salesforce&is_user=secret-of-KEYGATE_QLM_USER&is_pwd=secret-of-KEYGATE_QLM_PASSWORD"
    );
    assert_eq!(header(&req, "x-qlm-timestamp"), Some("2023-11-14 22:13:20"));
    assert_eq!(header(&req, "x-qlm-authentication-version"), Some("2"));
    assert_eq!(
        header(&req, "x-qlm-authentication-token"),
        Some("7388e21d44e45f4df52070900bfd7769d7e6c4470fbab651694657ff762552d8")
    );
    assert!(req.body.is_empty());
}

#[test]
fn the_signed_url_is_the_configured_base_and_the_path_stays_the_clusters() {
    let cfg = config(json!({"license_server": {"strict_auth": {
        "url_base": "https://qlm.example.net/Qlm/QlmLicenseServerNetCore/api/v1/QlmApi"}}}));
    let lic = cfg.issuing.as_ref().unwrap().license.qlm().unwrap();
    let req = license::lookup(lic, ITEM).to_http(lic, NOW_MS);
    let query = req.path.split_once('?').unwrap().1;
    let url = format!(
        "https://qlm.example.net/Qlm/QlmLicenseServerNetCore/api/v1/QlmApi/RetrieveActivationKeyHttp?{query}"
    );
    let expected = sign(
        &Secret::new("secret-of-KEYGATE_QLM_API_KEY".into()),
        &url,
        "2023-11-14 22:13:20",
    );
    assert_eq!(
        header(&req, "x-qlm-authentication-token"),
        Some(expected.as_str())
    );
    assert!(req
        .path
        .starts_with("/qlmLicenseServer/qlmservice.asmx/RetrieveActivationKeyHttp?"));
    // Another second, another signature.
    let later = license::lookup(lic, ITEM).to_http(lic, NOW_MS + 1000);
    assert_ne!(
        header(&later, "x-qlm-authentication-token"),
        header(&req, "x-qlm-authentication-token")
    );
}

#[test]
fn methods_outside_strict_auth_are_form_posts_with_credentials_in_the_body() {
    let cfg = config(json!({}));
    let issuing = cfg.issuing.as_ref().unwrap();
    let lic = issuing.license.qlm().unwrap();
    let item = SfId::parse(ITEM).unwrap();
    let customer = Customer {
        full_name: "Jane Doe".into(),
        email: "jane@acme.example".into(),
        company: "Acme".into(),
        phone: String::new(),
    };
    let issue = license::issue(
        lic,
        &IssueRequest {
            product: issuing.product("001").unwrap(),
            quantity: 3,
            order_item_id: &item,
            order_number: "00000114",
            customer: &customer,
        },
    )
    .to_http(lic, NOW_MS);
    assert_eq!(issue.verb, "POST");
    assert_eq!(
        issue.path,
        "/qlmLicenseServer/qlmservice.asmx/GetActivationKeyWithExpiryDate"
    );
    assert_eq!(
        header(&issue, "content-type"),
        Some("application/x-www-form-urlencoded")
    );
    assert!(header(&issue, "x-qlm-authentication-token").is_none());
    let f = form(&issue.body);
    let arg = |name: &str| f.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str());
    // The line's reference under both names: the documented one and the one QLM's lookup reads.
    assert_eq!(arg("is_userdata1"), Some(ITEM));
    assert_eq!(arg("is_orderid"), Some(ITEM));
    assert_eq!(arg("is_quantity"), Some("3"));
    assert_eq!(arg("is_pwd"), Some("secret-of-KEYGATE_QLM_PASSWORD"));
    assert_eq!(arg("is_emailtemplate"), Some("1. New Order"));

    for change in [
        KeyChange::Revoke,
        KeyChange::Restore,
        KeyChange::SetQuantity(2),
    ] {
        let req = license::change(lic, "AAAAA-BBBBB-CCCCC", change).to_http(lic, NOW_MS);
        assert_eq!(req.verb, "POST");
        assert!(!req.path.contains('?'));
        assert!(form(&req.body).contains(&("is_avkey".into(), "AAAAA-BBBBB-CCCCC".into())));
    }
    let validate = license::validate(lic, "AAAAA-BBBBB-CCCCC").to_http(lic, NOW_MS);
    assert_eq!(validate.verb, "POST");
    assert!(form(&validate.body).contains(&("is_activate".into(), "false".into())));
    // The ping has no arguments: a GET, as QLM's page shows it.
    let ping = license::ping().to_http(lic, NOW_MS);
    assert_eq!(
        (ping.verb, ping.path.as_str()),
        ("GET", "/qlmLicenseServer/qlmservice.asmx/PingHttp")
    );
}

#[test]
fn the_lookup_asks_by_the_configured_reference_alone() {
    for (reference, other) in [
        ("is_userdata1", "is_orderid"),
        ("is_orderid", "is_userdata1"),
    ] {
        let cfg =
            config(json!({"license_server": {"line_reference": reference, "strict_auth": null}}));
        let lic = cfg.issuing.as_ref().unwrap().license.qlm().unwrap();
        let req = license::lookup(lic, ITEM).to_http(lic, NOW_MS);
        // Without strict_auth: a form POST, as before.
        assert_eq!(req.verb, "POST");
        let f = form(&req.body);
        assert!(
            f.contains(&(reference.to_owned(), ITEM.to_owned())),
            "{f:?}"
        );
        assert!(!f.iter().any(|(k, _)| k == other), "{f:?}");
    }
}

#[test]
fn every_method_can_be_signed_and_a_signed_url_never_shows_in_debug() {
    let cfg = config(json!({"license_server": {"strict_auth": {"methods": [
        "GetActivationKeyWithExpiryDate", "RevokeLicenseHttp", "ValidateLicenseHttp", "PingHttp"]}}}));
    let lic = cfg.issuing.as_ref().unwrap().license.qlm().unwrap();
    let revoke = license::change(lic, "AAAAA-BBBBB-CCCCC", KeyChange::Revoke).to_http(lic, NOW_MS);
    assert_eq!(revoke.verb, "GET");
    assert!(revoke
        .path
        .contains("is_pwd=secret-of-KEYGATE_QLM_PASSWORD"));
    let shown = format!("{revoke:?}");
    assert_eq!(
        shown,
        "GET /qlmLicenseServer/qlmservice.asmx/RevokeLicenseHttp"
    );
    // The lookup is no longer in the list: a form POST.
    let lookup = license::lookup(lic, ITEM).to_http(lic, NOW_MS);
    assert_eq!(lookup.verb, "POST");
    // A signed ping: no query, the URL alone is hashed.
    let ping = license::ping().to_http(lic, NOW_MS);
    assert_eq!(ping.path, "/qlmLicenseServer/qlmservice.asmx/PingHttp");
    assert_eq!(
        header(&ping, "x-qlm-authentication-token").map(str::to_owned),
        Some(sign(
            &Secret::new("secret-of-KEYGATE_QLM_API_KEY".into()),
            "https://licenses.example.com/qlmLicenseServer/qlmservice.asmx/PingHttp",
            "2023-11-14 22:13:20"
        ))
    );
}
