//! Plugin configuration: defaults, every validation rule, secrets resolved from the environment.
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
use common::{patched_full, FULL};

use keygate_core::config::{Config, ContactField, Grant, LineReference};

const MINIMAL: &str = include_str!("../../../testdata/config/minimal.json");
const PASSWORD: &str = include_str!("../../../testdata/config/password_grant.json");
/// The README's Keygen example, whole (also a seed of the configuration fuzzer).
const KEYGEN: &str = include_str!("../../../testdata/config/keygen.json");

fn env(name: &str) -> Option<String> {
    match name {
        "KEYGATE_HOOK_USER" => Some("john@example.com".into()),
        "KEYGATE_HOOK_PASSWORD" => Some("hook-password-1".into()),
        "KEYGATE_SF_CLIENT_ID" => Some("cid".into()),
        "KEYGATE_SF_CLIENT_SECRET" => Some("sf-client-secret-1".into()),
        "KEYGATE_SF_USERNAME" => Some("integration@example.com".into()),
        "KEYGATE_SF_PASSWORD" => Some("pwTOKEN".into()),
        "KEYGATE_QLM_USER" => Some("keygate".into()),
        "KEYGATE_QLM_PASSWORD" => Some("qlm-password-1".into()),
        "KEYGATE_QLM_API_KEY" => Some("qlm-api-key-1".into()),
        "KEYGATE_KEYGEN_TOKEN" => Some("keygen-token-1".into()),
        "EMPTY" => Some(String::new()),
        _ => None,
    }
}

fn load(json: &str) -> Result<Config, String> {
    Config::from_json(json.as_bytes(), &env).map_err(|e| e.to_string())
}

/// Apply a JSON merge patch to FULL, then load it.
fn patched(patch: serde_json::Value) -> Result<Config, String> {
    load(&patched_full(patch))
}

#[test]
fn full_example_loads_with_secrets_from_env() {
    let c = load(FULL).unwrap();
    assert_eq!(c.handler_name, "QlmWebHookHandler");
    assert_eq!(c.allowed_orgs[0].as_str(), "00D5Y000001MPM7UAO");
    let s = c.inbound_secret.as_ref().unwrap();
    assert!(s.password.matches("hook-password-1"));
    assert!(!s.password.matches("hook-password-2"));
    assert_eq!(s.header, "x-keygate-secret");
    let i = c.issuing.as_ref().unwrap();
    assert!(matches!(
        i.salesforce.grant,
        Grant::ClientCredentials { .. }
    ));
    assert_eq!(i.salesforce.contact, ContactField::BillToContact);
    assert_eq!(i.license.max_concurrency, 4);
    assert_eq!(i.license.qlm().unwrap().vendor, "salesforce");
    assert_eq!(
        i.license.qlm().unwrap().affiliate_id.as_deref(),
        Some("salesforce")
    );
    // QLM's verbatim value: decoded like the license server decodes a query string.
    let p1 = i.product("001").unwrap();
    assert_eq!(
        p1.qlm().unwrap().get("is_emailtemplate"),
        Some("1. New Order")
    );
    assert_eq!(p1.qlm().unwrap().get("is_productname"), Some("MyProduct"));
    // `salesforce_pid_` keys are accepted as QLM names them.
    let p2 = i.product("002").unwrap();
    assert_eq!(p2.qlm().unwrap().get("is_productid"), Some("2"));
    assert_eq!(p2.qlm().unwrap().get("is_expduration"), Some("365"));
    assert_eq!(
        i.license.qlm().unwrap().line_reference,
        LineReference::UserData1
    );
    let strict = i.license.qlm().unwrap().strict_auth.as_ref().unwrap();
    assert!(strict.api_key.matches("qlm-api-key-1"));
    assert_eq!(strict.methods, ["RetrieveActivationKeyHttp"]);
    // Not given: what the server sees in front of the method, by the configured host and path.
    assert_eq!(
        strict.url_base,
        "https://licenses.example.com/qlmLicenseServer/qlmservice.asmx"
    );
}

#[test]
fn strict_authentication_and_the_line_reference_have_documented_defaults() {
    use serde_json::json;
    // Without `methods`: a stock server's list. Names are matched as QLM matches them.
    let c = patched(json!({"license_server": {
        "line_reference": "is_orderid",
        "strict_auth": {"api_key_env": "KEYGATE_QLM_API_KEY",
                        "url_base": "http://qlm.internal:8080/qlm/qlmservice.asmx/"}}}))
    .unwrap();
    let lic = c.issuing.as_ref().unwrap().license.qlm().unwrap();
    assert_eq!(lic.line_reference, LineReference::OrderId);
    let strict = lic.strict_auth.as_ref().unwrap();
    assert_eq!(strict.methods, ["RetrieveActivationKeyHttp"]);
    assert_eq!(
        strict.url_base,
        "http://qlm.internal:8080/qlm/qlmservice.asmx"
    );
    let c = patched(json!({"license_server": {"strict_auth": {
        "api_key_env": "KEYGATE_QLM_API_KEY",
        "methods": ["retrieveactivationkeyhttp", "ValidateLicenseHttp"]}}}))
    .unwrap();
    let issuing = c.issuing.unwrap();
    let strict = issuing.license.qlm().unwrap().strict_auth.as_ref().unwrap();
    assert_eq!(
        strict.methods,
        ["RetrieveActivationKeyHttp", "ValidateLicenseHttp"]
    );
    assert!(strict.applies_to("validatelicensehttp"));
    assert!(!strict.applies_to("GetActivationKeyWithExpiryDate"));
    // Without strict_auth no method is signed.
    let c = patched(json!({"license_server": {"strict_auth": null}})).unwrap();
    assert!(c
        .issuing
        .unwrap()
        .license
        .qlm()
        .unwrap()
        .strict_auth
        .is_none());
}

