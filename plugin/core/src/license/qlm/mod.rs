//! Quick License Manager's HTTP API behind the license-backend seam ([`Qlm`]): what each call
//! asks (this file), how it goes on the wire (a form POST, or a signed GET under strict
//! authentication: `strict_auth`), and what its reply means (`replies`). The product argument
//! strings of the configuration are `crate::products`.
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
    is_unknown_key, looks_like_key, parse_change, parse_keys, parse_ping, parse_validate, Refusal,
    Validation,
};
pub use strict_auth::{qlm_timestamp, sign, AUTH_VERSION};

use crate::config::QlmConfig;
use crate::license::{
    HttpRequest, IssueRequest, KeyChange, LicenseBackend, LicenseError, LicenseReply,
};

/// One QLM HTTP method call before it is HTTP: the method and its form-encoded arguments.
pub struct QlmCall {
    pub method: &'static str,
    /// `application/x-www-form-urlencoded`; may hold `is_pwd`.
    args: String,
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
    fn credentials(&mut self, cfg: &QlmConfig) -> &mut QlmCall {
        self.arg("is_vendor", &cfg.vendor)
            .arg("is_user", cfg.user.expose())
            .arg("is_pwd", cfg.password.expose())
    }

    /// The call as HTTP at `now_ms` (the strict-authentication timestamp): a signed GET for a
    /// method under `license_server.strict_auth`, a GET for a call without arguments (the ping),
    /// a form POST otherwise.
    pub fn to_http(self, cfg: &QlmConfig, now_ms: u64) -> HttpRequest {
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
pub fn issue(cfg: &QlmConfig, req: &IssueRequest<'_>) -> QlmCall {
    let mut call = QlmCall::new(ISSUE);
    // The configuration maps every product to the configured server's terms.
    for (k, v) in req.product.qlm().map(|a| a.args()).unwrap_or_default() {
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
pub fn lookup(cfg: &QlmConfig, reference: &str) -> QlmCall {
    let mut call = QlmCall::new(LOOKUP);
    call.arg(cfg.line_reference.argument(), reference)
        .arg("is_format", "xml")
        .credentials(cfg);
    call
}

/// The QLM method that makes `change`.
pub fn change_method(change: &KeyChange<'_>) -> &'static str {
    match change {
        KeyChange::Revoke | KeyChange::Restore => REVOKE,
        KeyChange::SetQuantity(_) => UPDATE,
        KeyChange::Renew(_) => RENEW,
    }
}

const ISSUE: &str = "GetActivationKeyWithExpiryDate";
/// The lookup: also the one method a stock server signs ("By default, the
/// RetrieveActivationKeyHttp method requires strict authentication": QLM's how-to).
pub const LOOKUP: &str = "RetrieveActivationKeyHttp";
const REVOKE: &str = "RevokeLicenseHttp";
const UPDATE: &str = "UpdateLicenseHttp";
const RENEW: &str = "RenewSubscriptionHttp";
const VALIDATE: &str = "ValidateLicenseHttp";
const PING: &str = "PingHttp";

/// The QLM methods keygate calls (what `license_server.strict_auth.methods` may name), each with
/// the server property that enables it, as QLM's pages name it (`None`: always enabled).
pub const METHODS: &[(&str, Option<&str>)] = &[
    (ISSUE, Some("enableGetActivationKey")),
    (LOOKUP, Some("enableRetrieveActivationKeyHttp")),
    (REVOKE, Some("enableRevokeLicense")),
    (UPDATE, Some("enableUpgradeLicense")),
    (RENEW, Some("enableRenewSubscriptionHttp")),
    (VALIDATE, None),
    (PING, None),
];

/// The QLM server property that enables a method.
pub fn server_property(method: &str) -> &'static str {
    METHODS
        .iter()
        .find(|(m, _)| *m == method)
        .and_then(|(_, p)| *p)
        .unwrap_or("that enables the method")
}

/// A lifecycle call on `key`.
pub fn change(cfg: &QlmConfig, key: &str, change: KeyChange<'_>) -> QlmCall {
    let mut call = QlmCall::new(change_method(&change));
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
                if let Some(v) = p.qlm().and_then(|a| a.get(k)) {
                    call.arg(k, v);
                }
            }
        }
    }
    call.credentials(cfg);
    call
}

/// `ValidateLicenseHttp` of a key: its state, without activating it (`is_activate=false`).
pub fn validate(cfg: &QlmConfig, key: &str) -> QlmCall {
    let mut call = QlmCall::new(VALIDATE);
    call.arg("is_avkey", key)
        .arg("is_activate", "false")
        .credentials(cfg);
    call
}

/// `PingHttp`: the server's version and date; no arguments (the start-up self-check).
pub fn ping() -> QlmCall {
    QlmCall::new(PING)
}

/// QLM as the flow's license server.
pub struct Qlm<'a> {
    pub cfg: &'a QlmConfig,
}

impl LicenseBackend for Qlm<'_> {
    fn issue(&self, req: &IssueRequest<'_>, now_ms: u64) -> HttpRequest {
        issue(self.cfg, req).to_http(self.cfg, now_ms)
    }

    fn lookup(&self, reference: &str, now_ms: u64) -> HttpRequest {
        lookup(self.cfg, reference).to_http(self.cfg, now_ms)
    }

    fn change(&self, key: &str, change: KeyChange<'_>, now_ms: u64) -> HttpRequest {
        self::change(self.cfg, key, change).to_http(self.cfg, now_ms)
    }

    fn read_expiry(&self, key: &str, now_ms: u64) -> HttpRequest {
        validate(self.cfg, key).to_http(self.cfg, now_ms)
    }

    fn reply_headers(&self) -> &'static [&'static str] {
        // QLM's replies say everything in their status and body.
        &[]
    }

    fn issued(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError> {
        parse_keys(reply.status, reply.body)
    }

    fn found(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError> {
        parse_keys(reply.status, reply.body)
    }

    fn change_applied(
        &self,
        _change: &KeyChange<'_>,
        reply: &LicenseReply<'_>,
    ) -> Result<(), LicenseError> {
        parse_change(reply.status, reply.body).map_err(unknown_key)
    }

    fn expiry(&self, reply: &LicenseReply<'_>) -> Result<Option<String>, LicenseError> {
        parse_validate(reply.status, reply.body)
            .map(|v| v.expiry)
            .map_err(unknown_key)
    }

    fn name_of(&self, change: &KeyChange<'_>) -> &'static str {
        change_method(change)
    }

    fn refusal_hint(&self, change: &KeyChange<'_>) -> String {
        format!(
            "is the license server's property {} set to true?",
            server_property(change_method(change))
        )
    }
}

/// QLM says a key does not exist in words: the typed error for them.
fn unknown_key(e: LicenseError) -> LicenseError {
    match e {
        LicenseError::Refused(m) if is_unknown_key(&m) => LicenseError::UnknownKey(m),
        other => other,
    }
}
