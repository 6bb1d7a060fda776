//! Keygen's own documented requests and replies (`testdata/keygen`, each with its source in that
//! folder's README): keygate's requests have the documented members, and the Keygen backend reads
//! the replies as a delivery reads them: the key of a created license,
//! the keys a metadata lookup found, the 422s that mean "already so", the errors that name what
//! to fix, and a throttled call.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

#[cfg(all(target_arch = "wasm32", target_os = "unknown"))]
use wasm_bindgen_test::wasm_bindgen_test as test;

mod common;
use common::keygen_model::keygen_json;
use common::world::env;

use keygate_core::config::Config;
use keygate_core::license::{self, KeyChange, LicenseError, LicenseReply};
use serde_json::json;

const CREATED: &[u8] = include_bytes!("../../../testdata/keygen/license_created.json");
const LIST: &[u8] = include_bytes!("../../../testdata/keygen/license_list.json");
const LIST_EMPTY: &[u8] = include_bytes!("../../../testdata/keygen/license_list_empty.json");
const SUSPENDED_TWICE: &[u8] =
    include_bytes!("../../../testdata/keygen/license_suspended_twice.json");
const NOT_SUSPENDED: &[u8] = include_bytes!("../../../testdata/keygen/license_not_suspended.json");
const RENEW_NO_DURATION: &[u8] = include_bytes!("../../../testdata/keygen/renew_no_duration.json");
const TOKEN_INVALID: &[u8] = include_bytes!("../../../testdata/keygen/token_invalid.json");
const NOT_FOUND: &[u8] = include_bytes!("../../../testdata/keygen/not_found.json");
const ACCOUNT_NOT_FOUND: &[u8] = include_bytes!("../../../testdata/keygen/account_not_found.json");
const RATE_LIMITED: &[u8] = include_bytes!("../../../testdata/keygen/rate_limited.json");
const POLICY: &[u8] = include_bytes!("../../../testdata/keygen/policy.json");
const ME: &[u8] = include_bytes!("../../../testdata/keygen/me.json");

const CREATE_REQUEST: &[u8] =
    include_bytes!("../../../testdata/keygen/license_create_request.json");
const UPDATE_REQUEST: &[u8] =
    include_bytes!("../../../testdata/keygen/license_update_request.json");

const MEDIA: &str = "application/vnd.api+json; charset=utf-8";
const NOW_MS: u64 = 1_780_000_000_000;

fn keygen() -> Config {
    Config::from_json(keygen_json(json!({})).as_bytes(), &env).unwrap()
}

fn reply<'a>(
    status: u16,
    headers: &'a [(&'static str, String)],
    body: &'a [u8],
) -> LicenseReply<'a> {
    LicenseReply {
        status,
        headers,
        body,
        now_ms: NOW_MS,
    }
}

#[test]
fn a_created_license_gives_its_key_and_a_lookup_the_keys_it_found() {
    let cfg = keygen();
    let backend = license::backend(&cfg.issuing.as_ref().unwrap().license);
    let json = [("content-type", MEDIA.to_owned())];
    assert_eq!(
        backend.issued(&reply(201, &json, CREATED)).unwrap(),
        ["C1B6DE-39A6E3-DE1529-8F710B-A7C1E8-V3"]
    );
    assert_eq!(
        backend.found(&reply(200, &json, LIST)).unwrap(),
        ["C1B6DE-39A6E3-DE1529-8F710B-A7C1E8-V3"]
    );
    assert_eq!(
        backend.found(&reply(200, &json, LIST_EMPTY)).unwrap(),
        Vec::<String>::new()
    );
    assert_eq!(
        backend
            .expiry(&reply(200, &json, CREATED))
            .unwrap()
            .as_deref(),
        Some("2027-12-06T22:39:54.000Z")
    );
    // The self-check's reads of a policy and of the token's bearer.
    assert_eq!(
        license::keygen_read_policy(&reply(200, &json, POLICY)),
        Ok(())
    );
    assert_eq!(license::keygen_read_policy(&reply(200, &json, ME)), Ok(()));
}

