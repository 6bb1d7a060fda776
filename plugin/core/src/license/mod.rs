//! The license server (Quick License Manager's HTTP API): what each call asks (this file), how it
//! goes on the wire (a form POST, or a signed GET under strict authentication: `strict_auth`),
//! and what its reply means (`replies`). The product argument strings of the configuration are
//! `products`.
//!
//! A call is built as a [`QlmCall`] (a method name and its arguments, credentials included) and
//! turned into HTTP by [`QlmCall::to_http`], the one place that decides POST or signed GET. A
//! POST carries the arguments in its body, so credentials and customer data stay out of the URL;
//! a method under strict authentication is a GET with every argument in the query, because QLM
//! hashes "the URL you are invoking, including all arguments". Such a URL holds `is_pwd`: the
//! request's `Debug` shows the path without its query, and nothing logs a URL.

mod replies;
mod strict_auth;

pub use replies::{
    is_unknown_key, looks_like_key, parse_change, parse_keys, parse_ping, parse_validate,
    LicenseError, Refusal, Validation,
};
pub use strict_auth::{qlm_timestamp, sign, AUTH_VERSION};

use crate::config::LicenseConfig;
use crate::ids::SfId;
pub use crate::products::ProductArgs;

/// Who the license is for.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Customer {
    pub full_name: String,
    pub email: String,
    pub company: String,
    pub phone: String,
}

/// One license to create: one order line.
pub struct IssueRequest<'a> {
    pub product: &'a ProductArgs,
    pub quantity: u32,
    /// The line's reference: the license server records the key under it, and the lookup
    /// finds it by it.
    pub order_item_id: &'a SfId,
    pub order_number: &'a str,
    pub customer: &'a Customer,
}

/// One QLM HTTP method call before it is HTTP: the method and its form-encoded arguments.
pub struct QlmCall {
    pub method: &'static str,
    /// `application/x-www-form-urlencoded`; may hold `is_pwd`.
    args: String,
}

/// A license-server call as it goes on the wire.
#[derive(Clone, PartialEq, Eq)]
pub struct HttpRequest {
    pub verb: &'static str,
    /// May hold credentials in its query (a strict-authentication GET): never log it whole.
    pub path: String,
    pub headers: Vec<(&'static str, String)>,
    pub body: Vec<u8>,
}

impl std::fmt::Debug for HttpRequest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The query and the body may hold `is_pwd`; the headers a token.
        let path = self
            .path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p);
        write!(f, "{} {path}", self.verb)
    }
}

impl QlmCall {
    fn new(method: &'static str) -> QlmCall {
        QlmCall {
            method,
            args: String::with_capacity(256),
        }
    }

    fn arg(&mut self, name: &str, value: &str) -> &mut QlmCall {
        form_urlencoded::Serializer::for_suffix(&mut self.args, 0).append_pair(name, value);
        self
    }

    /// The vendor and the 3rd-party extension's user and password: every call but the ping.
    fn credentials(&mut self, cfg: &LicenseConfig) -> &mut QlmCall {
        self.arg("is_vendor", &cfg.vendor)
            .arg("is_user", cfg.user.expose())
            .arg("is_pwd", cfg.password.expose())
    }

    /// The call as HTTP at `now_ms` (the strict-authentication timestamp): a signed GET for a
    /// method under `license_server.strict_auth`, a GET for a call without arguments (the ping),
    /// a form POST otherwise.
    pub fn to_http(self, cfg: &LicenseConfig, now_ms: u64) -> HttpRequest {
        let path = format!("{}/{}", cfg.path_prefix, self.method);
        if let Some(strict) = cfg
            .strict_auth
            .as_ref()
            .filter(|s| s.applies_to(self.method))
        {
            let query = if self.args.is_empty() {
                String::new()
            } else {
                format!("?{}", self.args)
            };
            let timestamp = qlm_timestamp(now_ms);
            let url = format!("{}/{}{query}", strict.url_base, self.method);
            let token = sign(&strict.api_key, &url, &timestamp);
            return HttpRequest {
                verb: "GET",
                path: format!("{path}{query}"),
                headers: vec![
                    ("x-qlm-timestamp", timestamp),
                    ("x-qlm-authentication-version", AUTH_VERSION.to_string()),
                    ("x-qlm-authentication-token", token),
                ],
                body: Vec::new(),
            };
        }
        if self.args.is_empty() {
            return HttpRequest {
                verb: "GET",
                path,
                headers: Vec::new(),
                body: Vec::new(),
            };
        }
        HttpRequest {
            verb: "POST",
            path,
            headers: vec![(
                "content-type",
                "application/x-www-form-urlencoded".to_owned(),
            )],
            body: self.args.into_bytes(),
        }
    }
}

