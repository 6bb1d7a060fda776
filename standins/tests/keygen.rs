//! The Keygen stand-in over raw TCP, as keygate's calls through Envoy reach it: licenses created,
//! found by metadata, read, updated, suspended, reinstated and renewed; errors, the throttle,
//! faults, the end state, and the documented replies in `testdata/keygen/`.

use std::collections::BTreeSet;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

mod common;
use common::{start, Client, Reply};

use keygate_standins::*;
use serde_json::{json, Value};

fn bearer() -> String {
    format!("Bearer {KEYGEN_TOKEN}")
}

/// A Keygen call with keygate's headers (bearer token, JSON:API content type and accept).
fn kg_try(s: &Standins, method: &str, path: &str, body: Option<&Value>) -> Option<Reply> {
    let auth = bearer();
    let headers = [
        ("Authorization", auth.as_str()),
        ("Accept", "application/vnd.api+json"),
        ("Content-Type", "application/vnd.api+json"),
    ];
    let body = body.map(Value::to_string).unwrap_or_default();
    let mut c = Client::connect(s.license_addr());
    c.send(
        method,
        &format!("/v1/accounts/{KEYGEN_ACCOUNT}{path}"),
        &headers,
        body.as_bytes(),
    );
    c.read()
}

fn kg(s: &Standins, method: &str, path: &str, body: Option<&Value>) -> Reply {
    kg_try(s, method, path, body).unwrap_or_else(|| panic!("no reply to {method} {path}"))
}

/// A raw call on the license listener with the given headers.
fn raw(s: &Standins, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
    let mut c = Client::connect(s.license_addr());
    c.send(method, target, headers, body);
    c.read().expect("a reply")
}

fn create_body(policy: &str, max_machines: Option<u64>, metadata: Value) -> Value {
    let mut attributes = json!({ "metadata": metadata });
    if let Some(n) = max_machines {
        attributes["maxMachines"] = json!(n);
    }
    json!({"data": {
        "type": "licenses",
        "attributes": attributes,
        "relationships": {"policy": {"data": {"type": "policies", "id": policy}}},
    }})
}

/// The metadata keygate sends for an order line.
fn line_metadata(item: &str) -> Value {
    json!({
        "salesforceOrderItemId": item,
        "salesforceOrderNumber": "00000114",
        "contactName": "Jane Doe",
        "contactEmail": "jane@acme.com",
        "company": "Acme",
    })
}

/// Creates a license and returns its `data` object.
fn create(s: &Standins, policy: &str, item: &str) -> Value {
    let r = kg(
        s,
        "POST",
        "/licenses",
        Some(&create_body(policy, None, line_metadata(item))),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    r.json()["data"].clone()
}

fn key_of(license: &Value) -> String {
    license["attributes"]["key"]
        .as_str()
        .expect("key")
        .to_owned()
}

/// Every byte percent-encoded but unreserved letters and digits, as a cautious client encodes a
/// path segment.
fn encode_segment(s: &str) -> String {
    s.bytes()
        .map(|b| {
            if b.is_ascii_alphanumeric() {
                char::from(b).to_string()
            } else {
                format!("%{b:02X}")
            }
        })
        .collect()
}

fn fixture(name: &str) -> Value {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/keygen")
        .join(name);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// Every key path of a JSON document (`data.attributes.key`, arrays as `[]` over all items).
fn shape(v: &Value) -> BTreeSet<String> {
    fn walk(v: &Value, at: &str, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(m) => {
                for (k, x) in m {
                    let p = if at.is_empty() {
                        k.clone()
                    } else {
                        format!("{at}.{k}")
                    };
                    out.insert(p.clone());
                    walk(x, &p, out);
                }
            }
            Value::Array(items) => {
                for x in items {
                    walk(x, &format!("{at}[]"), out);
                }
            }
            _ => {}
        }
    }
    let mut out = BTreeSet::new();
    walk(v, "", &mut out);
    out
}

/// The error document without its request id (`meta.id` differs on every call).
fn without_request_id(mut v: Value) -> Value {
    let id = v["meta"]["id"].as_str().map(str::to_owned);
    if let Some(id) = id {
        assert_eq!(id.len(), 36, "a UUID request id: {id}");
        v["meta"]["id"] = json!("(request id)");
    }
    v
}

fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

fn is_keygen_key(k: &str) -> bool {
    let groups: Vec<usize> = k.split('-').map(str::len).collect();
    groups == [6, 6, 6, 6, 6, 2]
        && k.ends_with("-V3")
        && k.bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || b.is_ascii_uppercase())
}

