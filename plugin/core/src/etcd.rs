//! The fleet's durable ledger on etcd, through its v3 JSON gateway: the request bodies and what
//! the replies mean. Keys and values travel base64-encoded; 64-bit numbers are JSON strings.
//!
//! Layout under the configured prefix:
//! - `claim/<order>`: the order's claim, `<owner> <until, ms since the epoch>`, taken with a
//!   mod-revision compare: only one delivery in the fleet holds an order. It holds until the time
//!   it names; after that another delivery may take it over (a compare on the revision it saw).
//!   The key also hangs on the Envoy's lease, but only so that etcd deletes it eventually: etcd
//!   renews every lease's TTL when its leader changes, so a lease is no clock to rely on.
//! - `line/<order>/<item>`: the line's state (the encoding of [`LineState`]), changed only by
//!   compare-and-swap on its mod revision while the claim is still this delivery's. Keyed under
//!   the order so that the claim reads every line of the order in the same transaction.

use base64ct::{Base64, Encoding as _};
use serde_json::Value;

use crate::ids::SfId;
use crate::ledger::LineState;

pub const GRANT_PATH: &str = "/v3/lease/grant";
pub const TXN_PATH: &str = "/v3/kv/txn";
pub const AUTH_PATH: &str = "/v3/auth/authenticate";

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EtcdError {
    /// 401: the auth token expired or was revoked (log in again).
    AuthInvalid,
    /// Any other refusal, with etcd's message (never a credential: etcd does not echo them).
    Refused {
        status: u16,
        message: String,
    },
    Unparseable(String),
}

impl std::fmt::Display for EtcdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            EtcdError::AuthInvalid => write!(f, "etcd refused the auth token (401)"),
            EtcdError::Refused { status, message } => {
                write!(f, "etcd answered {status}: {message}")
            }
            EtcdError::Unparseable(why) => write!(f, "unreadable etcd reply: {why}"),
        }
    }
}

/// One line as etcd holds it: its state and the revision a compare-and-swap must name
/// (0: the key does not exist).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LineRecord {
    pub item: SfId,
    pub state: LineState,
    pub mod_revision: i64,
}

/// What a claim transaction found.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claimed {
    /// Every order is ours, as of `revision` (the claims' mod revision, which later compares
    /// name); here is every line etcd holds for them.
    Taken {
        revision: i64,
        lines: Vec<LineRecord>,
    },
    /// A claim was not where the transaction expected it: what etcd holds for each order, in the
    /// order they were claimed.
    Contested(Vec<SeenClaim>),
}

/// A claim as a failed claim transaction found it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SeenClaim {
    /// 0: no claim (released meanwhile).
    pub mod_revision: i64,
    /// The delivery that holds it (`None`: no claim, or one this module cannot read).
    pub owner: Option<u64>,
    /// When it stops holding, ms since the epoch (`None`: no claim, or no time in it, as an
    /// earlier module wrote them: it then holds until its lease expires).
    pub until_ms: Option<u64>,
}

/// A claim's value: the delivery holding it, and until when.
pub fn claim_value(owner: u64, until_ms: u64) -> String {
    format!("{owner} {until_ms}")
}

fn read_claim_value(value: &[u8]) -> (Option<u64>, Option<u64>) {
    let text = std::str::from_utf8(value).unwrap_or_default();
    let mut parts = text.split(' ');
    let owner = parts.next().and_then(|o| o.parse().ok());
    let until = parts.next().and_then(|u| u.parse().ok());
    (owner, until)
}

/// Key names under the configured prefix.
pub struct Keys<'a> {
    pub prefix: &'a str,
}

impl Keys<'_> {
    pub fn claim(&self, order: &SfId) -> String {
        format!("{}claim/{}", self.prefix, order.to_18())
    }
    pub fn line(&self, order: &SfId, item: &SfId) -> String {
        format!("{}line/{}/{}", self.prefix, order.to_18(), item.to_18())
    }
    /// Every line of `order`: `[line/<order>/, line/<order>0)` (`0` follows `/`).
    fn lines_of(&self, order: &SfId) -> (String, String) {
        let start = format!("{}line/{}/", self.prefix, order.to_18());
        let end = format!("{}line/{}0", self.prefix, order.to_18());
        (start, end)
    }
}