/// `GetActivationKeyWithExpiryDate`: one line's key. The line's OrderItem id goes as
/// `is_userdata1` (documented for the lookup and for `GetActivationKey`) and as `is_orderid`
/// (documented for the lookup only), so the lookup finds it by whichever the server kept.
pub fn issue(cfg: &LicenseConfig, req: &IssueRequest<'_>) -> QlmCall {
    let mut call = QlmCall::new("GetActivationKeyWithExpiryDate");
    for (k, v) in req.product.args() {
        call.arg(k, v);
    }
    call.arg("is_vendor", &cfg.vendor);
    if let Some(a) = &cfg.affiliate_id {
        call.arg("is_affiliateid", a);
    }
    call.arg("is_quantity", &req.quantity.to_string())
        .arg("is_userdata1", req.order_item_id.as_str())
        .arg("is_orderid", req.order_item_id.as_str())
        .arg("orderNumber", req.order_number)
        .arg("is_fullname", &req.customer.full_name)
        .arg("is_email", &req.customer.email)
        .arg("is_company", &req.customer.company);
    if !req.customer.phone.is_empty() {
        call.arg("is_phone", &req.customer.phone);
    }
    call.arg("is_user", cfg.user.expose())
        .arg("is_pwd", cfg.password.expose());
    call
}

/// `RetrieveActivationKeyHttp`: the keys already issued under a line's reference, by the one
/// argument `license_server.line_reference` names.
pub fn lookup(cfg: &LicenseConfig, reference: &str) -> QlmCall {
    let mut call = QlmCall::new("RetrieveActivationKeyHttp");
    call.arg(cfg.line_reference.argument(), reference)
        .arg("is_format", "xml")
        .credentials(cfg);
    call
}

/// A change to a key that exists: QLM's lifecycle methods.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange<'a> {
    Revoke,
    Restore,
    /// Activations allowed after a reduction.
    SetQuantity(u32),
    /// Adds the product's `is_expduration` (or sets its `is_expdate`).
    Renew(&'a ProductArgs),
}

impl KeyChange<'_> {
    pub fn method(&self) -> &'static str {
        match self {
            KeyChange::Revoke | KeyChange::Restore => "RevokeLicenseHttp",
            KeyChange::SetQuantity(_) => "UpdateLicenseHttp",
            KeyChange::Renew(_) => "RenewSubscriptionHttp",
        }
    }

    /// The QLM server property that enables the method (named in the fault when refused).
    pub fn server_property(&self) -> &'static str {
        server_property(self.method())
    }
}

/// The QLM server property that enables a method, as its page names it.
pub fn server_property(method: &str) -> &'static str {
    match method {
        "GetActivationKeyWithExpiryDate" => "enableGetActivationKey",
        "RetrieveActivationKeyHttp" => "enableRetrieveActivationKeyHttp",
        "RevokeLicenseHttp" => "enableRevokeLicense",
        "UpdateLicenseHttp" => "enableUpgradeLicense",
        "RenewSubscriptionHttp" => "enableRenewSubscriptionHttp",
        _ => "that enables the method",
    }
}

/// A lifecycle call on `key`.
pub fn change(cfg: &LicenseConfig, key: &str, change: KeyChange<'_>) -> QlmCall {
    let mut call = QlmCall::new(change.method());
    call.arg("is_avkey", key);
    match change {
        KeyChange::Revoke => {
            call.arg("is_revoke", "true");
        }
        KeyChange::Restore => {
            call.arg("is_revoke", "false");
        }
        KeyChange::SetQuantity(n) => {
            call.arg("is_quantity", &n.to_string());
        }
        KeyChange::Renew(p) => {
            // RenewSubscriptionHttp takes either one (QLM's page): the mapping has one of them.
            for k in ["is_expduration", "is_expdate"] {
                if let Some(v) = p.get(k) {
                    call.arg(k, v);
                }
            }
        }
    }
    call.credentials(cfg);
    call
}

/// `ValidateLicenseHttp` of a key: its state, without activating it (`is_activate=false`).
pub fn validate(cfg: &LicenseConfig, key: &str) -> QlmCall {
    let mut call = QlmCall::new("ValidateLicenseHttp");
    call.arg("is_avkey", key)
        .arg("is_activate", "false")
        .credentials(cfg);
    call
}

/// `PingHttp`: the server's version and date; no arguments (the start-up self-check).
pub fn ping() -> QlmCall {
    QlmCall::new("PingHttp")
}
