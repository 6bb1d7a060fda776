//! The license server (Quick License Manager's HTTP API): request building and response parsing.
//! (The product argument strings of the configuration are `products`.)
//!
//! Requests are form posts: credentials and customer data travel in the body, never in the URL
//! (URLs end up in access logs).

use crate::xml::{Reader, Token, XmlError};

use crate::config::LicenseConfig;
use crate::ids::SfId;
pub use crate::products::ProductArgs;
use crate::text::{excerpt as error_excerpt, mentions_error};

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
    /// The idempotency reference: the license server records keys under it.
    pub order_item_id: &'a SfId,
    pub order_number: &'a str,
    pub customer: &'a Customer,
}

/// Path and form body of a `GetActivationKeyWithExpiryDate` call.
pub fn issue_request(cfg: &LicenseConfig, req: &IssueRequest<'_>) -> (String, String) {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(512));
    for (k, v) in req.product.args() {
        form.append_pair(k, v);
    }
    form.append_pair("is_vendor", &cfg.vendor);
    if let Some(a) = &cfg.affiliate_id {
        form.append_pair("is_affiliateid", a);
    }
    form.append_pair("is_quantity", &req.quantity.to_string());
    form.append_pair("is_orderid", req.order_item_id.as_str());
    form.append_pair("orderNumber", req.order_number);
    form.append_pair("is_fullname", &req.customer.full_name);
    form.append_pair("is_email", &req.customer.email);
    form.append_pair("is_company", &req.customer.company);
    if !req.customer.phone.is_empty() {
        form.append_pair("is_phone", &req.customer.phone);
    }
    form.append_pair("is_user", cfg.user.expose());
    form.append_pair("is_pwd", cfg.password.expose());
    (
        format!("{}/GetActivationKeyWithExpiryDate", cfg.path_prefix),
        form.finish(),
    )
}

/// Path and form body of a `RetrieveActivationKeyHttp` call: keys already issued under a reference.
pub fn retrieve_request(cfg: &LicenseConfig, order_item_id: &SfId) -> (String, String) {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(128));
    form.append_pair("is_orderid", order_item_id.as_str());
    form.append_pair("is_format", "xml");
    credentials(cfg, &mut form);
    (
        format!("{}/RetrieveActivationKeyHttp", cfg.path_prefix),
        form.finish(),
    )
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
        match self {
            KeyChange::Revoke | KeyChange::Restore => "enableRevokeLicense",
            KeyChange::SetQuantity(_) => "enableUpgradeLicense",
            KeyChange::Renew(_) => "enableRenewSubscriptionHttp",
        }
    }
}

/// Path and form body of a lifecycle call on `key`.
pub fn change_request(cfg: &LicenseConfig, key: &str, change: KeyChange<'_>) -> (String, String) {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(160));
    form.append_pair("is_avkey", key);
    match change {
        KeyChange::Revoke => {
            form.append_pair("is_revoke", "true");
        }
        KeyChange::Restore => {
            form.append_pair("is_revoke", "false");
        }
        KeyChange::SetQuantity(n) => {
            form.append_pair("is_quantity", &n.to_string());
        }
        KeyChange::Renew(p) => {
            for k in ["is_expduration", "is_expdate"] {
                if let Some(v) = p.get(k) {
                    form.append_pair(k, v);
                }
            }
        }
    }
    credentials(cfg, &mut form);
    (
        format!("{}/{}", cfg.path_prefix, change.method()),
        form.finish(),
    )
}

/// Path and form body of a `ValidateLicenseHttp` call: a key's state, without activating it.
pub fn validate_request(cfg: &LicenseConfig, key: &str) -> (String, String) {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(128));
    form.append_pair("is_avkey", key);
    form.append_pair("is_activate", "false");
    credentials(cfg, &mut form);
    (
        format!("{}/ValidateLicenseHttp", cfg.path_prefix),
        form.finish(),
    )
}

