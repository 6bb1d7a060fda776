//! Salesforce: OAuth 2.0 token request/response, the SOQL order query and its pages, and the
//! sObject Collections write-back. Pure functions over bytes; the flow decides when to call them.

use serde_json::Value;

use crate::config::{ContactField, Grant, SalesforceConfig};
use crate::ids::SfId;
use crate::license::Customer;
use crate::secret::Secret;
use crate::text::excerpt;

pub const TOKEN_PATH: &str = "/services/oauth2/token";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SalesforceError {
    /// The token endpoint refused the credentials (`invalid_grant`, `invalid_client`, …).
    LoginRefused { error: String, description: String },
    /// 401 with `errorCode` `INVALID_SESSION_ID`: log in again once.
    SessionInvalid,
    /// Any other non-success status, with Salesforce's `errorCode` when it gave one.
    Status { status: u16, error_code: String },
    /// A success status whose body is not what the API documents.
    Unparseable(String),
}

impl std::fmt::Display for SalesforceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            SalesforceError::LoginRefused { error, description } => {
                write!(f, "Salesforce login refused: {error} ({description})")
            }
            SalesforceError::SessionInvalid => write!(f, "Salesforce session expired or invalid"),
            SalesforceError::Status { status, error_code } if error_code.is_empty() => {
                write!(f, "Salesforce answered HTTP {status}")
            }
            SalesforceError::Status { status, error_code } => {
                write!(f, "Salesforce answered HTTP {status} {error_code}")
            }
            SalesforceError::Unparseable(m) => write!(f, "Salesforce reply not understood: {m}"),
        }
    }
}

// ---- OAuth ----------------------------------------------------------------------------------

/// The form body of a token request for the configured grant.
pub fn token_request_body(cfg: &SalesforceConfig) -> String {
    let mut form = form_urlencoded::Serializer::new(String::with_capacity(256));
    match &cfg.grant {
        Grant::ClientCredentials {
            client_id,
            client_secret,
        } => {
            form.append_pair("grant_type", "client_credentials");
            form.append_pair("client_id", client_id.expose());
            form.append_pair("client_secret", client_secret.expose());
        }
        Grant::Password {
            client_id,
            client_secret,
            username,
            password,
        } => {
            form.append_pair("grant_type", "password");
            form.append_pair("client_id", client_id.expose());
            form.append_pair("client_secret", client_secret.expose());
            form.append_pair("username", username.expose());
            form.append_pair("password", password.expose());
        }
    }
    form.finish()
}

/// An access token and where to use it.
#[derive(Debug, Clone)]
pub struct Token {
    pub access_token: Secret,
    /// `host[:port]` of `instance_url`: the `:authority` of REST calls.
    pub instance_authority: String,
}

impl Token {
    /// Serialized for proxy-wasm shared data, so one login serves every worker.
    pub fn to_shared(&self) -> Vec<u8> {
        format!(
            "{}\n{}",
            self.instance_authority,
            self.access_token.expose()
        )
        .into_bytes()
    }

    pub fn from_shared(bytes: &[u8]) -> Option<Token> {
        let s = std::str::from_utf8(bytes).ok()?;
        let (authority, token) = s.split_once('\n')?;
        if authority.is_empty() || token.is_empty() {
            return None;
        }
        Some(Token {
            access_token: Secret::new(token.to_owned()),
            instance_authority: authority.to_owned(),
        })
    }
}

