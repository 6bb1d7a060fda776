//! Starts the stand-ins on ephemeral ports and talks to them over raw TCP, the way Envoy would.

use std::collections::BTreeSet;
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

mod common;
use common::{start, Client, Reply};

use keygate_standins::*;
use serde_json::{json, Value};

fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    Client::connect(addr).call(method, target, headers, body)
}

const FORM: (&str, &str) = ("Content-Type", "application/x-www-form-urlencoded");
const JSON: (&str, &str) = ("Content-Type", "application/json");

fn token(s: &Standins) -> String {
    let body = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
    );
    let r = call(
        s.salesforce_addr(),
        "POST",
        "/services/oauth2/token",
        &[FORM],
        body.as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    r.json()["access_token"].as_str().expect("token").to_owned()
}

fn soql_in(ids: &[&str]) -> String {
    let list: Vec<String> = ids.iter().map(|i| format!("'{i}'")).collect();
    let soql = format!(
        "SELECT Id, OrderNumber, Status, (SELECT Id, Quantity, Product2.ProductCode FROM OrderItems) FROM Order WHERE Id IN ({})",
        list.join(",")
    );
    let q: String = form_urlencoded::Serializer::new(String::new())
        .append_pair("q", &soql)
        .finish();
    format!("/services/data/v60.0/query?{q}")
}

fn query(s: &Standins, tok: &str, target: &str) -> Reply {
    let auth = format!("Bearer {tok}");
    call(
        s.salesforce_addr(),
        "GET",
        target,
        &[("Authorization", &auth)],
        b"",
    )
}

fn record_ids(page: &Value) -> Vec<String> {
    page["records"]
        .as_array()
        .expect("records")
        .iter()
        .map(|r| r["Id"].as_str().expect("Id").to_owned())
        .collect()
}

fn license_target(method: &str, args: &str) -> String {
    format!("{LICENSE_PATH_PREFIX}/{method}?is_user={QLM_USER}&is_pwd={QLM_PASSWORD}&{args}")
}

const PRODUCT: &str = "is_productid=1&is_majorversion=1&is_minorversion=0&is_vendor=salesforce";

fn keys_in(xml: &str) -> Vec<String> {
    xml.split("<activationKey>")
        .skip(1)
        .map(|p| p.split("</activationKey>").next().unwrap_or("").to_owned())
        .collect()
}

fn is_key(k: &str) -> bool {
    let groups: Vec<usize> = k.split('-').map(str::len).collect();
    groups == [5, 5, 5, 5, 5, 6]
        && k.bytes()
            .all(|b| b == b'-' || b.is_ascii_uppercase() || b.is_ascii_digit())
}

// Strict authentication, computed here with RustCrypto directly and a date routine of its own,
// not through the stand-in's code.

/// Lower-case hex HMAC-SHA256, as the page's `CalcHMACSHA256Hash`.
fn hmac_sha256_hex(key: &str, message: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(key.as_bytes()).expect("any key length");
    mac.update(message.as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// `yyyy-MM-dd HH:mm:ss` of a Unix time, counting days forward from 1970 (slow and obvious).
fn utc(secs: u64) -> String {
    let (mut days, rest) = (secs / 86_400, secs % 86_400);
    let mut year = 1970;
    let leap = |y: u64| (y % 4 == 0 && y % 100 != 0) || y % 400 == 0;
    while days >= if leap(year) { 366 } else { 365 } {
        days -= if leap(year) { 366 } else { 365 };
        year += 1;
    }
    let lengths = [
        31,
        if leap(year) { 29 } else { 28 },
        31,
        30,
        31,
        30,
        31,
        31,
        30,
        31,
        30,
        31,
    ];
    let mut month = 0;
    while days >= lengths[month] {
        days -= lengths[month];
        month += 1;
    }
    format!(
        "{year:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        month + 1,
        days + 1,
        rest / 3600,
        rest % 3600 / 60,
        rest % 60
    )
}

fn unix_now() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .expect("clock")
        .as_secs()
}

/// How a test signs a call: which key, over which URL base, when, which version, under which
/// header name, joined with `:` or `=`.
struct Signing<'a> {
    key: &'a str,
    base: String,
    timestamp: String,
    version: &'a str,
    header: &'a str,
    sep: char,
}

impl Signing<'_> {
    /// As the C# sample signs a call to the stand-in (Host `standin`, as `Client` sends it).
    fn sample() -> Signing<'static> {
        Signing {
            key: QLM_API_KEY,
            base: format!("https://standin{LICENSE_PATH_PREFIX}"),
            timestamp: utc(unix_now()),
            version: "2",
            header: "X-Qlm-Authentication-Token",
            sep: ':',
        }
    }

    /// The three headers for `target` (`{prefix}/{Method}?{query}`).
    fn headers(&self, target: &str) -> Vec<(String, String)> {
        let rest = target
            .strip_prefix(LICENSE_PATH_PREFIX)
            .expect("a license-server target");
        let message = format!(
            "{}{rest}&X-Qlm-Timestamp:{}&X-Qlm-Authentication-Version{}{}",
            self.base, self.timestamp, self.sep, self.version
        );
        vec![
            (self.header.to_owned(), hmac_sha256_hex(self.key, &message)),
            ("X-Qlm-Timestamp".to_owned(), self.timestamp.clone()),
            (
                "X-Qlm-Authentication-Version".to_owned(),
                self.version.to_owned(),
            ),
        ]
    }

    fn get(&self, addr: SocketAddr, target: &str) -> Reply {
        let headers = self.headers(target);
        let refs: Vec<(&str, &str)> = headers
            .iter()
            .map(|(n, v)| (n.as_str(), v.as_str()))
            .collect();
        call(addr, "GET", target, &refs, b"")
    }
}

/// A correctly signed GET.
fn signed_get(addr: SocketAddr, target: &str) -> Reply {
    Signing::sample().get(addr, target)
}

fn fixture(name: &str) -> String {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("../testdata/license")
        .join(name);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

/// The element structure of an XML text: `<name` for a start tag, `</name` for an end tag (a
/// self-closing element gives both), `<?xml` for a declaration, `<!--` for a comment; values and
/// attributes left out.
fn structure(xml: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i..];
        if rest.starts_with("<!--") {
            out.push("<!--".to_owned());
            rest = rest.find("-->").map_or("", |j| &rest[j + 3..]);
            continue;
        }
        let end = rest.find('>').expect("unclosed tag");
        let tag = &rest[1..end];
        rest = &rest[end + 1..];
        if let Some(name) = tag.strip_prefix('/') {
            out.push(format!("</{}", name.trim()));
            continue;
        }
        let name: String = tag
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '/')
            .collect();
        out.push(format!("<{name}"));
        if tag.ends_with('/') {
            out.push(format!("</{name}"));
        }
    }
    out
}

/// `GET /_standin/config` after a reset.
fn default_config() -> Value {
    json!({"page_size":2000,"items_page_size":2000,"plain_text_keys":false,"refuse_writeback":[],"refuse_marks":[],"lifecycle_enabled":true,"order_status":{},
        "strict_auth_methods":["RetrieveActivationKeyHttp"],"strict_url_base":null,"strict_timestamp_tolerance_s":300,
        "disabled_methods":[],"allowed_ips":null,"issue_keeps_orderid":false,"keygen_rate_limit":null})
}

/// Unix time of midnight UTC on the date of a `yyyy-MM-dd…` text: a binary search over days
/// with `utc` (dates in that form sort as text).
fn unix_of_date(date: &str) -> u64 {
    let (mut lo, mut hi) = (0u64, 200_000u64);
    while lo < hi {
        let mid = (lo + hi) / 2;
        if utc(mid * 86_400)[..10] < date[..10] {
            lo = mid + 1;
        } else {
            hi = mid;
        }
    }
    lo * 86_400
}

/// `yyyy-MM-dd 23:59:59` of the day `days` after the date of `datetime`.
fn end_of_day_plus(datetime: &str, days: u64) -> String {
    utc(unix_of_date(datetime) + days * 86_400 + 86_399)
}

/// The `<status>` of a ValidateLicenseHttp reply (ELicenseStatus flags).
fn status_of(validate: &str) -> u32 {
    validate
        .split("<status>")
        .nth(1)
        .and_then(|r| r.split("</status>").next())
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no <status> in {validate}"))
}

#[test]
fn token_grants_and_errors() {
    let s = start();
    let sf = s.salesforce_addr();
    let r = call(
        sf,
        "POST",
        "/services/oauth2/token",
        &[FORM],
        format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
        )
        .as_bytes(),
    );
    assert_eq!(r.status, 200);
    let t = r.json();
    assert_eq!(t["token_type"], "Bearer");
    assert_eq!(t["instance_url"], s.salesforce_url());
    assert_eq!(
        s.salesforce_url(),
        format!("http://{}", s.salesforce_addr())
    );
    assert!(t.get("expires_in").is_none());
    let issued_at = t["issued_at"].as_str().expect("issued_at is a string");
    assert!(issued_at.len() == 13 && issued_at.bytes().all(|b| b.is_ascii_digit()));
    assert!(t["access_token"]
        .as_str()
        .expect("token")
        .starts_with("00D5Y000001MPM7!"));
    for f in ["id", "signature", "scope"] {
        assert!(t[f].is_string(), "{f}");
    }

    let password = format!(
        "grant_type=password&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&username=integration%40example.com&password={PASSWORD}"
    );
    assert_eq!(
        call(
            sf,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            password.as_bytes()
        )
        .status,
        200
    );

    let err = |body: &str| {
        let r = call(
            sf,
            "POST",
            "/services/oauth2/token",
            &[FORM],
            body.as_bytes(),
        );
        assert_eq!(r.status, 400, "{body}");
        r.json()
    };
    assert_eq!(
        err(&format!(
            "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret=wrong"
        )),
        json!({"error":"invalid_client","error_description":"invalid client credentials"})
    );
    assert_eq!(
        err(&format!("grant_type=password&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}&username={USERNAME}&password=standin-password")),
        json!({"error":"invalid_grant","error_description":"authentication failure"})
    );
    assert_eq!(
        err("grant_type=authorization_code")["error"],
        "unsupported_grant_type"
    );
    assert_eq!(err("")["error"], "unsupported_grant_type");
    assert_eq!(
        call(sf, "GET", "/services/oauth2/token", &[], b"").status,
        400
    );

    // The record masks the secret and the password but keeps the rest.
    let rec = s.record();
    let first = &rec[0];
    assert_eq!(
        (first.seq, first.service, first.endpoint),
        (1, Service::Salesforce, Endpoint::Token)
    );
    assert_eq!(first.form["client_secret"], "***");
    assert_eq!(first.form["client_id"], CLIENT_ID);
    assert!(!first.body.contains(CLIENT_SECRET), "{}", first.body);
    assert!(!rec[1].body.contains(PASSWORD));
    assert_eq!(
        rec.iter().map(|r| r.status).collect::<Vec<_>>(),
        [200, 200, 400, 400, 400, 400, 400]
    );
    assert_eq!(s.stats()["token"].count, 7);
}

