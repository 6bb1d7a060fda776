//! What the license server's replies mean. QLM documents some output shapes (`PingHttp`,
//! `ValidateLicenseHttp`, the `QlmAuthenticationProvider` key fragment) and leaves the rest, its
//! error replies included, to the reader: every shape is read tolerantly, and anything that is
//! neither what was asked for nor a recognisable refusal is a failure, never "nothing there".
//!
//! Replies are bounded (the flow refuses one over `max_reply_bytes`; the reader stops at
//! [`MAX_DEPTH`] and never expands an entity or reads a DTD) but are not held to the inbound
//! SOAP's rules: QLM nests a whole XML document, declaration included, in
//! `ValidateLicenseHttp`'s `<productProperties>`, puts comments after elements (`PingHttp`) and a
//! default namespace on `<Signature>`.

use crate::license::LicenseError;
use crate::text::{excerpt, mentions_error};
use crate::xml::{Reader, Token, XmlError};

/// Open elements a reply may nest: QLM's deepest documented reply (the `<Signature>` of
/// `ValidateLicenseHttp`) has five.
pub const MAX_DEPTH: usize = 16;
const MAX_KEY_LEN: usize = 512;
const MAX_KEYS: usize = 10_000;
/// How `parse_keys` words a reply that is text, not a key (`parse_change` accepts such text).
const NOT_A_KEY: &str = "not a license key";

/// One pass over an XML reply: what every reader below needs of it.
#[derive(Default)]
struct Scan {
    /// Local name of the root element.
    root: String,
    /// Text straight inside the root: QLM's messages, never data.
    loose: String,
    /// The text of the first element whose name mentions "error".
    error: Option<String>,
    /// The text of every `<activationKey>`, at any depth, trimmed.
    keys: Vec<String>,
    /// The root's child elements: (local name, trimmed text).
    children: Vec<(String, String)>,
}

impl Scan {
    fn child(&self, name: &str) -> Option<&str> {
        self.children
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, t)| t.as_str())
    }

    /// The refusal this reply states, if any: an error element, or an error in loose text.
    fn refusal(&self) -> Option<LicenseError> {
        if let Some(e) = &self.error {
            return Some(LicenseError::Refused(excerpt(e)));
        }
        let loose = self.loose.trim();
        mentions_error(loose).then(|| LicenseError::Refused(excerpt(loose)))
    }
}

fn local(name: &str) -> &str {
    name.split_once(':').map_or(name, |(_, l)| l)
}

fn scan(text: &str) -> Result<Scan, LicenseError> {
    let mut reader = Reader::for_reply(text, MAX_DEPTH);
    let mut s = Scan::default();
    let mut current = String::new();
    loop {
        let token = reader.next_token().map_err(|e| {
            LicenseError::Unparseable(match e {
                XmlError::TooDeep => "reply nested too deep".into(),
                XmlError::UndefinedEntity(name) => format!("undefined entity {}", excerpt(&name)),
                other => excerpt(&other.to_string()),
            })
        })?;
        match token {
            Token::Eof => break,
            Token::Doctype => return Err(LicenseError::Unparseable("DOCTYPE in reply".into())),
            Token::Start { name, empty, .. } => {
                let name = local(name);
                if s.root.is_empty() {
                    s.root = name.to_owned();
                } else if empty && reader.depth() == 1 {
                    s.children.push((name.to_owned(), String::new()));
                }
                current.clear();
            }
            // A reference inside a key is part of it: `content` resolves it, never drops it.
            Token::Text(t) | Token::CData(t) => {
                let t = t.content();
                if reader.depth() == 1 {
                    s.loose.push_str(&t);
                } else {
                    current.push_str(&t);
                }
            }
            Token::End { name } => {
                let name = local(name);
                let text = current.trim();
                if name == "activationKey" && !text.is_empty() {
                    s.keys.push(text.to_owned());
                }
                if mentions_error(name) && !text.is_empty() && s.error.is_none() {
                    s.error = Some(text.to_owned());
                }
                if reader.depth() == 1 {
                    s.children.push((name.to_owned(), text.to_owned()));
                }
                current.clear();
            }
            Token::Decl(_) | Token::ProcessingInstruction | Token::Comment => {}
        }
        if s.keys.len() > MAX_KEYS || s.children.len() > MAX_KEYS {
            return Err(LicenseError::Unparseable("reply too long".into()));
        }
    }
    Ok(s)
}

