//! Plugin configuration: the JSON from Envoy's `configuration` read into its shape (`json`:
//! derived, unknown fields refused, errors with the field's path), then validated and resolved
//! into [`Config`] (`validate`). Secrets never appear in the JSON: it names environment
//! variables, which the caller resolves (the shell reads them from the VM environment at
//! configure time).

mod json;
mod validate;

use std::fmt;

use crate::ids::SfId;
use crate::products::Product;
use crate::secret::Secret;

/// A validated configuration. Built once per `on_configure`, shared read-only by every request.
#[derive(Debug)]
pub struct Config {
    pub handler_name: String,
    pub max_body_bytes: usize,
    pub allowed_orgs: Vec<SfId>,
    pub inbound_secret: Option<InboundSecret>,
    pub deadline_ms: u64,
    pub issuing: Option<Issuing>,
    pub ledger: LedgerConfig,
    /// The fleet's ledger; `None`: Envoy shared data (one Envoy's own, volatile).
    pub etcd: Option<EtcdConfig>,
    /// Largest reply body read from Salesforce or the license server; a larger one is a failure.
    pub max_reply_bytes: usize,
    /// Keep a webhook request's headers from the route's upstream until the plugin answers.
    /// Needs the filter's `allow_on_headers_stop_iteration: true`, which Istio's WasmPlugin and
    /// Envoy Gateway cannot set; without it the headers go on (query and secret header removed)
    /// and the body never does.
    pub hold_request_headers: bool,
    /// Prefix of every shared-data key, so two plugin configurations never share state.
    pub state_prefix: String,
}

#[derive(Debug)]
pub struct InboundSecret {
    pub user: Option<Secret>,
    pub password: Secret,
    /// Lower-case header name that may carry the password instead of `is_pwd`.
    pub header: String,
}

/// Everything needed to turn an activated order into keys.
#[derive(Debug)]
pub struct Issuing {
    pub salesforce: SalesforceConfig,
    pub license: LicenseConfig,
    /// Product Code → what it stands for at the license server, sorted by code.
    pub products: Vec<(String, Product)>,
    /// The order lifecycle after activation (all off by default).
    pub lifecycle: Lifecycle,
}

/// `lifecycle`: what a cancelled order, a reduction order and a renewal line do to the keys.
#[derive(Debug, Default)]
pub struct Lifecycle {
    /// Order Status values that revoke every key of the order (an activated order restores them).
    pub revoke_statuses: Vec<String>,
    /// Reduction orders (`IsReductionOrder`) lower the original line's key.
    pub reductions: bool,
    /// OrderItem lookup field naming the line a renewal line renews (`Renews__c`).
    pub renewal_field: Option<String>,
}

impl Lifecycle {
    pub fn revokes(&self, status: &str) -> bool {
        self.revoke_statuses.iter().any(|s| s == status)
    }
}

#[derive(Debug)]
pub struct SalesforceConfig {
    pub cluster: String,
    pub authority: String,
    pub api_version: String,
    pub grant: Grant,
    pub contact: ContactField,
    pub writeback_field: Option<String>,
    /// OrderItem field that receives each line's state (`Issued`, `Revoked`, …) with its keys.
    pub state_field: Option<String>,
    pub timeout_ms: u64,
}

#[derive(Debug)]
pub enum Grant {
    ClientCredentials {
        client_id: Secret,
        client_secret: Secret,
    },
    Password {
        client_id: Secret,
        client_secret: Secret,
        username: Secret,
        /// Password with the security token appended.
        password: Secret,
    },
}

impl Grant {
    pub fn name(&self) -> &'static str {
        match self {
            Grant::ClientCredentials { .. } => "client_credentials",
            Grant::Password { .. } => "password",
        }
    }
}

/// Which Order lookup names the licensee: QLM's two Apex variants.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ContactField {
    BillToContact,
    CustomerAuthorizedBy,
}

impl ContactField {
    pub fn relationship(self) -> &'static str {
        match self {
            ContactField::BillToContact => "BillToContact",
            ContactField::CustomerAuthorizedBy => "CustomerAuthorizedBy",
        }
    }
}

/// `license_server`: where the license server is and how many calls it takes at once (every
/// server), and what is particular to the server `kind` names.
#[derive(Debug)]
pub struct LicenseConfig {
    pub cluster: String,
    pub authority: String,
    pub max_concurrency: usize,
    pub timeout_ms: u64,
    pub server: LicenseServer,
}

/// `license_server.kind`.
#[derive(Debug)]
pub enum LicenseServer {
    /// `"qlm"` (the default): Quick License Manager's HTTP API.
    Qlm(QlmConfig),
    /// `"keygen"`: Keygen's JSON:API.
    Keygen(KeygenConfig),
}

impl LicenseConfig {
    pub fn qlm(&self) -> Option<&QlmConfig> {
        match &self.server {
            LicenseServer::Qlm(q) => Some(q),
            LicenseServer::Keygen(_) => None,
        }
    }

    pub fn keygen(&self) -> Option<&KeygenConfig> {
        match &self.server {
            LicenseServer::Keygen(k) => Some(k),
            LicenseServer::Qlm(_) => None,
        }
    }
}