#[test]
fn query_returns_fixture_orders_and_rejects_bad_sessions() {
    let s = start();
    let tok = token(&s);
    let target = soql_in(&[
        MULTI_LINE_ORDER_ID,
        "8015Y000001ZZZZQAA",
        DRAFT_ORDER_ID,
        NO_ITEMS_ORDER_ID,
    ]);

    let r = query(&s, "not-a-token", &target);
    assert_eq!(r.status, 401);
    assert_eq!(
        r.json(),
        json!([{"message":"Session expired or invalid","errorCode":"INVALID_SESSION_ID"}])
    );
    let r = call(s.salesforce_addr(), "GET", &target, &[], b"");
    assert_eq!(r.status, 401);

    let r = query(&s, &tok, &target);
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    let page = r.json();
    assert_eq!(page["totalSize"], 3);
    assert_eq!(page["done"], true);
    assert!(page.get("nextRecordsUrl").is_none());
    // The unknown id is simply absent; order follows the IN list.
    assert_eq!(
        record_ids(&page),
        [MULTI_LINE_ORDER_ID, DRAFT_ORDER_ID, NO_ITEMS_ORDER_ID]
    );
    let multi = &page["records"][0];
    assert_eq!(multi["attributes"]["type"], "Order");
    assert_eq!(
        multi["attributes"]["url"],
        format!("/services/data/v60.0/sobjects/Order/{MULTI_LINE_ORDER_ID}")
    );
    assert_eq!(multi["BillToContact"], Value::Null);
    assert_eq!(multi["CustomerAuthorizedBy"]["LastName"], "O'Brien");
    let lines: Vec<(String, f64)> = multi["OrderItems"]["records"]
        .as_array()
        .expect("lines")
        .iter()
        .map(|l| {
            (
                l["Product2"]["ProductCode"]
                    .as_str()
                    .expect("code")
                    .to_owned(),
                l["Quantity"].as_f64().expect("qty"),
            )
        })
        .collect();
    assert_eq!(
        lines,
        [
            ("001".to_owned(), 1.0),
            ("002".to_owned(), 2.0),
            ("999".to_owned(), 5.0)
        ]
    );
    assert_eq!(page["records"][1]["Status"], "Draft");
    assert_eq!(page["records"][2]["OrderItems"], Value::Null);

    // `Id = '…'` with a 15-character id, another API version.
    let q = form_urlencoded::Serializer::new(String::new())
        .append_pair(
            "q",
            &format!("SELECT Id FROM Order WHERE Id = '{}'", &DEMO_ORDER_ID[..15]),
        )
        .finish();
    let page = query(&s, &tok, &format!("/services/data/v58.0/query?{q}")).json();
    assert_eq!(record_ids(&page), [DEMO_ORDER_ID]);
    assert_eq!(
        page["records"][0]["OrderItems"]["records"][0]["attributes"]["url"],
        format!("/services/data/v58.0/sobjects/OrderItem/{DEMO_ITEM_ID}")
    );
    assert_eq!(
        page["records"][0]["OrderItems"]["records"][0]["Quantity"],
        json!(3.0)
    );

    // SOQL the stand-in cannot answer is a Salesforce-shaped 400.
    let bad = query(
        &s,
        &tok,
        "/services/data/v60.0/query?q=SELECT+Id+FROM+Order+WHERE+Id+IN+(%27x%27)",
    );
    assert_eq!(bad.status, 400);
    assert_eq!(bad.json()[0]["errorCode"], "INVALID_QUERY_FILTER_OPERATOR");
    assert_eq!(
        query(&s, &tok, "/services/data/v60.0/query").json()[0]["errorCode"],
        "MALFORMED_QUERY"
    );
    assert_eq!(query(&s, &tok, "/services/data/v60.0/nope").status, 404);
}

#[test]
fn query_pagination_follows_next_records_url() {
    let s = start();
    let tok = token(&s);
    s.set_page_size(2);
    let ids: Vec<String> = (0..5).map(family_order_id).collect();
    let refs: Vec<&str> = ids.iter().map(String::as_str).collect();
    let mut page = query(&s, &tok, &soql_in(&refs)).json();
    let mut seen = Vec::new();
    let mut pages = 0;
    loop {
        pages += 1;
        assert_eq!(page["totalSize"], 5);
        seen.extend(record_ids(&page));
        let Some(next) = page
            .get("nextRecordsUrl")
            .and_then(Value::as_str)
            .map(str::to_owned)
        else {
            assert_eq!(page["done"], true);
            break;
        };
        assert_eq!(page["done"], false);
        let (prefix, offset) = next.rsplit_once('-').expect("locator-offset");
        assert!(
            prefix.starts_with("/services/data/v60.0/query/01g"),
            "{next}"
        );
        assert_eq!(offset, (pages * 2).to_string());
        let r = query(&s, &tok, &next);
        assert_eq!(r.status, 200);
        page = r.json();
    }
    assert_eq!(pages, 3);
    assert_eq!(seen, ids);
    let eps: Vec<Endpoint> = s.record().iter().map(|r| r.endpoint).collect();
    assert_eq!(
        eps,
        [
            Endpoint::Token,
            Endpoint::Query,
            Endpoint::QueryMore,
            Endpoint::QueryMore
        ]
    );

    let bad = query(&s, &tok, "/services/data/v60.0/query/01g5YAAAAAAAAAAAAA-2");
    assert_eq!(
        (bad.status, bad.json()[0]["errorCode"].clone()),
        (400, json!("INVALID_QUERY_LOCATOR"))
    );
    // Following a page needs a valid session too.
    s.expire_tokens();
    let first = query(&s, &tok, &soql_in(&refs));
    assert_eq!(first.status, 401);
}

