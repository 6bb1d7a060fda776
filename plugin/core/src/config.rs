//! Plugin configuration: the JSON from Envoy's `configuration`, walked as a `serde_json::Value`
//! (field by field, so an error names its path and unknown fields are refused), then validated
//! and resolved into [`Config`]. Secrets never appear in the JSON: it names environment variables,
//! which the caller resolves (the shell reads them from the VM environment at configure time).

use std::fmt;

use crate::ids::SfId;
use crate::products::ProductArgs;
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
    /// Product Code → license-server arguments, sorted by code.
    pub products: Vec<(String, ProductArgs)>,
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
    /// The argument a line's OrderItem id is looked up by (it is sent under both on issue).
    pub line_reference: LineReference,
    /// QLM's strict authentication for the methods that require it (`None`: none do).
    pub strict_auth: Option<StrictAuth>,
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

/// The QLM methods keygate calls: what `strict_auth.methods` may name.
pub const QLM_METHODS: &[&str] = &[
    "GetActivationKeyWithExpiryDate",
    "RetrieveActivationKeyHttp",
    "RevokeLicenseHttp",
    "UpdateLicenseHttp",
    "RenewSubscriptionHttp",
    "ValidateLicenseHttp",
    "PingHttp",
];
/// A stock server's strict-authentication list ("By default, the RetrieveActivationKeyHttp method
/// requires strict authentication": QLM's how-to on strict authentication).
pub const DEFAULT_STRICT_METHODS: &[&str] = &["RetrieveActivationKeyHttp"];

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

// ---- the JSON shape -------------------------------------------------------------------------
//
// The JSON is walked as a `serde_json::Value` (already needed for Salesforce replies) rather than
// through `#[derive(Deserialize)]`: one generic parser instead of a deserializer per struct keeps
// the .wasm far smaller. Unknown fields are refused, as `deny_unknown_fields` would.

use serde_json::{Map, Value};

/// One JSON object being read: every field must be known and of the right type.
struct Obj<'v> {
    path: &'static str,
    map: &'v Map<String, Value>,
}

impl<'v> Obj<'v> {
    fn new(path: &'static str, v: &'v Value) -> Result<Obj<'v>, ConfigError> {
        match v.as_object() {
            Some(map) => Ok(Obj { path, map }),
            None => err(format!("{} must be an object", display_path(path))),
        }
    }

    #[inline(never)]
    fn field(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_owned()
        } else {
            format!("{}.{key}", self.path)
        }
    }

    /// Refuse fields this object does not have (typos would otherwise be silently ignored).
    #[inline(never)]
    fn only(&self, known: &[&str]) -> Result<(), ConfigError> {
        match self.map.keys().find(|k| !known.contains(&k.as_str())) {
            Some(k) => err(format!("unknown field `{}`", self.field(k))),
            None => Ok(()),
        }
    }

    fn get(&self, key: &str) -> Option<&'v Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    #[inline(never)]
    fn string(&self, key: &str, default: Option<&str>) -> Result<String, ConfigError> {
        match (self.get(key), default) {
            (Some(Value::String(s)), _) => Ok(s.clone()),
            (Some(_), _) => err(format!("{} must be a string", self.field(key))),
            (None, Some(d)) => Ok(d.to_owned()),
            (None, None) => err(format!("missing field `{}`", self.field(key))),
        }
    }

    #[inline(never)]
    fn opt_string(&self, key: &str) -> Result<Option<String>, ConfigError> {
        match self.get(key) {
            None => Ok(None),
            Some(_) => self.string(key, None).map(Some),
        }
    }

    #[inline(never)]
    fn number(&self, key: &str, default: u64) -> Result<u64, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_u64()
                .ok_or_else(|| ConfigError(format!("{} must be a whole number", self.field(key)))),
        }
    }

    #[inline(never)]
    fn boolean(&self, key: &str, default: bool) -> Result<bool, ConfigError> {
        match self.get(key) {
            None => Ok(default),
            Some(v) => v
                .as_bool()
                .ok_or_else(|| ConfigError(format!("{} must be true or false", self.field(key)))),
        }
    }

    #[inline(never)]
    fn object(&self, key: &'static str) -> Result<Option<Obj<'v>>, ConfigError> {
        self.get(key).map(|v| Obj::new(key, v)).transpose()
    }
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the configuration"
    } else {
        path
    }
}