#[test]
fn create_answers_201_with_a_key_an_expiry_and_the_documented_shape() {
    let s = start();
    let mut metadata = line_metadata("8025Y00000AbCdEQAV");
    // keygate sends camelCase; snake_case keys are stored the same way, as Keygen does.
    metadata["salesforce_order_number"] = metadata["salesforceOrderNumber"].take();
    metadata
        .as_object_mut()
        .unwrap()
        .remove("salesforceOrderNumber");
    let r = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(KEYGEN_POLICY_ANNUAL, Some(3), metadata)),
    );
    assert_eq!(r.status, 201, "{}", r.text());
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.api+json; charset=utf-8")
    );
    let data = r.json()["data"].clone();
    let key = key_of(&data);
    assert!(is_keygen_key(&key), "{key}");
    let id = data["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.header("location"),
        Some(format!("http://standin/v1/accounts/{KEYGEN_ACCOUNT_ID}/licenses/{id}").as_str())
    );
    let a = &data["attributes"];
    assert_eq!(a["status"], "ACTIVE");
    assert_eq!(a["suspended"], false);
    assert_eq!(a["maxMachines"], 3);
    assert_eq!(a["metadata"], line_metadata("8025Y00000AbCdEQAV"));
    // expiry = created + 365 days as Rails adds it (11 months, 4 weeks, 2 days, 4:39:54).
    let created = a["created"].as_str().unwrap();
    assert_eq!(created.len(), "2027-12-06T18:00:00.000Z".len());
    assert_eq!(
        a["expiry"].as_str(),
        keygen_expiry_after(created, KEYGEN_ANNUAL_DURATION_S).as_deref()
    );
    assert_eq!(
        data["relationships"]["policy"]["data"],
        json!({"type": "policies", "id": KEYGEN_POLICY_ANNUAL})
    );
    assert_eq!(
        data["links"]["self"],
        format!("/v1/accounts/{KEYGEN_ACCOUNT_ID}/licenses/{id}")
    );

    // The documented example has exactly the stand-in's keys, nested ones included.
    let documented = fixture("license_created.json");
    assert_eq!(shape(&r.json()), shape(&documented));

    // The policy's defaults: no duration, no expiry; maxMachines from the policy.
    let perpetual = create(&s, KEYGEN_POLICY_PERPETUAL, "8025Y000001MuL1QAK");
    assert_eq!(perpetual["attributes"]["expiry"], Value::Null);
    assert_eq!(perpetual["attributes"]["maxMachines"], 1);
    let annual = create(&s, KEYGEN_POLICY_ANNUAL, "8025Y000001MuL2QAK");
    assert_eq!(annual["attributes"]["maxMachines"], 5);
    assert_ne!(key_of(&perpetual), key_of(&annual));

    let held = s.keygen_licenses();
    assert_eq!(held.len(), 3);
    let l = &held[&key];
    assert_eq!(l.id, id);
    assert_eq!(l.policy, KEYGEN_POLICY_ANNUAL);
    assert_eq!(l.max_machines, Some(3));
    assert_eq!(l.created_seq, 1);
    assert_eq!(l.renewals, 0);
    assert!(!l.suspended);
    assert_eq!(l.expiry.as_deref(), a["expiry"].as_str());
    assert_eq!(
        l.metadata["salesforceOrderNumber"], "00000114",
        "stored keys are answered lowerCamelCased"
    );
    assert_eq!(held[&key_of(&perpetual)].expiry, None);
    assert_eq!(held[&key_of(&annual)].created_seq, 3);
}

#[test]
fn create_refuses_as_keygen_does() {
    let s = start();
    // A policy that does not exist: 422 POLICY_NOT_FOUND first.
    let r = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(
            "4796e950-0dcf-4bab-9443-8b406889356e",
            None,
            json!({}),
        )),
    );
    assert_eq!(r.status, 422, "{}", r.text());
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("policy_not_found_on_create.json"))
    );

    let bad = |body: Value| {
        let r = kg(&s, "POST", "/licenses", Some(&body));
        assert_eq!(r.status, 400, "{}", r.text());
        let e = r.json()["errors"][0].clone();
        assert_eq!(e["title"], "Bad request");
        (
            e["detail"].as_str().unwrap().to_owned(),
            e["source"]["pointer"].as_str().unwrap().to_owned(),
        )
    };
    assert_eq!(
        bad(json!({"data": {"type": "licenses", "attributes": {}}})),
        ("is missing".into(), "/data/relationships".into())
    );
    assert_eq!(
        bad(json!({"data": {"type": "licenses", "relationships": {}}})),
        ("is missing".into(), "/data/relationships/policy".into())
    );
    assert_eq!(
        bad(create_body("annual", None, json!({}))),
        (
            "type mismatch (received string expected UUID string)".into(),
            "/data/relationships/policy/data/id".into()
        )
    );
    let mut wrong_type = create_body(KEYGEN_POLICY_ANNUAL, None, json!({}));
    wrong_type["data"]["type"] = json!("machines");
    assert_eq!(bad(wrong_type), ("is invalid".into(), "/data/type".into()));
    let mut extra = create_body(KEYGEN_POLICY_ANNUAL, None, json!({}));
    extra["data"]["attributes"]["seats"] = json!(3);
    assert_eq!(
        bad(extra),
        (
            "unpermitted parameter".into(),
            "/data/attributes/seats".into()
        )
    );
    let mut not_int = create_body(KEYGEN_POLICY_ANNUAL, None, json!({}));
    not_int["data"]["attributes"]["maxMachines"] = json!("3");
    assert_eq!(
        bad(not_int),
        (
            "type mismatch (received string expected integer)".into(),
            "/data/attributes/maxMachines".into()
        )
    );
    assert_eq!(bad(json!({})), ("is missing".into(), "/data".into()));

    // Not JSON: Keygen's middleware answers, without a request id.
    let auth = bearer();
    let r = raw(
        &s,
        "POST",
        "/v1/accounts/acme/licenses",
        &[
            ("Authorization", &auth),
            ("Content-Type", "application/vnd.api+json"),
        ],
        b"{\"data\":",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "JSON_INVALID");
    assert!(r.json().get("meta").is_none());

    // Metadata: 64 keys pass, 65 do not (METADATA_TOO_LONG); so does a body over 16 KiB.
    let keys = |n: usize| {
        let m: serde_json::Map<String, Value> =
            (0..n).map(|i| (format!("k{i}"), json!(i))).collect();
        Value::Object(m)
    };
    let ok = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(KEYGEN_POLICY_ANNUAL, None, keys(64))),
    );
    assert_eq!(ok.status, 201, "{}", ok.text());
    let r = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(KEYGEN_POLICY_ANNUAL, None, keys(65))),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("metadata_too_many_keys.json"))
    );
    let r = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(
            KEYGEN_POLICY_ANNUAL,
            None,
            json!({"note": "x".repeat(17 * 1024)}),
        )),
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        r.json()["errors"][0]["detail"],
        "too large (exceeded limit of 16384 bytes)"
    );
    // maxMachines 0 under a floating policy.
    let r = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(KEYGEN_POLICY_ANNUAL, Some(0), json!({}))),
    );
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errors"][0]["code"], "MAX_MACHINES_INVALID");
    assert_eq!(
        r.json()["errors"][0]["detail"],
        "must be greater than or equal to 1 for floating policy"
    );
    // Nothing refused was created.
    assert_eq!(s.keygen_licenses().len(), 1);
}