#[test]
fn keygen_s_422_already_so_is_the_change_done_and_only_for_that_change() {
    let cfg = keygen();
    let backend = license::backend(&cfg.issuing.as_ref().unwrap().license);
    let json = [("content-type", MEDIA.to_owned())];
    assert_eq!(
        backend.change_applied(&KeyChange::Revoke, &reply(422, &json, SUSPENDED_TWICE)),
        Ok(())
    );
    assert_eq!(
        backend.change_applied(&KeyChange::Restore, &reply(422, &json, NOT_SUSPENDED)),
        Ok(())
    );
    // The other way round they are refusals.
    assert_eq!(
        backend.change_applied(&KeyChange::Restore, &reply(422, &json, SUSPENDED_TWICE)),
        Err(LicenseError::Refused(
            "HTTP 422 Unprocessable entity: is already suspended (at /data/attributes/suspended)"
                .into()
        ))
    );
    assert_eq!(
        backend.change_applied(&KeyChange::SetQuantity(2), &reply(422, &json, RENEW_NO_DURATION)),
        Err(LicenseError::Refused(
            "HTTP 422 Unprocessable entity: cannot be renewed because the policy does not have a duration"
                .into()
        ))
    );
}

#[test]
fn keygen_s_errors_name_what_to_fix() {
    let cfg = keygen();
    let backend = license::backend(&cfg.issuing.as_ref().unwrap().license);
    let json = [("content-type", MEDIA.to_owned())];
    assert_eq!(
        backend.issued(&reply(401, &json, TOKEN_INVALID)),
        Err(LicenseError::Refused("HTTP 401 Unauthorized: You must be authenticated to complete the request (code TOKEN_INVALID): is the token in KEYGATE_KEYGEN_TOKEN a product, environment or admin token of account acme?".into()))
    );
    // A 404 on a key: the key is unknown (a line to skip). On the account's collection: the
    // account is wrong.
    assert!(matches!(
        backend.change_applied(&KeyChange::Revoke, &reply(404, &json, NOT_FOUND)),
        Err(LicenseError::UnknownKey(_))
    ));
    match backend.found(&reply(404, &json, ACCOUNT_NOT_FOUND)) {
        Err(LicenseError::Refused(m)) => {
            assert!(
                m.ends_with(": is license_server.account acme right?"),
                "{m}"
            )
        }
        other => panic!("{other:?}"),
    }
    // A 5xx without a JSON:API body is its status.
    let html = [("content-type", "text/html".to_owned())];
    assert_eq!(
        backend.issued(&reply(502, &html, b"<html>Bad gateway</html>")),
        Err(LicenseError::Status(502))
    );
}