/// Quick License Manager: the HTTP API's path, the 3rd-party extension's credentials, and how
/// lines are referenced.
#[derive(Debug)]
pub struct QlmConfig {
    pub path_prefix: String,
    pub user: Secret,
    pub password: Secret,
    pub vendor: String,
    pub affiliate_id: Option<String>,
    /// The argument a line's OrderItem id is looked up by (it is sent under both on issue).
    pub line_reference: LineReference,
    /// QLM's strict authentication for the methods that require it (`None`: none do).
    pub strict_auth: Option<StrictAuth>,
}

/// Keygen: the account and the token that manages its licenses.
#[derive(Debug)]
pub struct KeygenConfig {
    /// The account's slug or id: every path is under `/v1/accounts/{account}`.
    pub account: String,
    /// A product, environment or admin token (`Authorization: Bearer`).
    pub token: Secret,
    /// The variable the token came from, to name in advice (never the token).
    pub token_env: String,
}

/// Which `RetrieveActivationKeyHttp` argument finds a line's keys. Both are sent on issue; the
/// lookup uses one alone, because QLM matches every argument it is given ("if both are specified,
/// both conditions must be met") and a server that dropped the other on issue would find nothing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum LineReference {
    /// `is_userdata1`: documented for the lookup and for `GetActivationKey` (the default).
    UserData1,
    /// `is_orderid`: documented for the lookup only, not for `GetActivationKeyWithExpiryDate`.
    OrderId,
}

impl LineReference {
    pub fn argument(self) -> &'static str {
        match self {
            LineReference::UserData1 => "is_userdata1",
            LineReference::OrderId => "is_orderid",
        }
    }
}

/// `license_server.strict_auth`: the 3rd-party extension's API key and where it applies.
#[derive(Debug)]
pub struct StrictAuth {
    pub api_key: Secret,
    /// QLM method names that are signed (the server property
    /// `security/strictAuthenticationHttpMethods`).
    pub methods: Vec<String>,
    /// The URL the server sees in front of each method name: it hashes that URL.
    pub url_base: String,
}

impl StrictAuth {
    pub fn applies_to(&self, method: &str) -> bool {
        self.methods.iter().any(|m| m.eq_ignore_ascii_case(method))
    }
}

#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Most order lines remembered per gateway; the oldest are evicted first.
    pub max_lines: usize,
    /// How long a claim on an order holds before another delivery may take it over.
    pub claim_ttl_ms: u64,
    /// How long after a license call's timeout the license server may still be working on it:
    /// until then a redelivery is told "busy" instead of looking the line up.
    pub pending_grace_ms: u64,
}

/// `ledger.backend: "etcd"`: the durable ledger a fleet of Envoys shares.
#[derive(Debug)]
pub struct EtcdConfig {
    pub cluster: String,
    pub authority: String,
    /// Prefix of every etcd key, ending in `/`.
    pub prefix: String,
    /// User and password for etcd's authentication, when it is enabled.
    pub credentials: Option<(Secret, Secret)>,
    pub timeout_ms: u64,
}

/// Why a configuration was refused. The text names fields and variables, never secret values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ConfigError(pub String);

impl fmt::Display for ConfigError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "invalid keygate configuration: {}", self.0)
    }
}

fn err<T>(msg: impl Into<String>) -> Result<T, ConfigError> {
    Err(ConfigError(msg.into()))
}

/// Salesforce hangs up after 60 s; answering by 45 s leaves room for the network and Envoy.
const DEFAULT_DEADLINE_MS: u64 = 45_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_LINES: usize = 10_000;
/// Longer than the deadline, so a live request never loses its claim.
const DEFAULT_CLAIM_TTL_MS: u64 = 90_000;
/// What a claim must outlive the deadline by: a reply in transit, clocks of two Envoys.
const CLAIM_MARGIN_MS: u64 = 10_000;
const DEFAULT_PENDING_GRACE_MS: u64 = 30_000;
const DEFAULT_MAX_REPLY_BYTES: usize = 4 * 1024 * 1024;
const DEFAULT_ETCD_TIMEOUT_MS: u64 = 2_000;

impl Config {
    /// Parse, validate and resolve secrets through `env` (variable name → value). A field of the
    /// wrong type, a missing one or one the configuration does not have is refused with its path.
    pub fn from_json(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: json::Root = json::read(json)?;
        validate::config(raw, env)
    }
}

impl Issuing {
    /// The license-server arguments for a Product Code, if it is mapped.
    pub fn product(&self, code: &str) -> Option<&Product> {
        self.products
            .binary_search_by(|(c, _)| c.as_str().cmp(code))
            .ok()
            .and_then(|i| self.products.get(i))
            .map(|(_, p)| p)
    }
}

impl Config {
    /// One line for the log when a configuration is loaded (names and counts, never secrets).
    pub fn summary(&self) -> String {
        let issuing = match &self.issuing {
            Some(i) => format!(
                "on ({} grant, {} product mapping(s), write-back {})",
                i.salesforce.grant.name(),
                i.products.len(),
                if i.salesforce.writeback_field.is_some() {
                    "on"
                } else {
                    "off"
                }
            ),
            None => "off".to_owned(),
        };
        format!(
            "handler '{}', {} allowed org(s), issuing {issuing}",
            self.handler_name,
            self.allowed_orgs.len()
        )
    }
}