/// Parse a token endpoint reply. There is no `expires_in`: expiry shows up later as a 401.
pub fn parse_token(status: u16, body: &[u8]) -> Result<Token, SalesforceError> {
    let v: Value = serde_json::from_slice(body).map_err(|_| {
        if (200..300).contains(&status) {
            SalesforceError::Unparseable("token reply is not JSON".into())
        } else {
            SalesforceError::Status {
                status,
                error_code: String::new(),
            }
        }
    })?;
    if !(200..300).contains(&status) {
        let error = v.get("error").and_then(Value::as_str);
        return Err(match error {
            Some(e) => SalesforceError::LoginRefused {
                error: excerpt(e),
                description: excerpt(
                    v.get("error_description")
                        .and_then(Value::as_str)
                        .unwrap_or(""),
                ),
            },
            None => SalesforceError::Status {
                status,
                error_code: String::new(),
            },
        });
    }
    let token = v
        .get("access_token")
        .and_then(Value::as_str)
        .filter(|t| !t.is_empty() && t.bytes().all(|b| b.is_ascii_graphic()))
        .ok_or_else(|| SalesforceError::Unparseable("token reply has no access_token".into()))?;
    let instance = v
        .get("instance_url")
        .and_then(Value::as_str)
        .ok_or_else(|| SalesforceError::Unparseable("token reply has no instance_url".into()))?;
    let instance_authority = authority_of(instance).ok_or_else(|| {
        SalesforceError::Unparseable(format!(
            "instance_url {} is not an http(s) URL",
            excerpt(instance)
        ))
    })?;
    Ok(Token {
        access_token: Secret::new(token.to_owned()),
        instance_authority,
    })
}

/// `https://host[:port][/…]` → `host[:port]`, refusing anything that could smuggle a header.
fn authority_of(url: &str) -> Option<String> {
    let rest = url
        .strip_prefix("https://")
        .or_else(|| url.strip_prefix("http://"))?;
    let authority = rest.split('/').next()?;
    let ok = !authority.is_empty()
        && authority
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b':' | b'[' | b']'));
    ok.then(|| authority.to_owned())
}

/// A REST error body is `[{"message":…,"errorCode":…}]`; match on `errorCode`, never `message`.
pub fn classify_error(status: u16, body: &[u8]) -> SalesforceError {
    let code = serde_json::from_slice::<Value>(body)
        .ok()
        .and_then(|v| {
            v.get(0)
                .and_then(|e| e.get("errorCode"))
                .and_then(Value::as_str)
                .map(excerpt)
        })
        .unwrap_or_default();
    if status == 401 && code == "INVALID_SESSION_ID" {
        SalesforceError::SessionInvalid
    } else {
        SalesforceError::Status {
            status,
            error_code: code,
        }
    }
}

// ---- SOQL -----------------------------------------------------------------------------------

/// One query for every activated order of a message. Ids are [`SfId`]s (letters and digits
/// only), so quoting them cannot be escaped; the field names come from validated config.
pub fn build_soql(ids: &[SfId], contact: ContactField, writeback: Option<&str>) -> String {
    let c = contact.relationship();
    let mut soql = format!(
        "SELECT Id, OrderNumber, Status, Account.Name, {c}Id, {c}.FirstName, {c}.LastName, \
         {c}.Email, {c}.Phone, (SELECT Id, Quantity, Product2.ProductCode, Product2.Name"
    );
    if let Some(f) = writeback {
        soql.push_str(", ");
        soql.push_str(f);
    }
    soql.push_str(" FROM OrderItems) FROM Order WHERE Id IN (");
    for (i, id) in ids.iter().enumerate() {
        if i > 0 {
            soql.push(',');
        }
        soql.push('\'');
        soql.push_str(id.as_str());
        soql.push('\'');
    }
    soql.push(')');
    soql
}

pub fn query_path(api_version: &str, soql: &str) -> String {
    let q: String = form_urlencoded::byte_serialize(soql.as_bytes()).collect();
    format!("/services/data/{api_version}/query?q={q}")
}

/// `nextRecordsUrl` becomes a `:path`: accept only a plain Salesforce data path.
pub fn checked_next_url(url: &str) -> Option<&str> {
    let ok = url.starts_with("/services/data/")
        && url.len() < 512
        && url
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'/' | b'.' | b'-' | b'_'));
    ok.then_some(url)
}

