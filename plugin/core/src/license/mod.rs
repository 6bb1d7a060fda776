//! The license server, as the flow sees it: one seam ([`LicenseBackend`]) with a request for each
//! job (issue a line's keys, look them up, change a key, read its expiry) and what each reply
//! means, typed. Quick License Manager is `qlm` ([`Qlm`]); a second license server is a second
//! module implementing the trait and a value of the configuration, chosen in [`backend`]. What
//! is common to every server is here: who a license is for, the line to issue, a change to a key,
//! a request as it goes on the wire, and why a call failed.

mod qlm;

pub use qlm::{
    change, change_method, is_unknown_key, issue, looks_like_key, lookup, parse_change, parse_keys,
    parse_ping, parse_validate, ping, qlm_timestamp, server_property, sign, validate, Qlm, QlmCall,
    Refusal, Validation, AUTH_VERSION,
};
/// QLM's method table, and its lookup (a stock server's strict-authentication list).
pub use qlm::{LOOKUP as QLM_LOOKUP, METHODS as QLM_METHODS};

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

/// A change to a key that exists: the order's life after its activation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum KeyChange<'a> {
    Revoke,
    Restore,
    /// Activations allowed after a reduction.
    SetQuantity(u32),
    /// Adds the product's `is_expduration` (or sets its `is_expdate`).
    Renew(&'a ProductArgs),
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

/// Why a license-server call failed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LicenseError {
    /// Not a 2xx status.
    Status(u16),
    /// The body says it failed (QLM answers `Error: …`, or an `<error>` element).
    Refused(String),
    /// Neither what was asked for nor a recognisable error.
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

/// What the flow asks of a license server. Requests are built at `now_ms` (a server may sign
/// them with the time); replies are read from their status and body, bounded by the flow.
pub trait LicenseBackend {
    /// Create one line's keys, recorded under the line's reference.
    fn issue(&self, req: &IssueRequest<'_>, now_ms: u64) -> HttpRequest;
    /// Find the keys already issued under a line's reference.
    fn lookup(&self, reference: &str, now_ms: u64) -> HttpRequest;
    /// Change an existing key.
    fn change(&self, key: &str, change: KeyChange<'_>, now_ms: u64) -> HttpRequest;
    /// Read a key's expiry, without using the key up.
    fn read_expiry(&self, key: &str, now_ms: u64) -> HttpRequest;

    /// The keys an issue created (never empty when `Ok`, or the reply was not an issue).
    fn issued(&self, status: u16, body: &[u8]) -> Result<Vec<String>, LicenseError>;
    /// The keys a lookup found; empty: none issued under the reference.
    fn found(&self, status: u16, body: &[u8]) -> Result<Vec<String>, LicenseError>;
    /// The change was applied.
    fn change_applied(&self, status: u16, body: &[u8]) -> Result<(), LicenseError>;
    /// The key's expiry as the server writes it; `None`: it has none.
    fn expiry(&self, status: u16, body: &[u8]) -> Result<Option<String>, LicenseError>;

    /// The failure says the key does not exist (a line to skip, not to retry).
    fn is_unknown_key(&self, e: &LicenseError) -> bool;
    /// What the server calls the change, for logs and faults.
    fn name_of(&self, change: &KeyChange<'_>) -> &'static str;
    /// What to check on the server when it refuses the change.
    fn refusal_hint(&self, change: &KeyChange<'_>) -> String;
}

/// The license server the configuration names (QLM, so far: a second server makes this an enum
/// over the backends, dispatching each method).
pub fn backend(cfg: &LicenseConfig) -> impl LicenseBackend + '_ {
    Qlm { cfg }
}
