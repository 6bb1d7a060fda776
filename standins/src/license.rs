//! The QLM license-server stand-in, as Soraco's documentation (`soraco/qlm`, `qlmdocs/`) describes a
//! stock server:
//! - `GetActivationKeyWithExpiryDate` issues keys and records them under `is_userdata1` (the
//!   documented reference; `is_orderid` is not one of its documented arguments, so it is dropped
//!   unless `issue_keeps_orderid` is switched on);
//! - `RetrieveActivationKeyHttp` finds keys by `is_orderid` and/or `is_userdata1` and requires
//!   strict authentication, as `security/strictAuthenticationHttpMethods` has it by default;
//! - `RevokeLicenseHttp`, `UpdateLicenseHttp`, `RenewSubscriptionHttp` change a key's terms, which
//!   `ValidateLicenseHttp` reads back in its documented output shape; `PingHttp` answers as
//!   documented.
//!
//! Every method passes QLM's gate first: the server property that enables it, the allowed IP
//! addresses, `is_user`/`is_pwd`, and strict authentication when the method is in the list. What
//! the documentation does not show (the refusal texts, the lookup's output, the lifecycle
//! methods' replies) is the stand-in's choice, marked UNCONFIRMED in `testdata/README.md`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use sha2::{Digest, Sha256};

use crate::clock::{self, DAY};
use crate::http::{parse_form, Request, Response};
use crate::ids::base64;
use crate::record::Endpoint;
use crate::state::{Shared, State};
use crate::strict::{self, IpRule};

pub const PATH_PREFIX: &str = "/qlmLicenseServer/qlmservice.asmx";
pub const QLM_USER: &str = "keygate";
pub const QLM_PASSWORD: &str = "standin-qlm-password";
/// The API key of the stand-in's 3rd-party extension: the HMAC key of strict authentication.
pub const QLM_API_KEY: &str = "standin-qlm-api-key";
/// What `PingHttp` reports as `serverVersion` (the stand-in's own, not a QLM release).
pub const SERVER_VERSION: &str = "18.0.25001.1";

const XML_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
const XML: &str = "text/xml; charset=utf-8";
/// More keys than this in one call is a plugin bug, not an order.
const MAX_QUANTITY: u64 = 10_000;
/// The maintenance plan ends this long before the key's first expiry (or, for a key that never
/// expires, a year after issue: QLM's default plan is 365 days).
const MAINTENANCE_LEAD_DAYS: i64 = 31;

pub const RETRIEVE: &str = "RetrieveActivationKeyHttp";
pub const PING: &str = "PingHttp";

/// The methods a stock server requires strict authentication for ("By default, the
/// RetrieveActivationKeyHttp method requires strict authentication").
pub fn default_strict_methods() -> Vec<String> {
    vec![RETRIEVE.to_owned()]
}

pub fn route(path: &str) -> Endpoint {
    match path.strip_prefix(PATH_PREFIX) {
        Some("/GetActivationKeyWithExpiryDate") => Endpoint::License,
        Some("/RetrieveActivationKeyHttp") => Endpoint::Retrieve,
        Some("/RevokeLicenseHttp") => Endpoint::Revoke,
        Some("/UpdateLicenseHttp") => Endpoint::Update,
        Some("/RenewSubscriptionHttp") => Endpoint::Renew,
        Some("/ValidateLicenseHttp") => Endpoint::Validate,
        Some("/PingHttp") => Endpoint::Ping,
        _ => Endpoint::Other,
    }
}

/// The server property that enables a method ("security" section of
/// `qlmdocs/qlm-license-server/server-properties.md` and each method's page); `enable{Method}`
/// for a method the documentation names none for (UNCONFIRMED).
pub fn server_property(method: &str) -> String {
    match method {
        "GetActivationKeyWithExpiryDate" | "GetActivationKey" => "enableGetActivationKey",
        RETRIEVE => "enableRetrieveActivationKeyHttp",
        "RevokeLicenseHttp" => "enableRevokeLicense",
        "UpdateLicenseHttp" | "UpgradeLicense" => "enableUpgradeLicense",
        "RenewSubscriptionHttp" => "enableRenewSubscriptionHttp",
        "ReleaseLicenseHttp" => "enableReleaseKeyHttp",
        "GetLicensesHttp" => "enableGetLicensesHttp",
        "GetLatestVersionHttp" => "enableGetLatestVersionHttp",
        other => return format!("enable{other}"),
    }
    .to_owned()
}