/// Salesforce hangs up after 60 s; answering by 45 s leaves room for the network and Envoy.
const DEFAULT_DEADLINE_MS: u64 = 45_000;
const DEFAULT_TIMEOUT_MS: u64 = 10_000;
const DEFAULT_MAX_LINES: u64 = 10_000;
/// Longer than the deadline, so a live request never loses its claim.
const DEFAULT_CLAIM_TTL_MS: u64 = 90_000;
/// What a claim must outlive the deadline by: a reply in transit, clocks of two workers.
const CLAIM_MARGIN_MS: u64 = 10_000;
const DEFAULT_PENDING_GRACE_MS: u64 = 30_000;
const DEFAULT_MAX_REPLY_BYTES: u64 = 4 * 1024 * 1024;
const DEFAULT_ETCD_TIMEOUT_MS: u64 = 2_000;

// ---- validation -----------------------------------------------------------------------------

impl Config {
    /// Parse, validate and resolve secrets through `env` (variable name → value).
    pub fn from_json(
        json: &[u8],
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Config, ConfigError> {
        let v: Value =
            serde_json::from_slice(json).map_err(|e| ConfigError(format!("not JSON: {e}")))?;
        let root = Obj::new("", &v)?;
        root.only(&[
            "handler_name",
            "max_body_bytes",
            "allowed_org_ids",
            "inbound_secret",
            "deadline_ms",
            "salesforce",
            "license_server",
            "products",
            "ledger",
            "state_prefix",
            "max_reply_bytes",
            "hold_request_headers",
            "lifecycle",
        ])?;

        let handler_name = root.string("handler_name", Some("QlmWebHookHandler"))?;
        if handler_name.is_empty()
            || handler_name.contains(['/', '?', '#'])
            || handler_name
                .chars()
                .any(|c| c.is_whitespace() || c.is_control())
        {
            return err("handler_name must be one non-empty path segment");
        }
        let max_body_bytes = root.number("max_body_bytes", 1024 * 1024)?;
        if !(1024..=16 * 1024 * 1024).contains(&max_body_bytes) {
            return err("max_body_bytes must be between 1024 and 16777216");
        }
        let allowed_orgs = allowed_orgs(root.get("allowed_org_ids"))?;
        let deadline_ms = root.number("deadline_ms", DEFAULT_DEADLINE_MS)?;
        if !(1_000..=58_000).contains(&deadline_ms) {
            return err(
                "deadline_ms must be between 1000 and 58000 (Salesforce gives up after 60 s)",
            );
        }
        let inbound_secret = root
            .object("inbound_secret")?
            .map(|o| inbound(&o, env))
            .transpose()?;
        let products = root.object("products")?;
        let lifecycle = root.object("lifecycle")?;
        let issuing = match (root.object("salesforce")?, root.object("license_server")?) {
            (None, None) => {
                if products.as_ref().is_some_and(|p| !p.map.is_empty()) || lifecycle.is_some() {
                    return err(
                        "products or lifecycle are configured but salesforce and license_server are not",
                    );
                }
                None
            }
            (Some(sf), Some(lic)) => {
                let issuing = Issuing {
                    salesforce: validate_salesforce(&sf, env)?,
                    license: validate_license(&lic, env)?,
                    products: match products {
                        Some(p) => validate_products(&p)?,
                        None => Vec::new(),
                    },
                    lifecycle: match lifecycle {
                        Some(l) => validate_lifecycle(&l)?,
                        None => Lifecycle::default(),
                    },
                };
                Some(issuing)
            }
            _ => return err("salesforce and license_server must be configured together"),
        };
        let ledger_obj = root.object("ledger")?;
        let ledger = match &ledger_obj {
            None => LedgerConfig {
                max_lines: DEFAULT_MAX_LINES as usize,
                claim_ttl_ms: DEFAULT_CLAIM_TTL_MS,
                pending_grace_ms: DEFAULT_PENDING_GRACE_MS,
            },
            Some(l) => {
                l.only(&[
                    "max_lines",
                    "claim_ttl_ms",
                    "pending_grace_ms",
                    "backend",
                    "etcd",
                ])?;
                LedgerConfig {
                    max_lines: usize::try_from(l.number("max_lines", DEFAULT_MAX_LINES)?)
                        .unwrap_or(usize::MAX),
                    claim_ttl_ms: l.number("claim_ttl_ms", DEFAULT_CLAIM_TTL_MS)?,
                    pending_grace_ms: l.number("pending_grace_ms", DEFAULT_PENDING_GRACE_MS)?,
                }
            }
        };
        let etcd = match &ledger_obj {
            None => None,
            Some(l) => ledger_backend(l, env)?,
        };
        if !(1..=1_000_000).contains(&ledger.max_lines) {
            return err("ledger.max_lines must be between 1 and 1000000");
        }
        if ledger.claim_ttl_ms < deadline_ms.saturating_add(CLAIM_MARGIN_MS) {
            return err(format!(
                "ledger.claim_ttl_ms must exceed deadline_ms by at least {CLAIM_MARGIN_MS} ms"
            ));
        }
        if ledger.pending_grace_ms > 3_600_000 {
            return err("ledger.pending_grace_ms must be at most 3600000 (one hour)");
        }
        if let Some(i) = &issuing {
            check_renewals(i, etcd.is_some())?;
        }
        let max_reply_bytes = root.number("max_reply_bytes", DEFAULT_MAX_REPLY_BYTES)?;
        if !(64 * 1024..=64 * 1024 * 1024).contains(&max_reply_bytes) {
            return err("max_reply_bytes must be between 65536 and 67108864");
        }
        let state_prefix = root.string("state_prefix", Some("keygate"))?;
        if state_prefix.is_empty()
            || !state_prefix
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
        {
            return err("state_prefix must be letters, digits, '_' or '-'");
        }
        Ok(Config {
            handler_name,
            max_body_bytes: max_body_bytes as usize,
            allowed_orgs,
            inbound_secret,
            deadline_ms,
            issuing,
            ledger,
            etcd,
            max_reply_bytes: max_reply_bytes as usize,
            hold_request_headers: root.boolean("hold_request_headers", false)?,
            state_prefix,
        })
    }
}

/// `ledger.backend` and, for etcd, `ledger.etcd`.
fn ledger_backend(
    l: &Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<Option<EtcdConfig>, ConfigError> {
    let backend = l.string("backend", Some("shared_data"))?;
    let section = l.object("etcd")?;
    match (backend.as_str(), section) {
        ("shared_data", None) => Ok(None),
        ("shared_data", Some(_)) => err("ledger.etcd is set but ledger.backend is not \"etcd\""),
        ("etcd", None) => err("ledger.backend \"etcd\" needs a ledger.etcd section"),
        ("etcd", Some(mut e)) => {
            e.path = "ledger.etcd";
            e.only(&[
                "cluster",
                "authority",
                "prefix",
                "user_env",
                "password_env",
                "timeout_ms",
            ])?;
            let (cluster, authority, _) = upstream(&e)?;
            let timeout_ms = e.number("timeout_ms", DEFAULT_ETCD_TIMEOUT_MS)?;
            if !(100..=10_000).contains(&timeout_ms) {
                return err("ledger.etcd.timeout_ms must be between 100 and 10000");
            }
            let prefix = e.string("prefix", Some("keygate/"))?;
            if prefix.is_empty()
                || !prefix.ends_with('/')
                || !prefix
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'/' | b'.'))
            {
                return err(
                    "ledger.etcd.prefix must be letters, digits, '_', '-', '.' or '/', ending in '/'",
                );
            }
            let credentials = match (e.opt_string("user_env")?, e.opt_string("password_env")?) {
                (None, None) => None,
                (Some(u), Some(p)) => Some((
                    secret(env, &u, "ledger.etcd.user_env")?,
                    secret(env, &p, "ledger.etcd.password_env")?,
                )),
                _ => return err("ledger.etcd.user_env and password_env go together"),
            };
            Ok(Some(EtcdConfig {
                cluster,
                authority,
                prefix,
                credentials,
                timeout_ms,
            }))
        }
        (other, _) => err(format!(
            "ledger.backend must be \"shared_data\" or \"etcd\", not \"{}\"",
            crate::text::excerpt(other)
        )),
    }
}