#[derive(Debug, Clone, PartialEq)]
pub struct Order {
    pub id: SfId,
    pub order_number: String,
    pub status: String,
    /// `Account.Name`: the licensee's company, also when the order has no contact.
    pub company: String,
    /// The configured contact; `None` when the lookup is empty.
    pub customer: Option<Customer>,
    pub items: Vec<OrderItem>,
    /// False when Salesforce paginated the OrderItems subquery (more lines than one page).
    pub items_complete: bool,
}

#[derive(Debug, Clone, PartialEq)]
pub struct OrderItem {
    pub id: SfId,
    pub quantity: f64,
    pub product_code: Option<String>,
    pub product_name: Option<String>,
    /// Current value of the write-back field: non-empty means this line was licensed before.
    pub written_back: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
pub struct QueryPage {
    pub orders: Vec<Order>,
    pub next_records_url: Option<String>,
}

pub fn parse_query(
    status: u16,
    body: &[u8],
    contact: ContactField,
    writeback: Option<&str>,
) -> Result<QueryPage, SalesforceError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, body));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| SalesforceError::Unparseable("query reply is not JSON".into()))?;
    let records = v
        .get("records")
        .and_then(Value::as_array)
        .ok_or_else(|| SalesforceError::Unparseable("query reply has no records".into()))?;
    let done = v.get("done").and_then(Value::as_bool).unwrap_or(true);
    let next_records_url = if done {
        None
    } else {
        let url = v
            .get("nextRecordsUrl")
            .and_then(Value::as_str)
            .unwrap_or("");
        Some(
            checked_next_url(url)
                .ok_or_else(|| {
                    SalesforceError::Unparseable(format!("bad nextRecordsUrl {}", excerpt(url)))
                })?
                .to_owned(),
        )
    };
    let mut orders = Vec::with_capacity(records.len());
    for r in records {
        orders.push(parse_order(r, contact, writeback)?);
    }
    Ok(QueryPage {
        orders,
        next_records_url,
    })
}

fn str_field<'a>(v: &'a Value, name: &str) -> Option<&'a str> {
    v.get(name).and_then(Value::as_str)
}

fn parse_order(
    r: &Value,
    contact: ContactField,
    writeback: Option<&str>,
) -> Result<Order, SalesforceError> {
    let id_raw = str_field(r, "Id").unwrap_or("");
    let id = SfId::parse(id_raw).ok_or_else(|| {
        SalesforceError::Unparseable(format!("order id {} is not valid", excerpt(id_raw)))
    })?;
    let company = r
        .get("Account")
        .and_then(|a| str_field(a, "Name"))
        .unwrap_or("")
        .to_owned();
    let customer = r
        .get(contact.relationship())
        .filter(|c| c.is_object())
        .map(|c| {
            let first = str_field(c, "FirstName").unwrap_or("");
            let last = str_field(c, "LastName").unwrap_or("");
            Customer {
                full_name: format!("{first} {last}").trim().to_owned(),
                email: str_field(c, "Email").unwrap_or("").to_owned(),
                company: company.clone(),
                phone: str_field(c, "Phone").unwrap_or("").to_owned(),
            }
        });
    // A parent-to-child subquery with no children may come back as null.
    let (items, items_complete) = match r.get("OrderItems") {
        None | Some(Value::Null) => (Vec::new(), true),
        Some(sub) => {
            let recs = sub
                .get("records")
                .and_then(Value::as_array)
                .ok_or_else(|| SalesforceError::Unparseable("OrderItems has no records".into()))?;
            let mut items = Vec::with_capacity(recs.len());
            for it in recs {
                items.push(parse_item(it, writeback)?);
            }
            (
                items,
                sub.get("done").and_then(Value::as_bool).unwrap_or(true),
            )
        }
    };
    Ok(Order {
        id,
        order_number: str_field(r, "OrderNumber").unwrap_or("").to_owned(),
        status: str_field(r, "Status").unwrap_or("").to_owned(),
        company,
        customer,
        items,
        items_complete,
    })
}

