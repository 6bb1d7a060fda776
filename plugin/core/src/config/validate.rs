//! From the JSON's shape (`json`) to a [`Config`]: what each value must mean (ranges, names that
//! go into paths and queries, fields that go together) and every secret resolved from the
//! environment. Each refusal names the field and what it must be, never a secret's value.

use serde_json::Value;

use super::json;
use super::{
    err, Config, ConfigError, ContactField, EtcdConfig, Grant, InboundSecret, Issuing,
    KeygenConfig, LedgerConfig, LicenseConfig, LicenseServer, Lifecycle, LineReference, QlmConfig,
    SalesforceConfig, StrictAuth, CLAIM_MARGIN_MS,
};
use crate::ids::SfId;
use crate::license::{QLM_LOOKUP, QLM_METHODS};
use crate::products::{KeygenTerms, Product, QlmArgs, Terms};
use crate::secret::Secret;
use crate::text::excerpt;

type Env<'a> = &'a dyn Fn(&str) -> Option<String>;

pub(super) fn config(raw: json::Root, env: Env<'_>) -> Result<Config, ConfigError> {
    let handler_name = raw.handler_name;
    if handler_name.is_empty()
        || handler_name.contains(['/', '?', '#'])
        || handler_name
            .chars()
            .any(|c| c.is_whitespace() || c.is_control())
    {
        return err("handler_name must be one non-empty path segment");
    }
    if !(1024..=16 * 1024 * 1024).contains(&raw.max_body_bytes) {
        return err("max_body_bytes must be between 1024 and 16777216");
    }
    let allowed_orgs = allowed_orgs(raw.allowed_org_ids)?;
    let deadline_ms = raw.deadline_ms;
    if !(1_000..=58_000).contains(&deadline_ms) {
        return err("deadline_ms must be between 1000 and 58000 (Salesforce gives up after 60 s)");
    }
    let inbound_secret = raw.inbound_secret.map(|o| inbound(o, env)).transpose()?;
    let issuing = match (raw.salesforce, raw.license_server) {
        (None, None) => {
            if raw.products.as_ref().is_some_and(|p| !p.is_empty()) || raw.lifecycle.is_some() {
                return err(
                    "products or lifecycle are configured but salesforce and license_server are not",
                );
            }
            None
        }
        (Some(sf), Some(lic)) => {
            let license = license(lic, env)?;
            let products = products(raw.products.unwrap_or_default(), &license.server)?;
            Some(Issuing {
                salesforce: salesforce(sf, env)?,
                license,
                products,
                lifecycle: lifecycle(raw.lifecycle.unwrap_or_default())?,
            })
        }
        _ => return err("salesforce and license_server must be configured together"),
    };
    let raw_ledger = raw.ledger.unwrap_or_default();
    let ledger = LedgerConfig {
        max_lines: raw_ledger.max_lines,
        claim_ttl_ms: raw_ledger.claim_ttl_ms,
        pending_grace_ms: raw_ledger.pending_grace_ms,
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
    let etcd = ledger_backend(&raw_ledger.backend, raw_ledger.etcd, env)?;
    if let Some(i) = &issuing {
        check_renewals(i, etcd.is_some())?;
    }
    if !(64 * 1024..=64 * 1024 * 1024).contains(&raw.max_reply_bytes) {
        return err("max_reply_bytes must be between 65536 and 67108864");
    }
    let state_prefix = raw.state_prefix;
    if state_prefix.is_empty()
        || !state_prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
    {
        return err("state_prefix must be letters, digits, '_' or '-'");
    }
    Ok(Config {
        handler_name,
        max_body_bytes: usize::try_from(raw.max_body_bytes).unwrap_or(usize::MAX),
        allowed_orgs,
        inbound_secret,
        deadline_ms,
        issuing,
        ledger,
        etcd,
        max_reply_bytes: usize::try_from(raw.max_reply_bytes).unwrap_or(usize::MAX),
        hold_request_headers: raw.hold_request_headers,
        state_prefix,
    })
}

/// `ledger.backend` and, for etcd, `ledger.etcd`.
fn ledger_backend(
    backend: &str,
    section: Option<json::Etcd>,
    env: Env<'_>,
) -> Result<Option<EtcdConfig>, ConfigError> {
    match (backend, section) {
        ("shared_data", None) => Ok(None),
        ("shared_data", Some(_)) => err("ledger.etcd is set but ledger.backend is not \"etcd\""),
        ("etcd", None) => err("ledger.backend \"etcd\" needs a ledger.etcd section"),
        ("etcd", Some(e)) => {
            let (cluster, authority, _) =
                upstream("ledger.etcd", e.cluster, e.authority, e.timeout_ms)?;
            if !(100..=10_000).contains(&e.timeout_ms) {
                return err("ledger.etcd.timeout_ms must be between 100 and 10000");
            }
            let prefix = e.prefix;
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
            let credentials = match (e.user_env, e.password_env) {
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
                timeout_ms: e.timeout_ms,
            }))
        }
        (other, _) => err(format!(
            "ledger.backend must be \"shared_data\" or \"etcd\", not \"{}\"",
            excerpt(other)
        )),
    }
}