#[test]
fn lookup_by_metadata_in_either_encoding_newest_first_with_keygen_paging() {
    let s = start();
    let first = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-A");
    std::thread::sleep(Duration::from_millis(5));
    let _other = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-B");
    std::thread::sleep(Duration::from_millis(5));
    let second = create(&s, KEYGEN_POLICY_PERPETUAL, "ITEM-A");
    let ids = |r: &Reply| -> Vec<String> {
        r.json()["data"]
            .as_array()
            .expect("a list")
            .iter()
            .map(|l| l["id"].as_str().unwrap().to_owned())
            .collect()
    };
    let (a, b) = (
        first["id"].as_str().unwrap().to_owned(),
        second["id"].as_str().unwrap().to_owned(),
    );
    let expected_links = |n: &str| {
        json!({
            "self": format!("/v1/accounts/acme/licenses?metadata%5BsalesforceOrderItemId%5D={n}&page%5Bnumber%5D=1&page%5Bsize%5D=100"),
            "prev": null,
            "next": null,
            "first": format!("/v1/accounts/acme/licenses?metadata%5BsalesforceOrderItemId%5D={n}&page%5Bnumber%5D=1&page%5Bsize%5D=100"),
            "last": format!("/v1/accounts/acme/licenses?metadata%5BsalesforceOrderItemId%5D={n}&page%5Bnumber%5D=1&page%5Bsize%5D=100"),
            "meta": {"pages": 1, "count": 2},
        })
    };
    for query in [
        "metadata[salesforceOrderItemId]=ITEM-A&page[size]=100&page[number]=1",
        "metadata%5BsalesforceOrderItemId%5D=ITEM-A&page%5Bsize%5D=100&page%5Bnumber%5D=1",
        "metadata[salesforce_order_item_id]=ITEM-A&page[size]=100&page[number]=1",
    ] {
        let r = kg(&s, "GET", &format!("/licenses?{query}"), None);
        assert_eq!(r.status, 200, "{query}: {}", r.text());
        assert_eq!(ids(&r), [b.clone(), a.clone()], "newest first: {query}");
        if !query.contains("salesforce_order") {
            assert_eq!(r.json()["links"], expected_links("ITEM-A"), "{query}");
        }
    }
    let r = kg(
        &s,
        "GET",
        "/licenses?metadata[salesforceOrderItemId]=ITEM-A&order=asc&page[size]=100&page[number]=1",
        None,
    );
    assert_eq!(ids(&r), [a.clone(), b.clone()], "order=asc: creation order");

    // The documented list shape (one license) and the empty list.
    let one = kg(
        &s,
        "GET",
        "/licenses?metadata[salesforceOrderItemId]=ITEM-B&page[size]=100&page[number]=1",
        None,
    );
    assert_eq!(ids(&one).len(), 1);
    assert_eq!(shape(&one.json()), shape(&fixture("license_list.json")));
    let none = kg(
        &s,
        "GET",
        "/licenses?metadata[salesforceOrderItemId]=8025Y000001MuL1QAK&page[size]=100&page[number]=1",
        None,
    );
    assert_eq!(none.status, 200);
    assert_eq!(none.json(), fixture("license_list_empty.json"));

    // Pages: two of one license each.
    let r = kg(
        &s,
        "GET",
        "/licenses?metadata[salesforceOrderItemId]=ITEM-A&page[size]=1&page[number]=2",
        None,
    );
    assert_eq!(ids(&r), [a]);
    let links = r.json()["links"].clone();
    assert_eq!(
        links["prev"],
        "/v1/accounts/acme/licenses?metadata%5BsalesforceOrderItemId%5D=ITEM-A&page%5Bnumber%5D=1&page%5Bsize%5D=1"
    );
    assert_eq!(links["next"], Value::Null);
    assert_eq!(links["meta"], json!({"pages": 2, "count": 2}));

    // Keygen's bounds: 1..=100 for the size and the number; a page needs a number (or cursor).
    let r = kg(
        &s,
        "GET",
        "/licenses?metadata[salesforceOrderItemId]=ITEM-A&page[size]=101&page[number]=1",
        None,
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("page_size_invalid.json"))
    );
    for (query, detail, parameter) in [
        (
            "page[size]=0&page[number]=1",
            "page size must be a number between 1 and 100 (got 0)",
            "page[size]",
        ),
        (
            "page[size]=10&page[number]=0",
            "page number must be a number between 1 and 100 (got 0)",
            "page[number]",
        ),
        (
            "page[size]=10",
            "page must be an object containing a cursor or number and optional size",
            "page",
        ),
        (
            "limit=101",
            "limit must be a number between 1 and 100 (got 101)",
            "limit",
        ),
        ("order=sideways", "order is invalid", "order"),
    ] {
        let r = kg(&s, "GET", &format!("/licenses?{query}"), None);
        assert_eq!(r.status, 400, "{query}");
        let e = &r.json()["errors"][0];
        assert_eq!(e["detail"], detail, "{query}");
        assert_eq!(e["source"], json!({ "parameter": parameter }), "{query}");
    }
    // Without a page: at most `limit` (10) licenses and no links.
    let r = kg(&s, "GET", "/licenses", None);
    assert_eq!(ids(&r).len(), 3);
    assert!(r.json().get("links").is_none(), "{}", r.text());
    let r = kg(&s, "GET", "/licenses?limit=1", None);
    assert_eq!(ids(&r), [b]);
}