#[test]
fn debug_output_never_shows_secret_values() {
    let c = load(FULL).unwrap();
    let dump = format!("{c:?}");
    for secret in [
        "hook-password-1",
        "sf-client-secret-1",
        "qlm-password-1",
        "qlm-api-key-1",
        "john@example.com",
    ] {
        assert!(!dump.contains(secret), "{secret} leaked in Debug output");
    }
}

#[test]
fn minimal_config_has_safe_defaults_and_no_issuing() {
    let c = load(MINIMAL).unwrap();
    assert_eq!(c.handler_name, "QlmWebHookHandler");
    assert_eq!(c.max_body_bytes, 1024 * 1024);
    assert_eq!(c.deadline_ms, 45_000);
    assert!(c.issuing.is_none());
    assert!(c.inbound_secret.is_none());
}

#[test]
fn password_grant_and_customer_contact_variant() {
    let c = load(PASSWORD).unwrap();
    let i = c.issuing.unwrap();
    assert!(matches!(i.salesforce.grant, Grant::Password { .. }));
    assert_eq!(i.salesforce.contact, ContactField::CustomerAuthorizedBy);
    assert_eq!(i.salesforce.writeback_field, None);
}

#[test]
fn invalid_configurations_are_refused_with_a_reason() {
    use serde_json::json;
    let cases = [
        (json!({"allowed_org_ids": []}), "allowed_org_ids"),
        (
            json!({"allowed_org_ids": ["0015Y000001MPM7UAO"]}),
            "not an organization id",
        ),
        (
            json!({"unknown_field": 1}),
            "unknown_field: unknown field `unknown_field`, expected one of `handler_name`",
        ),
        // A value of the wrong type names its path and what it must be.
        (
            json!({"license_server": {"max_concurrency": "4"}}),
            "license_server.max_concurrency: invalid type: string \"4\", expected u64",
        ),
        (
            json!({"products": {"004": {"productid": 4, "majorversion": 1, "minorversion": 0, "flavour": 1}}}),
            "products.004.flavour: unknown field `flavour`",
        ),
        (json!({"handler_name": "a/b"}), "handler_name"),
        (json!({"max_body_bytes": 10}), "max_body_bytes"),
        (json!({"deadline_ms": 60000}), "deadline_ms"),
        (json!({"salesforce": {"grant": "jwt"}}), "grant"),
        (json!({"salesforce": {"client_secret_env": "NOPE"}}), "NOPE"),
        (
            json!({"salesforce": {"client_secret_env": "EMPTY"}}),
            "EMPTY",
        ),
        (json!({"salesforce": {"api_version": "60"}}), "api_version"),
        (
            json!({"salesforce": {"writeback_field": "a b"}}),
            "writeback_field",
        ),
        (
            json!({"salesforce": {"authority": "evil.com/x"}}),
            "authority",
        ),
        (json!({"license_server": null}), "together"),
        (
            json!({"license_server": {"max_concurrency": 0}}),
            "max_concurrency",
        ),
        (
            json!({"license_server": {"path_prefix": "no-slash"}}),
            "path_prefix",
        ),
        (
            json!({"products": {"003": "&is_majorversion=1&is_minorversion=0"}}),
            "is_productid is required",
        ),
        (
            json!({"products": {"003": "&is_productid=x&is_majorversion=1&is_minorversion=0"}}),
            "must be a number",
        ),
        (
            json!({"products": {"003": "&is_productid=1&is_majorversion=1&is_minorversion=0&is_pwd=x"}}),
            "is_pwd",
        ),
        (
            json!({"products": {"003": "&is_productid=1&is_majorversion=1&is_minorversion=0&foo=1"}}),
            "foo",
        ),
        (
            json!({"products": {"salesforce_pid_001": "&is_productid=1&is_majorversion=1&is_minorversion=0"}}),
            "mapped twice",
        ),
        (json!({"ledger": {"claim_ttl_ms": 1000}}), "claim_ttl_ms"),
        // A claim must outlive the deadline by a clear margin, not a millisecond.
        (
            json!({"deadline_ms": 45000, "ledger": {"claim_ttl_ms": 50000}}),
            "exceed deadline_ms by at least 10000 ms",
        ),
        (
            json!({"ledger": {"pending_grace_ms": 7200000}}),
            "pending_grace_ms",
        ),
        (json!({"max_reply_bytes": 1000}), "max_reply_bytes"),
        (
            json!({"license_server": {"lookup_before_reissue": false}}),
            "always asks RetrieveActivationKeyHttp",
        ),
        (
            json!({"license_server": {"line_reference": "is_userdata2"}}),
            "line_reference",
        ),
        (
            json!({"license_server": {"strict_auth": {"api_key_env": "NOPE"}}}),
            "NOPE (license_server.strict_auth.api_key_env)",
        ),
        (
            json!({"license_server": {"strict_auth": {"api_key_env": null, "methods": []}}}),
            "license_server.strict_auth: missing field `api_key_env`",
        ),
        (
            json!({"license_server": {"strict_auth": {"api_key": "inline"}}}),
            "license_server.strict_auth.api_key: unknown field `api_key`",
        ),
        (
            json!({"license_server": {"strict_auth": {"methods": ["GetLicensesHttp"]}}}),
            "'GetLicensesHttp' is not a method keygate calls",
        ),
        (
            json!({"license_server": {"strict_auth": {"methods": "RetrieveActivationKeyHttp"}}}),
            "license_server.strict_auth.methods: invalid type: string \"RetrieveActivationKeyHttp\", expected a sequence",
        ),
        (
            json!({"license_server": {"strict_auth": {"url_base": "licenses.example.com"}}}),
            "url_base must be an http(s) URL",
        ),
        (
            json!({"license_server": {"strict_auth": {"url_base": "https://h/x?is_pwd=1"}}}),
            "url_base must be an http(s) URL",
        ),
        // The line reference is keygate's: a mapping may not set it, in any case.
        (
            json!({"products": {"003": "&is_productid=1&is_majorversion=1&is_minorversion=0&is_userdata1=x"}}),
            "is_userdata1",
        ),
        (
            json!({"products": {"003": "&is_productid=1&is_majorversion=1&is_minorversion=0&is_OrderID=x"}}),
            "is_OrderID",
        ),
    ];
    for (patch, needle) in cases {
        let shown = patch.to_string();
        let err = patched(patch).expect_err(&shown);
        assert!(
            err.contains(needle),
            "patch {shown}: error '{err}' should mention '{needle}'"
        );
        assert!(
            !err.contains("sf-client-secret-1")
                && !err.contains("qlm-password-1")
                && !err.contains("qlm-api-key-1")
        );
    }
    assert!(load("not json").is_err());
    assert!(load("").is_err());
}