fn allowed_orgs(list: Option<Vec<String>>) -> Result<Vec<SfId>, ConfigError> {
    let Some(list) = list else {
        return err("allowed_org_ids must be a list of Salesforce organization ids");
    };
    if list.is_empty() {
        return err("allowed_org_ids must name at least one Salesforce organization id");
    }
    list.iter()
        .map(|id| match SfId::parse(id) {
            Some(sf) if sf.key_prefix() == "00D" => Ok(sf),
            _ => err(format!(
                "allowed_org_ids: '{}' is not an organization id (00D…, 15 or 18 characters)",
                excerpt(id)
            )),
        })
        .collect()
}

fn inbound(o: json::InboundSecret, env: Env<'_>) -> Result<InboundSecret, ConfigError> {
    let header = o.header.to_ascii_lowercase();
    if header.is_empty()
        || !header
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
    {
        return err("inbound_secret.header must be a header name");
    }
    Ok(InboundSecret {
        user: match o.user_env {
            Some(v) => Some(secret(env, &v, "inbound_secret.user_env")?),
            None => None,
        },
        password: secret(env, &o.password_env, "inbound_secret.password_env")?,
        header,
    })
}

fn secret(env: Env<'_>, var: &str, field: &str) -> Result<Secret, ConfigError> {
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

/// Cluster, authority and timeout: common to every upstream.
fn upstream(
    section: &str,
    cluster: String,
    authority: String,
    timeout_ms: u64,
) -> Result<(String, String, u64), ConfigError> {
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

fn salesforce(o: json::Salesforce, env: Env<'_>) -> Result<SalesforceConfig, ConfigError> {
    let (cluster, authority, timeout_ms) =
        upstream("salesforce", o.cluster, o.authority, o.timeout_ms)?;
    let v = o.api_version.strip_prefix('v').unwrap_or("");
    let valid_version = v.split_once('.').is_some_and(|(a, b)| {
        !a.is_empty()
            && !b.is_empty()
            && a.bytes().all(|c| c.is_ascii_digit())
            && b.bytes().all(|c| c.is_ascii_digit())
    });
    if !valid_version {
        return err("salesforce.api_version must look like v60.0");
    }
    let client_id = secret(env, &o.client_id_env, "salesforce.client_id_env")?;
    let client_secret = secret(env, &o.client_secret_env, "salesforce.client_secret_env")?;
    let grant = match o.grant.as_str() {
        "client_credentials" => Grant::ClientCredentials {
            client_id,
            client_secret,
        },
        "password" => {
            let (Some(u), Some(p)) = (o.username_env, o.password_env) else {
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
                excerpt(other)
            ))
        }
    };
    let contact = match o.contact.as_str() {
        "BillToContact" => ContactField::BillToContact,
        "CustomerAuthorizedBy" => ContactField::CustomerAuthorizedBy,
        _ => return err("salesforce.contact must be BillToContact or CustomerAuthorizedBy"),
    };
    let writeback_field = field_name(
        o.writeback_field,
        "salesforce.writeback_field",
        "License_Keys__c",
    )?;
    let state_field = field_name(o.state_field, "salesforce.state_field", "License_State__c")?;
    if state_field.is_some() && state_field == writeback_field {
        return err("salesforce.state_field must differ from salesforce.writeback_field");
    }
    Ok(SalesforceConfig {
        cluster,
        authority,
        api_version: o.api_version,
        grant,
        contact,
        writeback_field,
        state_field,
        timeout_ms,
    })
}

/// An optional OrderItem field API name: it goes into the SOQL query and the write-back body.
fn field_name(
    name: Option<String>,
    field: &str,
    example: &str,
) -> Result<Option<String>, ConfigError> {
    if let Some(f) = &name {
        let ok = f.bytes().next().is_some_and(|b| b.is_ascii_alphabetic())
            && f.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            && f.len() <= 80;
        if !ok {
            return err(format!(
                "{field} must be an OrderItem field API name such as {example}"
            ));
        }
    }
    Ok(name)
}

fn lifecycle(o: json::Lifecycle) -> Result<Lifecycle, ConfigError> {
    let mut revoke_statuses = Vec::with_capacity(o.revoke_statuses.len());
    for s in &o.revoke_statuses {
        match s.trim() {
            "Activated" => return err("lifecycle.revoke_statuses may not contain Activated"),
            t if !t.is_empty() && t.len() <= 255 => revoke_statuses.push(t.to_owned()),
            _ => return err("lifecycle.revoke_statuses must be a list of Order Status values"),
        }
    }
    let renewal_field = field_name(o.renewal_field, "lifecycle.renewal_field", "Renews__c")?;
    if renewal_field.as_ref().is_some_and(|f| !f.ends_with("__c")) {
        return err(
            "lifecycle.renewal_field must be a custom OrderItem lookup field such as Renews__c",
        );
    }
    Ok(Lifecycle {
        revoke_statuses,
        reductions: o.reductions,
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

fn license(o: json::LicenseServer, env: Env<'_>) -> Result<LicenseConfig, ConfigError> {
    // The other server's fields: named, so a configuration written for one is not half-read as
    // the other's.
    let (foreign, belongs_to) = match o.kind.as_str() {
        "qlm" => (o.keygen_fields(), "Keygen"),
        "keygen" => (o.qlm_fields(), "QLM"),
        other => {
            return err(format!(
                "license_server.kind '{}' is not \"qlm\" or \"keygen\"",
                excerpt(other)
            ))
        }
    };
    if let Some(field) = foreign.first() {
        return err(format!(
            "license_server.{field} is a {belongs_to} field, but license_server.kind is \"{}\"",
            o.kind
        ));
    }
    if !(1..=32).contains(&o.max_concurrency) {
        return err("license_server.max_concurrency must be between 1 and 32");
    }
    let max_concurrency = usize::try_from(o.max_concurrency).unwrap_or(1);
    let keygen = o.kind == "keygen";
    let (cluster, authority, timeout_ms) = upstream(
        "license_server",
        o.cluster.clone(),
        o.authority.clone(),
        o.timeout_ms,
    )?;
    let server = if keygen {
        LicenseServer::Keygen(keygen_server(o.account, o.token_env, env)?)
    } else {
        LicenseServer::Qlm(qlm_server(o, env, &authority)?)
    };
    Ok(LicenseConfig {
        cluster,
        authority,
        max_concurrency,
        timeout_ms,
        server,
    })
}

fn keygen_server(
    account: Option<String>,
    token_env: Option<String>,
    env: Env<'_>,
) -> Result<KeygenConfig, ConfigError> {
    let Some(account) = account else {
        return err(
            "license_server.account is required with kind \"keygen\" (the account's slug or id)",
        );
    };
    // It goes into every path: a slug or a UUID.
    let slug_char = |b: u8| b.is_ascii_alphanumeric() || b == b'-' || b == b'_';
    if account.is_empty() || account.len() > 255 || !account.bytes().all(slug_char) {
        return err("license_server.account must be the Keygen account's slug or id (letters, digits, '-', '_')");
    }
    let Some(token_env) = token_env else {
        return err("license_server.token_env is required with kind \"keygen\" (the variable holding a product, environment or admin token)");
    };
    let token = secret(env, &token_env, "license_server.token_env")?;
    Ok(KeygenConfig {
        account,
        token,
        token_env,
    })
}

fn qlm_server(
    o: json::LicenseServer,
    env: Env<'_>,
    authority: &str,
) -> Result<QlmConfig, ConfigError> {
    if o.lookup_before_reissue == Some(false) {
        return err("license_server.lookup_before_reissue: false is no longer supported: keygate always asks RetrieveActivationKeyHttp before re-issuing a line whose outcome is unknown; remove the field");
    }
    let (Some(user_env), Some(password_env)) = (o.user_env, o.password_env) else {
        return err("license_server.user_env and license_server.password_env are required with kind \"qlm\" (the 3rd-party extension's user and password)");
    };
    let raw_prefix = o
        .path_prefix
        .unwrap_or_else(|| "/qlmLicenseServer/qlmservice.asmx".to_owned());
    let path_prefix = raw_prefix.trim_end_matches('/').to_owned();
    // It becomes part of every license call's `:path`: visible ASCII, no query or fragment.
    let path_char = |b: u8| b.is_ascii_graphic() && !matches!(b, b'?' | b'#' | b'%');
    if !raw_prefix.starts_with('/') || !path_prefix.bytes().all(path_char) {
        return err("license_server.path_prefix must be an absolute path without query, e.g. /qlmLicenseServer/qlmservice.asmx");
    }
    let vendor = o.vendor.unwrap_or_else(|| "salesforce".to_owned());
    if vendor.is_empty() {
        return err("license_server.vendor must not be empty");
    }
    let affiliate_id = match o.affiliate_id.unwrap_or_default() {
        json::Affiliate::Id(a) if !a.is_empty() => Some(a),
        _ => None,
    };
    let line_reference = match o.line_reference.as_deref().unwrap_or("is_userdata1") {
        "is_userdata1" => LineReference::UserData1,
        "is_orderid" => LineReference::OrderId,
        _ => {
            return err("license_server.line_reference must be \"is_userdata1\" or \"is_orderid\"")
        }
    };
    let strict_auth = o
        .strict_auth
        .map(|s| strict(s, env, authority, &path_prefix))
        .transpose()?;
    Ok(QlmConfig {
        line_reference,
        strict_auth,
        path_prefix,
        user: secret(env, &user_env, "license_server.user_env")?,
        password: secret(env, &password_env, "license_server.password_env")?,
        vendor,
        affiliate_id,
    })
}

fn strict(
    o: json::StrictAuth,
    env: Env<'_>,
    authority: &str,
    path_prefix: &str,
) -> Result<StrictAuth, ConfigError> {
    let api_key = secret(
        env,
        &o.api_key_env,
        "license_server.strict_auth.api_key_env",
    )?;
    let methods = match o.methods {
        // A stock server's list.
        None => vec![QLM_LOOKUP.to_owned()],
        Some(list) => {
            let mut methods = Vec::with_capacity(list.len());
            for name in &list {
                let known = QLM_METHODS
                    .iter()
                    .map(|(m, _)| *m)
                    .find(|k| k.eq_ignore_ascii_case(name));
                let Some(known) = known else {
                    return err(format!(
                        "license_server.strict_auth.methods: '{}' is not a method keygate calls ({})",
                        excerpt(name),
                        QLM_METHODS
                            .iter()
                            .map(|(m, _)| *m)
                            .collect::<Vec<_>>()
                            .join(", ")
                    ));
                };
                methods.push(known.to_owned());
            }
            methods
        }
    };
    let url_base = match o.url_base {
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

fn products(
    map: std::collections::BTreeMap<String, Value>,
    server: &LicenseServer,
) -> Result<Vec<(String, Product)>, ConfigError> {
    let keygen = matches!(server, LicenseServer::Keygen(_));
    let mut out: Vec<(String, Product)> = Vec::with_capacity(map.len());
    for (key, value) in map {
        let code = key
            .strip_prefix(QLM_PROPERTY_PREFIX)
            .unwrap_or(&key)
            .to_owned();
        if code.is_empty() || code.len() > 255 {
            return err(format!(
                "products: '{}' is not a Product Code",
                excerpt(&key)
            ));
        }
        let at = format!("products.{key}");
        let is_keygen_object = value.get("policy").is_some();
        let product = match value {
            v @ Value::Object(_) if keygen => {
                keygen_product(json::read_value(&at, v).map_err(ConfigError)?)
            }
            _ if keygen => Err("must be a Keygen policy, {\"policy\": \"<policy id>\"} (license_server.kind is \"keygen\")".to_owned()),
            Value::Object(_) if is_keygen_object => Err("is a Keygen policy, but license_server.kind is \"qlm\"".to_owned()),
            Value::String(s) => QlmArgs::from_qlm(&s).map(|args| Product {
                renewal: false,
                terms: Terms::Qlm(args),
            }),
            v @ Value::Object(_) => {
                structured_product(json::read_value(&at, v).map_err(ConfigError)?)
            }
            _ => Err("must be QLM's '&is_…' string or an object".to_owned()),
        }
        .map_err(|e| ConfigError(format!("{at}: {e}")))?;
        // Kept sorted as it is built: lookups are binary searches.
        match out.binary_search_by(|(c, _)| c.as_str().cmp(&code)) {
            Ok(_) => return err(format!("products: Product Code '{code}' is mapped twice")),
            Err(at) => out.insert(at, (code, product)),
        }
    }
    Ok(out)
}

fn keygen_product(o: json::KeygenProduct) -> Result<Product, String> {
    // The policy's id goes into the create request's body only; Keygen's ids are UUIDs, but a
    // self-hosted server's may differ: any visible ASCII.
    if o.policy.is_empty()
        || o.policy.len() > 255
        || !o.policy.bytes().all(|b| b.is_ascii_graphic())
    {
        return Err("policy must be the Keygen policy's id".into());
    }
    let seats_from_quantity = match o.seats.as_deref() {
        None => false,
        Some("quantity") => true,
        Some(_) => return Err("seats must be \"quantity\" (maxMachines follows the line's Quantity) or left out (the policy's own limits)".into()),
    };
    Ok(Product {
        renewal: o.renewal,
        terms: Terms::Keygen(KeygenTerms {
            policy: o.policy,
            seats_from_quantity,
        }),
    })
}

fn structured_product(o: json::Product) -> Result<Product, String> {
    let mut extra = Vec::with_capacity(o.args.len());
    for (k, v) in o.args {
        let v = match v {
            Value::String(s) => s,
            Value::Number(n) if n.is_u64() => n.to_string(),
            Value::Bool(b) => b.to_string(),
            _ => return Err(format!("args.{k} must be a string or number")),
        };
        extra.push((k, v));
    }
    let args = QlmArgs::from_structured(
        o.productid,
        o.majorversion,
        o.minorversion,
        o.productname,
        o.emailtemplate,
        extra,
    )?;
    // What RenewSubscriptionHttp adds: days on top of the current expiry, or a new date.
    if o.renewal && args.get("is_expduration").is_none() && args.get("is_expdate").is_none() {
        return Err("a renewal needs args.is_expduration or args.is_expdate".into());
    }
    Ok(Product {
        renewal: o.renewal,
        terms: Terms::Qlm(args),
    })
}
