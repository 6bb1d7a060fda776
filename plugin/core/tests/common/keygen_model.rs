//! Keygen as the flow tests need it: the licenses an account holds (suspended, expiry, seats,
//! metadata), served as Keygen's JSON:API serves them (201 on create, 422 on a second suspend,
//! 404 for an unknown key, metadata filters; every error Keygen's own documented reply in
//! `testdata/keygen`), with misbehaviour on demand.

use std::collections::VecDeque;

use keygate_core::flow::{Call, Response};
use serde_json::{json, Value};

use super::{merge, patched_full};

/// The full example configuration with Keygen instead of QLM (the QLM fields and products taken
/// out: 001 on the perpetual policy with seats from the Quantity, 002 on the annual one), then
/// patched by `extra`.
pub fn keygen_json(extra: Value) -> String {
    let mut patch = json!({
        "license_server": {"kind": "keygen", "account": ACCOUNT, "token_env": "KEYGATE_KEYGEN_TOKEN",
                           "path_prefix": null, "user_env": null, "password_env": null,
                           "line_reference": null, "strict_auth": null},
        "products": {"001": {"policy": PERPETUAL, "seats": "quantity"},
                     "salesforce_pid_002": null, "002": {"policy": ANNUAL}}
    });
    merge(&mut patch, extra);
    patched_full(patch)
}

pub const ACCOUNT: &str = "acme";
/// The token `world::env` resolves `KEYGATE_KEYGEN_TOKEN` to.
pub const TOKEN: &str = "secret-of-KEYGATE_KEYGEN_TOKEN";
/// Policies: a perpetual one, and one of 365 days.
pub const PERPETUAL: &str = "5d2c1f0e-0000-4000-8000-00000000p001";
pub const ANNUAL: &str = "5d2c1f0e-0000-4000-8000-00000000p365";
const MEDIA: &str = "application/vnd.api+json; charset=utf-8";

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct License {
    pub id: String,
    pub key: String,
    pub policy: String,
    pub suspended: bool,
    /// Days of validity from creation (`None`: never expires), moved by each renewal.
    pub expiry_days: Option<u32>,
    pub max_machines: Option<u64>,
    pub metadata: Value,
}

#[derive(Default)]
pub struct KeygenModel {
    pub licenses: Vec<License>,
    /// Misbehaviour *after* really doing what a create or an action asked (uncertain outcome).
    pub then_fail: VecDeque<Response>,
    /// The next calls answer 429 (nothing done) with these headers.
    pub throttle: VecDeque<Vec<(&'static str, String)>>,
}

pub fn json_reply(status: u16, v: &Value) -> Response {
    Response {
        status: Some(status),
        headers: vec![("content-type", MEDIA.to_owned())],
        body: v.to_string().into_bytes(),
    }
}

/// Keygen's own documented error replies (`testdata/keygen`, sources in its README).
const TOKEN_INVALID: &[u8] = include_bytes!("../../../../testdata/keygen/token_invalid.json");
const RATE_LIMITED: &[u8] = include_bytes!("../../../../testdata/keygen/rate_limited.json");
const ACCOUNT_NOT_FOUND: &[u8] =
    include_bytes!("../../../../testdata/keygen/account_not_found.json");
const NOT_FOUND: &[u8] = include_bytes!("../../../../testdata/keygen/not_found.json");
const SUSPENDED_TWICE: &[u8] =
    include_bytes!("../../../../testdata/keygen/license_suspended_twice.json");
const NOT_SUSPENDED: &[u8] =
    include_bytes!("../../../../testdata/keygen/license_not_suspended.json");
const RENEW_NO_DURATION: &[u8] =
    include_bytes!("../../../../testdata/keygen/renew_no_duration.json");
const POLICY_NOT_FOUND: &[u8] =
    include_bytes!("../../../../testdata/keygen/policy_not_found_on_create.json");

/// `body`, a documented Keygen error, with `status`.
fn error(status: u16, body: &[u8]) -> Response {
    Response {
        status: Some(status),
        headers: vec![("content-type", MEDIA.to_owned())],
        body: body.to_vec(),
    }
}

/// `2026-01-01` plus `days`, as Keygen writes an expiry.
fn expiry(days: Option<u32>) -> Value {
    match days {
        None => Value::Null,
        Some(d) => {
            let date = time::Date::from_calendar_date(2026, time::Month::January, 1).unwrap()
                + time::Duration::days(i64::from(d));
            json!(format!(
                "{:04}-{:02}-{:02}T00:00:00.000Z",
                date.year(),
                u8::from(date.month()),
                date.day()
            ))
        }
    }
}

impl License {
    fn resource(&self) -> Value {
        json!({"id": self.id, "type": "licenses",
               "attributes": {"name": null, "key": self.key, "expiry": expiry(self.expiry_days),
                              "status": if self.suspended { "SUSPENDED" } else { "ACTIVE" },
                              "suspended": self.suspended, "maxMachines": self.max_machines,
                              "metadata": self.metadata},
               "relationships": {"policy": {"data": {"type": "policies", "id": self.policy}}}})
    }
}

impl KeygenModel {
    /// The license whose key or id the path names.
    fn find(&mut self, id: &str) -> Option<&mut License> {
        let id = percent_encoding::percent_decode_str(id)
            .decode_utf8()
            .ok()?
            .into_owned();
        self.licenses.iter_mut().find(|l| l.key == id || l.id == id)
    }

