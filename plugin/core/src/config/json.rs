//! The configuration's JSON shape, as a platform team writes it: every field, its type and its
//! default. Unknown fields are refused (`deny_unknown_fields`: a typo is never silently
//! ignored), and a refusal names the field's path (`serde_path_to_error`). What a value must
//! mean beyond its type is `validate`'s.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::Value;

use super::{
    ConfigError, DEFAULT_CLAIM_TTL_MS, DEFAULT_DEADLINE_MS, DEFAULT_ETCD_TIMEOUT_MS,
    DEFAULT_MAX_LINES, DEFAULT_MAX_REPLY_BYTES, DEFAULT_PENDING_GRACE_MS, DEFAULT_TIMEOUT_MS,
};

/// Read `T` from `json`, or say which field is wrong and why.
pub(super) fn read<'a, T: Deserialize<'a>>(json: &'a [u8]) -> Result<T, ConfigError> {
    let mut de = serde_json::Deserializer::from_slice(json);
    serde_path_to_error::deserialize(&mut de).map_err(|e| path_error(&e))
}

/// Read `T` from a value found at `path` (a product mapping's object).
pub(super) fn read_value<T: for<'de> Deserialize<'de>>(
    path: &str,
    value: Value,
) -> Result<T, String> {
    serde_path_to_error::deserialize(value).map_err(|e| {
        let at = e.path().to_string();
        let inner = e.inner().to_string();
        if at == "." {
            format!("{path}: {inner}")
        } else {
            format!("{path}.{at}: {inner}")
        }
    })
}

fn path_error(e: &serde_path_to_error::Error<serde_json::Error>) -> ConfigError {
    let inner = e.inner();
    if inner.is_syntax() || inner.is_eof() {
        return ConfigError(format!("not JSON: {inner}"));
    }
    let at = e.path().to_string();
    let at = if at == "." { "the configuration" } else { &at };
    ConfigError(format!("{at}: {inner}"))
}