fn credentials(cfg: &LicenseConfig, form: &mut form_urlencoded::Serializer<'_, String>) {
    form.append_pair("is_vendor", &cfg.vendor);
    form.append_pair("is_user", cfg.user.expose());
    form.append_pair("is_pwd", cfg.password.expose());
}

/// The outcome of a lifecycle call. Its reply body is undocumented: an error (element or
/// `Error: …` text) is a refusal, any other well-formed answer (`<result>…</result>`,
/// `License revoked.`) is success.
pub fn parse_change(status: u16, body: &[u8]) -> Result<(), LicenseError> {
    match parse_keys(status, body) {
        Ok(_) => Ok(()),
        Err(LicenseError::Unparseable(m))
            if m.starts_with(NOT_A_KEY) || m.starts_with(LOOSE_TEXT) =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// Does a refusal say the key does not exist? (Wording undocumented: matched loosely.)
pub fn is_unknown_key(refusal: &str) -> bool {
    let m = refusal.to_ascii_lowercase();
    [
        "not exist",
        "not found",
        "unknown",
        "invalid license key",
        "invalid key",
    ]
    .iter()
    .any(|w| m.contains(w))
}

/// The expiry a `ValidateLicenseHttp` reply shows: the text of its first element whose name
/// mentions expiry, as the server wrote it (`None`: the key does not expire). Compared, never
/// interpreted, so its format does not matter.
pub fn parse_expiry(status: u16, body: &[u8]) -> Result<Option<String>, LicenseError> {
    parse_keys(status, body).map(|_| ())?;
    let text = std::str::from_utf8(body).unwrap_or("");
    let mut reader = Reader::new(text, 16);
    let mut in_expiry = false;
    loop {
        match reader.next_token() {
            Ok(Token::Start { name, empty, .. }) => {
                let local = name.split_once(':').map_or(name, |(_, l)| l);
                in_expiry = !empty && local.to_ascii_lowercase().contains("expir");
            }
            Ok(Token::Text(t)) if in_expiry => {
                let t = t.content();
                return Ok(Some(error_excerpt(t.trim())));
            }
            Ok(Token::Eof) | Err(_) => return Ok(None),
            Ok(_) => in_expiry = false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseError {
    /// Not a 2xx status.
    Status(u16),
    /// The body says it failed (QLM answers `Error: …`, or an `<error>` element).
    Refused(String),
    /// Neither keys nor a recognisable error.
    Unparseable(String),
}

impl std::fmt::Display for LicenseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LicenseError::Status(s) => write!(f, "license server answered HTTP {s}"),
            LicenseError::Refused(m) => write!(f, "license server refused: {m}"),
            LicenseError::Unparseable(m) => write!(f, "license server reply not understood: {m}"),
        }
    }
}

const MAX_KEY_LEN: usize = 512;
/// How `parse_keys` words a reply that is text, not a key (`parse_change` accepts it).
const NOT_A_KEY: &str = "not a license key";
const LOOSE_TEXT: &str = "unexpected text";

/// Keys from a license-server reply: every `<activationKey>` element, or a plain-text key
/// (also inside ASMX's `<string>` wrapper). Tolerant by design: the error format is undocumented.
pub fn parse_keys(status: u16, body: &[u8]) -> Result<Vec<String>, LicenseError> {
    if !(200..300).contains(&status) {
        return Err(LicenseError::Status(status));
    }
    let text = std::str::from_utf8(body)
        .map_err(|_| LicenseError::Unparseable("not UTF-8".into()))?
        .trim()
        .trim_start_matches('\u{feff}');
    if !text.starts_with('<') {
        // One key per line (several when the product issues one key per seat).
        return text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| plain_key(l.trim()))
            .collect::<Result<Vec<_>, _>>()
            .and_then(|keys| {
                if keys.is_empty() {
                    Err(LicenseError::Unparseable("empty reply".into()))
                } else {
                    Ok(keys)
                }
            });
    }
    let mut reader = Reader::new(text, 16);
    let mut keys = Vec::new();
    let mut in_key = false;
    let mut in_error = false;
    let mut root: Option<&str> = None;
    let mut root_text = String::new();
    let mut current = String::new();
    loop {
        let token = reader.next_token().map_err(|e| {
            LicenseError::Unparseable(match e {
                XmlError::TooDeep => "reply nested too deep".into(),
                XmlError::UndefinedEntity(name) => {
                    format!("undefined entity {}", error_excerpt(&name))
                }
                other => error_excerpt(&other.to_string()),
            })
        })?;
        match token {
            Token::Eof => break,
            Token::Doctype => return Err(LicenseError::Unparseable("DOCTYPE in reply".into())),
            Token::Start { name, empty, .. } => {
                let local = name.split_once(':').map_or(name, |(_, local)| local);
                root.get_or_insert(local);
                if !empty {
                    in_key = local == "activationKey";
                    // `<error>`, `<Error>`, `<errorMessage>`, …: the error format is undocumented.
                    in_error = mentions_error(local);
                    current.clear();
                }
            }
            // A reference inside a key is part of it: `content` resolves it, never drops it.
            Token::Text(t) | Token::CData(t) => {
                let t = t.content();
                if reader.depth() == 1 {
                    root_text.push_str(&t);
                }
                current.push_str(&t);
            }
            Token::End { .. } => {
                if in_key {
                    let k = current.trim();
                    if !k.is_empty() {
                        keys.push(valid_key(k)?);
                    }
                }
                if in_error && !current.trim().is_empty() {
                    return Err(LicenseError::Refused(error_excerpt(current.trim())));
                }
                in_key = false;
                in_error = false;
            }
            Token::Decl(_) | Token::ProcessingInstruction | Token::Comment => {}
        }
        if keys.len() > 10_000 {
            return Err(LicenseError::Unparseable("too many keys".into()));
        }
    }
    if root == Some("string") {
        return if keys.is_empty() {
            match root_text.trim() {
                "" => Err(LicenseError::Unparseable("empty reply".into())),
                t => plain_key(t).map(|k| vec![k]),
            }
        } else {
            Ok(keys)
        };
    }
    // Text straight inside `<QuickLicenseManager>` is a message, not data: never "no keys".
    let loose = root_text.trim();
    if !loose.is_empty() {
        return Err(if mentions_error(loose) {
            LicenseError::Refused(error_excerpt(loose))
        } else {
            LicenseError::Unparseable(format!("{LOOSE_TEXT} {}", error_excerpt(loose)))
        });
    }
    if keys.is_empty() && root != Some("QuickLicenseManager") {
        return Err(LicenseError::Unparseable(format!(
            "unexpected root element {}",
            error_excerpt(root.unwrap_or("(none)"))
        )));
    }
    Ok(keys)
}

fn plain_key(text: &str) -> Result<String, LicenseError> {
    if mentions_error(text) {
        return Err(LicenseError::Refused(error_excerpt(text)));
    }
    valid_key(text)
}

/// Is this an activation key? QLM's are groups of letters and digits joined by dashes
/// (`FGGH0-S0K00-71B18-S868R-1F1J2-UQKPUN`). The shape is what keeps a one-word reply
/// (`Unauthorized`, `OK`) from being recorded, written back and acked as a key.
/// At least three groups: `Bad-Request` is not a key either.
pub fn looks_like_key(k: &str) -> bool {
    let mut groups = 0;
    k.len() <= MAX_KEY_LEN
        && k.split('-').all(|g| {
            groups += 1;
            !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric())
        })
        && groups >= 3
}

fn valid_key(k: &str) -> Result<String, LicenseError> {
    if looks_like_key(k) {
        Ok(k.to_owned())
    } else {
        Err(LicenseError::Unparseable(format!(
            "{NOT_A_KEY}: {}",
            error_excerpt(k)
        )))
    }
}