fn b64(s: &[u8]) -> String {
    Base64::encode_string(s)
}

// The bodies are written as text: every value in them is base64 or a decimal number, which JSON
// needs no escaping for (the login's user and password go through serde_json). This keeps a
// serializer per request shape out of the .wasm.

/// A JSON array of already-rendered items.
fn array(items: &[String]) -> String {
    format!("[{}]", items.join(","))
}

fn put(key: &str, value: &[u8], lease: Option<&str>) -> String {
    let lease = lease
        .map(|l| format!(r#","lease":"{l}""#))
        .unwrap_or_default();
    format!(
        r#"{{"request_put":{{"key":"{}","value":"{}"{lease}}}}}"#,
        b64(key.as_bytes()),
        b64(value)
    )
}

fn compare(key: &str, target: &str, field: &str, value: &str) -> String {
    format!(
        r#"{{"key":"{}","result":"EQUAL","target":"{target}","{field}":"{value}"}}"#,
        b64(key.as_bytes())
    )
}

fn txn(compare: &[String], success: &[String], failure: &[String]) -> Vec<u8> {
    format!(
        r#"{{"compare":{},"success":{},"failure":{}}}"#,
        array(compare),
        array(success),
        array(failure)
    )
    .into_bytes()
}

pub fn grant_body(ttl_s: u64) -> Vec<u8> {
    format!(r#"{{"TTL":"{ttl_s}"}}"#).into_bytes()
}

pub fn auth_body(user: &str, password: &str) -> Vec<u8> {
    // Strings: serializing them cannot fail.
    let (u, p) = (
        serde_json::to_string(user).unwrap_or_default(),
        serde_json::to_string(password).unwrap_or_default(),
    );
    format!(r#"{{"name":{u},"password":{p}}}"#).into_bytes()
}

/// Take every order's claim at once, or none: each claim key must still be at the revision
/// given with its order (0: absent; else the revision of an expired claim being taken over, or
/// of this delivery's own claim when its first answer was lost). Either way, read every line of
/// those orders; on failure, also read the claims, to say which are held and until when.
pub fn claim_body(keys: &Keys<'_>, orders: &[(SfId, i64)], lease: &str, value: &str) -> Vec<u8> {
    let mut compares = Vec::new();
    let mut success = Vec::new();
    let mut failure = Vec::new();
    for (o, expected) in orders {
        let claim = keys.claim(o);
        compares.push(compare(
            &claim,
            "MOD",
            "mod_revision",
            &expected.to_string(),
        ));
        success.push(put(&claim, value.as_bytes(), Some(lease)));
        failure.push(format!(
            r#"{{"request_range":{{"key":"{}"}}}}"#,
            b64(claim.as_bytes())
        ));
    }
    for (o, _) in orders {
        let (start, end) = keys.lines_of(o);
        let range = format!(
            r#"{{"request_range":{{"key":"{}","range_end":"{}"}}}}"#,
            b64(start.as_bytes()),
            b64(end.as_bytes())
        );
        success.push(range.clone());
        failure.push(range);
    }
    txn(&compares, &success, &failure)
}

/// The claims are still at the revision this delivery wrote them at: nobody took one over after
/// it expired (not even another delivery of the same Envoy, on the same lease).
fn claims_still_ours(keys: &Keys<'_>, claims: &[(SfId, i64)]) -> Vec<String> {
    claims
        .iter()
        .map(|(o, rev)| compare(&keys.claim(o), "MOD", "mod_revision", &rev.to_string()))
        .collect()
}

/// Compare-and-swap one line: written only while the order's claim is ours (still at
/// `claim_revision`) and the line is unchanged since `mod_revision`.
pub fn line_cas_body(
    keys: &Keys<'_>,
    (order, claim_revision): (SfId, i64),
    item: &SfId,
    state: &LineState,
    mod_revision: i64,
) -> Vec<u8> {
    let line = keys.line(&order, item);
    let mut compares = claims_still_ours(keys, &[(order, claim_revision)]);
    compares.push(compare(
        &line,
        "MOD",
        "mod_revision",
        &mod_revision.to_string(),
    ));
    txn(&compares, &[put(&line, &state.encode(), None)], &[])
}

/// A part of the last transaction with records only (facts: no compare), for a message whose
/// records do not fit one transaction beside the claims' release.
pub fn records_body(keys: &Keys<'_>, records: &[(SfId, SfId, LineState)]) -> Vec<u8> {
    let puts: Vec<String> = records
        .iter()
        .map(|(order, item, state)| put(&keys.line(order, item), &state.encode(), None))
        .collect();
    txn(&[], &puts, &[])
}

/// The last transaction of a delivery: record each line this delivery licensed (issued, or
/// written back: facts, written whatever happened to the claims) and release the claims, if
/// they are all still ours (at the revisions given).
pub fn final_body(
    keys: &Keys<'_>,
    claims: &[(SfId, i64)],
    records: &[(SfId, SfId, LineState)],
) -> Vec<u8> {
    let puts: Vec<String> = records
        .iter()
        .map(|(order, item, state)| put(&keys.line(order, item), &state.encode(), None))
        .collect();
    let mut success = puts.clone();
    for (o, _) in claims {
        success.push(format!(
            r#"{{"request_delete_range":{{"key":"{}"}}}}"#,
            b64(keys.claim(o).as_bytes())
        ));
    }
    txn(&claims_still_ours(keys, claims), &success, &puts)
}

// ---- replies --------------------------------------------------------------------------------
//
// Walked as a `serde_json::Value` (the parser the configuration already uses): small replies,
// and no deserializer per reply shape in the .wasm.

fn field<'v>(v: &'v Value, key: &str) -> Option<&'v str> {
    v.get(key).and_then(Value::as_str)
}

/// A non-200 reply as an error (etcd's gateway answers `{"error","message","code"}`).
fn refusal(status: u16, body: &[u8]) -> EtcdError {
    if status == 401 {
        return EtcdError::AuthInvalid;
    }
    let v: Value = serde_json::from_slice(body).unwrap_or(Value::Null);
    let message = field(&v, "message")
        .or_else(|| field(&v, "error"))
        .map(crate::text::excerpt)
        .unwrap_or_else(|| crate::text::excerpt(&String::from_utf8_lossy(body)));
    EtcdError::Refused { status, message }
}

fn parse(status: u16, body: &[u8]) -> Result<Value, EtcdError> {
    if status != 200 {
        return Err(refusal(status, body));
    }
    serde_json::from_slice(body).map_err(|e| EtcdError::Unparseable(e.to_string()))
}

/// A 64-bit number, which etcd's gateway sends as a JSON string.
fn number(s: Option<&str>, what: &'static str) -> Result<i64, EtcdError> {
    s.and_then(|s| s.parse().ok())
        .ok_or(EtcdError::Unparseable(what.to_owned()))
}

fn succeeded(v: &Value) -> bool {
    v.get("succeeded").and_then(Value::as_bool) == Some(true)
}

fn responses(v: &Value) -> &[Value] {
    v.get("responses")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or(&[])
}

/// The lease id of a grant (kept as the decimal text etcd sent).
pub fn parse_grant(status: u16, body: &[u8]) -> Result<String, EtcdError> {
    let v = parse(status, body)?;
    let id = field(&v, "ID");
    number(id, "lease ID missing or not a number")?;
    Ok(id.unwrap_or_default().to_owned())
}

/// The token of an authentication (a secret: never logged).
pub fn parse_auth(status: u16, body: &[u8]) -> Result<String, EtcdError> {
    if status == 401 || status == 400 {
        // Wrong user or password: a refusal, not an expired token.
        return Err(EtcdError::Refused {
            status,
            message: "authentication failed; check the etcd user and password".into(),
        });
    }
    let v = parse(status, body)?;
    match field(&v, "token") {
        Some(t) if !t.is_empty() => Ok(t.to_owned()),
        _ => Err(EtcdError::Unparseable(
            "authentication without a token".into(),
        )),
    }
}

/// The reply to [`claim_body`] for `orders` (as many as it claimed) under `keys`.
pub fn parse_claim(
    status: u16,
    body: &[u8],
    keys: &Keys<'_>,
    orders: usize,
) -> Result<Claimed, EtcdError> {
    let v = parse(status, body)?;
    let ranges: Vec<Option<&Value>> = responses(&v)
        .iter()
        .map(|r| r.get("response_range"))
        .collect();
    if !succeeded(&v) {
        let seen = (0..orders)
            .map(|i| {
                let kv = ranges
                    .get(i)
                    .copied()
                    .flatten()
                    .and_then(|r| r.get("kvs")?.as_array()?.first());
                let Some(kv) = kv else {
                    return Ok(SeenClaim {
                        mod_revision: 0,
                        owner: None,
                        until_ms: None,
                    });
                };
                let value = Base64::decode_vec(field(kv, "value").unwrap_or_default())
                    .map_err(|_| EtcdError::Unparseable("claim value not base64".into()))?;
                let (owner, until_ms) = read_claim_value(&value);
                Ok(SeenClaim {
                    mod_revision: number(field(kv, "mod_revision"), "claim without mod_revision")?,
                    owner,
                    until_ms,
                })
            })
            .collect::<Result<Vec<_>, EtcdError>>()?;
        return Ok(Claimed::Contested(seen));
    }
    let mut lines = Vec::new();
    for r in ranges.iter().skip(orders).flatten() {
        let kvs = r.get("kvs").and_then(Value::as_array);
        for kv in kvs.into_iter().flatten() {
            lines.push(line_record(kv, keys)?);
        }
    }
    let revision = v.get("header").and_then(|h| field(h, "revision"));
    Ok(Claimed::Taken {
        revision: number(revision, "revision missing or not a number")?,
        lines,
    })
}

fn line_record(kv: &Value, keys: &Keys<'_>) -> Result<LineRecord, EtcdError> {
    let bad = |what: &'static str| EtcdError::Unparseable(what.to_owned());
    let key = Base64::decode_vec(field(kv, "key").unwrap_or_default())
        .map_err(|_| bad("line record with a key that is not base64"))?;
    let key =
        std::str::from_utf8(&key).map_err(|_| bad("line record with a key that is not text"))?;
    let item = key
        .strip_prefix(keys.prefix)
        .and_then(|k| k.rsplit('/').next())
        .and_then(SfId::parse)
        .ok_or_else(|| bad("line record with a key that names no order line"))?;
    let value = Base64::decode_vec(field(kv, "value").unwrap_or_default())
        .map_err(|_| bad("line record with a value that is not base64"))?;
    Ok(LineRecord {
        item,
        state: LineState::decode(&value),
        mod_revision: number(
            field(kv, "mod_revision"),
            "mod_revision missing or not a number",
        )?,
    })
}

/// The reply to a compare-and-swap: `Some(revision)` the line now has, `None` when the compare
/// failed (the claim expired and was taken over, or the line changed under us).
pub fn parse_cas(status: u16, body: &[u8]) -> Result<Option<i64>, EtcdError> {
    let v = parse(status, body)?;
    if !succeeded(&v) {
        return Ok(None);
    }
    let rev = v.get("header").and_then(|h| field(h, "revision"));
    number(rev, "revision missing or not a number").map(Some)
}

/// The reply to [`final_body`]: were the claims still ours (and released)?
pub fn parse_final(status: u16, body: &[u8]) -> Result<bool, EtcdError> {
    parse(status, body).map(|v| succeeded(&v))
}