/// The methods `lifecycle_enabled: false` disables.
pub const LIFECYCLE_METHODS: [&str; 3] = [
    "RevokeLicenseHttp",
    "UpdateLicenseHttp",
    "RenewSubscriptionHttp",
];

/// The license server's switches (its server properties), as `/_standin/config` sets them.
#[derive(Debug, Clone)]
pub struct Switches {
    /// `security/strictAuthenticationHttpMethods`.
    pub strict_auth_methods: Vec<String>,
    /// The URL base the strict-auth hash is computed over; `None`: `https://{Host}{PATH_PREFIX}`.
    pub strict_url_base: Option<String>,
    /// `security/strictAuthenticationTimestampTolerance`, seconds.
    pub strict_timestamp_tolerance_s: u64,
    /// Methods whose `enable…` server property is off.
    pub disabled_methods: BTreeSet<String>,
    /// `httpAdminMethodsAllowedIPAddresses` as given, and parsed; `None`: no restriction.
    pub allowed_ips: Option<(Vec<String>, Vec<IpRule>)>,
    /// Record `is_orderid` on issue (a server that does, unlike the documented one).
    pub issue_keeps_orderid: bool,
}

impl Default for Switches {
    fn default() -> Switches {
        Switches {
            strict_auth_methods: default_strict_methods(),
            strict_url_base: None,
            strict_timestamp_tolerance_s: strict::DEFAULT_TOLERANCE_S,
            disabled_methods: BTreeSet::new(),
            allowed_ips: None,
            issue_keeps_orderid: false,
        }
    }
}

impl Switches {
    /// True when none of the lifecycle methods is disabled.
    pub fn lifecycle_enabled(&self) -> bool {
        LIFECYCLE_METHODS
            .iter()
            .all(|m| !self.disabled_methods.contains(*m))
    }

    pub fn set_lifecycle_enabled(&mut self, on: bool) {
        for m in LIFECYCLE_METHODS {
            if on {
                self.disabled_methods.remove(m);
            } else {
                self.disabled_methods.insert(m.to_owned());
            }
        }
    }

    pub fn set_allowed_ips(&mut self, ips: Option<Vec<String>>) -> Result<(), String> {
        self.allowed_ips = match ips {
            None => None,
            Some(list) => {
                let rules = list
                    .iter()
                    .map(|s| IpRule::parse(s))
                    .collect::<Result<_, _>>()?;
                Some((list, rules))
            }
        };
        Ok(())
    }

    fn is_strict(&self, method: &str) -> bool {
        self.strict_auth_methods
            .iter()
            .any(|m| m.eq_ignore_ascii_case(method))
    }
}

/// What an unrouted path gets: ASMX's own complaint inside the service, IIS's 404 outside it.
pub fn unrouted(path: &str) -> Response {
    match path.strip_prefix(PATH_PREFIX) {
        Some(rest) if rest.starts_with('/') => Response::text(
            500,
            format!(
                "Request format is unrecognized for URL unexpectedly ending in '{rest}'.\r\n"
            ),
        ),
        _ => Response::new(
            404,
            "text/html",
            "<!DOCTYPE html><html><head><title>404 - File or directory not found.</title></head><body><h2>404 - File or directory not found.</h2></body></html>",
        ),
    }
}

/// A plausible ASP.NET error page for an injected status.
pub fn fault_reply(status: u16) -> Response {
    Response::new(
        status,
        "text/html; charset=utf-8",
        format!(
            "<!DOCTYPE html><html><head><title>Runtime Error</title></head><body><h1>Server Error in '/qlmLicenseServer' Application.</h1><h2><i>HTTP {status}</i></h2></body></html>"
        ),
    )
}

/// A refusal by the gate or of a method's arguments: HTTP 200, a text body that starts with
/// `Error:` (UNCONFIRMED: QLM's pages show no HTTP method's refusal).
fn error(msg: &str) -> Response {
    Response::text(200, format!("Error: {msg}"))
}

/// Query arguments then form arguments; names compared case-insensitively and the first value
/// wins, as ASP.NET's `Request[name]` looks the query string up before the form.
fn args(req: &Request) -> Vec<(String, String)> {
    let mut all = req.query_pairs();
    if req.method == "POST" && (req.is_form() || req.header("content-type").is_none()) {
        all.extend(parse_form(&req.body));
    }
    all.into_iter()
        .map(|(k, v)| (k.to_ascii_lowercase(), v))
        .collect()
}