#[test]
fn read_by_id_or_percent_encoded_key() {
    let s = start();
    let l = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-R");
    let key = key_of(&l);
    let id = l["id"].as_str().unwrap();
    for path in [
        format!("/licenses/{id}"),
        format!("/licenses/{key}"),
        format!("/licenses/{}", encode_segment(&key)),
    ] {
        let r = kg(&s, "GET", &path, None);
        assert_eq!(r.status, 200, "{path}: {}", r.text());
        assert_eq!(r.json()["data"], l, "{path}");
    }
    let missing = "C1B6DE-39A6E3-DE1529-8F710B-A7C1E8-V3";
    let r = kg(&s, "GET", &format!("/licenses/{missing}"), None);
    assert_eq!(r.status, 404);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("not_found.json"))
    );
}

#[test]
fn suspend_twice_is_422_and_reinstate_undoes_it() {
    let s = start();
    let l = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-S");
    let key = encode_segment(&key_of(&l));
    let r = kg(
        &s,
        "POST",
        &format!("/licenses/{key}/actions/suspend"),
        None,
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["attributes"]["suspended"], true);
    assert_eq!(r.json()["data"]["attributes"]["status"], "SUSPENDED");
    assert!(s.keygen_licenses()[&key_of(&l)].suspended);

    let again = kg(
        &s,
        "POST",
        &format!("/licenses/{key}/actions/suspend"),
        None,
    );
    assert_eq!(again.status, 422);
    assert_eq!(
        without_request_id(again.json()),
        without_request_id(fixture("license_suspended_twice.json"))
    );

    let r = kg(
        &s,
        "POST",
        &format!("/licenses/{key}/actions/reinstate"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json()["data"]["attributes"]["suspended"], false);
    assert_eq!(r.json()["data"]["attributes"]["status"], "ACTIVE");
    let again = kg(
        &s,
        "POST",
        &format!("/licenses/{key}/actions/reinstate"),
        None,
    );
    assert_eq!(again.status, 422);
    assert_eq!(
        without_request_id(again.json()),
        without_request_id(fixture("license_not_suspended.json"))
    );
    assert!(!s.keygen_licenses()[&key_of(&l)].suspended);
    // An action on a license that does not exist, and one that Keygen does not route.
    assert_eq!(
        kg(&s, "POST", "/licenses/NOPE12/actions/suspend", None).status,
        404
    );
    let r = kg(&s, "GET", &format!("/licenses/{key}/actions/suspend"), None);
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), fixture("endpoint_not_found.json"));
}

#[test]
fn patch_changes_seats_and_expiry() {
    let s = start();
    let l = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-P");
    let key = key_of(&l);
    let patch = |attrs: Value| {
        kg(
            &s,
            "PATCH",
            &format!("/licenses/{}", encode_segment(&key)),
            Some(&json!({"data": {"type": "licenses", "attributes": attrs}})),
        )
    };
    let r = patch(json!({"maxMachines": 7}));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["attributes"]["maxMachines"], 7);
    assert_eq!(s.keygen_licenses()[&key].max_machines, Some(7));
    // null: the policy's again.
    assert_eq!(
        patch(json!({"maxMachines": null})).json()["data"]["attributes"]["maxMachines"],
        5
    );
    let r = patch(json!({"maxMachines": 0}));
    assert_eq!(r.status, 422);
    let e = &r.json()["errors"][0];
    assert_eq!(e["code"], "MAX_MACHINES_INVALID");
    assert_eq!(e["source"]["pointer"], "/data/attributes/maxMachines");
    assert_eq!(e["title"], "Unprocessable resource");
    // An absolute expiry (idempotent), with PUT too.
    let r = kg(
        &s,
        "PUT",
        &format!("/licenses/{}", l["id"].as_str().unwrap()),
        Some(
            &json!({"data": {"type": "licenses", "attributes": {"expiry": "2028-06-30T12:00:00Z"}}}),
        ),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"]["attributes"]["expiry"],
        "2028-06-30T12:00:00.000Z"
    );
    // Metadata is replaced whole.
    let r = patch(json!({"metadata": {"company": "Acme Corp"}}));
    assert_eq!(
        r.json()["data"]["attributes"]["metadata"],
        json!({"company": "Acme Corp"})
    );
    let held = &s.keygen_licenses()[&key];
    assert_eq!(held.max_machines, Some(5));
    assert_eq!(held.expiry.as_deref(), Some("2028-06-30T12:00:00.000Z"));
    // What an update does not take.
    let r = kg(
        &s,
        "PATCH",
        &format!("/licenses/{key}"),
        Some(&json!({"data": {"type": "licenses"}})),
    );
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0]["source"]["pointer"],
        "/data/attributes"
    );
    let r = patch(json!({"key": "ABCDEF-123456"}));
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["detail"], "unpermitted parameter");
    let r = patch(json!({"expiry": "next year"}));
    assert_eq!(r.status, 400);
    assert_eq!(
        r.json()["errors"][0]["detail"],
        "failed to coerce string to time"
    );
}