/// The reply as text, without a BOM (`is_writebom`) or surrounding white space.
fn reply_text(status: u16, body: &[u8]) -> Result<&str, LicenseError> {
    if !(200..300).contains(&status) {
        return Err(LicenseError::Status(status));
    }
    Ok(std::str::from_utf8(body)
        .map_err(|_| LicenseError::Unparseable("not UTF-8".into()))?
        .trim()
        .trim_start_matches('\u{feff}'))
}

/// An XML reply whose root is QLM's `<QuickLicenseManager>` and that states no refusal.
fn qlm_fragment(text: &str) -> Result<Scan, LicenseError> {
    if !text.starts_with('<') {
        return Err(if mentions_error(text) {
            LicenseError::Refused(excerpt(text))
        } else if text.is_empty() {
            LicenseError::Unparseable("empty reply".into())
        } else {
            LicenseError::Unparseable(format!("unexpected text {}", excerpt(text)))
        });
    }
    let s = scan(text)?;
    if let Some(refused) = s.refusal() {
        return Err(refused);
    }
    if s.root != "QuickLicenseManager" {
        return Err(LicenseError::Unparseable(format!(
            "unexpected root element {}",
            excerpt(if s.root.is_empty() { "(none)" } else { &s.root })
        )));
    }
    Ok(s)
}

/// Keys from a license-server reply: every `<activationKey>` element (QLM's fragment, the
/// lookup's list), or a plain-text key (also inside ASMX's `<string>` wrapper), one per line.
pub fn parse_keys(status: u16, body: &[u8]) -> Result<Vec<String>, LicenseError> {
    let text = reply_text(status, body)?;
    if !text.starts_with('<') {
        // One key per line (several when the product issues one key per seat).
        let keys = text
            .lines()
            .filter(|l| !l.trim().is_empty())
            .map(|l| plain_key(l.trim()))
            .collect::<Result<Vec<_>, _>>()?;
        if keys.is_empty() {
            return Err(LicenseError::Unparseable("empty reply".into()));
        }
        return Ok(keys);
    }
    let s = scan(text)?;
    if let Some(refused) = s.refusal() {
        return Err(refused);
    }
    let keys = s
        .keys
        .iter()
        .map(|k| valid_key(k))
        .collect::<Result<Vec<_>, _>>()?;
    if s.root == "string" {
        return match (keys.is_empty(), s.loose.trim()) {
            (false, _) => Ok(keys),
            (true, "") => Err(LicenseError::Unparseable("empty reply".into())),
            (true, t) => plain_key(t).map(|k| vec![k]),
        };
    }
    // Text straight inside `<QuickLicenseManager>` is a message, not data: never "no keys".
    let loose = s.loose.trim();
    if !loose.is_empty() {
        return Err(LicenseError::Unparseable(format!(
            "unexpected text {}",
            excerpt(loose)
        )));
    }
    if keys.is_empty() && s.root != "QuickLicenseManager" {
        return Err(LicenseError::Unparseable(format!(
            "unexpected root element {}",
            excerpt(if s.root.is_empty() { "(none)" } else { &s.root })
        )));
    }
    Ok(keys)
}

/// The outcome of a lifecycle call (`RevokeLicenseHttp`, `UpdateLicenseHttp`,
/// `RenewSubscriptionHttp`). Its reply body is undocumented: an error (element or `Error: …`
/// text) is a refusal, any other well-formed answer (`<result>…</result>`, `License revoked.`)
/// is success.
pub fn parse_change(status: u16, body: &[u8]) -> Result<(), LicenseError> {
    match parse_keys(status, body) {
        Ok(_) => Ok(()),
        Err(LicenseError::Unparseable(m))
            if m.starts_with(NOT_A_KEY) || m.starts_with("unexpected text") =>
        {
            Ok(())
        }
        Err(e) => Err(e),
    }
}

/// What `ValidateLicenseHttp` (with `is_activate=false`) tells of a key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Validation {
    /// `<expiryDate>` as the server wrote it (`yyyy-MM-dd HH:mm`); `None` when empty or absent
    /// (the key does not expire). Compared, never interpreted, so its format does not matter.
    pub expiry: Option<String>,
    /// `<activationKey>`, when the reply names it.
    pub key: Option<String>,
}