fn arg<'a>(args: &'a [(String, String)], name: &str) -> Option<&'a str> {
    args.iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// A non-empty argument.
fn given<'a>(args: &'a [(String, String)], name: &str) -> Option<&'a str> {
    arg(args, name).filter(|v| !v.is_empty())
}

/// QLM's gate, in this order: the verb, the server property that enables `method`, the allowed
/// IP addresses, `is_user`/`is_pwd`, strict authentication. `PingHttp` takes no arguments and is
/// not an admin method: it skips the IP list and the credentials.
fn gate(shared: &Shared, req: &Request, method: &str) -> Result<Vec<(String, String)>, Response> {
    if req.method != "GET" && req.method != "POST" {
        return Err(Response::text(
            405,
            "The HTTP verb used is not allowed.\r\n",
        ));
    }
    let switches = shared.lock().license.clone();
    if switches.disabled_methods.contains(method) {
        return Err(error(&format!(
            "This feature is disabled. Set the server property {} to true.",
            server_property(method)
        )));
    }
    let args = args(req);
    if method != PING {
        if let Some((_, rules)) = &switches.allowed_ips {
            let peer = req.peer.map(|p| p.ip());
            if !peer.is_some_and(|ip| rules.iter().any(|r| r.allows(ip))) {
                let shown =
                    peer.map_or_else(|| "(unknown)".to_owned(), |ip: IpAddr| ip.to_string());
                return Err(error(&format!(
                    "The IP address {shown} is not allowed to call {method}. Allowed addresses are set by the server property httpAdminMethodsAllowedIPAddresses."
                )));
            }
        }
        if arg(&args, "is_user") != Some(QLM_USER) || arg(&args, "is_pwd") != Some(QLM_PASSWORD) {
            return Err(error("invalid user or password"));
        }
    }
    if switches.is_strict(method) {
        let base = switches.strict_url_base.clone().unwrap_or_else(|| {
            format!(
                "https://{}{PATH_PREFIX}",
                req.header("host").unwrap_or("localhost")
            )
        });
        let url = strict_url(&base, method, &req.query);
        if let Err(why) = strict::check(
            req,
            &url,
            QLM_API_KEY,
            switches.strict_timestamp_tolerance_s,
            clock::now(),
        ) {
            return Err(error(&format!("Strict authentication failed: {why}.")));
        }
    }
    Ok(args)
}

/// `{base}/{method}?{query}` (no `?` when the query is empty): the URL strict authentication
/// hashes, the query exactly as it arrived.
pub fn strict_url(base: &str, method: &str, query: &str) -> String {
    let base = base.trim_end_matches('/');
    if query.is_empty() {
        format!("{base}/{method}")
    } else {
        format!("{base}/{method}?{query}")
    }
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn keys_xml(keys: &[String]) -> Response {
    let body = if keys.is_empty() {
        format!("{XML_HEAD}<QuickLicenseManager><licenses/></QuickLicenseManager>")
    } else {
        let licenses: String = keys
            .iter()
            .map(|k| {
                format!(
                    "<license><activationKey>{}</activationKey></license>",
                    xml_escape(k)
                )
            })
            .collect();
        format!(
            "{XML_HEAD}<QuickLicenseManager><licenses>{licenses}</licenses></QuickLicenseManager>"
        )
    };
    Response::new(200, XML, body)
}

/// `RetrieveActivationKeyHttp?is_format=json` (UNCONFIRMED: the page shows no output).
fn keys_json(keys: &[String]) -> Response {
    let licenses: Vec<serde_json::Value> = keys
        .iter()
        .map(|k| serde_json::json!({ "activationKey": k }))
        .collect();
    Response::new(
        200,
        "application/json; charset=utf-8",
        serde_json::json!({ "licenses": licenses }).to_string(),
    )
}

/// What the license server holds for one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyState {
    /// The reference it was issued under: `is_userdata1` (empty when the call sent none).
    pub order: String,
    /// The `is_orderid` recorded with it: only when `issue_keeps_orderid` is on.
    pub orderid: Option<String>,
    pub revoked: bool,
    /// Activations allowed (`is_quantity`).
    pub quantity: u64,
    /// Days of validity from issue (`is_expduration`), extended by renewals; `None`: no expiry.
    pub expiry_days: Option<u32>,
    /// The expiry date, `yyyy-MM-dd HH:mm:ss` UTC: the end of the issue day plus
    /// `is_expduration` days, or `is_expdate`; moved by renewals. `None`: never expires.
    pub expiry_date: Option<String>,
    /// When it was issued, `yyyy-MM-dd HH:mm:ss` UTC.
    pub issued_at: String,
}