fn allowed_orgs(v: Option<&Value>) -> Result<Vec<SfId>, ConfigError> {
    let Some(list) = v.and_then(Value::as_array) else {
        return err("allowed_org_ids must be a list of Salesforce organization ids");
    };
    if list.is_empty() {
        return err("allowed_org_ids must name at least one Salesforce organization id");
    }
    list.iter()
        .map(|id| {
            let id = id.as_str().unwrap_or("");
            match SfId::parse(id) {
                Some(sf) if sf.key_prefix() == "00D" => Ok(sf),
                _ => err(format!(
                    "allowed_org_ids: '{}' is not an organization id (00D…, 15 or 18 characters)",
                    crate::text::excerpt(id)
                )),
            }
        })
        .collect()
}

fn inbound(
    o: &Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<InboundSecret, ConfigError> {
    o.only(&["user_env", "password_env", "header"])?;
    let header = o
        .string("header", Some("x-keygate-secret"))?
        .to_ascii_lowercase();
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return err("inbound_secret.header must be a header name");
    }
    Ok(InboundSecret {
        user: match o.opt_string("user_env")? {
            Some(v) => Some(secret(env, &v, "inbound_secret.user_env")?),
            None => None,
        },
        password: secret(
            env,
            &o.string("password_env", None)?,
            "inbound_secret.password_env",
        )?,
        header,
    })
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

/// Cluster, authority and timeout: common to both upstreams.
fn upstream(o: &Obj<'_>) -> Result<(String, String, u64), ConfigError> {
    let section = o.path;
    let cluster = o.string("cluster", None)?;
    let authority = o.string("authority", None)?;
    let timeout_ms = o.number("timeout_ms", DEFAULT_TIMEOUT_MS)?;
    if cluster.is_empty() {
        return err(format!("{section}.cluster must name an Envoy cluster"));
    }
    // It becomes the `:authority` of every call: host, port and IPv6 brackets only.
    let host_char =
        |b: u8| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_' | b':' | b'[' | b']');
    if authority.is_empty() || !authority.bytes().all(host_char) {
        return err(format!("{section}.authority must be a host[:port]"));
    }
    if !(100..=60_000).contains(&timeout_ms) {
        return err(format!(
            "{section}.timeout_ms must be between 100 and 60000"
        ));
    }
    Ok((cluster, authority, timeout_ms))
}

fn validate_salesforce(
    o: &Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<SalesforceConfig, ConfigError> {
    o.only(&[
        "cluster",
        "authority",
        "api_version",
        "grant",
        "client_id_env",
        "client_secret_env",
        "username_env",
        "password_env",
        "contact",
        "writeback_field",
        "state_field",
        "timeout_ms",
    ])?;
    let (cluster, authority, timeout_ms) = upstream(o)?;
    let api_version = o.string("api_version", Some("v60.0"))?;
    let v = api_version.strip_prefix('v').unwrap_or("");
    let valid_version = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if !valid_version {
        return err("salesforce.api_version must look like v60.0");
    }
    let client_id = secret(
        env,
        &o.string("client_id_env", None)?,
        "salesforce.client_id_env",
    )?;
    let client_secret = secret(
        env,
        &o.string("client_secret_env", None)?,
        "salesforce.client_secret_env",
    )?;
    let grant = match o.string("grant", Some("client_credentials"))?.as_str() {
        "client_credentials" => Grant::ClientCredentials {
            client_id,
            client_secret,
        },
        "password" => {
            let (Some(u), Some(p)) = (o.opt_string("username_env")?, o.opt_string("password_env")?)
            else {
                return err("salesforce.grant password needs username_env and password_env");
            };
            Grant::Password {
                client_id,
                client_secret,
                username: secret(env, &u, "salesforce.username_env")?,
                password: secret(env, &p, "salesforce.password_env")?,
            }
        }
        other => {
            return err(format!(
                "salesforce.grant '{}' is not client_credentials or password",
                crate::text::excerpt(other)
            ))
        }
    };
    let contact = match o.string("contact", Some("BillToContact"))?.as_str() {
        "BillToContact" => ContactField::BillToContact,
        "CustomerAuthorizedBy" => ContactField::CustomerAuthorizedBy,
        _ => return err("salesforce.contact must be BillToContact or CustomerAuthorizedBy"),
    };
    let writeback_field = field_name(o, "writeback_field", "License_Keys__c")?;
    let state_field = field_name(o, "state_field", "License_State__c")?;
    if state_field.is_some() && state_field == writeback_field {
        return err("salesforce.state_field must differ from salesforce.writeback_field");
    }
    Ok(SalesforceConfig {
        cluster,
        authority,
        api_version,
        grant,
        contact,
        writeback_field,
        state_field,
        timeout_ms,
    })
}

/// An optional OrderItem field API name: it goes into the SOQL query and the write-back body.
fn field_name(o: &Obj<'_>, key: &str, example: &str) -> Result<Option<String>, ConfigError> {
    let name = o.opt_string(key)?;
    if let Some(f) = &name {
        let ok = f.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && f.len() <= 80;
        if !ok {
            return err(format!(
                "{} must be an OrderItem field API name such as {example}",
                o.field(key)
            ));
        }
    }
    Ok(name)
}

fn validate_lifecycle(o: &Obj<'_>) -> Result<Lifecycle, ConfigError> {
    o.only(&["revoke_statuses", "reductions", "renewal_field"])?;
    let mut revoke_statuses = Vec::new();
    if let Some(v) = o.get("revoke_statuses") {
        let list = v.as_array().ok_or_else(|| {
            ConfigError("lifecycle.revoke_statuses must be a list of Order Status values".into())
        })?;
        for s in list {
            match s.as_str().map(str::trim) {
                Some("Activated") => {
                    return err("lifecycle.revoke_statuses may not contain Activated")
                }
                Some(t) if !t.is_empty() && t.len() <= 255 => revoke_statuses.push(t.to_owned()),
                _ => return err("lifecycle.revoke_statuses must be a list of Order Status values"),
            }
        }
    }
    let renewal_field = field_name(o, "renewal_field", "Renews__c")?;
    if renewal_field.as_ref().is_some_and(|f| !f.ends_with("__c")) {
        return err(
            "lifecycle.renewal_field must be a custom OrderItem lookup field such as Renews__c",
        );
    }
    Ok(Lifecycle {
        revoke_statuses,
        reductions: o.boolean("reductions", false)?,
        renewal_field,
    })
}

/// A renewal product renews the line its renewal line names: that takes `renewal_field`. A
/// renewal adds time on every call, so its write-ahead mark must outlive an Envoy restart: in
/// etcd, or else in Salesforce's state field.
fn check_renewals(i: &Issuing, etcd: bool) -> Result<(), ConfigError> {
    let Some((code, _)) = i.products.iter().find(|(_, p)| p.renewal) else {
        return Ok(());
    };
    if i.lifecycle.renewal_field.is_none() {
        return err(format!(
            "products.{code} is a renewal but lifecycle.renewal_field is not set"
        ));
    }
    if !etcd && i.salesforce.state_field.is_none() {
        return err(format!(
            "products.{code} is a renewal: set salesforce.state_field (or use the etcd ledger) so that a renewal is never applied twice"
        ));
    }
    Ok(())
}

fn validate_license(
    o: &Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
) -> Result<LicenseConfig, ConfigError> {
    o.only(&[
        "cluster",
        "authority",
        "path_prefix",
        "user_env",
        "password_env",
        "vendor",
        "affiliate_id",
        "max_concurrency",
        "timeout_ms",
        "lookup_before_reissue",
        "line_reference",
        "strict_auth",
    ])?;
    // Accepted only as `true`: an uncertain outcome is always looked up before any re-issue.
    if !o.boolean("lookup_before_reissue", true)? {
        return err("license_server.lookup_before_reissue: false is no longer supported: keygate always asks RetrieveActivationKeyHttp before re-issuing a line whose outcome is unknown; remove the field");
    }
    let (cluster, authority, timeout_ms) = upstream(o)?;
    let raw_prefix = o.string("path_prefix", Some("/qlmLicenseServer/qlmservice.asmx"))?;
    let path_prefix = raw_prefix.trim_end_matches('/').to_owned();
    // It becomes part of every license call's `:path`: visible ASCII, no query or fragment.
    let path_char = |b: u8| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%');
    if !raw_prefix.starts_with('/') || !path_prefix.bytes().all(path_char) {
        return err("license_server.path_prefix must be an absolute path without query, e.g. /qlmLicenseServer/qlmservice.asmx");
    }
    let max_concurrency = o.number("max_concurrency", 4)?;
    if !(1..=32).contains(&max_concurrency) {
        return err("license_server.max_concurrency must be between 1 and 32");
    }
    let vendor = o.string("vendor", Some("salesforce"))?;
    if vendor.is_empty() {
        return err("license_server.vendor must not be empty");
    }
    // An explicit null or "" turns the affiliate off; absent means QLM's Salesforce default.
    let affiliate_id = match o.map.get("affiliate_id") {
        None => Some("salesforce".to_owned()),
        Some(Value::Null) => None,
        Some(_) => o.opt_string("affiliate_id")?.filter(|a| !a.is_empty()),
    };
    let line_reference = match o.string("line_reference", Some("is_userdata1"))?.as_str() {
        "is_userdata1" => LineReference::UserData1,
        "is_orderid" => LineReference::OrderId,
        _ => {
            return err("license_server.line_reference must be \"is_userdata1\" or \"is_orderid\"")
        }
    };
    let strict_auth = match o.object("strict_auth")? {
        Some(s) => Some(validate_strict_auth(
            &Obj {
                path: "license_server.strict_auth",
                map: s.map,
            },
            env,
            &authority,
            &path_prefix,
        )?),
        None => None,
    };
    Ok(LicenseConfig {
        line_reference,
        strict_auth,
        cluster,
        authority,
        path_prefix,
        user: secret(env, &o.string("user_env", None)?, "license_server.user_env")?,
        password: secret(
            env,
            &o.string("password_env", None)?,
            "license_server.password_env",
        )?,
        vendor,
        affiliate_id,
        max_concurrency: max_concurrency as usize,
        timeout_ms,
    })
}

fn validate_strict_auth(
    o: &Obj<'_>,
    env: &dyn Fn(&str) -> Option<String>,
    authority: &str,
    path_prefix: &str,
) -> Result<StrictAuth, ConfigError> {
    o.only(&["api_key_env", "methods", "url_base"])?;
    let api_key = secret(
        env,
        &o.string("api_key_env", None)?,
        "license_server.strict_auth.api_key_env",
    )?;
    let methods = match o.get("methods") {
        None => DEFAULT_STRICT_METHODS
            .iter()
            .map(|m| (*m).to_owned())
            .collect(),
        Some(Value::Array(list)) => {
            let mut methods = Vec::with_capacity(list.len());
            for m in list {
                let Some(name) = m.as_str() else {
                    return err(
                        "license_server.strict_auth.methods must be a list of QLM method names",
                    );
                };
                let Some(known) = QLM_METHODS.iter().find(|k| k.eq_ignore_ascii_case(name)) else {
                    return err(format!(
                        "license_server.strict_auth.methods: '{}' is not a method keygate calls ({})",
                        crate::text::excerpt(name),
                        QLM_METHODS.join(", ")
                    ));
                };
                methods.push((*known).to_owned());
            }
            methods
        }
        Some(_) => {
            return err("license_server.strict_auth.methods must be a list of QLM method names")
        }
    };
    let url_base = match o.opt_string("url_base")? {
        Some(u) => {
            let u = u.trim_end_matches('/').to_owned();
            let rest = u
                .strip_prefix("https://")
                .or_else(|| u.strip_prefix("http://"))
                .unwrap_or("");
            // Hashed as written: visible ASCII, no query or fragment.
            if rest.is_empty()
                || !u
                    .bytes()
                    .all(|b| b.is_ascii_graphic() && !matches!(b, b'?' | b'#'))
            {
                return err("license_server.strict_auth.url_base must be an http(s) URL without query, e.g. https://licenses.example.com/qlmLicenseServer/qlmservice.asmx");
            }
            u
        }
        None => format!("https://{authority}{path_prefix}"),
    };
    Ok(StrictAuth {
        api_key,
        methods,
        url_base,
    })
}

/// QLM names its mapping properties `salesforce_pid_<ProductCode>`; accept both spellings of the key.
const QLM_PROPERTY_PREFIX: &str = "salesforce_pid_";

fn validate_products(o: &Obj<'_>) -> Result<Vec<(String, ProductArgs)>, ConfigError> {
    let mut out: Vec<(String, ProductArgs)> = Vec::with_capacity(o.map.len());
    for (key, value) in o.map {
        let code = key
            .strip_prefix(QLM_PROPERTY_PREFIX)
            .unwrap_or(key)
            .to_owned();
        if code.is_empty() || code.len() > 255 {
            return err(format!(
                "products: '{}' is not a Product Code",
                crate::text::excerpt(key)
            ));
        }
        let args = match value {
            Value::String(s) => ProductArgs::from_qlm(s),
            Value::Object(_) => structured_product(&Obj::new("products", value)?),
            _ => Err("must be QLM's '&is_…' string or an object".to_owned()),
        }
        .map_err(|e| ConfigError(format!("products.{key}: {e}")))?;
        // Kept sorted as it is built (lookups are binary searches; no sort routine in the .wasm).
        match out.binary_search_by(|(c, _)| c.as_str().cmp(&code)) {
            Ok(_) => return err(format!("products: Product Code '{code}' is mapped twice")),
            Err(at) => out.insert(at, (code, args)),
        }
    }
    Ok(out)
}

fn structured_product(o: &Obj<'_>) -> Result<ProductArgs, String> {
    o.only(&[
        "productid",
        "majorversion",
        "minorversion",
        "productname",
        "emailtemplate",
        "args",
        "renewal",
    ])
    .map_err(|e| e.0)?;
    let num = |k: &str| -> Result<u64, String> {
        o.get(k)
            .and_then(Value::as_u64)
            .ok_or_else(|| format!("{k} must be a whole number"))
    };
    let mut extra = Vec::new();
    if let Some(args) = o.get("args") {
        let args = args.as_object().ok_or("args must be an object")?;
        for (k, v) in args {
            let v = match v {
                Value::String(s) => s.clone(),
                Value::Number(n) if n.is_u64() => n.as_u64().unwrap_or_default().to_string(),
                Value::Bool(b) => b.to_string(),
                _ => return Err(format!("args.{k} must be a string or number")),
            };
            extra.push((k.clone(), v));
        }
    }
    let mut product = ProductArgs::from_structured(
        num("productid")?,
        num("majorversion")?,
        num("minorversion")?,
        o.opt_string("productname").map_err(|e| e.0)?,
        o.opt_string("emailtemplate").map_err(|e| e.0)?,
        extra,
    )?;
    if o.boolean("renewal", false).map_err(|e| e.0)? {
        // What RenewSubscriptionHttp adds: days on top of the current expiry, or a new date.
        if product.get("is_expduration").is_none() && product.get("is_expdate").is_none() {
            return Err("a renewal needs args.is_expduration or args.is_expdate".into());
        }
        product.renewal = true;
    }
    Ok(product)
}

impl Issuing {
    /// The license-server arguments for a Product Code, if it is mapped.
    pub fn product(&self, code: &str) -> Option<&ProductArgs> {
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
