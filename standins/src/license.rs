//! The QLM license-server stand-in: `GetActivationKeyWithExpiryDate` issues keys,
//! `RetrieveActivationKeyHttp` lists the keys issued under an order reference, and the lifecycle
//! methods change a key's terms (`RevokeLicenseHttp`, `UpdateLicenseHttp`, `RenewSubscriptionHttp`),
//! which `ValidateLicenseHttp` reads back. Reply bodies of the lifecycle methods are UNCONFIRMED in
//! QLM's documentation; these follow its management-call shape (`<result>` / `<error>`).

use crate::http::{parse_form, Request, Response};
use crate::record::Endpoint;
use crate::state::Shared;

pub const PATH_PREFIX: &str = "/qlmLicenseServer/qlmservice.asmx";
pub const QLM_USER: &str = "keygate";
pub const QLM_PASSWORD: &str = "standin-qlm-password";

const XML_HEAD: &str = r#"<?xml version="1.0" encoding="UTF-8"?>"#;
/// More keys than this in one call is a plugin bug, not an order.
const MAX_QUANTITY: u64 = 10_000;

pub fn route(path: &str) -> Endpoint {
    match path.strip_prefix(PATH_PREFIX) {
        Some("/GetActivationKeyWithExpiryDate") => Endpoint::License,
        Some("/RetrieveActivationKeyHttp") => Endpoint::Retrieve,
        Some("/RevokeLicenseHttp") => Endpoint::Revoke,
        Some("/UpdateLicenseHttp") => Endpoint::Update,
        Some("/RenewSubscriptionHttp") => Endpoint::Renew,
        Some("/ValidateLicenseHttp") => Endpoint::Validate,
        _ => Endpoint::Other,
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

fn error(msg: &str) -> Response {
    // QLM answers errors with 200 and a text body that starts with "Error".
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

fn precheck(req: &Request) -> Result<Vec<(String, String)>, Response> {
    if req.method != "GET" && req.method != "POST" {
        return Err(Response::text(
            405,
            "The HTTP verb used is not allowed.\r\n",
        ));
    }
    let args = args(req);
    if arg(&args, "is_user") != Some(QLM_USER) || arg(&args, "is_pwd") != Some(QLM_PASSWORD) {
        return Err(error("invalid user or password"));
    }
    Ok(args)
}

fn xml_escape(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
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
    Response::new(200, "text/xml; charset=utf-8", body)
}

/// `GetActivationKeyWithExpiryDate`: validates like QLM, issues and records the keys.
pub fn get_activation_key(shared: &Shared, req: &Request) -> Response {
    let args = match precheck(req) {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    for name in [
        "is_productid",
        "is_majorversion",
        "is_minorversion",
        "is_vendor",
    ] {
        match arg(&args, name) {
            None | Some("") => return error(&format!("missing argument {name}")),
            Some(v) if name != "is_vendor" && v.parse::<u32>().is_err() => {
                return error(&format!("invalid argument {name}"))
            }
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
    if let Some(d) = arg(&args, "is_expduration").filter(|d| !d.is_empty()) {
        if d.parse::<u32>().is_err() {
            return error("invalid argument is_expduration");
        }
    }
    let count = if one_key { 1 } else { quantity };
    let order = arg(&args, "is_orderid").unwrap_or_default().to_owned();
    let expiry_days = arg(&args, "is_expduration").and_then(|d| d.parse().ok());
    let mut state = shared.lock();
    let keys = state.issue_keys(&order, count);
    for k in &keys {
        state.keys.insert(
            k.clone(),
            KeyState {
                order: order.clone(),
                revoked: false,
                quantity,
                expiry_days,
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

/// `RetrieveActivationKeyHttp?is_orderid=…`: the keys issued under that reference, in order.
pub fn retrieve(shared: &Shared, req: &Request) -> Response {
    let args = match precheck(req) {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    let Some(order) = arg(&args, "is_orderid").filter(|o| !o.is_empty()) else {
        return error("missing argument is_orderid");
    };
    let keys = shared.lock().issued.get(order).cloned().unwrap_or_default();
    keys_xml(&keys)
}

/// What the license server holds for one key.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct KeyState {
    /// The `is_orderid` it was issued under.
    pub order: String,
    pub revoked: bool,
    /// Activations allowed (`is_quantity`).
    pub quantity: u64,
    /// Days of validity from issue (`is_expduration`), extended by renewals; `None`: no expiry.
    pub expiry_days: Option<u32>,
}

fn result(text: &str) -> Response {
    Response::new(
        200,
        "text/xml; charset=utf-8",
        format!(
            "{XML_HEAD}<QuickLicenseManager><result>{}</result></QuickLicenseManager>",
            xml_escape(text)
        ),
    )
}

fn xml_error(text: &str) -> Response {
    Response::new(
        200,
        "text/xml; charset=utf-8",
        format!(
            "{XML_HEAD}<QuickLicenseManager><error>{}</error></QuickLicenseManager>",
            xml_escape(text)
        ),
    )
}

/// A lifecycle call that passed the common checks: its arguments, the locked state, the key.
type Checked<'a> = (
    Vec<(String, String)>,
    std::sync::MutexGuard<'a, crate::state::State>,
    String,
);

/// Common part of the lifecycle methods: credentials, the server property, the key.
fn lifecycle<'a>(
    shared: &'a Shared,
    req: &Request,
    property: &str,
) -> Result<Checked<'a>, Response> {
    let args = precheck(req)?;
    let state = shared.lock();
    if !state.lifecycle_enabled {
        return Err(xml_error(&format!(
            "This feature is disabled. Set the server property {property} to true."
        )));
    }
    let Some(key) = arg(&args, "is_avkey")
        .filter(|k| !k.is_empty())
        .map(str::to_owned)
    else {
        return Err(xml_error("missing argument is_avkey"));
    };
    if !state.keys.contains_key(&key) {
        return Err(xml_error("The license key does not exist."));
    }
    Ok((args, state, key))
}

/// `RevokeLicenseHttp?is_avkey=…&is_revoke=true|false`.
pub fn revoke(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "enableRevokeLicense") {
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

/// `UpdateLicenseHttp?is_avkey=…&is_quantity=N[&is_expduration=D][&is_revoke=…]`.
pub fn update(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "enableUpgradeLicense") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let quantity = match arg(&args, "is_quantity").filter(|q| !q.is_empty()) {
        None => None,
        Some(q) => match q.parse::<u64>() {
            Ok(n) if n <= MAX_QUANTITY => Some(n),
            _ => return xml_error("invalid argument is_quantity"),
        },
    };
    let revoke = arg(&args, "is_revoke").map(|v| v.eq_ignore_ascii_case("true"));
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

/// `RenewSubscriptionHttp?is_avkey=…&is_expduration=D`: adds D days on every call.
pub fn renew(shared: &Shared, req: &Request) -> Response {
    let (args, mut state, key) = match lifecycle(shared, req, "enableRenewSubscriptionHttp") {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let Some(days) = arg(&args, "is_expduration").and_then(|d| d.parse::<u32>().ok()) else {
        return xml_error("invalid argument is_expduration");
    };
    if let Some(k) = state.keys.get_mut(&key) {
        k.expiry_days = Some(k.expiry_days.unwrap_or(0).saturating_add(days));
    }
    result("Subscription renewed.")
}

/// `ValidateLicenseHttp?is_avkey=…`: the key's state.
pub fn validate(shared: &Shared, req: &Request) -> Response {
    let args = match precheck(req) {
        Ok(args) => args,
        Err(resp) => return resp,
    };
    let key = arg(&args, "is_avkey").unwrap_or_default();
    let state = shared.lock();
    let Some(k) = state.keys.get(key) else {
        return xml_error("The license key does not exist.");
    };
    let expiry = k
        .expiry_days
        .map(|d| format!("<expiryDays>{d}</expiryDays>"))
        .unwrap_or_default();
    Response::new(
        200,
        "text/xml; charset=utf-8",
        format!(
            "{XML_HEAD}<QuickLicenseManager><license><activationKey>{}</activationKey><status>{}</status><numberOfLicenses>{}</numberOfLicenses>{expiry}</license></QuickLicenseManager>",
            xml_escape(key),
            if k.revoked { "revoked" } else { "active" },
            k.quantity
        ),
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
            Endpoint::Other
        );
        assert_eq!(
            unrouted("/qlmLicenseServer/qlmservice.asmx/PingHttp").status,
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
}