/// What the stand-in keeps about a key besides [`KeyState`].
#[derive(Debug, Clone)]
pub struct KeyMeta {
    /// Issue order across every call, for the lookup.
    pub seq: u64,
    pub issued_at: i64,
    pub product_id: u32,
    pub major: u32,
    pub minor: u32,
    pub license_model: String,
    pub maintenance: i64,
}

/// `GetActivationKeyWithExpiryDate`: validates like QLM, issues and records the keys.
pub fn get_activation_key(shared: &Shared, req: &Request) -> Response {
    let args = match gate(shared, req, "GetActivationKeyWithExpiryDate") {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    let mut product = [0u32; 3];
    for (i, name) in [
        "is_productid",
        "is_majorversion",
        "is_minorversion",
        "is_vendor",
    ]
    .into_iter()
    .enumerate()
    {
        match arg(&args, name) {
            None | Some("") => return error(&format!("missing argument {name}")),
            Some(v) if name != "is_vendor" => match v.parse::<u32>() {
                Ok(n) => {
                    if let Some(slot) = product.get_mut(i) {
                        *slot = n;
                    }
                }
                Err(_) => return error(&format!("invalid argument {name}")),
            },
            Some(_) => {}
        }
    }
    let quantity = match arg(&args, "is_quantity") {
        None | Some("") => 1,
        Some(q) => match q.parse::<u64>() {
            Ok(n) if (1..=MAX_QUANTITY).contains(&n) => n,
            _ => return error("invalid argument is_quantity"),
        },
    };
    let one_key = match arg(&args, "is_usemultipleactivationskey") {
        None | Some("") => true,
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        Some(_) => return error("invalid argument is_usemultipleactivationskey"),
    };
    let expiry_days = match given(&args, "is_expduration") {
        None => None,
        Some(d) => match d.parse::<u32>() {
            Ok(d) => Some(d),
            Err(_) => return error("invalid argument is_expduration"),
        },
    };
    let expdate = match given(&args, "is_expdate") {
        None => None,
        Some(d) => match clock::parse_expiry(d) {
            Some(t) => Some(t),
            None => return error("invalid argument is_expdate"),
        },
    };
    let count = if one_key { 1 } else { quantity };
    let reference = arg(&args, "is_userdata1").unwrap_or_default().to_owned();
    let now = clock::now();
    let expiry =
        expdate.or_else(|| expiry_days.map(|d| clock::end_of_day(now) + i64::from(d) * DAY));
    let license_model = given(&args, "is_licensemodel")
        .map(str::to_owned)
        .unwrap_or_else(|| {
            if expiry.is_some() {
                "subscription"
            } else {
                "permanent"
            }
            .to_owned()
        });
    let maintenance = expiry.map_or(clock::end_of_day(now) + 365 * DAY, |e| {
        e - MAINTENANCE_LEAD_DAYS * DAY
    });
    let mut state = shared.lock();
    let orderid = state
        .license
        .issue_keeps_orderid
        .then(|| given(&args, "is_orderid").map(str::to_owned))
        .flatten();
    let keys = state.issue_keys(&reference, count);
    for k in &keys {
        state.key_seq += 1;
        let meta = KeyMeta {
            seq: state.key_seq,
            issued_at: now,
            product_id: product[0],
            major: product[1],
            minor: product[2],
            license_model: license_model.clone(),
            maintenance,
        };
        state.key_meta.insert(k.clone(), meta);
        state.keys.insert(
            k.clone(),
            KeyState {
                order: reference.clone(),
                orderid: orderid.clone(),
                revoked: false,
                quantity,
                expiry_days,
                expiry_date: expiry.map(clock::datetime),
                issued_at: clock::datetime(now),
            },
        );
    }
    let plain = state.plain_text_keys;
    drop(state);
    if plain {
        Response::new(200, "text/plain; charset=utf-8", keys.join("\n"))
    } else {
        keys_xml(&keys)
    }
}

/// `RetrieveActivationKeyHttp`: the keys issued under `is_orderid` and/or `is_userdata1` ("if both
/// are specified, both conditions must be met"), in issue order.
pub fn retrieve(shared: &Shared, req: &Request) -> Response {
    let args = match gate(shared, req, RETRIEVE) {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    let orderid = given(&args, "is_orderid");
    let userdata1 = given(&args, "is_userdata1");
    if orderid.is_none() && userdata1.is_none() {
        return error("missing argument is_orderid or is_userdata1");
    }
    let json = match arg(&args, "is_format") {
        None | Some("") => false,
        Some(f) if f.eq_ignore_ascii_case("xml") => false,
        Some(f) if f.eq_ignore_ascii_case("json") => true,
        Some(_) => return error("invalid argument is_format"),
    };
    let keys = lookup(&shared.lock(), orderid, userdata1);
    if json {
        keys_json(&keys)
    } else {
        keys_xml(&keys)
    }
}

fn lookup(state: &State, orderid: Option<&str>, userdata1: Option<&str>) -> Vec<String> {
    let mut found: Vec<(u64, String)> = state
        .keys
        .iter()
        .filter(|(_, k)| userdata1.is_none_or(|u| k.order == u))
        .filter(|(_, k)| orderid.is_none_or(|o| k.orderid.as_deref() == Some(o)))
        .map(|(key, _)| {
            let seq = state.key_meta.get(key).map_or(0, |m| m.seq);
            (seq, key.clone())
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, k)| k).collect()
}

fn result(text: &str) -> Response {
    Response::new(
        200,
        XML,
        format!(
            "{XML_HEAD}<QuickLicenseManager><result>{}</result></QuickLicenseManager>",
            xml_escape(text)
        ),
    )
}

/// QLM's documented error fragment (`<?xml version='1.0' …?>`, newline-separated, `<error>`), as
/// the .NET API pages show it (`qlmdocs/api-reference/qlmlicense/…`, "Example error response").
pub fn xml_error(text: &str) -> Response {
    Response::new(
        200,
        XML,
        format!(
            "<?xml version='1.0' encoding='UTF-8'?>\n<QuickLicenseManager>\n<error>{}</error>\n</QuickLicenseManager>",
            xml_escape(text)
        ),
    )
}

/// A lifecycle call that passed the gate: its arguments, the locked state, the key.
type Checked<'a> = (
    Vec<(String, String)>,
    std::sync::MutexGuard<'a, State>,
    String,
);

/// Common part of the lifecycle methods: the gate, then the key.
fn lifecycle<'a>(shared: &'a Shared, req: &Request, method: &str) -> Result<Checked<'a>, Response> {
    let args = gate(shared, req, method)?;
    let state = shared.lock();
    let Some(key) = given(&args, "is_avkey").map(str::to_owned) else {
        return Err(xml_error("missing argument is_avkey"));
    };
    if !state.keys.contains_key(&key) {
        return Err(xml_error("The license key does not exist."));
    }
    Ok((args, state, key))
}