#[test]
fn renew_adds_the_duration_on_every_call() {
    let s = start();
    let l = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-N");
    let key = key_of(&l);
    let path = format!("/licenses/{}", encode_segment(&key));
    let r = kg(
        &s,
        "PATCH",
        &path,
        Some(
            &json!({"data": {"type": "licenses", "attributes": {"expiry": "2026-01-31T00:00:00.000Z"}}}),
        ),
    );
    assert_eq!(r.status, 200);
    let renew = || kg(&s, "POST", &format!("{path}/actions/renew"), None);
    // 365 days as Rails adds them: 11 months (Jan 31 → Dec 31), 4 weeks, 2 days, 4:39:54.
    let r = renew();
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(
        r.json()["data"]["attributes"]["expiry"],
        "2027-01-30T04:39:54.000Z"
    );
    let r = renew();
    assert_eq!(
        r.json()["data"]["attributes"]["expiry"],
        "2028-01-29T09:19:48.000Z"
    );
    assert_eq!(
        keygen_expiry_after("2027-01-30T04:39:54.000Z", KEYGEN_ANNUAL_DURATION_S).as_deref(),
        Some("2028-01-29T09:19:48.000Z")
    );
    let held = &s.keygen_licenses()[&key];
    assert_eq!(held.renewals, 2);
    assert_eq!(held.expiry.as_deref(), Some("2028-01-29T09:19:48.000Z"));

    // A policy without a duration.
    let p = create(&s, KEYGEN_POLICY_PERPETUAL, "ITEM-N2");
    let r = kg(
        &s,
        "POST",
        &format!("/licenses/{}/actions/renew", key_of(&p)),
        None,
    );
    assert_eq!(r.status, 422);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("renew_no_duration.json"))
    );
    assert_eq!(s.keygen_licenses()[&key_of(&p)].renewals, 0);
    // A license with a duration but no expiry: `renew!` refuses without an error object.
    kg(
        &s,
        "PATCH",
        &path,
        Some(&json!({"data": {"type": "licenses", "attributes": {"expiry": null}}})),
    );
    let r = renew();
    assert_eq!(r.status, 422);
    assert_eq!(r.json()["errors"], json!([]));
    assert_eq!(s.keygen_licenses()[&key].renewals, 2);
}

#[test]
fn a_bad_token_is_401_and_never_echoed() {
    let s = start();
    let secret = "prod-5b2f0e0c-wrong-token-v3";
    let auth = format!("Bearer {secret}");
    let r = raw(
        &s,
        "GET",
        "/v1/accounts/acme/licenses",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 401);
    assert!(!r.text().contains(secret), "{}", r.text());
    assert_eq!(
        r.header("www-authenticate"),
        Some(r#"Bearer realm="keygen""#)
    );
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("token_invalid.json"))
    );
    let r = raw(&s, "GET", "/v1/accounts/acme/me", &[], b"");
    assert_eq!(r.status, 401);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("token_missing.json"))
    );
    let r = raw(
        &s,
        "GET",
        "/v1/accounts/acme/me",
        &[("Authorization", &format!("Bearer {KEYGEN_TOKEN_ID}"))],
        b"",
    );
    assert_eq!(r.json()["errors"][0]["code"], "TOKEN_FORMAT_INVALID");
    // HTTP basic with the `token` user is a form Keygen takes too.
    let basic = format!(
        "Basic {}",
        base64(format!("token:{KEYGEN_TOKEN}").as_bytes())
    );
    let r = raw(
        &s,
        "GET",
        "/v1/accounts/acme/me",
        &[("Authorization", &basic)],
        b"",
    );
    assert_eq!(r.status, 200, "{}", r.text());
    // Nothing was done, and the record masks every token.
    assert!(s.keygen_licenses().is_empty());
    kg(&s, "GET", "/me", None);
    let rec = s.record();
    assert_eq!(rec[0].headers["authorization"], "Bearer ***");
    assert_eq!(rec[0].endpoint, Endpoint::KeygenList);
    let all = serde_json::to_string(&rec).unwrap();
    assert!(
        !all.contains(secret) && !all.contains(KEYGEN_TOKEN),
        "{all}"
    );
}

fn base64(data: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        let sym = |shift: u32| char::from(B64[((n >> shift) & 63) as usize]);
        out.push(sym(18));
        out.push(sym(12));
        out.push(if chunk.len() > 1 { sym(6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(0) } else { '=' });
    }
    out
}

#[test]
fn a_wrong_account_is_404_and_the_account_id_works_too() {
    let s = start();
    let auth = bearer();
    let r = raw(
        &s,
        "GET",
        "/v1/accounts/globex/licenses",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        without_request_id(r.json()),
        without_request_id(fixture("account_not_found.json"))
    );
    // The account is found before the token is checked, as Keygen does.
    let r = raw(&s, "GET", "/v1/accounts/globex/licenses", &[], b"");
    assert_eq!(r.status, 404);
    let r = raw(
        &s,
        "GET",
        &format!("/v1/accounts/{KEYGEN_ACCOUNT_ID}/me"),
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 200);
    // Unrouted Keygen paths, and an Accept Keygen does not serve.
    let r = raw(
        &s,
        "DELETE",
        "/v1/accounts/acme/licenses/X/actions/revoke",
        &[("Authorization", &auth)],
        b"",
    );
    assert_eq!(r.status, 404);
    assert_eq!(r.json(), fixture("endpoint_not_found.json"));
    let r = raw(
        &s,
        "GET",
        "/v1/accounts/acme/me",
        &[("Authorization", &auth), ("Accept", "text/html")],
        b"",
    );
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["errors"][0]["code"], "MIME_TYPE_INVALID");
    // QLM still owns its own paths on the same listener.
    let r = raw(
        &s,
        "GET",
        &format!("{LICENSE_PATH_PREFIX}/PingHttp?is_user={QLM_USER}&is_pwd={QLM_PASSWORD}"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r.text().contains("Successfully connected"));
}

