//! The license server, as the flow sees it: one seam ([`LicenseBackend`]) with a request for each
//! job (issue a line's keys, look them up, change a key, read its expiry) and what each reply
//! means, typed. Quick License Manager is `qlm` ([`Qlm`]), Keygen is `keygen` ([`Keygen`]);
//! [`backend`] picks the one `license_server.kind` names. A third server is a third module
//! implementing the trait, a variant of [`Backend`] and of the configuration's `LicenseServer`.
//! What is common to every server is here: who a license is for, the line to issue, a change to
//! a key, a request as it goes on the wire, a reply as it comes back, and why a call failed.

mod keygen;
mod qlm;

/// Keygen's reader of a resource (a policy, the token's bearer), for the start-up self-check.
pub use keygen::read_policy as keygen_read_policy;
pub use keygen::Keygen;
pub use qlm::{
    change, change_method, is_unknown_key, issue, looks_like_key, lookup, parse_change, parse_keys,
    parse_ping, parse_validate, ping, qlm_timestamp, server_property, sign, validate, Qlm, QlmCall,
    Refusal, Validation, AUTH_VERSION,
};
/// QLM's method table, and its lookup (a stock server's strict-authentication list).
pub use qlm::{LOOKUP as QLM_LOOKUP, METHODS as QLM_METHODS};

use std::ops::Deref;

use crate::config::{LicenseConfig, LicenseServer};
use crate::ids::SfId;
pub use crate::products::Product;

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
    pub product: &'a Product,
    pub quantity: u32,
    /// The line's reference: the license server records the key under it, and the lookup
    /// finds it by it.
    pub order_item_id: &'a SfId,
    pub order_number: &'a str,
    pub customer: &'a Customer,
}

/// A change to a key that exists: the order's life after its activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange<'a> {
    Revoke,
    Restore,
    /// Activations allowed after a reduction.
    SetQuantity(u32),
    /// QLM: adds the product's `is_expduration` (or sets its `is_expdate`); Keygen: the
    /// policy's duration.
    Renew(&'a Product),
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
        // The query and the body may hold credentials; the headers a token.
        let path = self
            .path
            .split_once('?')
            .map_or(self.path.as_str(), |(p, _)| p);
        write!(f, "{} {path}", self.verb)
    }
}

/// A license-server reply: its status, the headers the backend asked for
/// ([`LicenseBackend::reply_headers`]) and its body (bounded by the flow), read at `now_ms`.
pub struct LicenseReply<'a> {
    pub status: u16,
    pub headers: &'a [(&'static str, String)],
    pub body: &'a [u8],
    pub now_ms: u64,
}

impl LicenseReply<'_> {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Why a license-server call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseError {
    /// Not a 2xx status, and no error the server explains.
    Status(u16),
    /// The server says it failed (QLM answers `Error: …`, or an `<error>` element; Keygen a
    /// JSON:API error).
    Refused(String),
    /// Neither what was asked for nor a recognisable error.
    Unparseable(String),
    /// The key the call names does not exist there: a line to skip, not to retry.
    UnknownKey(String),
    /// The server throttles this account: nothing was done, and no call may go until `until_ms`.
    Throttled { until_ms: u64 },
}

impl std::fmt::Display for LicenseError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            LicenseError::Status(s) => write!(f, "license server answered HTTP {s}"),
            LicenseError::Refused(m) => write!(f, "license server refused: {m}"),
            LicenseError::Unparseable(m) => write!(f, "license server reply not understood: {m}"),
            LicenseError::UnknownKey(m) => write!(f, "license server does not know the key: {m}"),
            LicenseError::Throttled { until_ms } => write!(
                f,
                "license server is rate-limiting this account until {} UTC",
                crate::text::utc_datetime(*until_ms)
            ),
        }
    }
}

/// What the flow asks of a license server. Requests are built at `now_ms` (a server may sign
/// them with the time); replies are read from their status, headers and body.
pub trait LicenseBackend {
    /// Create one line's keys, recorded under the line's reference.
    fn issue(&self, req: &IssueRequest<'_>, now_ms: u64) -> HttpRequest;
    /// Find the keys already issued under a line's reference.
    fn lookup(&self, reference: &str, now_ms: u64) -> HttpRequest;
    /// Change an existing key.
    fn change(&self, key: &str, change: KeyChange<'_>, now_ms: u64) -> HttpRequest;
    /// Read a key's expiry, without using the key up.
    fn read_expiry(&self, key: &str, now_ms: u64) -> HttpRequest;
    /// The reply headers the readers below look at (the shell reads only these).
    fn reply_headers(&self) -> &'static [&'static str];

    /// The keys an issue created (never empty when `Ok`, or the reply was not an issue).
    fn issued(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError>;
    /// The keys a lookup found; empty: none issued under the reference.
    fn found(&self, reply: &LicenseReply<'_>) -> Result<Vec<String>, LicenseError>;
    /// `change` was applied (or the key already was as it asked).
    fn change_applied(
        &self,
        change: &KeyChange<'_>,
        reply: &LicenseReply<'_>,
    ) -> Result<(), LicenseError>;
    /// The key's expiry as the server writes it; `None`: it has none.
    fn expiry(&self, reply: &LicenseReply<'_>) -> Result<Option<String>, LicenseError>;

    /// What the server calls the change, for logs and faults.
    fn name_of(&self, change: &KeyChange<'_>) -> &'static str;
    /// What to check on the server when it refuses the change.
    fn refusal_hint(&self, change: &KeyChange<'_>) -> String;
}

/// The license server the configuration names.
pub enum Backend<'a> {
    Qlm(Qlm<'a>),
    Keygen(Keygen<'a>),
}

/// The flow calls the backend's methods through this: one `match`, not one per method.
impl<'a> Deref for Backend<'a> {
    type Target = dyn LicenseBackend + 'a;

    fn deref(&self) -> &Self::Target {
        match self {
            Backend::Qlm(q) => q,
            Backend::Keygen(k) => k,
        }
    }
}

/// The backend for `license_server`.
pub fn backend(cfg: &LicenseConfig) -> Backend<'_> {
    match &cfg.server {
        LicenseServer::Qlm(q) => Backend::Qlm(Qlm { cfg: q }),
        LicenseServer::Keygen(k) => Backend::Keygen(Keygen { cfg: k }),
    }
}