/// Sets a key's expiry to `at`; its `expiry_days` become the days from the issue day to then.
fn set_expiry(state: &mut State, key: &str, at: i64) {
    let issued = state.key_meta.get(key).map_or(at, |m| m.issued_at);
    if let Some(k) = state.keys.get_mut(key) {
        let days = at.div_euclid(DAY) - issued.div_euclid(DAY);
        k.expiry_days = Some(u32::try_from(days.max(0)).unwrap_or(u32::MAX));
        k.expiry_date = Some(clock::datetime(at));
    }
}

/// Adds `days` to a key's expiry (from the end of today when it had none) and to `expiry_days`.
fn extend_expiry(state: &mut State, key: &str, days: u32) {
    if let Some(k) = state.keys.get_mut(key) {
        let base = k
            .expiry_date
            .as_deref()
            .and_then(clock::parse_datetime)
            .unwrap_or_else(|| clock::end_of_day(clock::now()));
        k.expiry_date = Some(clock::datetime(base + i64::from(days) * DAY));
        k.expiry_days = Some(k.expiry_days.unwrap_or(0).saturating_add(days));
    }
}

/// `RevokeLicenseHttp?is_avkey=…&is_revoke=true|false`.
pub fn revoke(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "RevokeLicenseHttp") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let revoke = match arg(&args, "is_revoke") {
        Some(v) if v.eq_ignore_ascii_case("true") => true,
        Some(v) if v.eq_ignore_ascii_case("false") => false,
        _ => return xml_error("invalid argument is_revoke"),
    };
    if let Some(k) = state.keys.get_mut(&key) {
        k.revoked = revoke;
    }
    result(if revoke {
        "License revoked."
    } else {
        "License restored."
    })
}

