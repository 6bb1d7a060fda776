//! Plugin configuration: the JSON from Envoy's `configuration`, parsed with serde, then validated
//! and resolved into [`Config`]. Secrets never appear in the JSON: it names environment variables,
//! which the caller resolves (the shell reads them from the VM environment at configure time).

use std::collections::BTreeMap;
use std::fmt;

use serde::Deserialize;

use crate::ids::SfId;
use crate::license::ProductArgs;
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
    /// Product Code → license-server arguments.
    pub products: BTreeMap<String, ProductArgs>,
}

#[derive(Debug)]
pub struct SalesforceConfig {
    pub cluster: String,
    pub authority: String,
    pub api_version: String,
    pub grant: Grant,
    pub contact: ContactField,
    pub writeback_field: Option<String>,
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
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
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

#[derive(Debug)]
pub struct LicenseConfig {
    pub cluster: String,
    pub authority: String,
    pub path_prefix: String,
    pub user: Secret,
    pub password: Secret,
    pub vendor: String,
    pub affiliate_id: Option<String>,
    pub max_concurrency: usize,
    pub timeout_ms: u64,
    /// Ask `RetrieveActivationKeyHttp` before re-issuing after an uncertain outcome.
    pub lookup_before_reissue: bool,
}

#[derive(Debug, Clone, Copy)]
pub struct LedgerConfig {
    /// Most order lines remembered per gateway; the oldest are evicted first.
    pub max_lines: usize,
    /// How long a claim on an order holds before another delivery may take it over.
    pub claim_ttl_ms: u64,
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

// ---- the JSON shape -------------------------------------------------------------------------

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawConfig {
    #[serde(default = "default_handler")]
    handler_name: String,
    #[serde(default = "default_max_body")]
    max_body_bytes: usize,
    allowed_org_ids: Vec<String>,
    #[serde(default)]
    inbound_secret: Option<RawInboundSecret>,
    #[serde(default = "default_deadline")]
    deadline_ms: u64,
    #[serde(default)]
    salesforce: Option<RawSalesforce>,
    #[serde(default)]
    license_server: Option<RawLicense>,
    #[serde(default)]
    products: BTreeMap<String, RawProduct>,
    #[serde(default)]
    ledger: Option<RawLedger>,
    #[serde(default = "default_state_prefix")]
    state_prefix: String,
}

fn default_handler() -> String {
    "QlmWebHookHandler".into()
}
fn default_max_body() -> usize {
    1024 * 1024
}
/// Salesforce hangs up after 60 s; answering by 45 s leaves room for the network and Envoy.
fn default_deadline() -> u64 {
    45_000
}
fn default_state_prefix() -> String {
    "keygate".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawInboundSecret {
    #[serde(default)]
    user_env: Option<String>,
    password_env: String,
    #[serde(default = "default_secret_header")]
    header: String,
}
fn default_secret_header() -> String {
    "x-keygate-secret".into()
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawSalesforce {
    cluster: String,
    authority: String,
    #[serde(default = "default_api_version")]
    api_version: String,
    #[serde(default = "default_grant")]
    grant: String,
    client_id_env: String,
    client_secret_env: String,
    #[serde(default)]
    username_env: Option<String>,
    #[serde(default)]
    password_env: Option<String>,
    #[serde(default = "default_contact")]
    contact: ContactField,
    #[serde(default)]
    writeback_field: Option<String>,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
}
fn default_api_version() -> String {
    "v60.0".into()
}
fn default_grant() -> String {
    "client_credentials".into()
}
fn default_contact() -> ContactField {
    ContactField::BillToContact
}
fn default_timeout() -> u64 {
    10_000
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLicense {
    cluster: String,
    authority: String,
    #[serde(default = "default_prefix")]
    path_prefix: String,
    user_env: String,
    password_env: String,
    #[serde(default = "default_vendor")]
    vendor: String,
    #[serde(default = "default_affiliate")]
    affiliate_id: Option<String>,
    #[serde(default = "default_concurrency")]
    max_concurrency: usize,
    #[serde(default = "default_timeout")]
    timeout_ms: u64,
    #[serde(default = "default_true")]
    lookup_before_reissue: bool,
}
fn default_prefix() -> String {
    "/qlmLicenseServer/qlmservice.asmx".into()
}
fn default_vendor() -> String {
    "salesforce".into()
}
fn default_affiliate() -> Option<String> {
    Some("salesforce".into())
}
fn default_concurrency() -> usize {
    4
}
fn default_true() -> bool {
    true
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawLedger {
    #[serde(default = "default_max_lines")]
    max_lines: usize,
    #[serde(default = "default_claim_ttl")]
    claim_ttl_ms: u64,
}
fn default_max_lines() -> usize {
    10_000
}
/// Longer than the deadline, so a live request never loses its claim.
fn default_claim_ttl() -> u64 {
    90_000
}

/// A product mapping: QLM's verbatim `&is_…` string, or the structured form.
#[derive(Deserialize)]
#[serde(untagged)]
enum RawProduct {
    Qlm(String),
    Structured(RawStructuredProduct),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStructuredProduct {
    productid: u32,
    majorversion: u32,
    minorversion: u32,
    #[serde(default)]
    productname: Option<String>,
    #[serde(default)]
    emailtemplate: Option<String>,
    #[serde(default)]
    args: BTreeMap<String, String>,
}

// ---- validation -----------------------------------------------------------------------------

impl Config {
    /// Parse, validate and resolve secrets through `env` (variable name → value).
    pub fn from_json(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let raw: RawConfig =
            serde_json::from_slice(json).map_err(|e| ConfigError(format!("{e}")))?;
        Config::validate(raw, env)
    }

    fn validate(
        raw: RawConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        if raw.handler_name.is_empty()
            || raw.handler_name.contains(['/', '?', '#'])
            || raw
                .handler_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return err("handler_name must be one non-empty path segment");
        }
        if !(1024..=16 * 1024 * 1024).contains(&raw.max_body_bytes) {
            return err("max_body_bytes must be between 1024 and 16777216");
        }
        if raw.allowed_org_ids.is_empty() {
            return err("allowed_org_ids must name at least one Salesforce organization id");
        }
        let mut allowed_orgs = Vec::new();
        for id in &raw.allowed_org_ids {
            match SfId::parse(id) {
                Some(sf) if sf.key_prefix() == "00D" => allowed_orgs.push(sf),
                _ => {
                    return err(format!(
                    "allowed_org_ids: '{id}' is not an organization id (00D…, 15 or 18 characters)"
                ))
                }
            }
        }
        if !(1_000..=58_000).contains(&raw.deadline_ms) {
            return err(
                "deadline_ms must be between 1000 and 58000 (Salesforce gives up after 60 s)",
            );
        }
        let inbound_secret = match raw.inbound_secret {
            None => None,
            Some(s) => {
                let header = s.header.to_ascii_lowercase();
                if header.is_empty()
                    || !header
                        .bytes()
                        .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
                {
                    return err("inbound_secret.header must be a header name");
                }
                Some(InboundSecret {
                    user: match &s.user_env {
                        Some(v) => Some(secret(env, v, "inbound_secret.user_env")?),
                        None => None,
                    },
                    password: secret(env, &s.password_env, "inbound_secret.password_env")?,
                    header,
                })
            }
        };
        let issuing = match (raw.salesforce, raw.license_server) {
            (None, None) => {
                if !raw.products.is_empty() {
                    return err(
                        "products are configured but salesforce and license_server are not",
                    );
                }
                None
            }
            (Some(sf), Some(lic)) => Some(Issuing {
                salesforce: validate_salesforce(sf, env)?,
                license: validate_license(lic, env)?,
                products: validate_products(raw.products)?,
            }),
            _ => return err("salesforce and license_server must be configured together"),
        };
        let ledger = match raw.ledger {
            None => LedgerConfig {
                max_lines: default_max_lines(),
                claim_ttl_ms: default_claim_ttl(),
            },
            Some(l) => LedgerConfig {
                max_lines: l.max_lines,
                claim_ttl_ms: l.claim_ttl_ms,
            },
        };
        if !(1..=1_000_000).contains(&ledger.max_lines) {
            return err("ledger.max_lines must be between 1 and 1000000");
        }
        if ledger.claim_ttl_ms <= raw.deadline_ms {
            return err("ledger.claim_ttl_ms must be longer than deadline_ms");
        }
        if raw.state_prefix.is_empty()
            || !raw
                .state_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err("state_prefix must be letters, digits, '_' or '-'");
        }
        Ok(Config {
            handler_name: raw.handler_name,
            max_body_bytes: raw.max_body_bytes,
            allowed_orgs,
            inbound_secret,
            deadline_ms: raw.deadline_ms,
            issuing,
            ledger,
            state_prefix: raw.state_prefix,
        })
    }
}

fn secret(
    env: &dyn Fn(&str) -> Option<String>,
    var: &str,
    field: &str,
) -> Result<Secret, ConfigError> {
    if var.is_empty() {
        return err(format!("{field} must name an environment variable"));
    }
    match env(var) {
        Some(v) if !v.is_empty() => Ok(Secret::new(v)),
        _ => err(format!(
            "environment variable {var} ({field}) is not set or empty; pass it with vm_config.environment_variables"
        )),
    }
}

fn check_upstream(
    section: &str,
    cluster: &str,
    authority: &str,
    timeout_ms: u64,
) -> Result<(), ConfigError> {
    if cluster.is_empty() {
        return err(format!("{section}.cluster must name an Envoy cluster"));
    }
    if authority.is_empty() || authority.contains(['/', ' ', '?', '#', '@']) {
        return err(format!("{section}.authority must be a host[:port]"));
    }
    if !(100..=60_000).contains(&timeout_ms) {
        return err(format!(
            "{section}.timeout_ms must be between 100 and 60000"
        ));
    }
    Ok(())
}

fn validate_salesforce(
    sf: RawSalesforce,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SalesforceConfig, ConfigError> {
    check_upstream("salesforce", &sf.cluster, &sf.authority, sf.timeout_ms)?;
    let v = sf.api_version.strip_prefix('v').unwrap_or("");
    let valid_version = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if !valid_version {
        return err("salesforce.api_version must look like v60.0");
    }
    let client_id = secret(env, &sf.client_id_env, "salesforce.client_id_env")?;
    let client_secret = secret(env, &sf.client_secret_env, "salesforce.client_secret_env")?;
    let grant = match sf.grant.as_str() {
        "client_credentials" => Grant::ClientCredentials {
            client_id,
            client_secret,
        },
        "password" => {
            let (Some(u), Some(p)) = (&sf.username_env, &sf.password_env) else {
                return err("salesforce.grant password needs username_env and password_env");
            };
            Grant::Password {
                client_id,
                client_secret,
                username: secret(env, u, "salesforce.username_env")?,
                password: secret(env, p, "salesforce.password_env")?,
            }
        }
        other => {
            return err(format!(
                "salesforce.grant '{other}' is not client_credentials or password"
            ))
        }
    };
    if let Some(f) = &sf.writeback_field {
        let ok = f.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && f.len() <= 80;
        if !ok {
            return err("salesforce.writeback_field must be an OrderItem field API name such as License_Keys__c");
        }
    }
    Ok(SalesforceConfig {
        cluster: sf.cluster,
        authority: sf.authority,
        api_version: sf.api_version,
        grant,
        contact: sf.contact,
        writeback_field: sf.writeback_field,
        timeout_ms: sf.timeout_ms,
    })
}

fn validate_license(
    l: RawLicense,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LicenseConfig, ConfigError> {
    check_upstream("license_server", &l.cluster, &l.authority, l.timeout_ms)?;
    let prefix = l.path_prefix.trim_end_matches('/').to_owned();
    if !l.path_prefix.starts_with('/') || prefix.contains(['?', '#', ' ']) {
        return err("license_server.path_prefix must be an absolute path without query, e.g. /qlmLicenseServer/qlmservice.asmx");
    }
    if !(1..=32).contains(&l.max_concurrency) {
        return err("license_server.max_concurrency must be between 1 and 32");
    }
    if l.vendor.is_empty() {
        return err("license_server.vendor must not be empty");
    }
    Ok(LicenseConfig {
        cluster: l.cluster,
        authority: l.authority,
        path_prefix: prefix,
        user: secret(env, &l.user_env, "license_server.user_env")?,
        password: secret(env, &l.password_env, "license_server.password_env")?,
        vendor: l.vendor,
        affiliate_id: l.affiliate_id.filter(|a| !a.is_empty()),
        max_concurrency: l.max_concurrency,
        timeout_ms: l.timeout_ms,
        lookup_before_reissue: l.lookup_before_reissue,
    })
}

/// QLM names its mapping properties `salesforce_pid_<ProductCode>`; accept both spellings of the key.
const QLM_PROPERTY_PREFIX: &str = "salesforce_pid_";

fn validate_products(
    raw: BTreeMap<String, RawProduct>,
) -> Result<BTreeMap<String, ProductArgs>, ConfigError> {
    let mut out = BTreeMap::new();
    for (key, product) in raw {
        let code = key
            .strip_prefix(QLM_PROPERTY_PREFIX)
            .unwrap_or(&key)
            .to_owned();
        if code.is_empty() || code.len() > 255 {
            return err(format!("products: '{key}' is not a Product Code"));
        }
        let args = match product {
            RawProduct::Qlm(s) => ProductArgs::from_qlm(&s),
            RawProduct::Structured(p) => ProductArgs::from_structured(
                p.productid,
                p.majorversion,
                p.minorversion,
                p.productname,
                p.emailtemplate,
                p.args,
            ),
        }
        .map_err(|e| ConfigError(format!("products.{key}: {e}")))?;
        if out.insert(code.clone(), args).is_some() {
            return err(format!("products: Product Code '{code}' is mapped twice"));
        }
    }
    Ok(out)
}