fn default_handler_name() -> String {
    "QlmWebHookHandler".into()
}
fn default_max_body_bytes() -> u64 {
    1024 * 1024
}
fn default_deadline_ms() -> u64 {
    DEFAULT_DEADLINE_MS
}
fn default_timeout_ms() -> u64 {
    DEFAULT_TIMEOUT_MS
}
fn default_max_reply_bytes() -> u64 {
    DEFAULT_MAX_REPLY_BYTES as u64
}
fn default_state_prefix() -> String {
    "keygate".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Root {
    #[serde(default = "default_handler_name")]
    pub handler_name: String,
    #[serde(default = "default_max_body_bytes")]
    pub max_body_bytes: u64,
    /// Required; `None` is refused by `validate` with what it must be.
    pub allowed_org_ids: Option<Vec<String>>,
    pub inbound_secret: Option<InboundSecret>,
    #[serde(default = "default_deadline_ms")]
    pub deadline_ms: u64,
    pub salesforce: Option<Salesforce>,
    pub license_server: Option<LicenseServer>,
    /// Product Code (or `salesforce_pid_<code>`) → QLM's `&is_…` string or an object
    /// ([`Product`]), or a Keygen policy ([`KeygenProduct`]), told apart by `validate`.
    pub products: Option<BTreeMap<String, Value>>,
    pub ledger: Option<Ledger>,
    #[serde(default = "default_state_prefix")]
    pub state_prefix: String,
    #[serde(default = "default_max_reply_bytes")]
    pub max_reply_bytes: u64,
    #[serde(default)]
    pub hold_request_headers: bool,
    pub lifecycle: Option<Lifecycle>,
}

fn default_secret_header() -> String {
    "x-keygate-secret".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct InboundSecret {
    pub user_env: Option<String>,
    pub password_env: String,
    #[serde(default = "default_secret_header")]
    pub header: String,
}

fn default_api_version() -> String {
    "v60.0".into()
}
fn default_grant() -> String {
    "client_credentials".into()
}
fn default_contact() -> String {
    "BillToContact".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Salesforce {
    pub cluster: String,
    pub authority: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_api_version")]
    pub api_version: String,
    #[serde(default = "default_grant")]
    pub grant: String,
    pub client_id_env: String,
    pub client_secret_env: String,
    pub username_env: Option<String>,
    pub password_env: Option<String>,
    #[serde(default = "default_contact")]
    pub contact: String,
    pub writeback_field: Option<String>,
    pub state_field: Option<String>,
}

fn default_kind() -> String {
    "qlm".into()
}
fn default_max_concurrency() -> u64 {
    4
}

/// `license_server`. One shape for every server: the fields a `kind` does not use are refused by
/// `validate` with what they belong to, so a QLM field under Keygen (or the reverse) is named.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct LicenseServer {
    #[serde(default = "default_kind")]
    pub kind: String,
    pub cluster: String,
    pub authority: String,
    #[serde(default = "default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "default_max_concurrency")]
    pub max_concurrency: u64,
    // QLM's.
    pub path_prefix: Option<String>,
    pub user_env: Option<String>,
    pub password_env: Option<String>,
    pub vendor: Option<String>,
    /// Absent: QLM's Salesforce default; `null` or `""`: none.
    #[serde(default, deserialize_with = "present")]
    pub affiliate_id: Option<Affiliate>,
    /// Accepted only as `true` (an uncertain outcome is always looked up before a re-issue).
    pub lookup_before_reissue: Option<bool>,
    pub line_reference: Option<String>,
    pub strict_auth: Option<StrictAuth>,
    // Keygen's.
    pub account: Option<String>,
    pub token_env: Option<String>,
}

impl LicenseServer {
    /// The fields given that only QLM has.
    pub fn qlm_fields(&self) -> Vec<&'static str> {
        [
            ("path_prefix", self.path_prefix.is_some()),
            ("user_env", self.user_env.is_some()),
            ("password_env", self.password_env.is_some()),
            ("vendor", self.vendor.is_some()),
            ("affiliate_id", self.affiliate_id.is_some()),
            (
                "lookup_before_reissue",
                self.lookup_before_reissue.is_some(),
            ),
            ("line_reference", self.line_reference.is_some()),
            ("strict_auth", self.strict_auth.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }

    /// The fields given that only Keygen has.
    pub fn keygen_fields(&self) -> Vec<&'static str> {
        [
            ("account", self.account.is_some()),
            ("token_env", self.token_env.is_some()),
        ]
        .into_iter()
        .filter_map(|(name, given)| given.then_some(name))
        .collect()
    }
}

/// A field whose `null` means something: present (`Some`, even for `null`) or absent (`None`).
fn present<'de, D, T>(d: D) -> Result<Option<T>, D::Error>
where
    D: serde::Deserializer<'de>,
    T: Deserialize<'de>,
{
    T::deserialize(d).map(Some)
}

/// `license_server.affiliate_id`, where `null` means something (none) and absence another (the
/// default).
#[derive(Deserialize)]
#[serde(untagged)]
pub(super) enum Affiliate {
    Id(String),
    None(()),
}

impl Default for Affiliate {
    fn default() -> Self {
        Affiliate::Id("salesforce".into())
    }
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct StrictAuth {
    pub api_key_env: String,
    /// `None`: a stock server's list.
    pub methods: Option<Vec<String>>,
    pub url_base: Option<String>,
}

/// A Keygen product mapping: `{"policy": "…", "seats": "quantity", "renewal": true}`.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct KeygenProduct {
    pub policy: String,
    /// `"quantity"`: `maxMachines` follows the line's Quantity.
    pub seats: Option<String>,
    #[serde(default)]
    pub renewal: bool,
}

/// A QLM product mapping written as an object.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Product {
    pub productid: u64,
    pub majorversion: u64,
    pub minorversion: u64,
    pub productname: Option<String>,
    pub emailtemplate: Option<String>,
    /// More `is_…` arguments: strings, whole numbers or booleans.
    #[serde(default)]
    pub args: BTreeMap<String, Value>,
    #[serde(default)]
    pub renewal: bool,
}

fn default_max_lines() -> usize {
    DEFAULT_MAX_LINES
}
fn default_claim_ttl_ms() -> u64 {
    DEFAULT_CLAIM_TTL_MS
}
fn default_pending_grace_ms() -> u64 {
    DEFAULT_PENDING_GRACE_MS
}
fn default_backend() -> String {
    "shared_data".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Ledger {
    #[serde(default = "default_max_lines")]
    pub max_lines: usize,
    #[serde(default = "default_claim_ttl_ms")]
    pub claim_ttl_ms: u64,
    #[serde(default = "default_pending_grace_ms")]
    pub pending_grace_ms: u64,
    #[serde(default = "default_backend")]
    pub backend: String,
    pub etcd: Option<Etcd>,
}

impl Default for Ledger {
    fn default() -> Self {
        Ledger {
            max_lines: DEFAULT_MAX_LINES,
            claim_ttl_ms: DEFAULT_CLAIM_TTL_MS,
            pending_grace_ms: DEFAULT_PENDING_GRACE_MS,
            backend: default_backend(),
            etcd: None,
        }
    }
}

fn default_etcd_prefix() -> String {
    "keygate/".into()
}
fn default_etcd_timeout_ms() -> u64 {
    DEFAULT_ETCD_TIMEOUT_MS
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
pub(super) struct Etcd {
    pub cluster: String,
    pub authority: String,
    #[serde(default = "default_etcd_prefix")]
    pub prefix: String,
    pub user_env: Option<String>,
    pub password_env: Option<String>,
    #[serde(default = "default_etcd_timeout_ms")]
    pub timeout_ms: u64,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub(super) struct Lifecycle {
    #[serde(default)]
    pub revoke_statuses: Vec<String>,
    #[serde(default)]
    pub reductions: bool,
    pub renewal_field: Option<String>,
}