/// `UpdateLicenseHttp?is_avkey=…[&is_quantity=N][&is_revoke=…][&is_expdate=…|&is_expduration=D]`.
/// `is_expdate` sets the expiry; `is_expduration` sets the duration from the issue day
/// (UNCONFIRMED: the page does not say whether it adds or sets).
pub fn update(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "UpdateLicenseHttp") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let quantity = match given(&args, "is_quantity") {
        None => None,
        Some(q) => match q.parse::<u64>() {
            Ok(n) if n <= MAX_QUANTITY => Some(n),
            _ => return xml_error("invalid argument is_quantity"),
        },
    };
    let expiry = match (given(&args, "is_expdate"), given(&args, "is_expduration")) {
        (Some(d), _) => match clock::parse_expiry(d) {
            Some(t) => Some(t),
            None => return xml_error("invalid argument is_expdate"),
        },
        (None, Some(d)) => match d.parse::<u32>() {
            Ok(d) => {
                let issued = state.key_meta.get(&key).map_or(0, |m| m.issued_at);
                Some(clock::end_of_day(issued) + i64::from(d) * DAY)
            }
            Err(_) => return xml_error("invalid argument is_expduration"),
        },
        (None, None) => None,
    };
    let revoke = arg(&args, "is_revoke").map(|v| v.eq_ignore_ascii_case("true"));
    if let Some(at) = expiry {
        set_expiry(&mut state, &key, at);
    }
    if let Some(k) = state.keys.get_mut(&key) {
        if let Some(q) = quantity {
            k.quantity = q;
        }
        if let Some(r) = revoke {
            k.revoked = r;
        }
    }
    result("License updated.")
}

/// `RenewSubscriptionHttp?is_avkey=…` with either `is_expdate` (the new expiry: sending it twice
/// changes nothing) or `is_expduration` (days added on every call). Both: `is_expdate` wins.
pub fn renew(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "RenewSubscriptionHttp") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    match (given(&args, "is_expdate"), given(&args, "is_expduration")) {
        (Some(d), _) => match clock::parse_expiry(d) {
            Some(at) => set_expiry(&mut state, &key, at),
            None => return xml_error("invalid argument is_expdate"),
        },
        (None, Some(d)) => match d.parse::<u32>() {
            Ok(days) => extend_expiry(&mut state, &key, days),
            Err(_) => return xml_error("invalid argument is_expduration"),
        },
        (None, None) => return xml_error("You must specify either is_expdate or is_expduration."),
    }
    result("Subscription renewed.")
}

/// `PingHttp`: the documented reply, with the stand-in's clock and version.
pub fn ping(shared: &Shared, req: &Request) -> Response {
    if let Err(resp) = gate(shared, req, PING) {
        return resp;
    }
    Response::new(200, XML, ping_body(clock::now()))
}

pub fn ping_body(now: i64) -> String {
    let at = clock::iso(now);
    format!(
        "{XML_HEAD}\n<QuickLicenseManager>\n<result>Successfully connected to License Server at {at} UTC. QLM Version: {SERVER_VERSION}</result>\n<serverDate>{at}</serverDate>\n<serverVersion>{SERVER_VERSION}</serverVersion>\n<serverDate date = \"{at}\" />  <!-- this is obsolete but is returned for backward compatibility -->\n</QuickLicenseManager>"
    )
}

