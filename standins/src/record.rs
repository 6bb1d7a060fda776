//! What the stand-ins remember about each request, and the masking that keeps secrets out of the
//! record and the log (tests print records on failure; CI logs are public).

use std::collections::BTreeMap;
use std::fmt;

use serde::{Deserialize, Serialize};

use crate::faults::FaultKind;
use crate::http::{parse_form, Request};

/// Which listener a request arrived on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Service {
    Salesforce,
    License,
    Upstream,
}

impl Service {
    pub fn as_str(self) -> &'static str {
        match self {
            Service::Salesforce => "salesforce",
            Service::License => "license",
            Service::Upstream => "upstream",
        }
    }
}

/// `record.service == "license"` reads like the JSON the control API returns.
impl PartialEq<&str> for Service {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl PartialEq<&str> for Endpoint {
    fn eq(&self, other: &&str) -> bool {
        self.as_str() == *other
    }
}

impl fmt::Display for Service {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The endpoint a request was routed to. `Other` is anything unrouted (answered 404/500) and
/// requests too malformed to route (answered 400). The `Keygen*` endpoints are the Keygen
/// stand-in's routes under `/v1/accounts/{account}` on the license listener.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Endpoint {
    Token,
    Query,
    QueryMore,
    Composite,
    License,
    Retrieve,
    Revoke,
    Update,
    Renew,
    Validate,
    Ping,
    /// `POST /v1/accounts/{account}/licenses`.
    KeygenCreate,
    /// `GET …/licenses` (metadata filter, paging).
    KeygenList,
    /// `GET …/licenses/{id or key}`.
    KeygenRead,
    /// `PATCH` or `PUT …/licenses/{id or key}`.
    KeygenUpdate,
    /// `POST …/licenses/{id or key}/actions/suspend`.
    KeygenSuspend,
    /// `POST …/licenses/{id or key}/actions/reinstate`.
    KeygenReinstate,
    /// `POST …/licenses/{id or key}/actions/renew`.
    KeygenRenew,
    /// `GET …/policies/{id}`.
    KeygenPolicy,
    /// `GET …/me`.
    KeygenMe,
    Echo,
    Other,
}

impl Endpoint {
    pub fn as_str(self) -> &'static str {
        match self {
            Endpoint::Token => "token",
            Endpoint::Query => "query",
            Endpoint::QueryMore => "query_more",
            Endpoint::Composite => "composite",
            Endpoint::License => "license",
            Endpoint::Retrieve => "retrieve",
            Endpoint::Revoke => "revoke",
            Endpoint::Update => "update",
            Endpoint::Renew => "renew",
            Endpoint::Validate => "validate",
            Endpoint::Ping => "ping",
            Endpoint::KeygenCreate => "keygen_create",
            Endpoint::KeygenList => "keygen_list",
            Endpoint::KeygenRead => "keygen_read",
            Endpoint::KeygenUpdate => "keygen_update",
            Endpoint::KeygenSuspend => "keygen_suspend",
            Endpoint::KeygenReinstate => "keygen_reinstate",
            Endpoint::KeygenRenew => "keygen_renew",
            Endpoint::KeygenPolicy => "keygen_policy",
            Endpoint::KeygenMe => "keygen_me",
            Endpoint::Echo => "echo",
            Endpoint::Other => "other",
        }
    }

    /// True for the Keygen stand-in's endpoints.
    pub fn is_keygen(self) -> bool {
        matches!(
            self,
            Endpoint::KeygenCreate
                | Endpoint::KeygenList
                | Endpoint::KeygenRead
                | Endpoint::KeygenUpdate
                | Endpoint::KeygenSuspend
                | Endpoint::KeygenReinstate
                | Endpoint::KeygenRenew
                | Endpoint::KeygenPolicy
                | Endpoint::KeygenMe
        )
    }

    pub fn service(self) -> Option<Service> {
        match self {
            Endpoint::Token | Endpoint::Query | Endpoint::QueryMore | Endpoint::Composite => {
                Some(Service::Salesforce)
            }
            Endpoint::License
            | Endpoint::Retrieve
            | Endpoint::Revoke
            | Endpoint::Update
            | Endpoint::Renew
            | Endpoint::Validate
            | Endpoint::Ping
            | Endpoint::KeygenCreate
            | Endpoint::KeygenList
            | Endpoint::KeygenRead
            | Endpoint::KeygenUpdate
            | Endpoint::KeygenSuspend
            | Endpoint::KeygenReinstate
            | Endpoint::KeygenRenew
            | Endpoint::KeygenPolicy
            | Endpoint::KeygenMe => Some(Service::License),
            Endpoint::Echo => Some(Service::Upstream),
            Endpoint::Other => None,
        }
    }
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One request as a stand-in saw it. Secret values (authorization headers, Keygen's bearer
/// token included, `is_pwd`, `client_secret`, `password`, tokens) are replaced by `***` in `headers`, `query`, `body` and
/// `form`; the stand-in itself checked them before masking, so `status` tells whether they were
/// right.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RecordedRequest {
    /// Arrival order, from 1 (restarts at 1 after a reset).
    pub seq: u64,
    pub service: Service,
    pub endpoint: Endpoint,
    pub method: String,
    /// Path without the query string, not percent-decoded.
    pub path: String,
    /// Raw query string (masked), without the `?`.
    pub query: String,
    /// Lower-cased names; repeated headers joined with `, `.
    pub headers: BTreeMap<String, String>,
    /// Body as text (lossy UTF-8), masked when it is a form.
    pub body: String,
    /// Parsed body when it is `application/x-www-form-urlencoded` (first value wins), masked.
    pub form: BTreeMap<String, String>,
    /// Reply status; 0 when the connection was closed without a reply (a `reset` fault).
    pub status: u16,
    /// The fault that shaped this reply, if any.
    pub fault: Option<FaultKind>,
    /// Time from the request being fully read to the reply being ready, in microseconds.
    pub service_us: u64,
}

/// Per-endpoint totals for `GET /_standin/stats`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct EndpointStats {
    pub count: u64,
    pub service_us_total: u64,
}