#[test]
fn composite_writes_back_and_the_next_query_sees_it() {
    let s = start();
    let tok = token(&s);
    let auth = format!("Bearer {tok}");
    let sf = s.salesforce_addr();
    let path = "/services/data/v60.0/composite/sobjects";
    let body = json!({"allOrNone": false, "records": [
        {"attributes": {"type": "OrderItem"}, "id": DEMO_ITEM_ID, "License_Keys__c": "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFFF"},
        {"attributes": {"type": "OrderItem"}, "id": "8025Y00000ZZZZZQAA", "License_Keys__c": "x"}
    ]});
    let r = call(
        sf,
        "PATCH",
        path,
        &[JSON, ("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200, "{}", r.text());
    let results = r.json();
    assert_eq!(
        results[0],
        json!({"id": DEMO_ITEM_ID, "success": true, "errors": []})
    );
    // A failed record's result has no id, as Salesforce's: clients match results by position.
    assert_eq!(results[1]["success"], false);
    assert_eq!(results[1].get("id"), None);
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "INVALID_CROSS_REFERENCE_KEY"
    );
    assert_eq!(
        s.writebacks().get(DEMO_ITEM_ID).map(String::as_str),
        Some("AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFFF")
    );

    let page = query(&s, &tok, &soql_in(&[DEMO_ORDER_ID])).json();
    assert_eq!(
        page["records"][0]["OrderItems"]["records"][0]["License_Keys__c"],
        "AAAAA-BBBBB-CCCCC-DDDDD-EEEEE-FFFFFF"
    );

    // POST with the _HttpMethod override, allOrNone rolls everything back on one failure.
    let item = MULTI_LINE_ITEM_IDS[0];
    let body = json!({"allOrNone": true, "records": [
        {"attributes": {"type": "OrderItem"}, "id": item, "License_Keys__c": "K1"},
        {"attributes": {"type": "OrderItem"}, "id": MULTI_LINE_ITEM_IDS[1], "Quantity": 9}
    ]});
    let r = call(
        sf,
        "POST",
        &format!("{path}?_HttpMethod=PATCH"),
        &[JSON, ("Authorization", &auth)],
        body.to_string().as_bytes(),
    );
    assert_eq!(r.status, 200);
    let results = r.json();
    assert_eq!(
        results[0]["errors"][0]["statusCode"],
        "ALL_OR_NONE_OPERATION_ROLLED_BACK"
    );
    assert_eq!(
        results[1]["errors"][0]["statusCode"],
        "INVALID_FIELD_FOR_INSERT_UPDATE"
    );
    assert!(!s.writebacks().contains_key(item));

    let one = json!({"records": [{"attributes": {"type": "OrderItem"}, "id": item, "License_Keys__c": "K1\nK2"}]});
    let r = call(
        sf,
        "POST",
        &format!("{path}?_HttpMethod=PATCH"),
        &[JSON, ("Authorization", &auth)],
        one.to_string().as_bytes(),
    );
    assert_eq!(r.json()[0]["success"], true);
    assert_eq!(s.writebacks()[item], "K1\nK2");
    assert_eq!(s.writeback_fields()[item]["License_Keys__c"], "K1\nK2");

    assert_eq!(
        call(
            sf,
            "POST",
            path,
            &[JSON, ("Authorization", &auth)],
            one.to_string().as_bytes()
        )
        .status,
        405
    );
    assert_eq!(
        call(sf, "PATCH", path, &[JSON], one.to_string().as_bytes()).status,
        401
    );
    let bad = call(
        sf,
        "PATCH",
        path,
        &[JSON, ("Authorization", &auth)],
        b"{not json",
    );
    assert_eq!(
        (bad.status, bad.json()[0]["errorCode"].clone()),
        (400, json!("JSON_PARSER_ERROR"))
    );

    // A validation rule that refuses one record of several (control API `refuse_writeback`).
    let r = call(
        sf,
        "POST",
        "/_standin/config",
        &[JSON],
        json!({"refuse_writeback": [&MULTI_LINE_ITEM_IDS[1][..15]]})
            .to_string()
            .as_bytes(),
    );
    assert_eq!(
        r.json()["refuse_writeback"],
        json!([MULTI_LINE_ITEM_IDS[1]])
    );
    let two = json!({"records": [
        {"attributes": {"type": "OrderItem"}, "id": MULTI_LINE_ITEM_IDS[0], "License_Keys__c": "K3"},
        {"attributes": {"type": "OrderItem"}, "id": MULTI_LINE_ITEM_IDS[1], "License_Keys__c": "K4"}
    ]});
    let results = call(
        sf,
        "PATCH",
        path,
        &[JSON, ("Authorization", &auth)],
        two.to_string().as_bytes(),
    )
    .json();
    assert_eq!(results[0]["success"], true);
    assert_eq!(
        results[1],
        json!({"success": false, "errors": [{"statusCode": "FIELD_CUSTOM_VALIDATION_EXCEPTION", "message": "License keys cannot be changed on this order product", "fields": []}]})
    );
    assert_eq!(s.writebacks()[MULTI_LINE_ITEM_IDS[0]], "K3");
    assert!(!s.writebacks().contains_key(MULTI_LINE_ITEM_IDS[1]));

    s.reset();
    assert!(s.writebacks().is_empty());
    assert!(s.record().is_empty());
}

#[test]
fn long_orders_page_their_order_products() {
    let s = start();
    let tok = token(&s);
    let sf = s.salesforce_addr();
    let r = call(
        sf,
        "POST",
        "/_standin/config",
        &[JSON],
        br#"{"items_page_size":1}"#,
    );
    assert_eq!(r.json()["items_page_size"], 1);
    let page = query(&s, &tok, &soql_in(&[MULTI_LINE_ORDER_ID])).json();
    let sub = &page["records"][0]["OrderItems"];
    assert_eq!(sub["done"], false);
    assert_eq!(sub["records"].as_array().unwrap().len(), 1);
    let mut seen = record_ids(sub);
    let mut next = sub["nextRecordsUrl"].as_str().unwrap().to_owned();
    loop {
        let more = query(&s, &tok, &next).json();
        seen.extend(record_ids(&more));
        match more["nextRecordsUrl"].as_str() {
            Some(n) => next = n.to_owned(),
            None => {
                assert_eq!(more["done"], true);
                break;
            }
        }
    }
    assert_eq!(seen, MULTI_LINE_ITEM_IDS);
    s.reset();
    let tok = token(&s);
    let page = query(&s, &tok, &soql_in(&[MULTI_LINE_ORDER_ID])).json();
    assert_eq!(page["records"][0]["OrderItems"]["done"], true);
}

#[test]
fn expired_tokens_get_invalid_session_until_a_new_login() {
    let s = start();
    let old = token(&s);
    let target = soql_in(&[DEMO_ORDER_ID]);
    assert_eq!(query(&s, &old, &target).status, 200);
    s.expire_tokens();
    let r = query(&s, &old, &target);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()[0]["errorCode"], "INVALID_SESSION_ID");
    let new = token(&s);
    assert_ne!(old, new);
    assert_eq!(query(&s, &new, &target).status, 200);
    // Same through the control API.
    let c = call(
        s.license_addr(),
        "POST",
        "/_standin/expire_tokens",
        &[],
        b"",
    );
    assert_eq!(c.status, 200);
    assert_eq!(query(&s, &new, &target).status, 401);
}

#[test]
fn license_issues_unique_keys_and_retrieves_them() {
    let s = start();
    let lic = s.license_addr();
    let get = |target: &str| call(lic, "GET", target, &[], b"");

    let r = get(&license_target(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_userdata1={DEMO_ORDER_ID}&is_orderid={DEMO_ORDER_ID}&is_quantity=3"),
    ));
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/xml")));
    let text = r.text();
    assert!(text.starts_with(r#"<?xml version="1.0" encoding="UTF-8"?><QuickLicenseManager><licenses><license><activationKey>"#), "{text}");
    let one = keys_in(&text);
    assert_eq!(one.len(), 1, "one key for N seats by default");
    assert!(is_key(&one[0]), "{}", one[0]);

    // POST form body merged with query credentials; N keys when multiple keys are asked for.
    let form = format!("{PRODUCT}&is_userdata1={DEMO_ORDER_ID}&is_quantity=3&is_usemultipleactivationskey=false&is_emailtemplate=1.+New+Order");
    let r = call(
        lic,
        "POST",
        &license_target("GetActivationKeyWithExpiryDate", ""),
        &[FORM],
        form.as_bytes(),
    );
    let three = keys_in(&r.text());
    assert_eq!(three.len(), 3);
    let mut all: Vec<String> = one.iter().chain(&three).cloned().collect();
    assert_eq!(s.issued()[DEMO_ORDER_ID], all);

    let rec = s.record();
    let post = rec.last().expect("recorded");
    assert_eq!(post.form["is_emailtemplate"], "1. New Order");
    assert!(
        post.query.contains("is_pwd=***") && !post.query.contains(QLM_PASSWORD),
        "{}",
        post.query
    );

    // Many calls, some concurrent: every key is new.
    let handles: Vec<_> = (0..4)
        .map(|t| {
            std::thread::spawn(move || {
                let mut c = Client::connect(lic);
                (0..10)
                    .flat_map(|i| {
                        let target = license_target(
                            "GetActivationKeyWithExpiryDate",
                            &format!("{PRODUCT}&is_userdata1=T{t}-{i}&is_quantity=2&is_usemultipleactivationskey=false"),
                        );
                        keys_in(&c.call("GET", &target, &[], b"").text())
                    })
                    .collect::<Vec<_>>()
            })
        })
        .collect();
    for h in handles {
        all.extend(h.join().expect("client thread"));
    }
    assert_eq!(all.len(), 4 + 80);
    assert_eq!(
        all.iter().collect::<BTreeSet<_>>().len(),
        all.len(),
        "keys are unique"
    );

    let r = signed_get(
        lic,
        &license_target(
            "RetrieveActivationKeyHttp",
            &format!("is_userdata1={DEMO_ORDER_ID}&is_format=xml"),
        ),
    );
    assert_eq!(keys_in(&r.text()), s.issued()[DEMO_ORDER_ID]);
    let r = signed_get(
        lic,
        &license_target(
            "RetrieveActivationKeyHttp",
            &format!("is_userdata1={NO_ITEMS_ORDER_ID}&is_format=xml"),
        ),
    );
    assert_eq!(
        r.text(),
        r#"<?xml version="1.0" encoding="UTF-8"?><QuickLicenseManager><licenses/></QuickLicenseManager>"#
    );

    // Plain-text mode: the key alone.
    s.set_plain_text_keys(true);
    let r = get(&license_target(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_userdata1=P"),
    ));
    assert!(is_key(&r.text()), "{}", r.text());
    assert_eq!(s.issued()["P"], [r.text()]);
}

#[test]
fn license_errors_are_200_with_error_text() {
    let s = start();
    let lic = s.license_addr();
    let get = |target: &str| {
        let r = call(lic, "GET", target, &[], b"");
        assert_eq!(r.status, 200, "{target}");
        r.text()
    };
    let base = format!("{LICENSE_PATH_PREFIX}/GetActivationKeyWithExpiryDate");
    assert_eq!(
        get(&format!("{base}?is_user={QLM_USER}&is_pwd=nope&{PRODUCT}")),
        "Error: invalid user or password"
    );
    assert_eq!(
        get(&format!("{base}?{PRODUCT}")),
        "Error: invalid user or password"
    );
    assert_eq!(
        get(&license_target(
            "GetActivationKeyWithExpiryDate",
            "is_majorversion=1&is_minorversion=0&is_vendor=salesforce"
        )),
        "Error: missing argument is_productid"
    );
    assert_eq!(
        get(&license_target(
            "GetActivationKeyWithExpiryDate",
            "is_productid=1&is_majorversion=1&is_minorversion=0"
        )),
        "Error: missing argument is_vendor"
    );
    assert_eq!(
        get(&license_target(
            "GetActivationKeyWithExpiryDate",
            &format!("{PRODUCT}&is_quantity=3.0")
        )),
        "Error: invalid argument is_quantity"
    );
    let r = signed_get(
        lic,
        &license_target("RetrieveActivationKeyHttp", "is_format=xml"),
    );
    assert_eq!(
        r.text(),
        "Error: missing argument is_orderid or is_userdata1"
    );
    assert_eq!(
        get(&format!(
            "{LICENSE_PATH_PREFIX}/RetrieveActivationKeyHttp?is_user={QLM_USER}&is_orderid=X"
        )),
        "Error: invalid user or password"
    );
    assert!(s.issued().is_empty());
    assert_eq!(
        call(
            lic,
            "GET",
            &format!("{LICENSE_PATH_PREFIX}/GetLicensesHttp"),
            &[],
            b""
        )
        .status,
        500
    );
    assert_eq!(call(lic, "GET", "/elsewhere", &[], b"").status, 404);
}

#[test]
fn upstream_echoes_method_and_path() {
    let s = start();
    let r = call(s.upstream_addr(), "DELETE", "/some/path?x=1", &[], b"");
    assert_eq!(
        (r.status, r.text()),
        (200, "upstream: DELETE /some/path?x=1".to_owned())
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    let rec = s.record();
    assert!(rec[0].service == "upstream" && rec[0].endpoint == "echo");
    assert_eq!(
        (
            rec[0].service,
            rec[0].endpoint,
            rec[0].path.as_str(),
            rec[0].query.as_str()
        ),
        (Service::Upstream, Endpoint::Echo, "/some/path", "x=1")
    );
}

#[test]
fn keep_alive_chunked_bodies_and_expect_continue() {
    let s = start();
    let mut c = Client::connect(s.license_addr());
    let target = license_target("GetActivationKeyWithExpiryDate", "");
    let body = format!("{PRODUCT}&is_userdata1=CHUNKED");
    let (a, b) = body.split_at(10);
    let raw = format!(
        "POST {target} HTTP/1.1\r\nHost: x\r\nContent-Type: application/x-www-form-urlencoded\r\nTransfer-Encoding: chunked\r\nExpect: 100-continue\r\n\r\n"
    );
    c.send_raw(raw.as_bytes());
    // The interim 100 arrives before we send the body.
    let interim = c.read().expect("100 Continue");
    assert_eq!(interim.status, 100);
    c.send_raw(
        format!(
            "{:x};ext=1\r\n{a}\r\n{:x}\r\n{b}\r\n0\r\nTrailer: t\r\n\r\n",
            a.len(),
            b.len()
        )
        .as_bytes(),
    );
    let r = c.read().expect("reply");
    assert_eq!(keys_in(&r.text()).len(), 1, "{}", r.text());
    assert_eq!(s.record()[0].form["is_userdata1"], "CHUNKED");

    // Same connection, pipelined: two requests in one write, two replies in order.
    let signed = |args: &str| {
        let target = license_target("RetrieveActivationKeyHttp", args);
        let signing = Signing {
            base: format!("https://x{LICENSE_PATH_PREFIX}"),
            ..Signing::sample()
        };
        let headers: String = signing
            .headers(&target)
            .iter()
            .map(|(n, v)| format!("{n}: {v}\r\n"))
            .collect();
        format!("GET {target} HTTP/1.1\r\nHost: x\r\n{headers}\r\n")
    };
    let (one, two) = (signed("is_userdata1=CHUNKED"), signed("is_userdata1=NONE"));
    c.send_raw(format!("{one}{two}").as_bytes());
    assert_eq!(keys_in(&c.read().expect("first").text()).len(), 1);
    assert!(c.read().expect("second").text().contains("<licenses/>"));
    assert_eq!(s.stats()["retrieve"].count, 2);

    // Connection: close is honoured.
    let r = c.call("GET", "/_standin/stats", &[("Connection", "close")], b"");
    assert_eq!(r.header("connection"), Some("close"));
    assert!(c.read().is_none());
}

#[test]
fn malformed_requests_get_400_and_the_server_lives_on() {
    let s = start();
    for raw in [
        &b"THIS IS NOT HTTP\r\n\r\n"[..],
        b"GET / HTTP/1.1\r\nbad header\r\n\r\n",
        b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n",
        b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n",
        b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n",
    ] {
        let mut c = Client::connect(s.salesforce_addr());
        c.send_raw(raw);
        let r = c.read().expect("a 400");
        assert_eq!(r.status, 400, "{raw:?}");
        assert!(c.read().is_none(), "connection closed after a bad request");
    }
    // A client that vanishes mid-request costs nothing, and its head is recorded as such.
    let mut c = Client::connect(s.salesforce_addr());
    c.send_raw(b"POST /services/oauth2/token HTTP/1.1\r\nContent-Length: 100\r\n\r\nabc");
    drop(c);
    assert_eq!(token(&s).len(), 16 + 5 + 96);
    // The server thread records the truncated head when it sees the close: wait for it.
    let deadline = Instant::now() + Duration::from_secs(2);
    let other = loop {
        let other: Vec<_> = s
            .record()
            .into_iter()
            .filter(|r| r.endpoint == Endpoint::Other)
            .collect();
        if other.len() >= 6 || Instant::now() > deadline {
            break other;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let (truncated, bad): (Vec<_>, Vec<_>) = other.iter().partition(|r| r.body == TRUNCATED_BODY);
    assert_eq!(bad.len(), 5);
    assert!(bad.iter().all(|r| r.status == 400));
    assert_eq!(truncated.len(), 1, "{other:#?}");
    assert_eq!(
        (truncated[0].path.as_str(), truncated[0].status),
        ("/services/oauth2/token", 0)
    );
}

#[test]
fn faults_status_delay_reset_garbage_word() {
    let s = start();
    let tok = token(&s);
    let target = soql_in(&[DEMO_ORDER_ID]);

    // status: Salesforce JSON error array, skip then times.
    s.inject_fault(
        Fault::new(Endpoint::Query, FaultKind::Status)
            .status(503)
            .skip(1)
            .times(2),
    )
    .expect("fault");
    let statuses: Vec<u16> = (0..4).map(|_| query(&s, &tok, &target).status).collect();
    assert_eq!(statuses, [200, 503, 503, 200]);
    s.inject_fault(Fault::new(Endpoint::Query, FaultKind::Status).status(503))
        .expect("fault");
    assert_eq!(
        query(&s, &tok, &target).json()[0]["errorCode"],
        "SERVER_UNAVAILABLE"
    );
    s.inject_fault(Fault::new(Endpoint::Token, FaultKind::Status).status(500))
        .expect("fault");
    let r = call(
        s.salesforce_addr(),
        "POST",
        "/services/oauth2/token",
        &[FORM],
        b"grant_type=password",
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (500, json!("unknown_error"))
    );

    // status on the license server: an HTML error page.
    s.inject_fault(Fault::new(Endpoint::License, FaultKind::Status).status(502))
        .expect("fault");
    let r = call(
        s.license_addr(),
        "GET",
        &license_target("GetActivationKeyWithExpiryDate", PRODUCT),
        &[],
        b"",
    );
    assert_eq!(r.status, 502);
    assert!(r.text().contains("<html>"));
    assert!(s.issued().is_empty(), "a status fault issues nothing");

    // delay: answered normally, late.
    s.inject_fault(Fault::new(Endpoint::Query, FaultKind::Delay).delay_ms(300))
        .expect("fault");
    let t0 = Instant::now();
    assert_eq!(query(&s, &tok, &target).status, 200);
    assert!(t0.elapsed() >= Duration::from_millis(300));
    assert!(s.record().last().expect("rec").service_us >= 300_000);

    // reset: closed without a reply; recorded with status 0.
    s.inject_fault(Fault::new(Endpoint::Composite, FaultKind::Reset))
        .expect("fault");
    let mut c = Client::connect(s.salesforce_addr());
    c.send(
        "PATCH",
        "/services/data/v60.0/composite/sobjects",
        &[JSON],
        b"{}",
    );
    assert!(c.read().is_none());
    let last = s.record().pop().expect("rec");
    assert_eq!(
        (last.endpoint, last.status, last.fault),
        (Endpoint::Composite, 0, Some(FaultKind::Reset))
    );

    // garbage: 200 that no parser accepts, on each service.
    for (ep, addr, target) in [
        (Endpoint::Query, s.salesforce_addr(), target.clone()),
        (
            Endpoint::License,
            s.license_addr(),
            license_target("GetActivationKeyWithExpiryDate", PRODUCT),
        ),
        (Endpoint::Echo, s.upstream_addr(), "/x".to_owned()),
    ] {
        s.inject_fault(Fault::new(ep, FaultKind::Garbage))
            .expect("fault");
        let auth = format!("Bearer {tok}");
        let r = call(addr, "GET", &target, &[("Authorization", &auth)], b"");
        assert_eq!(r.status, 200);
        assert!(serde_json::from_slice::<Value>(&r.body).is_err());
        assert!(std::str::from_utf8(&r.body).is_err(), "{ep:?}");
        assert!(keys_in(&r.text()).is_empty());
    }
    // word: 200 text/plain "Unauthorized", nothing issued.
    s.inject_fault(Fault::new(Endpoint::License, FaultKind::Word))
        .expect("fault");
    let r = call(
        s.license_addr(),
        "GET",
        &license_target("GetActivationKeyWithExpiryDate", PRODUCT),
        &[],
        b"",
    );
    assert_eq!((r.status, r.text().as_str()), (200, "Unauthorized"));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    assert!(s.issued().is_empty());
    assert!(s.pending_faults().is_empty());
}

#[test]
fn faults_issue_then_reset_and_delay() {
    let s = start();
    let target = license_target(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_userdata1=O1"),
    );
    s.inject_fault(Fault::new(Endpoint::License, FaultKind::IssueThenReset))
        .expect("fault");
    let mut c = Client::connect(s.license_addr());
    c.send("GET", &target, &[], b"");
    assert!(c.read().is_none(), "no reply");
    let lost = s.issued()["O1"].clone();
    assert_eq!(lost.len(), 1, "the key was issued all the same");

    s.inject_fault(Fault::new(Endpoint::License, FaultKind::IssueThenDelay).delay_ms(200))
        .expect("fault");
    let t0 = Instant::now();
    let r = call(s.license_addr(), "GET", &target, &[], b"");
    assert!(t0.elapsed() >= Duration::from_millis(200));
    let late = keys_in(&r.text());
    assert_eq!(s.issued()["O1"], [lost[0].clone(), late[0].clone()]);
    let faults: Vec<(u16, Option<FaultKind>)> =
        s.record().iter().map(|r| (r.status, r.fault)).collect();
    assert_eq!(
        faults,
        [
            (0, Some(FaultKind::IssueThenReset)),
            (200, Some(FaultKind::IssueThenDelay))
        ]
    );

    // Retrieve sees both: this is how a retry finds keys issued by a call whose reply was lost.
    let r = signed_get(
        s.license_addr(),
        &license_target("RetrieveActivationKeyHttp", "is_userdata1=O1"),
    );
    assert_eq!(keys_in(&r.text()), s.issued()["O1"]);

    assert!(s
        .inject_fault(Fault::new(Endpoint::Query, FaultKind::IssueThenReset))
        .is_err());
    assert!(s
        .inject_fault(Fault::new(Endpoint::Other, FaultKind::Reset))
        .is_err());
}

#[test]
fn control_api_over_http() {
    let s = start();
    let sf = s.salesforce_addr();
    let post = |path: &str, body: &str| call(sf, "POST", path, &[JSON], body.as_bytes());

    assert_eq!(
        post(
            "/_standin/fault",
            r#"{"endpoint":"echo","kind":"status","status":418}"#
        )
        .status,
        200
    );
    assert_eq!(
        post(
            "/_standin/fault",
            r#"{"endpoint":"query","kind":"issue_then_reset"}"#
        )
        .status,
        400
    );
    assert_eq!(
        post("/_standin/fault", r#"{"endpoint":"nope","kind":"reset"}"#).status,
        400
    );
    assert_eq!(
        call(s.upstream_addr(), "GET", "/teapot", &[], b"").status,
        418
    );

    assert_eq!(
        post(
            "/_standin/config",
            r#"{"page_size":1,"plain_text_keys":true}"#
        )
        .json(),
        json!({"page_size":1,"items_page_size":2000,"plain_text_keys":true,"refuse_writeback":[],"refuse_marks":[],"lifecycle_enabled":true,"order_status":{},
            "strict_auth_methods":["RetrieveActivationKeyHttp"],"strict_url_base":null,"strict_timestamp_tolerance_s":300,
            "disabled_methods":[],"allowed_ips":null,"issue_keeps_orderid":false,"keygen_rate_limit":null})
    );
    assert_eq!(post("/_standin/config", r#"{"page_size":0}"#).status, 400);
    let r = call(
        s.license_addr(),
        "GET",
        &license_target(
            "GetActivationKeyWithExpiryDate",
            &format!("{PRODUCT}&is_userdata1=C"),
        ),
        &[],
        b"",
    );
    assert!(is_key(&r.text()));

    let rec: Vec<RecordedRequest> =
        serde_json::from_value(call(sf, "GET", "/_standin/record", &[], b"").json())
            .expect("record JSON");
    assert_eq!(rec.len(), 2, "control requests are not recorded");
    assert_eq!(rec, s.record());
    let v = call(sf, "GET", "/_standin/record", &[], b"").json();
    for field in [
        "seq",
        "service",
        "endpoint",
        "method",
        "path",
        "headers",
        "body",
        "form",
        "status",
        "service_us",
    ] {
        assert!(v[0].get(field).is_some(), "{field}");
    }
    assert_eq!(v[1]["endpoint"], "license");
    assert_eq!(
        call(sf, "GET", "/_standin/issued", &[], b"").json()["C"][0],
        r.text()
    );
    assert_eq!(
        call(sf, "GET", "/_standin/writebacks", &[], b"").json(),
        json!({})
    );
    let stats = call(sf, "GET", "/_standin/stats", &[], b"").json();
    assert_eq!(stats["license"]["count"], 1);
    assert!(stats["echo"]["service_us_total"].is_u64());

    assert_eq!(post("/_standin/reset", "").status, 200);
    assert!(s.record().is_empty() && s.issued().is_empty() && s.stats().is_empty());
    assert_eq!(
        call(sf, "GET", "/_standin/config", &[], b"").json(),
        default_config()
    );
    assert_eq!(call(sf, "GET", "/_standin/nope", &[], b"").status, 404);
    assert_eq!(call(sf, "GET", "/_standin/reset", &[], b"").status, 405);
}

#[test]
fn authorization_is_masked_in_the_record() {
    let s = start();
    let tok = token(&s);
    query(&s, &tok, &soql_in(&[DEMO_ORDER_ID]));
    let rec = s.record();
    assert_eq!(rec[1].headers["authorization"], "Bearer ***");
    assert_eq!(rec[1].headers["host"], "standin");
    let all = serde_json::to_string(&rec).expect("json");
    assert!(!all.contains(&tok) && !all.contains(CLIENT_SECRET));
}

#[test]
fn shutdown_closes_the_listeners() {
    let mut s = start();
    let addrs = [s.salesforce_addr(), s.license_addr(), s.upstream_addr()];
    let mut idle = Client::connect(s.upstream_addr());
    assert_eq!(idle.call("GET", "/", &[], b"").status, 200);
    s.shutdown();
    assert!(
        idle.read().is_none(),
        "open keep-alive connections are closed"
    );
    for a in addrs {
        assert!(
            TcpStream::connect_timeout(&a, Duration::from_millis(500)).is_err(),
            "{a}"
        );
    }
    s.shutdown();
}

#[test]
fn a_missing_fixture_is_a_clear_error() {
    let err = Standins::start(StandinsConfig {
        orders_path: "/nonexistent/orders.json".into(),
        ..StandinsConfig::default()
    })
    .err()
    .expect("fails");
    assert!(
        err.to_string().contains("/nonexistent/orders.json"),
        "{err}"
    );
}

#[test]
fn lifecycle_methods_change_a_key_and_validate_reads_it_back() {
    let s = start();
    let lic = s.license_addr();
    let get = |method: &str, args: &str| call(lic, "GET", &license_target(method, args), &[], b"");
    let issued = get(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_userdata1={DEMO_ITEM_ID}&is_orderid={DEMO_ITEM_ID}&is_quantity=5&is_expduration=365"),
    );
    let key = keys_in(&issued.text()).remove(0);
    let state = s.keys()[&key].clone();
    let expiry = end_of_day_plus(&state.issued_at, 365);
    assert_eq!(
        state,
        KeyState {
            order: DEMO_ITEM_ID.to_owned(),
            orderid: None,
            revoked: false,
            quantity: 5,
            expiry_days: Some(365),
            expiry_date: Some(expiry.clone()),
            issued_at: state.issued_at.clone(),
        }
    );

    let r = get(
        "RevokeLicenseHttp",
        &format!("is_avkey={key}&is_revoke=true"),
    );
    assert!(
        r.text().contains("<result>License revoked.</result>"),
        "{}",
        r.text()
    );
    assert!(s.keys()[&key].revoked);
    let v = get(
        "ValidateLicenseHttp",
        &format!("is_avkey={key}&is_activate=false"),
    )
    .text();
    assert!(
        status_of(&v) & 2048 != 0 && v.contains("<result>Your license has been revoked.</result>"),
        "{v}"
    );
    get(
        "RevokeLicenseHttp",
        &format!("is_avkey={key}&is_revoke=false"),
    );
    assert!(
        !s.keys()[&key].revoked,
        "restored: the same key, not a new one"
    );

    get(
        "UpdateLicenseHttp",
        &format!("is_avkey={key}&is_quantity=2"),
    );
    assert_eq!(s.keys()[&key].quantity, 2);
    // Renewing adds time on every call: not idempotent.
    for _ in 0..2 {
        let r = get(
            "RenewSubscriptionHttp",
            &format!("is_avkey={key}&is_expduration=365"),
        );
        assert!(r.text().contains("<result>"), "{}", r.text());
    }
    assert_eq!(s.keys()[&key].expiry_days, Some(365 * 3));
    let three_years = end_of_day_plus(&state.issued_at, 365 * 3);
    assert_eq!(
        s.keys()[&key].expiry_date.as_deref(),
        Some(three_years.as_str())
    );
    let v = get("ValidateLicenseHttp", &format!("is_avkey={key}")).text();
    assert!(
        status_of(&v) & 2048 == 0
            && v.contains("<numActivationsAllowed>2</numActivationsAllowed>")
            && v.contains(&format!("<expiryDate>{}</expiryDate>", &three_years[..16])),
        "{v}"
    );

    // A key the server does not know, and a feature not enabled on the server.
    let unknown = get(
        "RevokeLicenseHttp",
        "is_avkey=AAAAA-BBBBB-CCCCC&is_revoke=true",
    )
    .text();
    assert!(
        unknown.contains("<error>The license key does not exist.</error>"),
        "{unknown}"
    );
    let r = call(
        s.salesforce_addr(),
        "POST",
        "/_standin/config",
        &[JSON],
        br#"{"lifecycle_enabled":false}"#,
    );
    assert_eq!(r.json()["lifecycle_enabled"], false);
    let off = get(
        "RenewSubscriptionHttp",
        &format!("is_avkey={key}&is_expduration=30"),
    )
    .text();
    assert_eq!(
        off,
        "Error: This feature is disabled. Set the server property enableRenewSubscriptionHttp to true."
    );
    assert_eq!(
        s.keys()[&key].expiry_days,
        Some(1095),
        "a refused call changes nothing"
    );
    let endpoints: Vec<Endpoint> = s.record().iter().map(|r| r.endpoint).collect();
    for e in [
        Endpoint::Revoke,
        Endpoint::Update,
        Endpoint::Renew,
        Endpoint::Validate,
    ] {
        assert!(endpoints.contains(&e), "{e:?} not recorded");
    }
    s.reset();
    assert!(s.keys().is_empty());
}

#[test]
fn orders_change_status_and_lifecycle_orders_carry_their_links() {
    let s = start();
    let status_of = |s: &Standins| {
        // A token each time: `reset` forgets them.
        let page = query(s, &token(s), &soql_in(&[DEMO_ORDER_ID])).json();
        page["records"][0]["Status"].as_str().unwrap().to_owned()
    };
    assert_eq!(status_of(&s), "Activated");
    s.set_order_status(DEMO_ORDER_ID, "Cancelled");
    assert_eq!(status_of(&s), "Cancelled");
    // Over the control API, by the 15-character id.
    let r = call(
        s.salesforce_addr(),
        "POST",
        "/_standin/config",
        &[JSON],
        format!(
            r#"{{"order_status":{{"{}":"Activated"}}}}"#,
            &DEMO_ORDER_ID[..15]
        )
        .as_bytes(),
    );
    assert_eq!(r.json()["order_status"][DEMO_ORDER_ID], "Activated");
    assert_eq!(status_of(&s), "Activated");
    let r = call(
        s.salesforce_addr(),
        "POST",
        "/_standin/config",
        &[JSON],
        br#"{"order_status":{"8015Y000001ZZZZQAA":"Cancelled"}}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    s.set_order_status(DEMO_ORDER_ID, "Cancelled");
    s.reset();
    assert_eq!(status_of(&s), "Activated", "reset restores the fixture");

    let page = query(
        &s,
        &token(&s),
        &soql_in(&[REDUCTION_ORDER_ID, RENEWAL_ORDER_ID]),
    )
    .json();
    let reduction = &page["records"][0];
    assert_eq!(reduction["IsReductionOrder"], true);
    let line = &reduction["OrderItems"]["records"][0];
    assert_eq!(line["Id"], REDUCTION_ITEM_ID);
    assert_eq!(line["Quantity"], -1.0);
    assert_eq!(line["OriginalOrderItemId"], DEMO_ITEM_ID);
    assert_eq!(line["OriginalOrderItem"]["AvailableQuantity"], 2.0);
    let renewal = &page["records"][1]["OrderItems"]["records"][0];
    assert_eq!(renewal["Id"], RENEWAL_ITEM_ID);
    assert_eq!(renewal["Product2"]["ProductCode"], "002-RENEW");
    assert_eq!(renewal["Renews__c"], SUBSCRIPTION_ITEM_ID);
}

// ---- QLM as documented: strict authentication, switches, lookup, Ping, Validate, fixtures ----

const RETRIEVE: &str = "RetrieveActivationKeyHttp";

fn post_config(s: &Standins, body: &str) -> Reply {
    call(
        s.salesforce_addr(),
        "POST",
        "/_standin/config",
        &[JSON],
        body.as_bytes(),
    )
}

/// Issues one key under `args` (credentials and product added) and returns it.
fn issue(s: &Standins, args: &str) -> String {
    let r = call(
        s.license_addr(),
        "GET",
        &license_target(
            "GetActivationKeyWithExpiryDate",
            &format!("{PRODUCT}&{args}"),
        ),
        &[],
        b"",
    );
    let mut keys = keys_in(&r.text());
    assert_eq!(keys.len(), 1, "{}", r.text());
    keys.remove(0)
}

#[test]
fn hmac_sha256_known_answer() {
    assert_eq!(
        hmac_sha256_hex("key", "The quick brown fox jumps over the lazy dog"),
        "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
    );
    assert_eq!(utc(0), "1970-01-01 00:00:00");
    assert_eq!(utc(951_782_400), "2000-02-29 00:00:00");
    assert_eq!(utc(1_806_537_599), "2027-03-31 23:59:59");
}

#[test]
fn strict_auth_accepts_a_correct_hash_under_every_documented_form() {
    let s = start();
    let key = issue(&s, "is_userdata1=L1");
    let target = license_target(RETRIEVE, "is_userdata1=L1&is_format=xml");
    for header in [
        "X-Qlm-Authentication-Token",
        "X-Qlm-Authentication",
        "Qlm-Authentication-Token",
    ] {
        for sep in [':', '='] {
            let r = Signing {
                header,
                sep,
                ..Signing::sample()
            }
            .get(s.license_addr(), &target);
            assert_eq!(
                keys_in(&r.text()),
                vec![key.clone()],
                "{header} {sep}: {}",
                r.text()
            );
        }
    }
    // The hash covers the raw query: percent-encoding exactly as sent.
    let odd = issue(&s, "is_userdata1=a+b%2Fc");
    let r = signed_get(
        s.license_addr(),
        &license_target(RETRIEVE, "is_userdata1=a+b%2Fc"),
    );
    assert_eq!(keys_in(&r.text()), [odd]);
    // The hash is masked in the record, under the prose's name too.
    let rec = s.record();
    let last = rec.last().expect("recorded");
    assert_eq!(last.headers["x-qlm-authentication-token"], "***");
    assert_eq!(last.headers["x-qlm-timestamp"].len(), 19);
    assert!(rec.iter().any(|r| r
        .headers
        .get("x-qlm-authentication")
        .is_some_and(|v| v == "***")));
}

#[test]
fn strict_auth_refuses_each_reason() {
    let s = start();
    let lic = s.license_addr();
    issue(&s, "is_userdata1=L1");
    let target = license_target(RETRIEVE, "is_userdata1=L1");
    let refused = |r: Reply, why: &str| {
        assert_eq!(r.status, 200);
        assert_eq!(
            r.text(),
            format!("Error: Strict authentication failed: {why}.")
        );
        assert!(r
            .header("content-type")
            .is_some_and(|c| c.starts_with("text/plain")));
        assert!(!r.text().contains(QLM_API_KEY));
    };
    // No headers at all, then each one missing.
    refused(
        call(lic, "GET", &target, &[], b""),
        "missing header X-Qlm-Authentication-Token",
    );
    let full = Signing::sample().headers(&target);
    for (missing, why) in [
        (0, "missing header X-Qlm-Authentication-Token"),
        (1, "missing header X-Qlm-Timestamp"),
        (2, "missing header X-Qlm-Authentication-Version"),
    ] {
        let some: Vec<(&str, &str)> = full
            .iter()
            .enumerate()
            .filter(|(i, _)| *i != missing)
            .map(|(_, (n, v))| (n.as_str(), v.as_str()))
            .collect();
        refused(call(lic, "GET", &target, &some, b""), why);
    }
    // The wrong key.
    refused(
        Signing {
            key: "not-the-key",
            ..Signing::sample()
        }
        .get(lic, &target),
        "invalid hash",
    );
    // A stale timestamp, and one from the future.
    let too_far = "the time between server and client is not synchronized. Difference in time is > 300 seconds";
    for t in [unix_now() - 3600, unix_now() + 3600] {
        refused(
            Signing {
                timestamp: utc(t),
                ..Signing::sample()
            }
            .get(lic, &target),
            too_far,
        );
    }
    refused(
        Signing {
            timestamp: "2027-03-31T23:59:00Z".into(),
            ..Signing::sample()
        }
        .get(lic, &target),
        "malformed header X-Qlm-Timestamp (expected yyyy-MM-dd HH:mm:ss, UTC)",
    );
    // Version 1.
    refused(
        Signing {
            version: "1",
            ..Signing::sample()
        }
        .get(lic, &target),
        "authentication version 1 is below the minimum version 2",
    );
    // The wrong URL base: what the client saw (plain http), or another host.
    for base in [
        format!("http://standin{LICENSE_PATH_PREFIX}"),
        format!("https://qlm.example.com{LICENSE_PATH_PREFIX}"),
    ] {
        refused(
            Signing {
                base,
                ..Signing::sample()
            }
            .get(lic, &target),
            "invalid hash",
        );
    }
    // A hash over other arguments than those sent.
    let headers = Signing::sample().headers(&license_target(RETRIEVE, "is_userdata1=L2"));
    let refs: Vec<(&str, &str)> = headers
        .iter()
        .map(|(n, v)| (n.as_str(), v.as_str()))
        .collect();
    refused(call(lic, "GET", &target, &refs, b""), "invalid hash");
    // Credentials come first: a wrong password is refused as such, signed or not.
    let bad_pwd =
        format!("{LICENSE_PATH_PREFIX}/{RETRIEVE}?is_user={QLM_USER}&is_pwd=x&is_userdata1=L1");
    assert_eq!(
        signed_get(lic, &bad_pwd).text(),
        "Error: invalid user or password"
    );
    assert_eq!(
        fixture("strict_auth_refused.txt"),
        "Error: Strict authentication failed: invalid hash."
    );

    // Switches: a wider tolerance takes the stale timestamp, another URL base its own hash.
    s.set_strict_timestamp_tolerance_s(7200);
    let stale = Signing {
        timestamp: utc(unix_now() - 3600),
        ..Signing::sample()
    };
    assert_eq!(keys_in(&stale.get(lic, &target).text()).len(), 1);
    let base = "https://qlm.example.com/qlmLicenseServer/qlmservice.asmx";
    s.set_strict_url_base(Some(base));
    let elsewhere = Signing {
        base: base.to_owned(),
        ..Signing::sample()
    };
    assert_eq!(keys_in(&elsewhere.get(lic, &target).text()).len(), 1);
    refused(signed_get(lic, &target), "invalid hash");
    s.set_strict_url_base(None);
    assert_eq!(keys_in(&signed_get(lic, &target).text()).len(), 1);
    // Off: an unsigned lookup is answered; on for another method: that one needs it.
    s.set_strict_auth_methods(&[]);
    assert_eq!(
        keys_in(&call(lic, "GET", &target, &[], b"").text()).len(),
        1
    );
    post_config(
        &s,
        r#"{"strict_auth_methods":["GetActivationKeyWithExpiryDate"]}"#,
    );
    let issue_target = license_target(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_userdata1=L3"),
    );
    refused(
        call(lic, "GET", &issue_target, &[], b""),
        "missing header X-Qlm-Authentication-Token",
    );
    assert_eq!(keys_in(&signed_get(lic, &issue_target).text()).len(), 1);
    // The same over the control API.
    let r = post_config(
        &s,
        r#"{"strict_auth_methods":["RetrieveActivationKeyHttp"],"strict_url_base":"https://a/b","strict_timestamp_tolerance_s":60}"#,
    )
    .json();
    assert_eq!(
        (&r["strict_url_base"], &r["strict_timestamp_tolerance_s"]),
        (&json!("https://a/b"), &json!(60))
    );
    assert_eq!(
        post_config(&s, r#"{"strict_url_base":null}"#).json()["strict_url_base"],
        Value::Null
    );
    assert_eq!(keys_in(&signed_get(lic, &target).text()).len(), 1);
    // The helper for other callers signs as the C# sample does.
    let ts = qlm_timestamp_now();
    let url = format!("https://standin{target}");
    let helper = strict_auth_headers(&url, &ts);
    let refs: Vec<(&str, &str)> = helper.iter().map(|(n, v)| (*n, v.as_str())).collect();
    assert_eq!(
        keys_in(&call(lic, "GET", &target, &refs, b"").text()).len(),
        1
    );
}

#[test]
fn lookup_by_userdata1_orderid_or_both() {
    let s = start();
    let lic = s.license_addr();
    let find = |args: &str| keys_in(&signed_get(lic, &license_target(RETRIEVE, args)).text());

    // A stock server drops is_orderid: the issued map and the lookup go by is_userdata1.
    let dropped = issue(&s, "is_userdata1=A0&is_orderid=O0");
    assert_eq!(s.issued()["A0"], vec![dropped.clone()]);
    assert!(!s.issued().contains_key("O0"));
    assert_eq!(s.keys()[&dropped].orderid, None);
    assert!(find("is_orderid=O0").is_empty());
    assert_eq!(find("is_userdata1=A0"), vec![dropped.clone()]);
    assert!(
        find("is_userdata1=A0&is_orderid=O0").is_empty(),
        "both must match"
    );

    // A server that keeps it.
    s.set_issue_keeps_orderid(true);
    let a = issue(&s, "is_userdata1=A1&is_orderid=O1");
    let b = issue(&s, "is_userdata1=B1&is_orderid=O1");
    let c = issue(&s, "is_userdata1=A1&is_orderid=O2");
    assert_eq!(s.keys()[&a].orderid.as_deref(), Some("O1"));
    assert_eq!(s.issued()["A1"], [a.clone(), c.clone()]);
    assert_eq!(find("is_userdata1=A1"), [a.clone(), c.clone()]);
    assert_eq!(
        find("is_orderid=O1"),
        [a.clone(), b.clone()],
        "in issue order"
    );
    assert_eq!(find("is_orderid=O1&is_userdata1=A1"), vec![a.clone()]);
    assert_eq!(find("is_userdata1=B1&is_orderid=O2"), Vec::<String>::new());
    assert_eq!(
        post_config(&s, r#"{"issue_keeps_orderid":false}"#).json()["issue_keeps_orderid"],
        false
    );
    let d = issue(&s, "is_userdata1=A1&is_orderid=O1");
    assert_eq!(
        find("is_orderid=O1"),
        [a.clone(), b.clone()],
        "dropped again"
    );
    assert_eq!(find("is_userdata1=A1"), [a.clone(), c.clone(), d]);

    // Neither argument, an empty one, an unknown format.
    for args in ["is_format=xml", "is_userdata1=&is_orderid="] {
        assert_eq!(
            signed_get(lic, &license_target(RETRIEVE, args)).text(),
            "Error: missing argument is_orderid or is_userdata1"
        );
    }
    assert_eq!(
        signed_get(
            lic,
            &license_target(RETRIEVE, "is_userdata1=A1&is_format=csv")
        )
        .text(),
        "Error: invalid argument is_format"
    );

    // The XML and JSON shapes against their fixtures.
    let r = signed_get(
        lic,
        &license_target(RETRIEVE, "is_orderid=O1&is_format=xml"),
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/xml")));
    assert_eq!(
        structure(&r.text()),
        structure(&fixture("retrieve_found.xml"))
    );
    let none = signed_get(lic, &license_target(RETRIEVE, "is_orderid=NONE"));
    assert_eq!(none.text(), fixture("retrieve_empty.xml"));
    let r = signed_get(
        lic,
        &license_target(RETRIEVE, "is_orderid=O1&is_format=json"),
    );
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("application/json")));
    assert_eq!(
        r.json(),
        json!({"licenses":[{"activationKey":a},{"activationKey":b}]})
    );
    let shape: Value = serde_json::from_str(&fixture("retrieve_found.json")).expect("fixture");
    let keys_of = |v: &Value| -> Vec<String> {
        v["licenses"]
            .as_array()
            .expect("licenses")
            .iter()
            .map(|l| {
                assert_eq!(l.as_object().expect("license").len(), 1);
                l["activationKey"]
                    .as_str()
                    .expect("activationKey")
                    .to_owned()
            })
            .collect()
    };
    assert_eq!(keys_of(&shape).len(), 2);
    assert_eq!(keys_of(&r.json()).len(), 2);
    let r = signed_get(
        lic,
        &license_target(RETRIEVE, "is_orderid=NONE&is_format=json"),
    );
    assert_eq!(r.json(), json!({"licenses":[]}));
}

#[test]
fn disabled_methods_and_ip_refusals() {
    let s = start();
    let lic = s.license_addr();
    let key = issue(&s, "is_userdata1=D1");
    let lookup = license_target(RETRIEVE, "is_userdata1=D1");

    s.set_disabled_methods(&[RETRIEVE]);
    let r = signed_get(lic, &lookup);
    assert_eq!(r.text(), fixture("method_disabled.txt"));
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/plain")));
    // Disabled before anything else: even unsigned, even without credentials.
    let bare = format!("{LICENSE_PATH_PREFIX}/{RETRIEVE}?is_userdata1=D1");
    assert_eq!(
        call(lic, "GET", &bare, &[], b"").text(),
        fixture("method_disabled.txt")
    );
    let cfg = post_config(
        &s,
        r#"{"disabled_methods":["GetActivationKeyWithExpiryDate","ValidateLicenseHttp"]}"#,
    )
    .json();
    assert_eq!(
        cfg["disabled_methods"],
        json!(["GetActivationKeyWithExpiryDate", "ValidateLicenseHttp"])
    );
    assert_eq!(cfg["lifecycle_enabled"], true);
    let get = |m: &str, a: &str| call(lic, "GET", &license_target(m, a), &[], b"").text();
    assert_eq!(
        get("GetActivationKeyWithExpiryDate", PRODUCT),
        "Error: This feature is disabled. Set the server property enableGetActivationKey to true."
    );
    assert!(get("ValidateLicenseHttp", &format!("is_avkey={key}"))
        .contains("server property enableValidateLicenseHttp"));
    assert_eq!(keys_in(&signed_get(lic, &lookup).text()), vec![key.clone()]);
    // lifecycle_enabled is shorthand for the three lifecycle methods.
    let cfg = post_config(&s, r#"{"lifecycle_enabled":false}"#).json();
    assert_eq!(cfg["lifecycle_enabled"], false);
    assert_eq!(cfg["disabled_methods"].as_array().expect("list").len(), 5);
    for (method, property) in [
        ("RevokeLicenseHttp", "enableRevokeLicense"),
        ("UpdateLicenseHttp", "enableUpgradeLicense"),
        ("RenewSubscriptionHttp", "enableRenewSubscriptionHttp"),
    ] {
        assert_eq!(
            get(
                method,
                &format!("is_avkey={key}&is_revoke=true&is_expduration=1")
            ),
            format!("Error: This feature is disabled. Set the server property {property} to true.")
        );
    }
    s.set_lifecycle_enabled(true);
    s.set_disabled_methods(&[]);
    assert!(get(
        "RevokeLicenseHttp",
        &format!("is_avkey={key}&is_revoke=false")
    )
    .contains("<result>"));

    // Allowed IP addresses: the stand-in's callers are 127.0.0.1.
    s.set_allowed_ips(Some(&["10.0.0.0/8", "192.168.1.7"]))
        .expect("valid");
    let r = signed_get(lic, &lookup);
    assert_eq!(r.text(), fixture("ip_not_allowed.txt"));
    assert!(get("GetActivationKeyWithExpiryDate", PRODUCT).starts_with(
        "Error: The IP address 127.0.0.1 is not allowed to call GetActivationKeyWithExpiryDate."
    ));
    assert_eq!(
        call(
            lic,
            "GET",
            &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
            &[],
            b""
        )
        .status,
        200,
        "PingHttp is not an admin method"
    );
    s.set_allowed_ips(Some(&["127.0.0.0/8"])).expect("valid");
    assert_eq!(keys_in(&signed_get(lic, &lookup).text()), vec![key.clone()]);
    assert!(s.set_allowed_ips(Some(&["localhost"])).is_err());
    let r = post_config(
        &s,
        r#"{"issue_keeps_orderid":true,"allowed_ips":["10.0.0.0/33"]}"#,
    );
    assert_eq!(r.status, 400, "{}", r.text());
    let cfg = call(lic, "GET", "/_standin/config", &[], b"").json();
    assert_eq!(cfg["issue_keeps_orderid"], false, "refused whole");
    assert_eq!(cfg["allowed_ips"], json!(["127.0.0.0/8"]));
    let cfg = post_config(&s, r#"{"allowed_ips":["127.0.0.1","::1"]}"#).json();
    assert_eq!(cfg["allowed_ips"], json!(["127.0.0.1", "::1"]));
    assert_eq!(keys_in(&signed_get(lic, &lookup).text()), vec![key.clone()]);
    assert_eq!(
        post_config(&s, r#"{"allowed_ips":null}"#).json()["allowed_ips"],
        Value::Null
    );
    s.set_allowed_ips(Some(&[])).expect("empty list");
    assert!(signed_get(lic, &lookup)
        .text()
        .starts_with("Error: The IP address"));
    s.set_allowed_ips(None).expect("none");
    assert_eq!(keys_in(&signed_get(lic, &lookup).text()), [key]);
}

#[test]
fn ping_answers_as_documented() {
    let s = start();
    let r = call(
        s.license_addr(),
        "GET",
        &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
        &[],
        b"",
    );
    assert_eq!(r.status, 200);
    assert!(r
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/xml")));
    let text = r.text();
    assert_eq!(structure(&text), structure(&fixture("ping.xml")));
    assert!(text.starts_with("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<QuickLicenseManager>\n<result>Successfully connected to License Server at "), "{text}");
    assert!(text.contains("<serverDate date = \""), "{text}");
    assert!(
        text.contains(
            "\" />  <!-- this is obsolete but is returned for backward compatibility -->"
        ),
        "{text}"
    );
    // The date is now, in the ISO form.
    let date = text
        .split("<serverDate>")
        .nth(1)
        .and_then(|t| t.split("</serverDate>").next())
        .expect("serverDate");
    let now = utc(unix_now());
    assert_eq!(date.len(), 20);
    assert_eq!(&date[..10], &now[..10]);
    assert!(fixture("ping.xml").contains("<serverDate date = \""));
    assert_eq!(s.record()[0].endpoint, Endpoint::Ping);
    assert_eq!(s.record()[0].endpoint, "ping");
    let post = call(
        s.license_addr(),
        "POST",
        &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
        &[FORM],
        b"",
    );
    assert_eq!(post.status, 200);
}

#[test]
fn validate_has_the_documented_shape_and_follows_renewals() {
    let s = start();
    let lic = s.license_addr();
    let get = |m: &str, a: &str| call(lic, "GET", &license_target(m, a), &[], b"").text();
    let key = issue(&s, "is_userdata1=V1&is_quantity=3&is_expduration=365");
    let issued_at = s.keys()[&key].issued_at.clone();
    let validate = || {
        get(
            "ValidateLicenseHttp",
            &format!("is_avkey={key}&is_activate=false"),
        )
    };
    let element = |v: &str, name: &str| -> String {
        v.split(&format!("<{name}>"))
            .nth(1)
            .and_then(|t| t.split(&format!("</{name}>")).next())
            .unwrap_or_else(|| panic!("no <{name}> in {v}"))
            .to_owned()
    };
    let us = |date: &str| {
        let (y, m, d) = (
            &date[..4],
            date[5..7].trim_start_matches('0'),
            date[8..10].trim_start_matches('0'),
        );
        format!("{m}/{d}/{y}")
    };

    let v = validate();
    assert_eq!(structure(&v), structure(&fixture("validate.xml")), "{v}");
    assert!(
        v.starts_with("<QuickLicenseManager>\n<creationDateUtc>"),
        "no declaration on top: {v}"
    );
    assert!(v.ends_with("</Signature>\n</QuickLicenseManager>"), "{v}");
    assert!(
        v.contains(
            "<productProperties><?xml version=\"1.0\" encoding=\"utf-8\"?><ProductProperties>"
        ),
        "{v}"
    );
    assert!(
        v.contains("<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">"),
        "{v}"
    );
    let expiry = end_of_day_plus(&issued_at, 365);
    assert_eq!(element(&v, "expiryDate"), expiry[..16]);
    assert_eq!(element(&v, "creationDateUtc"), issued_at);
    let maintenance = element(&v, "maintenanceRenewalDate");
    assert!(maintenance < expiry, "{maintenance} before {expiry}");
    assert!(
        element(&v, "result").contains(&format!("Your license expires on {}.", us(&expiry))),
        "{v}"
    );
    assert_eq!(element(&v, "numActivationsAllowed"), "3");
    assert_eq!(status_of(&v) & 2048, 0);
    for attr in element(&v, "productProperties")
        .split("expiryDate=\"")
        .skip(1)
    {
        let date = &attr[..19];
        assert_ne!(date, expiry, "a product property's expiry is not the key's");
    }
    let fixture_v = fixture("validate.xml");
    assert_eq!(element(&fixture_v, "expiryDate"), "2027-03-31 23:59");
    assert!(element(&fixture_v, "maintenanceRenewalDate").as_str() < "2027-03-31");
    assert!(element(&fixture_v, "result").contains("3/31/2027"));

    // is_expduration adds on every call.
    for _ in 0..2 {
        assert!(get(
            "RenewSubscriptionHttp",
            &format!("is_avkey={key}&is_expduration=30")
        )
        .contains("<result>"));
    }
    let longer = end_of_day_plus(&issued_at, 425);
    assert_eq!(s.keys()[&key].expiry_days, Some(425));
    assert_eq!(s.keys()[&key].expiry_date.as_deref(), Some(longer.as_str()));
    assert_eq!(element(&validate(), "expiryDate"), longer[..16]);
    // is_expdate sets it once: twice changes nothing.
    for _ in 0..2 {
        assert!(get(
            "RenewSubscriptionHttp",
            &format!("is_avkey={key}&is_expdate=2030-06-30")
        )
        .contains("<result>"));
        assert_eq!(
            s.keys()[&key].expiry_date.as_deref(),
            Some("2030-06-30 23:59:59")
        );
    }
    let days = (unix_of_date("2030-06-30") - unix_of_date(&issued_at)) / 86_400;
    assert_eq!(
        s.keys()[&key].expiry_days,
        Some(u32::try_from(days).expect("days"))
    );
    let v = validate();
    assert_eq!(element(&v, "expiryDate"), "2030-06-30 23:59");
    assert!(
        element(&v, "result").contains("Your license expires on 6/30/2030."),
        "{v}"
    );
    assert_eq!(
        element(&v, "maintenanceRenewalDate"),
        maintenance,
        "renewal leaves maintenance"
    );
    get(
        "RenewSubscriptionHttp",
        &format!("is_avkey={key}&is_expdate=2031-01-15+12:00:00"),
    );
    assert_eq!(
        s.keys()[&key].expiry_date.as_deref(),
        Some("2031-01-15 12:00:00")
    );
    assert_eq!(
        get("RenewSubscriptionHttp", &format!("is_avkey={key}")),
        get_fragment("You must specify either is_expdate or is_expduration.")
    );
    assert_eq!(
        get(
            "RenewSubscriptionHttp",
            &format!("is_avkey={key}&is_expdate=30/06/2030")
        ),
        get_fragment("invalid argument is_expdate")
    );
    // UpdateLicenseHttp's is_expdate sets it too.
    get(
        "UpdateLicenseHttp",
        &format!("is_avkey={key}&is_expdate=2029-12-31%2023:59:59"),
    );
    assert_eq!(
        s.keys()[&key].expiry_date.as_deref(),
        Some("2029-12-31 23:59:59")
    );

    // Revoked: visible in status (EKeyRevoked) and result.
    get(
        "RevokeLicenseHttp",
        &format!("is_avkey={key}&is_revoke=true"),
    );
    let v = validate();
    assert_eq!(structure(&v), structure(&fixture("validate_revoked.xml")));
    assert_eq!(status_of(&v), 4 | 2048);
    assert_eq!(element(&v, "result"), "Your license has been revoked.");
    assert_eq!(status_of(&fixture("validate_revoked.xml")), 4 | 2048);

    // Never expires: an empty <expiryDate/>, EKeyPermanent.
    let forever = issue(&s, "is_userdata1=V2");
    assert_eq!(s.keys()[&forever].expiry_date, None);
    let v = get("ValidateLicenseHttp", &format!("is_avkey={forever}"));
    assert!(v.contains("\n<expiryDate/>\n"), "{v}");
    assert_eq!(status_of(&v), 2);
    assert!(
        element(&v, "result").contains("Your license never expires."),
        "{v}"
    );
    // An issue with is_expdate.
    let dated = issue(&s, "is_userdata1=V3&is_expdate=2027-03-31");
    assert_eq!(
        s.keys()[&dated].expiry_date.as_deref(),
        Some("2027-03-31 23:59:59")
    );
    assert_eq!(s.keys()[&dated].expiry_days, None);
    assert!(get("ValidateLicenseHttp", &format!("is_avkey={dated}"))
        .contains("<expiryDate>2027-03-31 23:59</expiryDate>"));

    // An unknown key: QLM's documented error fragment.
    let unknown = call(
        lic,
        "GET",
        &license_target("ValidateLicenseHttp", "is_avkey=NOPE"),
        &[],
        b"",
    );
    assert!(unknown
        .header("content-type")
        .is_some_and(|c| c.starts_with("text/xml")));
    assert_eq!(
        structure(&unknown.text()),
        structure(&fixture("error_fragment.xml"))
    );
    assert_eq!(unknown.text(), fixture("error_fragment.xml"));
}

/// The documented error fragment with `text`.
fn get_fragment(text: &str) -> String {
    format!("<?xml version='1.0' encoding='UTF-8'?>\n<QuickLicenseManager>\n<error>{text}</error>\n</QuickLicenseManager>")
}

#[test]
fn reset_restores_every_license_switch() {
    let s = start();
    s.set_strict_auth_methods(&[]);
    s.set_strict_url_base(Some("https://elsewhere/x"));
    s.set_strict_timestamp_tolerance_s(5);
    s.set_disabled_methods(&["PingHttp"]);
    s.set_lifecycle_enabled(false);
    s.set_allowed_ips(Some(&["10.0.0.1"])).expect("valid");
    s.set_issue_keeps_orderid(true);
    let cfg = call(s.salesforce_addr(), "GET", "/_standin/config", &[], b"").json();
    assert_ne!(cfg, default_config());
    assert_eq!(cfg["strict_auth_methods"], json!([]));
    assert_eq!(
        call(
            s.license_addr(),
            "GET",
            &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
            &[],
            b""
        )
        .text(),
        "Error: This feature is disabled. Set the server property enablePingHttp to true."
    );
    assert_eq!(
        call(s.license_addr(), "POST", "/_standin/reset", &[], b"").status,
        200
    );
    assert_eq!(
        call(s.license_addr(), "GET", "/_standin/config", &[], b"").json(),
        default_config()
    );
    // And the behaviour with it: strict authentication is back on the lookup.
    let key = issue(&s, "is_userdata1=R1&is_orderid=R1");
    let target = license_target(RETRIEVE, "is_userdata1=R1");
    assert!(call(s.license_addr(), "GET", &target, &[], b"")
        .text()
        .starts_with("Error: Strict authentication failed"));
    assert_eq!(
        keys_in(&signed_get(s.license_addr(), &target).text()),
        [key]
    );
    assert_eq!(s.keys().values().next().expect("key").orderid, None);
    // An unknown switch is refused.
    assert_eq!(post_config(&s, r#"{"strict_auth":true}"#).status, 400);
}

#[test]
fn fixtures_are_our_own_and_well_formed() {
    // Every XML fixture has balanced elements; none carries Soraco's sample values.
    for name in [
        "ping.xml",
        "validate.xml",
        "validate_revoked.xml",
        "error_fragment.xml",
        "key_asmx_string.xml",
        "retrieve_found.xml",
    ] {
        let text = fixture(name);
        let tags = structure(&text);
        let opens = tags
            .iter()
            .filter(|t| {
                t.starts_with('<') && !t.starts_with("</") && !t.starts_with("<?") && *t != "<!--"
            })
            .count();
        let closes = tags.iter().filter(|t| t.starts_with("</")).count();
        assert_eq!(opens, closes, "{name}: {tags:?}");
        for soraco in [
            "FNR9020700G7HJKM8P9Q211JSEUB6ZKJAPHBQEP",
            "8.1.16047.1",
            "Demo Enterprise",
            "soraco.co",
            "ivruflfoKnKY20cbJLBTNp3caRc=",
        ] {
            assert!(!text.contains(soraco), "{name} has {soraco}");
        }
    }
    let asmx = fixture("key_asmx_string.xml");
    assert_eq!(structure(&asmx), ["<?xml", "<string", "</string"]);
    assert!(asmx.contains(r#"<string xmlns="http://tempuri.org/">"#));
    assert!(is_key(&keys_in(&fixture("retrieve_found.xml"))[0]));
}

/// keygate's self-check marks its calls: they are answered like any other, kept out of the
/// record and the stats, and never take a fault injected for a delivery.
#[test]
fn self_check_calls_are_served_apart_and_never_take_a_fault() {
    let s = start();
    s.inject_fault(Fault::new(Endpoint::Token, FaultKind::Status).status(500))
        .unwrap();
    let body = format!(
        "grant_type=client_credentials&client_id={CLIENT_ID}&client_secret={CLIENT_SECRET}"
    );
    let probe = call(
        s.salesforce_addr(),
        "POST",
        "/services/oauth2/token",
        &[FORM, (SELF_CHECK_HEADER, "1")],
        body.as_bytes(),
    );
    assert_eq!(
        probe.status,
        200,
        "the fault is for a delivery: {}",
        probe.text()
    );
    let ping = call(
        s.license_addr(),
        "GET",
        &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
        &[(SELF_CHECK_HEADER, "1")],
        b"",
    );
    assert_eq!(ping.status, 200);
    assert!(s.record().is_empty(), "{:?}", s.record());
    assert!(s.stats().is_empty(), "{:?}", s.stats());
    let probes: Vec<&str> = s.probes().iter().map(|p| p.endpoint.as_str()).collect();
    assert_eq!(probes, ["token", "ping"]);
    // The delivery's login still gets the fault, and is recorded.
    let delivery = call(
        s.salesforce_addr(),
        "POST",
        "/services/oauth2/token",
        &[FORM],
        body.as_bytes(),
    );
    assert_eq!(delivery.status, 500);
    assert_eq!(s.record().len(), 1);
    s.reset();
    assert!(s.probes().is_empty());
}

/// Two validation rules a test switches on per record: `refuse_writeback` refuses the keys
/// written back and lets keygate's issuing mark pass; `refuse_marks` the reverse.
#[test]
fn refused_keys_and_refused_marks_are_told_apart() {
    let s = start();
    let tok = token(&s);
    let patch = |value: &str| {
        let body = json!({"allOrNone": false, "records": [
            {"attributes": {"type": "OrderItem"}, "id": DEMO_ITEM_ID, "License_Keys__c": value}]});
        let r = call(
            s.salesforce_addr(),
            "PATCH",
            "/services/data/v60.0/composite/sobjects",
            &[JSON, ("Authorization", &format!("Bearer {tok}"))],
            body.to_string().as_bytes(),
        );
        r.json()[0]["success"].as_bool().expect("a result")
    };
    let mark = format!("{ISSUING_MARK}2026-12-06 04:00:00 UTC (1796529600000, gateway 1)");
    s.refuse_writeback(&[DEMO_ITEM_ID]);
    assert!(patch(&mark), "a mark passes the rule on keys");
    assert!(!patch("AAAAA-BBBBB-CCCCC"));
    s.refuse_writeback(&[]);
    s.refuse_marks(&[DEMO_ITEM_ID]);
    assert!(!patch(&mark));
    assert!(patch("AAAAA-BBBBB-CCCCC"));
    assert_eq!(s.writebacks()[DEMO_ITEM_ID], "AAAAA-BBBBB-CCCCC");
}

/// The most license-server calls served at once (the ceiling a soak holds Envoy's circuit
/// breakers to): three slow calls at once count 3; the self-check's marked calls do not count;
/// a reset starts over.
#[test]
fn the_most_license_calls_at_once_are_counted() {
    let s = start();
    s.inject_fault(
        Fault::new(Endpoint::License, FaultKind::Delay)
            .delay_ms(300)
            .times(3),
    )
    .unwrap();
    let addr = s.license_addr();
    let target = license_target("GetActivationKeyWithExpiryDate", PRODUCT);
    let calls: Vec<_> = (0..3)
        .map(|_| {
            let target = target.clone();
            std::thread::spawn(move || call(addr, "GET", &target, &[], b"").status)
        })
        .collect();
    for c in calls {
        assert_eq!(c.join().unwrap(), 200);
    }
    assert_eq!(s.license_max_in_flight(), 3);
    s.reset();
    assert_eq!(s.license_max_in_flight(), 0);
    let probe = call(
        addr,
        "GET",
        &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
        &[(SELF_CHECK_HEADER, "1")],
        b"",
    );
    assert_eq!(probe.status, 200);
    assert_eq!(s.license_max_in_flight(), 0);
    call(addr, "GET", &target, &[], b"");
    assert_eq!(s.license_max_in_flight(), 1);
}