/// `ValidateLicenseHttp?is_avkey=…`: the key's state in the documented output shape.
pub fn validate(shared: &Shared, req: &Request) -> Response {
    let args = match gate(shared, req, "ValidateLicenseHttp") {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    let key = arg(&args, "is_avkey").unwrap_or_default();
    let state = shared.lock();
    let (Some(k), Some(meta)) = (state.keys.get(key), state.key_meta.get(key)) else {
        return xml_error("The license key does not exist.");
    };
    Response::new(200, XML, validate_body(key, k, meta, clock::now()))
}

/// ELicenseStatus flags (`qlmdocs/api-reference/.net-api/qlmlicense/properties/elicensestatus.md`,
/// values in `qlmdocs/.gitbook/assets/vbaEnums.txt`). That `<status>` carries them is UNCONFIRMED
/// (the documented example's `4`, EKeyDemo, fits a subscription).
const EKEY_PERMANENT: u32 = 2;
const EKEY_DEMO: u32 = 4;
const EKEY_EXPIRED: u32 = 64;
const EKEY_REVOKED: u32 = 2048;

/// The ValidateLicenseHttp reply (`qlmdocs/api-reference/http-methods/validatelicensehttp.md`,
/// "Example Output"): no declaration on top, one element a line, `productProperties` holding a
/// whole XML document (its own declaration included), an enveloped XML-DSig `Signature` last.
/// The key was never activated (keygate validates with `is_activate=false`): computer fields and
/// `activationDate` are empty. A key that never expires has an empty `<expiryDate/>`
/// (UNCONFIRMED). The digest and signature values are placeholders (no RSA key stands behind
/// them).
pub fn validate_body(key: &str, k: &KeyState, meta: &KeyMeta, now: i64) -> String {
    let expiry = k.expiry_date.as_deref().and_then(clock::parse_datetime);
    let product_name = format!("Standin Product {}", meta.product_id);
    let expired = expiry.is_some_and(|e| e < now);
    let mut status = if expiry.is_some() {
        EKEY_DEMO
    } else {
        EKEY_PERMANENT
    };
    if expired {
        status |= EKEY_EXPIRED;
    }
    if k.revoked {
        status |= EKEY_REVOKED;
    }
    let copies = if k.quantity == 1 { "copy" } else { "copies" };
    let maintenance = clock::us_date(meta.maintenance);
    let result = if k.revoked {
        "Your license has been revoked.".to_owned()
    } else if let Some(e) = expiry.filter(|_| expired) {
        format!("Your license expired on {}.", clock::us_date(e))
    } else {
        let ends = expiry.map_or_else(
            || "Your license never expires.".to_owned(),
            |e| format!("Your license expires on {}.", clock::us_date(e)),
        );
        format!(
            "Your license is valid and entitles you to install {} {copies} of {product_name}. {ends} Your maintenance plan expires on {maintenance}.",
            k.quantity
        )
    };
    let expiry_el = expiry.map_or_else(
        || "<expiryDate/>".to_owned(),
        |e| format!("<expiryDate>{}</expiryDate>", clock::minutes(e)),
    );
    // Product properties with expiry dates of their own, none of them the key's.
    let property_expiry = clock::end_of_day(meta.issued_at) + 90 * DAY;
    let properties = format!(
        r#"<?xml version="1.0" encoding="utf-8"?><ProductProperties><Property ID="{{6d1f3a52-0c4e-4b7a-9e21-5a0c7f3e9b10}}" name="seats" category="standin" defaultValue="1" value="{q}" type="int" help="" lastDefinitionUpdate="{created}" lastValueUpdate="{created}" expiryDate="0001-01-01 00:00:00" operation="None"></Property><Property ID="{{b2c4e6a8-1f3d-4c5b-8a7e-9d0f2e4c6a81}}" name="support" category="standin" defaultValue="" value="standard" type="string" help="" lastDefinitionUpdate="{created}" lastValueUpdate="{created}" expiryDate="{prop_expiry}" operation="None"></Property></ProductProperties>"#,
        q = k.quantity,
        created = clock::datetime(meta.issued_at),
        prop_expiry = clock::datetime(property_expiry),
    );
    let content = [
        format!(
            "<creationDateUtc>{}</creationDateUtc>",
            clock::datetime(meta.issued_at)
        ),
        "<pckey/>".to_owned(),
        "<computerName/>".to_owned(),
        "<computerID/>".to_owned(),
        "<userCompany/>".to_owned(),
        "<userFullName/>".to_owned(),
        "<userEmail/>".to_owned(),
        format!("<productID>{}</productID>", meta.product_id),
        format!("<productName>{}</productName>", xml_escape(&product_name)),
        format!("<majorVersion>{}</majorVersion>", meta.major),
        format!("<minorVersion>{}</minorVersion>", meta.minor),
        format!(
            "<licenseModel>{}</licenseModel>",
            xml_escape(&meta.license_model)
        ),
        format!(
            "<maintenanceRenewalDate>{}</maintenanceRenewalDate>",
            clock::datetime(meta.maintenance)
        ),
        format!("<result>{}</result>", xml_escape(&result)),
        format!("<status>{status}</status>"),
        "<features>0:0;</features>".to_owned(),
        "<duration>-1</duration>".to_owned(),
        "<floatingSeats>0</floatingSeats>".to_owned(),
        format!(
            "<numActivationsAllowed>{}</numActivationsAllowed>",
            k.quantity
        ),
        format!("<availableLicenses>{}</availableLicenses>", k.quantity),
        expiry_el,
        format!("<activationKey>{}</activationKey>", xml_escape(key)),
        "<userData/>".to_owned(),
        format!("<productProperties>{properties}</productProperties>"),
        "<activationDate/>".to_owned(),
        format!("<serverDate>{}</serverDate>", clock::minutes(now)),
        "<computerType>None</computerType>".to_owned(),
    ]
    .join("\n");
    let digest = Sha256::digest(content.as_bytes());
    let signature: Vec<u8> = (0u8..4)
        .flat_map(|i| {
            Sha256::new()
                .chain_update([i])
                .chain_update(digest)
                .finalize()
        })
        .collect();
    format!(
        "<QuickLicenseManager>\n{content}\n<Signature xmlns=\"http://www.w3.org/2000/09/xmldsig#\">\n<SignedInfo>\n<CanonicalizationMethod Algorithm=\"http://www.w3.org/TR/2001/REC-xml-c14n-20010315\"/>\n<SignatureMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#rsa-sha1\"/>\n<Reference URI=\"\">\n<Transforms>\n<Transform Algorithm=\"http://www.w3.org/2000/09/xmldsig#enveloped-signature\"/>\n</Transforms>\n<DigestMethod Algorithm=\"http://www.w3.org/2000/09/xmldsig#sha1\"/>\n<DigestValue>{}</DigestValue>\n</Reference>\n</SignedInfo>\n<SignatureValue>{}</SignatureValue>\n</Signature>\n</QuickLicenseManager>",
        base64(digest.get(..20).unwrap_or_default()),
        base64(&signature),
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn routes_and_unrouted_replies() {
        assert_eq!(
            route("/qlmLicenseServer/qlmservice.asmx/GetActivationKeyWithExpiryDate"),
            Endpoint::License
        );
        assert_eq!(
            route("/qlmLicenseServer/qlmservice.asmx/RetrieveActivationKeyHttp"),
            Endpoint::Retrieve
        );
        assert_eq!(
            route("/qlmLicenseServer/qlmservice.asmx/PingHttp"),
            Endpoint::Ping
        );
        assert_eq!(
            route("/qlmLicenseServer/qlmservice.asmx/GetLicensesHttp"),
            Endpoint::Other
        );
        assert_eq!(
            unrouted("/qlmLicenseServer/qlmservice.asmx/GetLicensesHttp").status,
            500
        );
        assert_eq!(unrouted("/elsewhere").status, 404);
    }

    #[test]
    fn xml_shapes() {
        let empty = keys_xml(&[]);
        assert_eq!(
            String::from_utf8_lossy(&empty.body),
            r#"<?xml version="1.0" encoding="UTF-8"?><QuickLicenseManager><licenses/></QuickLicenseManager>"#
        );
        let two = keys_xml(&["A".to_owned(), "B".to_owned()]);
        assert_eq!(
            String::from_utf8_lossy(&two.body),
            r#"<?xml version="1.0" encoding="UTF-8"?><QuickLicenseManager><licenses><license><activationKey>A</activationKey></license><license><activationKey>B</activationKey></license></licenses></QuickLicenseManager>"#
        );
    }

    #[test]
    fn server_properties_of_methods() {
        assert_eq!(
            server_property("RetrieveActivationKeyHttp"),
            "enableRetrieveActivationKeyHttp"
        );
        assert_eq!(server_property("UpdateLicenseHttp"), "enableUpgradeLicense");
        assert_eq!(
            server_property("ValidateLicenseHttp"),
            "enableValidateLicenseHttp"
        );
        let mut s = Switches::default();
        assert!(s.lifecycle_enabled());
        s.set_lifecycle_enabled(false);
        assert_eq!(s.disabled_methods.len(), 3);
        s.disabled_methods.insert(RETRIEVE.to_owned());
        s.set_lifecycle_enabled(true);
        assert_eq!(s.disabled_methods.iter().collect::<Vec<_>>(), [RETRIEVE]);
    }

    #[test]
    fn strict_urls() {
        assert_eq!(
            strict_url("https://h/p/", "M", "a=1&b=%20"),
            "https://h/p/M?a=1&b=%20"
        );
        assert_eq!(strict_url("https://h/p", "M", ""), "https://h/p/M");
    }
}