#[test]
fn a_throttled_call_waits_for_the_later_of_retry_after_and_the_reset_and_never_too_long() {
    let cfg = keygen();
    let backend = license::backend(&cfg.issuing.as_ref().unwrap().license);
    let with = |headers: &[(&'static str, String)]| {
        let mut all = vec![("content-type", MEDIA.to_owned())];
        all.extend_from_slice(headers);
        match backend.issued(&reply(429, &all, RATE_LIMITED)) {
            Err(LicenseError::Throttled { until_ms }) => until_ms - NOW_MS,
            other => panic!("{other:?}"),
        }
    };
    let reset_in = |s: u64| ("x-ratelimit-reset", (NOW_MS / 1000 + s).to_string());
    assert_eq!(with(&[("retry-after", "12".into())]), 12_000);
    assert_eq!(with(&[reset_in(40)]), 40_000);
    assert_eq!(with(&[("retry-after", "12".into()), reset_in(40)]), 40_000);
    // No usable header: Keygen's shortest window; a reset an hour away: its longest.
    assert_eq!(with(&[("retry-after", "soon".into())]), 30_000);
    assert_eq!(with(&[]), 30_000);
    assert_eq!(with(&[reset_in(3600)]), 600_000);
}

#[test]
fn fuzz_findings_stay_fixed() {
    // A 2xx whose `data` is a long string: serde's message quotes it; the reason stays short.
    let found = include_bytes!("../../../testdata/fuzz-found/keygen_replies-long-json-error.bin");
    let [s0, s1, _, _, body @ ..] = &found[..] else {
        panic!("a fuzz input has a four-byte head")
    };
    let cfg = keygen();
    let backend = license::backend(&cfg.issuing.as_ref().unwrap().license);
    let json = [("content-type", MEDIA.to_owned())];
    let e = backend
        .issued(&reply(u16::from_be_bytes([*s0, *s1]), &json, body))
        .unwrap_err();
    assert!(e.to_string().chars().count() <= 200, "{e}");
    assert!(matches!(e, LicenseError::Unparseable(_)), "{e:?}");
}

/// The paths of every member of a JSON document (`data.attributes.metadata`, …), values left out.
fn members(v: &serde_json::Value, at: &str, out: &mut Vec<String>) {
    if let serde_json::Value::Object(map) = v {
        for (k, v) in map {
            let path = if at.is_empty() {
                k.clone()
            } else {
                format!("{at}.{k}")
            };
            out.push(path.clone());
            // Metadata keys are the caller's own.
            if k != "metadata" {
                members(v, &path, out);
            }
        }
    }
}

fn members_of(body: &[u8]) -> Vec<String> {
    let mut out = Vec::new();
    members(&serde_json::from_slice(body).unwrap(), "", &mut out);
    out.sort();
    out
}

#[test]
fn keygate_s_requests_have_the_members_keygen_documents() {
    use keygate_core::license::{Customer, IssueRequest};
    let cfg = Config::from_json(keygen_json(json!({})).as_bytes(), &env).unwrap();
    let issuing = cfg.issuing.as_ref().unwrap();
    let backend = license::backend(&issuing.license);
    let item = keygate_core::ids::SfId::parse("8025Y00000AbCdEQAV").unwrap();
    let create = backend.issue(
        &IssueRequest {
            product: issuing.product("001").unwrap(),
            quantity: 3,
            order_item_id: &item,
            order_number: "00000114",
            customer: &Customer::default(),
        },
        NOW_MS,
    );
    // The documented create's members, and the attributes keygate adds (`name`, `maxMachines`:
    // documented license attributes).
    let mut expected = members_of(CREATE_REQUEST);
    expected.extend([
        "data.attributes.maxMachines".to_owned(),
        "data.attributes.name".to_owned(),
    ]);
    expected.sort();
    assert_eq!(members_of(&create.body), expected);
    assert_eq!(
        (create.verb, create.path.as_str()),
        ("POST", "/v1/accounts/acme/licenses")
    );

    // The documented update less `data.id` (optional, ignored by Keygen: the key is in the path).
    let update = backend.change("KEY-1", KeyChange::SetQuantity(10), NOW_MS);
    let expected: Vec<String> = members_of(UPDATE_REQUEST)
        .into_iter()
        .filter(|m| m != "data.id")
        .collect();
    assert_eq!(members_of(&update.body), expected);
    assert_eq!(
        serde_json::from_slice::<serde_json::Value>(&update.body).unwrap()["data"],
        json!({"type": "licenses", "attributes": {"maxMachines": 10}})
    );
    assert_eq!(update.verb, "PATCH");
    // The lookup is Keygen's documented metadata filter (`?metadata[id]=…` in its feature), on
    // the key keygate stores, with paging inside Keygen's bounds.
    let lookup = backend.lookup("8025Y00000AbCdEQAV", NOW_MS);
    let query = lookup.path.split_once('?').unwrap().1;
    let args: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
        .into_owned()
        .collect();
    assert_eq!(
        args,
        [
            (
                "metadata[salesforceOrderItemId]".to_owned(),
                "8025Y00000AbCdEQAV".to_owned()
            ),
            ("page[size]".to_owned(), "100".to_owned()),
            ("page[number]".to_owned(), "1".to_owned()),
        ]
    );
}