    /// Keys issued under each OrderItem (by the `salesforceOrderItemId` metadata).
    pub fn keys_of(&self, item: &str) -> Vec<String> {
        self.licenses
            .iter()
            .filter(|l| l.metadata["salesforceOrderItemId"] == item)
            .map(|l| l.key.clone())
            .collect()
    }

    pub fn by_key(&self, key: &str) -> &License {
        self.licenses.iter().find(|l| l.key == key).unwrap()
    }

    pub fn serve(&mut self, call: &Call) -> Response {
        let bearer = call
            .headers
            .iter()
            .find(|(k, _)| *k == "authorization")
            .map(|(_, v)| v.as_str());
        if bearer != Some(&format!("Bearer {TOKEN}")) {
            return error(401, TOKEN_INVALID);
        }
        assert!(
            call.headers
                .iter()
                .any(|(k, v)| *k == "accept" && v == "application/vnd.api+json"),
            "asks for JSON:API"
        );
        if let Some(headers) = self.throttle.pop_front() {
            let mut r = error(429, RATE_LIMITED);
            r.headers.extend(headers);
            return r;
        }
        let base = format!("/v1/accounts/{ACCOUNT}");
        let Some(rest) = call.path.strip_prefix(&base) else {
            return error(404, ACCOUNT_NOT_FOUND);
        };
        let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
        let segments: Vec<&str> = path.trim_start_matches('/').split('/').collect();
        let resp = match (call.method, segments.as_slice()) {
            ("POST", ["licenses"]) => self.create(call),
            ("GET", ["licenses"]) => self.list(query),
            ("GET", ["licenses", id]) => match self.find(id) {
                Some(l) => json_reply(200, &json!({"data": l.resource()})),
                None => not_found(),
            },
            ("PATCH", ["licenses", id]) => {
                let body: Value = serde_json::from_slice(&call.body).unwrap();
                match self.find(id) {
                    Some(l) => {
                        l.max_machines = body["data"]["attributes"]["maxMachines"].as_u64();
                        let r = l.resource();
                        self.done(json_reply(200, &json!({"data": r})))
                    }
                    None => not_found(),
                }
            }
            ("POST", ["licenses", id, "actions", action]) => {
                let action = (*action).to_owned();
                match self.find(id) {
                    None => not_found(),
                    Some(l) => match action.as_str() {
                        "suspend" if l.suspended => error(422, SUSPENDED_TWICE),
                        "reinstate" if !l.suspended => error(422, NOT_SUSPENDED),
                        "renew" if l.expiry_days.is_none() => error(422, RENEW_NO_DURATION),
                        "suspend" | "reinstate" | "renew" => {
                            match action.as_str() {
                                "suspend" => l.suspended = true,
                                "reinstate" => l.suspended = false,
                                _ => l.expiry_days = l.expiry_days.map(|d| d + 365),
                            }
                            let r = l.resource();
                            self.done(json_reply(200, &json!({"data": r})))
                        }
                        _ => not_found(),
                    },
                }
            }
            _ => not_found(),
        };
        resp
    }

    /// What really happened is kept; the answer may be lost (`then_fail`).
    fn done(&mut self, r: Response) -> Response {
        self.then_fail.pop_front().unwrap_or(r)
    }

    fn create(&mut self, call: &Call) -> Response {
        assert!(
            call.headers
                .iter()
                .any(|(k, v)| *k == "content-type" && v == "application/vnd.api+json"),
            "sends JSON:API"
        );
        let body: Value = serde_json::from_slice(&call.body).unwrap();
        let data = &body["data"];
        assert_eq!(data["type"], "licenses");
        let policy = data["relationships"]["policy"]["data"]["id"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        let expiry_days = match policy.as_str() {
            PERPETUAL => None,
            ANNUAL => Some(365),
            _ => return error(422, POLICY_NOT_FOUND),
        };
        let n = self.licenses.len() + 1;
        let license = License {
            id: format!("lic-{n:04}"),
            key: format!("KG{n:02}-{}", &policy[policy.len() - 4..]),
            policy,
            suspended: false,
            expiry_days,
            max_machines: data["attributes"]["maxMachines"].as_u64().or(Some(1)),
            metadata: data["attributes"]["metadata"].clone(),
        };
        let r = license.resource();
        self.licenses.push(license);
        self.done(json_reply(201, &json!({"data": r})))
    }

    fn list(&self, query: &str) -> Response {
        let args: Vec<(String, String)> = form_urlencoded::parse(query.as_bytes())
            .into_owned()
            .collect();
        let mut found: Vec<Value> = Vec::new();
        let filters: Vec<(&str, &str)> = args
            .iter()
            .filter_map(|(k, v)| {
                Some((k.strip_prefix("metadata[")?.strip_suffix(']')?, v.as_str()))
            })
            .collect();
        assert!(!filters.is_empty(), "a lookup filters by metadata: {query}");
        for l in &self.licenses {
            if filters.iter().all(|(k, v)| l.metadata[*k] == *v) {
                found.push(l.resource());
            }
        }
        json_reply(
            200,
            &json!({"data": found, "links": {"meta": {"count": found.len()}}}),
        )
    }
}

fn not_found() -> Response {
    error(404, NOT_FOUND)
}