#[test]
fn policies_and_me_answer_the_documented_objects() {
    let s = start();
    let r = kg(
        &s,
        "GET",
        &format!("/policies/{KEYGEN_POLICY_ANNUAL}"),
        None,
    );
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), fixture("policy.json"));
    let r = kg(
        &s,
        "GET",
        &format!("/policies/{KEYGEN_POLICY_PERPETUAL}"),
        None,
    );
    assert_eq!(r.json()["data"]["attributes"]["duration"], Value::Null);
    assert_eq!(
        r.json()["data"]["attributes"]["renewalBasis"],
        "FROM_EXPIRY"
    );
    let r = kg(
        &s,
        "GET",
        "/policies/4796e950-0dcf-4bab-9443-8b406889356e",
        None,
    );
    assert_eq!(r.status, 404);
    assert_eq!(
        r.json()["errors"][0]["detail"],
        "The requested policy '4796e950-0dcf-4bab-9443-8b406889356e' was not found"
    );
    let r = kg(&s, "GET", "/me", None);
    assert_eq!(r.status, 200);
    assert_eq!(r.json(), fixture("me.json"));

    // keygate's self-check: answered, kept out of the record, never given a fault.
    s.inject_fault(Fault::new(Endpoint::KeygenMe, FaultKind::Status).status(503))
        .unwrap();
    let auth = bearer();
    let probe = raw(
        &s,
        "GET",
        "/v1/accounts/acme/me",
        &[("Authorization", &auth), (SELF_CHECK_HEADER, "1")],
        b"",
    );
    assert_eq!(probe.status, 200);
    assert_eq!(s.probes().len(), 1);
    assert_eq!(s.probes()[0].endpoint, Endpoint::KeygenMe);
    assert_eq!(s.record().len(), 4);
    assert_eq!(kg(&s, "GET", "/me", None).status, 503);
}