pub const MASK: &str = "***";

/// Form/query parameter names whose values are secrets.
pub fn is_secret_param(name: &str) -> bool {
    let n = name.to_ascii_lowercase();
    ["pwd", "password", "secret", "token", "passwd"]
        .iter()
        .any(|s| n.contains(s))
}

fn is_secret_header(name: &str) -> bool {
    matches!(
        name,
        "authorization"
            | "proxy-authorization"
            | "cookie"
            | "set-cookie"
            // The strict-auth hash under the prose's name (the other two contain "token").
            | "x-qlm-authentication"
    ) || is_secret_param(name)
}

/// Masks a header value, keeping an authorization scheme (`Bearer ***`) so tests can still see
/// which kind of credential was sent.
pub fn mask_header(name: &str, value: &str) -> String {
    if !is_secret_header(name) {
        return value.to_owned();
    }
    match value.split_once(' ') {
        Some((scheme, _)) if name.ends_with("authorization") => format!("{scheme} {MASK}"),
        _ => MASK.to_owned(),
    }
}

/// Masks secret values in `a=b&c=d` text, leaving every other byte as it was.
pub fn mask_form_text(text: &str) -> String {
    text.split('&')
        .map(|pair| match pair.split_once('=') {
            Some((k, _)) if decoded_name_is_secret(k) => format!("{k}={MASK}"),
            _ => pair.to_owned(),
        })
        .collect::<Vec<_>>()
        .join("&")
}

fn decoded_name_is_secret(raw_name: &str) -> bool {
    parse_form(format!("{raw_name}=").as_bytes())
        .first()
        .is_some_and(|(k, _)| is_secret_param(k))
}

/// First value of each name, secrets masked.
pub fn masked_map(pairs: &[(String, String)]) -> BTreeMap<String, String> {
    let mut map = BTreeMap::new();
    for (k, v) in pairs {
        let v = if is_secret_param(k) { MASK } else { v.as_str() };
        map.entry(k.clone()).or_insert_with(|| v.to_owned());
    }
    map
}

/// Builds the record entry for `req` (everything but the reply fields).
pub fn record_of(seq: u64, service: Service, endpoint: Endpoint, req: &Request) -> RecordedRequest {
    let mut headers: BTreeMap<String, String> = BTreeMap::new();
    for (name, value) in &req.headers {
        let value = mask_header(name, value);
        headers
            .entry(name.clone())
            .and_modify(|v| {
                v.push_str(", ");
                v.push_str(&value);
            })
            .or_insert(value);
    }
    let text = String::from_utf8_lossy(&req.body);
    let (body, form) = if req.is_form() {
        (mask_form_text(&text), masked_map(&parse_form(&req.body)))
    } else if service == Service::License && req.method == "GET" {
        // A strict-authentication GET carries every argument in its query: they are its form.
        (
            text.into_owned(),
            masked_map(&parse_form(req.query.as_bytes())),
        )
    } else {
        (text.into_owned(), BTreeMap::new())
    };
    RecordedRequest {
        seq,
        service,
        endpoint,
        method: req.method.clone(),
        path: req.path.clone(),
        query: mask_form_text(&req.query),
        headers,
        body,
        form,
        status: 0,
        fault: None,
        service_us: 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_secret_form_values_only() {
        let raw = "is_user=keygate&is_pwd=standin-qlm-password&is_productid=1&client%5Fsecret=x&password=p%26q&access_token=t";
        assert_eq!(
            mask_form_text(raw),
            "is_user=keygate&is_pwd=***&is_productid=1&client%5Fsecret=***&password=***&access_token=***"
        );
        assert_eq!(mask_form_text(""), "");
        assert_eq!(mask_form_text("flag&is_pwd"), "flag&is_pwd");
    }

    #[test]
    fn masks_authorization_keeping_scheme() {
        assert_eq!(mask_header("authorization", "Bearer abc"), "Bearer ***");
        assert_eq!(mask_header("authorization", "abc"), "***");
        assert_eq!(
            mask_header("authorization", "Bearer standin-keygen-token"),
            "Bearer ***"
        );
        assert_eq!(mask_form_text("token=prod-abc&auth=x"), "token=***&auth=x");
        assert_eq!(mask_header("x-keygate-secret", "s3"), "***");
        assert_eq!(mask_header("content-type", "text/xml"), "text/xml");
    }
}