/// A `ValidateLicenseHttp` reply, in the shape QLM documents: a flat `<QuickLicenseManager>`
/// fragment whose `<expiryDate>` child is the key's expiry. Never `maintenanceRenewalDate` (the
/// maintenance plan's, which comes first and differs), nor a `<Property expiryDate="…">` inside
/// `<productProperties>` (a product property's).
pub fn parse_validate(status: u16, body: &[u8]) -> Result<Validation, LicenseError> {
    let s = qlm_fragment(reply_text(status, body)?)?;
    Ok(Validation {
        expiry: s.child("expiryDate").filter(|e| !e.is_empty()).map(excerpt),
        key: s
            .child("activationKey")
            .filter(|k| !k.is_empty())
            .map(excerpt),
    })
}

/// A `PingHttp` reply: `Successfully connected …` in `<result>`; the server's version.
pub fn parse_ping(status: u16, body: &[u8]) -> Result<String, LicenseError> {
    let s = qlm_fragment(reply_text(status, body)?)?;
    let connected = s
        .child("result")
        .is_some_and(|r| r.to_ascii_lowercase().contains("connected"));
    if !connected {
        return Err(LicenseError::Unparseable(
            "a ping reply without 'Successfully connected'".into(),
        ));
    }
    Ok(excerpt(s.child("serverVersion").unwrap_or("unknown")))
}

/// What a refusal is about, as far as its text tells: QLM does not document the wording of its
/// refusals, so they are matched loosely, and anything unrecognised is [`Refusal::Other`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// The strict-authentication hash, timestamp or version was missing or wrong.
    StrictAuthentication,
    /// The method is switched off by a server property.
    MethodDisabled,
    /// The caller's IP address is not on the server's allow-list.
    AddressNotAllowed,
    /// `is_user` / `is_pwd` refused.
    Credentials,
    /// The key does not exist.
    UnknownKey,
    Other,
}

impl Refusal {
    pub fn of(text: &str) -> Refusal {
        let m = text.to_ascii_lowercase();
        let any = |words: &[&str]| words.iter().any(|w| m.contains(w));
        if any(&["strict", "x-qlm", "hash", "timestamp", "signature"]) {
            Refusal::StrictAuthentication
        } else if any(&["ip address", "address", "ip "])
            && any(&[
                "not allowed",
                "denied",
                "not authorized",
                "blocked",
                "forbidden",
            ])
        {
            Refusal::AddressNotAllowed
        } else if any(&[
            "disabled",
            "not enabled",
            "server property",
            "set the property",
        ]) {
            Refusal::MethodDisabled
        } else if is_unknown_key(&m) {
            Refusal::UnknownKey
        } else if any(&[
            "user",
            "password",
            "credential",
            "unauthorized",
            "not authorized",
        ]) {
            Refusal::Credentials
        } else {
            Refusal::Other
        }
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

fn plain_key(text: &str) -> Result<String, LicenseError> {
    if mentions_error(text) {
        return Err(LicenseError::Refused(excerpt(text)));
    }
    valid_key(text)
}

/// Is this an activation key? The shape is what keeps a one-word reply (`Unauthorized`, `OK`)
/// from being recorded, written back and acked as a key. QLM writes keys two ways: groups of
/// letters and digits joined by dashes (`FGGH0-S0K00-71B18-S868R-1F1J2-UQKPUN`, at least three
/// groups: `Bad-Request` is not a key), or one run of upper-case letters and digits
/// (`ValidateLicenseHttp`'s documented `<activationKey>`, 39 characters: at least 16, with a
/// letter and a digit: `UNAUTHORIZED` and `12345` are not keys).
pub fn looks_like_key(k: &str) -> bool {
    if k.len() > MAX_KEY_LEN {
        return false;
    }
    let mut groups = 0;
    let grouped = k.split('-').all(|g| {
        groups += 1;
        !g.is_empty() && g.bytes().all(|b| b.is_ascii_alphanumeric())
    }) && groups >= 3;
    let run = k.len() >= 16
        && k.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
        && k.bytes().any(|b| b.is_ascii_digit())
        && k.bytes().any(|b| b.is_ascii_uppercase());
    grouped || run
}

fn valid_key(k: &str) -> Result<String, LicenseError> {
    if looks_like_key(k) {
        Ok(k.to_owned())
    } else {
        Err(LicenseError::Unparseable(format!(
            "{NOT_A_KEY}: {}",
            excerpt(k)
        )))
    }
}