#[test]
fn fuzz_found_config_with_a_control_character_in_an_authority_is_refused() {
    let json =
        include_bytes!("../../../testdata/fuzz-found/config_parse-authority-control-char.bin");
    let err = Config::from_json(json, &|_| Some("x".into()))
        .unwrap_err()
        .to_string();
    assert!(err.contains("authority"), "{err}");
}

/// `FULL` with `field` of `section` set to `value` (a JSON null stays: not a merge patch).
fn with_field(section: &str, field: &str, value: serde_json::Value) -> Result<Config, String> {
    let mut v: serde_json::Value = serde_json::from_str(FULL).unwrap();
    match section {
        "" => v[field] = value,
        s => v[s][field] = value,
    }
    load(&v.to_string())
}

#[test]
fn null_means_no_affiliate_and_nothing_else() {
    let none = |v| with_field("license_server", "affiliate_id", v).unwrap();
    assert_eq!(
        none(serde_json::Value::Null)
            .issuing
            .unwrap()
            .license
            .qlm()
            .unwrap()
            .affiliate_id,
        None
    );
    assert_eq!(
        none(serde_json::json!(""))
            .issuing
            .unwrap()
            .license
            .qlm()
            .unwrap()
            .affiliate_id,
        None
    );
    assert_eq!(
        none(serde_json::json!("partner-7"))
            .issuing
            .unwrap()
            .license
            .qlm()
            .unwrap()
            .affiliate_id
            .as_deref(),
        Some("partner-7")
    );
    // Anywhere else a null is refused, naming the field: leave a field out for its default.
    let err = with_field("", "deadline_ms", serde_json::Value::Null).unwrap_err();
    assert!(
        err.contains("deadline_ms: invalid type: null, expected u64"),
        "{err}"
    );
}

#[test]
fn the_keygen_example_configuration_is_valid_as_written() {
    let c = Config::from_json(KEYGEN.as_bytes(), &env).unwrap();
    let i = c.issuing.as_ref().unwrap();
    let keygen = i.license.keygen().unwrap();
    assert_eq!(
        (keygen.account.as_str(), keygen.token_env.as_str()),
        ("acme", "KEYGATE_KEYGEN_TOKEN")
    );
    assert_eq!(i.license.cluster, "keygen");
    assert!(i.product("001").unwrap().seats_follow_quantity());
    assert!(!i.product("002").unwrap().seats_follow_quantity());
    assert!(i.product("002-RENEW").unwrap().renewal);
}