fn parse_item(it: &Value, writeback: Option<&str>) -> Result<OrderItem, SalesforceError> {
    let id_raw = str_field(it, "Id").unwrap_or("");
    let id = SfId::parse(id_raw).ok_or_else(|| {
        SalesforceError::Unparseable(format!("order item id {} is not valid", excerpt(id_raw)))
    })?;
    let product = it.get("Product2");
    Ok(OrderItem {
        id,
        quantity: it.get("Quantity").and_then(Value::as_f64).unwrap_or(0.0),
        product_code: product
            .and_then(|p| str_field(p, "ProductCode"))
            .map(str::to_owned),
        product_name: product
            .and_then(|p| str_field(p, "Name"))
            .map(str::to_owned),
        written_back: writeback
            .and_then(|f| str_field(it, f))
            .map(str::trim)
            .filter(|s| !s.is_empty())
            .map(str::to_owned),
    })
}

// ---- write-back -----------------------------------------------------------------------------

/// sObject Collections accepts at most 200 records per call.
pub const WRITEBACK_BATCH: usize = 200;

pub fn writeback_path(api_version: &str) -> String {
    format!("/services/data/{api_version}/composite/sobjects")
}

/// Body of one sObject Collections update: each line's keys on the configured OrderItem field.
/// Written by hand: serializing a `serde_json::Value` would pull float formatting into the .wasm.
pub fn writeback_body(field: &str, lines: &[(SfId, Vec<String>)]) -> String {
    let mut out = String::with_capacity(64 + lines.len() * (80 + field.len()));
    out.push_str(r#"{"allOrNone":false,"records":["#);
    for (i, (id, keys)) in lines.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        // Ids are alphanumeric and the field an API name (validated): only the keys need escaping.
        out.push_str(r#"{"attributes":{"type":"OrderItem"},"id":""#);
        out.push_str(id.as_str());
        out.push_str(r#"",""#);
        out.push_str(field);
        out.push_str(r#"":"#);
        json_string_into(&mut out, &writeback_value(keys));
        out.push('}');
    }
    out.push_str("]}");
    out
}

/// A JSON string literal.
fn json_string_into(out: &mut String, s: &str) {
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            c if (c as u32) < 0x20 => {
                const HEX: &[u8; 16] = b"0123456789abcdef";
                out.push_str("\\u00");
                out.push(char::from(
                    HEX.get((c as usize) >> 4).copied().unwrap_or(b'0'),
                ));
                out.push(char::from(
                    HEX.get((c as usize) & 15).copied().unwrap_or(b'0'),
                ));
            }
            c => out.push(c),
        }
    }
    out.push('"');
}

/// Per-record results of a write-back: the ids that failed, with Salesforce's error code.
pub fn parse_writeback(status: u16, body: &[u8]) -> Result<Vec<(String, String)>, SalesforceError> {
    if !(200..300).contains(&status) {
        return Err(classify_error(status, body));
    }
    let v: Value = serde_json::from_slice(body)
        .map_err(|_| SalesforceError::Unparseable("write-back reply is not JSON".into()))?;
    let results = v
        .as_array()
        .ok_or_else(|| SalesforceError::Unparseable("write-back reply is not an array".into()))?;
    let mut failed = Vec::new();
    for r in results {
        if r.get("success").and_then(Value::as_bool) != Some(true) {
            let id = str_field(r, "id").unwrap_or("").to_owned();
            let code = r
                .get("errors")
                .and_then(|e| e.get(0))
                .and_then(|e| str_field(e, "statusCode"))
                .unwrap_or("UNKNOWN");
            failed.push((excerpt(&id), excerpt(code)));
        }
    }
    Ok(failed)
}

/// The value written back for a line: its keys, one per line of a long text field.
pub fn writeback_value(keys: &[String]) -> String {
    keys.join("\n")
}
