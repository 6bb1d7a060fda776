//! Starts the stand-ins on ephemeral ports and talks to them over raw TCP, the way Envoy would.

use std::collections::BTreeSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use keygate_standins::*;
use serde_json::{json, Value};

struct Reply {
    status: u16,
    headers: Vec<(String, String)>,
    body: Vec<u8>,
}

impl Reply {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("not JSON ({e}): {}", self.text()))
    }

    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A minimal keep-alive HTTP/1.1 client.
struct Client {
    writer: TcpStream,
    reader: BufReader<TcpStream>,
}

impl Client {
    fn connect(addr: SocketAddr) -> Client {
        let stream = TcpStream::connect(addr).expect("connect");
        stream
            .set_read_timeout(Some(Duration::from_secs(10)))
            .expect("timeout");
        Client {
            writer: stream.try_clone().expect("clone"),
            reader: BufReader::new(stream),
        }
    }

    fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("write");
    }

    fn send(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) {
        let mut head = format!("{method} {target} HTTP/1.1\r\nHost: standin\r\n");
        for (n, v) in headers {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        if !body.is_empty() || method == "POST" || method == "PATCH" {
            head.push_str(&format!("Content-Length: {}\r\n", body.len()));
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(body);
        self.send_raw(&bytes);
    }

    /// The next response, or None when the server closed the connection instead.
    fn read(&mut self) -> Option<Reply> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) | Err(_) => return None,
            Ok(_) => {}
        }
        let status: u16 = line.split(' ').nth(1)?.parse().ok()?;
        let mut headers = Vec::new();
        loop {
            let mut h = String::new();
            self.reader.read_line(&mut h).ok()?;
            let h = h.trim_end();
            if h.is_empty() {
                break;
            }
            let (n, v) = h.split_once(':')?;
            headers.push((n.trim().to_ascii_lowercase(), v.trim().to_owned()));
        }
        let len: usize = headers
            .iter()
            .find(|(n, _)| n == "content-length")
            .map_or(0, |(_, v)| v.parse().unwrap_or(0));
        let mut body = vec![0; len];
        self.reader.read_exact(&mut body).ok()?;
        Some(Reply {
            status,
            headers,
            body,
        })
    }

    fn call(&mut self, method: &str, target: &str, headers: &[(&str, &str)], body: &[u8]) -> Reply {
        self.send(method, target, headers, body);
        self.read()
            .unwrap_or_else(|| panic!("no reply to {method} {target}"))
    }
}

fn call(
    addr: SocketAddr,
    method: &str,
    target: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Reply {
    Client::connect(addr).call(method, target, headers, body)
}

fn start() -> Standins {
    Standins::start(StandinsConfig::default()).expect("start stand-ins")
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
        &format!("{PRODUCT}&is_orderid={DEMO_ORDER_ID}&is_quantity=3"),
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
    let form = format!("{PRODUCT}&is_orderid={DEMO_ORDER_ID}&is_quantity=3&is_usemultipleactivationskey=false&is_emailtemplate=1.+New+Order");
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
                            &format!("{PRODUCT}&is_orderid=T{t}-{i}&is_quantity=2&is_usemultipleactivationskey=false"),
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

    let r = get(&license_target(
        "RetrieveActivationKeyHttp",
        &format!("is_orderid={DEMO_ORDER_ID}&is_format=xml"),
    ));
    assert_eq!(keys_in(&r.text()), s.issued()[DEMO_ORDER_ID]);
    let r = get(&license_target(
        "RetrieveActivationKeyHttp",
        &format!("is_orderid={NO_ITEMS_ORDER_ID}&is_format=xml"),
    ));
    assert_eq!(
        r.text(),
        r#"<?xml version="1.0" encoding="UTF-8"?><QuickLicenseManager><licenses/></QuickLicenseManager>"#
    );

    // Plain-text mode: the key alone.
    s.set_plain_text_keys(true);
    let r = get(&license_target(
        "GetActivationKeyWithExpiryDate",
        &format!("{PRODUCT}&is_orderid=P"),
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
    assert_eq!(
        get(&license_target(
            "RetrieveActivationKeyHttp",
            "is_format=xml"
        )),
        "Error: missing argument is_orderid"
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
            &format!("{LICENSE_PATH_PREFIX}/PingHttp"),
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
    let body = format!("{PRODUCT}&is_orderid=CHUNKED");
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
    assert_eq!(s.record()[0].form["is_orderid"], "CHUNKED");

    // Same connection, pipelined: two requests in one write, two replies in order.
    let one = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        license_target("RetrieveActivationKeyHttp", "is_orderid=CHUNKED")
    );
    let two = format!(
        "GET {} HTTP/1.1\r\nHost: x\r\n\r\n",
        license_target("RetrieveActivationKeyHttp", "is_orderid=NONE")
    );
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
        &format!("{PRODUCT}&is_orderid=O1"),
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
    let r = call(
        s.license_addr(),
        "GET",
        &license_target("RetrieveActivationKeyHttp", "is_orderid=O1"),
        &[],
        b"",
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
        json!({"page_size":1,"items_page_size":2000,"plain_text_keys":true,"refuse_writeback":[],"lifecycle_enabled":true,"order_status":{}})
    );
    assert_eq!(post("/_standin/config", r#"{"page_size":0}"#).status, 400);
    let r = call(
        s.license_addr(),
        "GET",
        &license_target(
            "GetActivationKeyWithExpiryDate",
            &format!("{PRODUCT}&is_orderid=C"),
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
        json!({"page_size":2000,"items_page_size":2000,"plain_text_keys":false,"refuse_writeback":[],"lifecycle_enabled":true,"order_status":{}})
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
        &format!("{PRODUCT}&is_orderid={DEMO_ITEM_ID}&is_quantity=5&is_expduration=365"),
    );
    let key = keys_in(&issued.text()).remove(0);
    assert_eq!(
        s.keys()[&key],
        KeyState {
            order: DEMO_ITEM_ID.to_owned(),
            revoked: false,
            quantity: 5,
            expiry_days: Some(365)
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
    assert!(v.contains("<status>revoked</status>"), "{v}");
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
    let v = get("ValidateLicenseHttp", &format!("is_avkey={key}")).text();
    assert!(
        v.contains("<status>active</status>")
            && v.contains("<numberOfLicenses>2</numberOfLicenses>")
            && v.contains("<expiryDays>1095</expiryDays>"),
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
    assert!(off.contains("enableRenewSubscriptionHttp"), "{off}");
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