#[test]
fn the_throttle_answers_429_with_rack_attack_headers_and_does_nothing() {
    let s = start();
    // Off by default: no rate-limit headers.
    assert!(kg(&s, "GET", "/me", None)
        .header("x-ratelimit-limit")
        .is_none());
    s.set_keygen_rate_limit(Some((2, 3600)));
    let first = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(
            KEYGEN_POLICY_ANNUAL,
            None,
            line_metadata("T1"),
        )),
    );
    assert_eq!(first.status, 201);
    assert_eq!(first.header("x-ratelimit-window"), Some("60m"));
    assert_eq!(first.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(first.header("x-ratelimit-count"), Some("1"));
    assert_eq!(first.header("x-ratelimit-remaining"), Some("1"));
    assert!(first.header("retry-after").is_none());
    let reset: u64 = first
        .header("x-ratelimit-reset")
        .and_then(|r| r.parse().ok())
        .expect("X-RateLimit-Reset");
    assert_eq!(reset % 3600, 0, "the next window's start: {reset}");
    assert!(reset > unix_now() && reset <= unix_now() + 3600);
    let second = kg(&s, "GET", "/licenses", None);
    assert_eq!(second.status, 200);
    assert_eq!(second.header("x-ratelimit-remaining"), Some("0"));

    let throttled = kg(
        &s,
        "POST",
        "/licenses",
        Some(&create_body(
            KEYGEN_POLICY_ANNUAL,
            None,
            line_metadata("T2"),
        )),
    );
    assert_eq!(throttled.status, 429);
    assert_eq!(
        throttled.header("content-type"),
        Some("application/vnd.api+json; charset=utf-8")
    );
    assert_eq!(throttled.json(), fixture("rate_limited.json"));
    assert_eq!(throttled.header("x-ratelimit-count"), Some("3"));
    assert_eq!(throttled.header("x-ratelimit-limit"), Some("2"));
    assert_eq!(throttled.header("x-ratelimit-remaining"), Some("0"));
    assert_eq!(throttled.header("x-ratelimit-window"), Some("60m"));
    let retry: u64 = throttled
        .header("retry-after")
        .and_then(|r| r.parse().ok())
        .expect("Retry-After");
    let reset_429: u64 = throttled
        .header("x-ratelimit-reset")
        .and_then(|r| r.parse().ok())
        .expect("X-RateLimit-Reset");
    assert!((1..=3600).contains(&retry), "{retry}");
    assert!(reset_429.abs_diff(unix_now() + retry) <= 1);
    assert_eq!(
        s.keygen_licenses().len(),
        1,
        "a throttled call does nothing"
    );
    // Throttled calls count too (Rack::Attack counts every request).
    assert_eq!(
        kg(&s, "GET", "/me", None).header("x-ratelimit-count"),
        Some("4")
    );

    // The control API: a window in seconds, off again, and refused values.
    let post = |body: &str| {
        raw(
            &s,
            "POST",
            "/_standin/config",
            &[("Content-Type", "application/json")],
            body.as_bytes(),
        )
    };
    let r = post(r#"{"keygen_rate_limit":{"limit":0,"window_s":45}}"#);
    assert_eq!(r.status, 200);
    assert_eq!(
        r.json()["keygen_rate_limit"],
        json!({"limit": 0, "window_s": 45})
    );
    let r = kg(&s, "GET", "/me", None);
    assert_eq!(r.status, 429);
    assert_eq!(r.header("x-ratelimit-window"), Some("45s"));
    assert_eq!(
        post(r#"{"keygen_rate_limit":{"limit":1,"window_s":0}}"#).status,
        400
    );
    assert_eq!(post(r#"{"keygen_rate_limit":{"limit":1}}"#).status, 400);
    assert_eq!(post(r#"{"keygen_rate_limit":null}"#).status, 200);
    let r = kg(&s, "GET", "/me", None);
    assert_eq!(r.status, 200);
    assert!(r.header("x-ratelimit-limit").is_none());
    // reset() switches it off too.
    s.set_keygen_rate_limit(Some((0, 60)));
    s.reset();
    assert_eq!(kg(&s, "GET", "/me", None).status, 200);
}

#[test]
fn faults_shape_keygen_replies() {
    let s = start();
    let body = create_body(KEYGEN_POLICY_ANNUAL, None, line_metadata("F1"));

    // A status: Keygen's JSON:API error, nothing created.
    s.inject_fault(Fault::new(Endpoint::KeygenCreate, FaultKind::Status).status(503))
        .unwrap();
    let r = kg(&s, "POST", "/licenses", Some(&body));
    assert_eq!(r.status, 503);
    assert_eq!(
        r.header("content-type"),
        Some("application/vnd.api+json; charset=utf-8")
    );
    assert_eq!(r.json()["errors"][0]["title"], "Service unavailable");
    assert!(s.keygen_licenses().is_empty());

    // A 429 fault carries the throttle's headers and body.
    s.inject_fault(Fault::new(Endpoint::KeygenList, FaultKind::Status).status(429))
        .unwrap();
    let r = kg(&s, "GET", "/licenses", None);
    assert_eq!(r.status, 429);
    assert_eq!(r.json(), fixture("rate_limited.json"));
    for h in [
        "x-ratelimit-window",
        "x-ratelimit-count",
        "x-ratelimit-limit",
        "x-ratelimit-remaining",
        "x-ratelimit-reset",
        "retry-after",
    ] {
        assert!(r.header(h).is_some(), "{h}");
    }

    // Issue then reset: created, no answer.
    s.inject_fault(Fault::new(
        Endpoint::KeygenCreate,
        FaultKind::IssueThenReset,
    ))
    .unwrap();
    assert!(kg_try(&s, "POST", "/licenses", Some(&body)).is_none());
    let held = s.keygen_licenses();
    assert_eq!(held.len(), 1);
    let key = held.keys().next().unwrap().clone();
    let path = format!("/licenses/{key}");

    // Reset: nothing done.
    s.inject_fault(Fault::new(Endpoint::KeygenSuspend, FaultKind::Reset))
        .unwrap();
    assert!(kg_try(&s, "POST", &format!("{path}/actions/suspend"), None).is_none());
    assert!(!s.keygen_licenses()[&key].suspended);

    // Issue then delay: renewed, then answered late.
    s.inject_fault(Fault::new(Endpoint::KeygenRenew, FaultKind::IssueThenDelay).delay_ms(50))
        .unwrap();
    let r = kg(&s, "POST", &format!("{path}/actions/renew"), None);
    assert_eq!(r.status, 200);
    assert_eq!(s.keygen_licenses()[&key].renewals, 1);

    // Garbage, a wrong content type, an oversized reply, a delay.
    s.inject_fault(Fault::new(Endpoint::KeygenRead, FaultKind::Garbage))
        .unwrap();
    let r = kg(&s, "GET", &path, None);
    assert_eq!(r.status, 200);
    assert!(serde_json::from_slice::<Value>(&r.body).is_err());
    s.inject_fault(Fault::new(
        Endpoint::KeygenRead,
        FaultKind::WrongContentType,
    ))
    .unwrap();
    let r = kg(&s, "GET", &path, None);
    assert_eq!(r.header("content-type"), Some("text/html; charset=utf-8"));
    assert_eq!(r.json()["data"]["attributes"]["key"], key.as_str());
    s.inject_fault(Fault::new(Endpoint::KeygenReinstate, FaultKind::Oversize))
        .unwrap();
    let r = kg(&s, "POST", &format!("{path}/actions/reinstate"), None);
    assert_eq!(r.status, 422, "not suspended, padded");
    assert_eq!(r.body.len(), OVERSIZE_BYTES);
    s.inject_fault(Fault::new(Endpoint::KeygenPolicy, FaultKind::Delay).delay_ms(30))
        .unwrap();
    assert_eq!(
        kg(
            &s,
            "GET",
            &format!("/policies/{KEYGEN_POLICY_ANNUAL}"),
            None
        )
        .status,
        200
    );

    // The record names the endpoints and the faults.
    let rec = s.record();
    let seen: Vec<(&str, Option<FaultKind>)> =
        rec.iter().map(|r| (r.endpoint.as_str(), r.fault)).collect();
    assert_eq!(
        seen,
        [
            ("keygen_create", Some(FaultKind::Status)),
            ("keygen_list", Some(FaultKind::Status)),
            ("keygen_create", Some(FaultKind::IssueThenReset)),
            ("keygen_suspend", Some(FaultKind::Reset)),
            ("keygen_renew", Some(FaultKind::IssueThenDelay)),
            ("keygen_read", Some(FaultKind::Garbage)),
            ("keygen_read", Some(FaultKind::WrongContentType)),
            ("keygen_reinstate", Some(FaultKind::Oversize)),
            ("keygen_policy", Some(FaultKind::Delay)),
        ]
    );
    assert_eq!(rec[2].status, 0);
    assert!(rec.iter().all(|r| r.service == Service::License));
    // Issue-then faults only where a call changes something.
    assert!(s
        .inject_fault(Fault::new(Endpoint::KeygenList, FaultKind::IssueThenReset))
        .is_err());
    assert!(s
        .inject_fault(Fault::new(
            Endpoint::KeygenUpdate,
            FaultKind::IssueThenDelay
        ))
        .is_ok());
}

#[test]
fn end_state_over_the_control_api_and_reset() {
    let s = start();
    let l = create(&s, KEYGEN_POLICY_ANNUAL, "ITEM-E");
    let key = key_of(&l);
    kg(
        &s,
        "POST",
        &format!("/licenses/{key}/actions/suspend"),
        None,
    );
    kg(&s, "POST", &format!("/licenses/{key}/actions/renew"), None);
    let held = s.keygen_licenses();
    let e = &held[&key];
    assert_eq!(e.key, key);
    assert!(e.suspended);
    assert_eq!(e.renewals, 1);
    assert_eq!(e.created_seq, 1);
    assert_eq!(e.max_machines, Some(5));
    assert_eq!(e.metadata["salesforceOrderItemId"], "ITEM-E");
    assert_eq!(
        e.expiry,
        keygen_expiry_after(
            l["attributes"]["expiry"].as_str().unwrap(),
            KEYGEN_ANNUAL_DURATION_S
        )
    );
    let over_http = raw(&s, "GET", "/_standin/keygen_licenses", &[], b"").json();
    assert_eq!(over_http, serde_json::to_value(&held).unwrap());
    assert_eq!(over_http[&key]["policy"], KEYGEN_POLICY_ANNUAL);
    assert_eq!(
        raw(&s, "POST", "/_standin/keygen_licenses", &[], b"").status,
        405
    );
    let config = raw(&s, "GET", "/_standin/config", &[], b"").json();
    assert_eq!(config["keygen_rate_limit"], Value::Null);

    s.set_keygen_rate_limit(Some((5, 60)));
    assert_eq!(raw(&s, "POST", "/_standin/reset", &[], b"").status, 200);
    assert!(s.keygen_licenses().is_empty());
    assert_eq!(
        raw(&s, "GET", "/_standin/config", &[], b"").json()["keygen_rate_limit"],
        Value::Null
    );
    // Sequence numbers start over after a reset.
    let again = create(&s, KEYGEN_POLICY_PERPETUAL, "ITEM-E");
    assert_eq!(s.keygen_licenses()[&key_of(&again)].created_seq, 1);
}

#[test]
fn the_documented_replies_parse_and_are_listed() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../testdata/keygen");
    let readme = std::fs::read_to_string(dir.join("README.md")).expect("README.md");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .expect("testdata/keygen")
        .map(|e| e.expect("entry").file_name().to_string_lossy().into_owned())
        .filter(|n| n.ends_with(".json"))
        .collect();
    names.sort();
    for required in [
        "license_created.json",
        "license_list.json",
        "license_list_empty.json",
        "license_suspended_twice.json",
        "license_not_suspended.json",
        "renew_no_duration.json",
        "token_invalid.json",
        "not_found.json",
        "rate_limited.json",
        "policy.json",
        "me.json",
    ] {
        assert!(names.iter().any(|n| n == required), "{required}");
    }
    for name in &names {
        let v = fixture(name);
        assert!(
            v.get("data").is_some() || v.get("errors").is_some(),
            "{name}"
        );
        assert!(
            readme.contains(&format!("`{name}`")),
            "README.md names {name}"
        );
    }
    // The created license's expiry is its creation plus the annual policy, as Rails adds it.
    let created = fixture("license_created.json");
    let a = &created["data"]["attributes"];
    assert_eq!(
        keygen_expiry_after(a["created"].as_str().unwrap(), KEYGEN_ANNUAL_DURATION_S).as_deref(),
        a["expiry"].as_str()
    );
}

#[test]
fn keygen_s_documented_requests_are_served() {
    let s = start();
    // The create as Keygen's own feature sends it (testdata/keygen/license_create_request.json).
    let create = fixture("license_create_request.json");
    assert_eq!(
        create["data"]["relationships"]["policy"]["data"]["id"],
        KEYGEN_POLICY_ANNUAL
    );
    let r = kg(&s, "POST", "/licenses", Some(&create));
    assert_eq!(r.status, 201, "{}", r.text());
    let id = r.json()["data"]["id"].as_str().unwrap().to_owned();
    assert_eq!(
        r.json()["data"]["attributes"]["metadata"],
        json!({"fooBarBaz": "Qux"})
    );
    // The update as Keygen's feature sends it, `data.id` and all.
    let mut update = fixture("license_update_request.json");
    update["data"]["id"] = json!(id);
    let r = kg(&s, "PATCH", &format!("/licenses/{id}"), Some(&update));
    assert_eq!(r.status, 200, "{}", r.text());
    assert_eq!(r.json()["data"]["attributes"]["maxMachines"], 10);
    let license = s.keygen_licenses().into_values().next().unwrap();
    assert_eq!(license.max_machines, Some(10));
}
