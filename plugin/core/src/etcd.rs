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
use serde::{Deserialize, Serialize};

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

// ---- requests -------------------------------------------------------------------------------
//
// etcd's v3 JSON gateway: keys and values base64, 64-bit numbers as decimal text.

/// `/v3/kv/txn`: every compare holds → `success`, else `failure`.
#[derive(Serialize)]
struct Txn {
    compare: Vec<Compare>,
    success: Vec<Op>,
    failure: Vec<Op>,
}

impl Txn {
    fn body(&self) -> Vec<u8> {
        // Strings and vectors of them: serializing cannot fail.
        serde_json::to_vec(self).unwrap_or_default()
    }
}

/// The key's mod revision equals `mod_revision` (0: the key does not exist). The only compare
/// the ledger makes.
#[derive(Serialize)]
struct Compare {
    key: String,
    result: &'static str,
    target: &'static str,
    mod_revision: String,
}

fn unchanged_since(key: &str, mod_revision: i64) -> Compare {
    Compare {
        key: b64(key.as_bytes()),
        result: "EQUAL",
        target: "MOD",
        mod_revision: mod_revision.to_string(),
    }
}

/// One operation of a transaction, as etcd names them (`{"request_put": {…}}`).
#[derive(Serialize)]
enum Op {
    #[serde(rename = "request_put")]
    Put(Put),
    #[serde(rename = "request_range")]
    Range(Range),
    #[serde(rename = "request_delete_range")]
    DeleteRange(Range),
}

#[derive(Serialize)]
struct Put {
    key: String,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    lease: Option<String>,
}

/// One key, or with `range_end` every key in `[key, range_end)`.
#[derive(Serialize)]
struct Range {
    key: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    range_end: Option<String>,
}

fn put(key: &str, value: &[u8], lease: Option<&str>) -> Op {
    Op::Put(Put {
        key: b64(key.as_bytes()),
        value: b64(value),
        lease: lease.map(str::to_owned),
    })
}

fn get(key: &str) -> Op {
    Op::Range(Range {
        key: b64(key.as_bytes()),
        range_end: None,
    })
}

fn get_range((start, end): (String, String)) -> Op {
    Op::Range(Range {
        key: b64(start.as_bytes()),
        range_end: Some(b64(end.as_bytes())),
    })
}

fn delete(key: &str) -> Op {
    Op::DeleteRange(Range {
        key: b64(key.as_bytes()),
        range_end: None,
    })
}

#[derive(Serialize)]
struct Grant {
    #[serde(rename = "TTL")]
    ttl: String,
}

#[derive(Serialize)]
struct Authenticate<'a> {
    name: &'a str,
    password: &'a str,
}

pub fn grant_body(ttl_s: u64) -> Vec<u8> {
    serde_json::to_vec(&Grant {
        ttl: ttl_s.to_string(),
    })
    .unwrap_or_default()
}

pub fn auth_body(user: &str, password: &str) -> Vec<u8> {
    serde_json::to_vec(&Authenticate {
        name: user,
        password,
    })
    .unwrap_or_default()
}

/// Take every order's claim at once, or none: each claim key must still be at the revision
/// given with its order (0: absent; else the revision of an expired claim being taken over, or
/// of this delivery's own claim when its first answer was lost). Either way, read every line of
/// those orders; on failure, also read the claims, to say which are held and until when.
pub fn claim_body(keys: &Keys<'_>, orders: &[(SfId, i64)], lease: &str, value: &str) -> Vec<u8> {
    let mut txn = Txn {
        compare: Vec::new(),
        success: Vec::new(),
        failure: Vec::new(),
    };
    for (o, expected) in orders {
        let claim = keys.claim(o);
        txn.compare.push(unchanged_since(&claim, *expected));
        txn.success.push(put(&claim, value.as_bytes(), Some(lease)));
        txn.failure.push(get(&claim));
    }
    for (o, _) in orders {
        txn.success.push(get_range(keys.lines_of(o)));
        txn.failure.push(get_range(keys.lines_of(o)));
    }
    txn.body()
}

/// The claims are still at the revision this delivery wrote them at: nobody took one over after
/// it expired (not even another delivery of the same Envoy, on the same lease).
fn claims_still_ours(keys: &Keys<'_>, claims: &[(SfId, i64)]) -> Vec<Compare> {
    claims
        .iter()
        .map(|(o, rev)| unchanged_since(&keys.claim(o), *rev))
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
    let mut compare = claims_still_ours(keys, &[(order, claim_revision)]);
    compare.push(unchanged_since(&line, mod_revision));
    Txn {
        compare,
        success: vec![put(&line, &state.encode(), None)],
        failure: Vec::new(),
    }
    .body()
}

/// One line of [`marks_body`]: its order and the revision of the order's claim, the line, the
/// state to write, and the revision the line must still have.
pub struct LineMark<'a> {
    pub order: SfId,
    pub claim_revision: i64,
    pub item: SfId,
    pub state: &'a LineState,
    pub mod_revision: i64,
}

/// Compare-and-swap several lines at once (a message's pending marks): all written only while
/// every order's claim is ours and every line unchanged, or none. At most 64 lines (etcd's
/// default `--max-txn-ops` is 128, and each line may bring its order's compare).
pub fn marks_body(keys: &Keys<'_>, marks: &[LineMark<'_>]) -> Vec<u8> {
    let mut claims: Vec<(SfId, i64)> = Vec::with_capacity(marks.len());
    for m in marks {
        if !claims.iter().any(|(o, _)| o.same_record(&m.order)) {
            claims.push((m.order, m.claim_revision));
        }
    }
    let mut compare = claims_still_ours(keys, &claims);
    compare.extend(
        marks
            .iter()
            .map(|m| unchanged_since(&keys.line(&m.order, &m.item), m.mod_revision)),
    );
    Txn {
        compare,
        success: marks
            .iter()
            .map(|m| put(&keys.line(&m.order, &m.item), &m.state.encode(), None))
            .collect(),
        failure: Vec::new(),
    }
    .body()
}

fn record_puts(keys: &Keys<'_>, records: &[(SfId, SfId, LineState)]) -> Vec<Op> {
    records
        .iter()
        .map(|(order, item, state)| put(&keys.line(order, item), &state.encode(), None))
        .collect()
}

/// A part of the last transaction with records only (facts: no compare), for a message whose
/// records do not fit one transaction beside the claims' release.
pub fn records_body(keys: &Keys<'_>, records: &[(SfId, SfId, LineState)]) -> Vec<u8> {
    Txn {
        compare: Vec::new(),
        success: record_puts(keys, records),
        failure: Vec::new(),
    }
    .body()
}

/// The last transaction of a delivery: record each line this delivery licensed (issued, or
/// written back: facts, written whatever happened to the claims) and release the claims, if
/// they are all still ours (at the revisions given).
pub fn final_body(
    keys: &Keys<'_>,
    claims: &[(SfId, i64)],
    records: &[(SfId, SfId, LineState)],
) -> Vec<u8> {
    let mut success = record_puts(keys, records);
    success.extend(claims.iter().map(|(o, _)| delete(&keys.claim(o))));
    Txn {
        compare: claims_still_ours(keys, claims),
        success,
        failure: record_puts(keys, records),
    }
    .body()
}

// ---- replies --------------------------------------------------------------------------------
//
// What the ledger reads of etcd's answers; everything else in them is ignored.

/// A 64-bit number: etcd's gateway writes them as JSON strings; a number is taken too.
#[derive(Deserialize)]
#[serde(untagged)]
enum Int64 {
    Text(String),
    Number(i64),
}

impl Int64 {
    fn value(&self) -> Option<i64> {
        match self {
            Int64::Text(t) => t.parse().ok(),
            Int64::Number(n) => Some(*n),
        }
    }
}

/// A 64-bit number, which must be there.
fn number(n: Option<&Int64>, what: &'static str) -> Result<i64, EtcdError> {
    n.and_then(Int64::value)
        .ok_or(EtcdError::Unparseable(what.to_owned()))
}

#[derive(Deserialize)]
struct Header {
    revision: Option<Int64>,
}

#[derive(Deserialize)]
struct TxnReply {
    /// Left out (false) when a compare failed.
    #[serde(default)]
    succeeded: bool,
    header: Option<Header>,
    #[serde(default)]
    responses: Vec<OpReply>,
}

impl TxnReply {
    fn revision(&self) -> Result<i64, EtcdError> {
        let rev = self.header.as_ref().and_then(|h| h.revision.as_ref());
        number(rev, "revision missing or not a number")
    }
}

/// One operation's answer; only a range's is read.
#[derive(Deserialize)]
struct OpReply {
    response_range: Option<RangeReply>,
}

#[derive(Deserialize)]
struct RangeReply {
    #[serde(default)]
    kvs: Vec<Kv>,
}

#[derive(Deserialize)]
struct Kv {
    key: String,
    #[serde(default)]
    value: String,
    mod_revision: Option<Int64>,
}

#[derive(Deserialize)]
struct GrantReply {
    #[serde(rename = "ID")]
    id: Option<Int64>,
}

#[derive(Deserialize)]
struct AuthReply {
    token: Option<String>,
}

/// etcd's gateway answers a refusal with `{"error","message","code"}`.
#[derive(Deserialize)]
struct Refusal {
    message: Option<String>,
    error: Option<String>,
}

/// A non-200 reply as an error.
fn refusal(status: u16, body: &[u8]) -> EtcdError {
    if status == 401 {
        return EtcdError::AuthInvalid;
    }
    let said = serde_json::from_slice::<Refusal>(body)
        .ok()
        .and_then(|r| r.message.or(r.error));
    let message = match said {
        Some(m) => crate::text::excerpt(&m),
        None => crate::text::excerpt(&String::from_utf8_lossy(body)),
    };
    EtcdError::Refused { status, message }
}

fn parse<'de, T: Deserialize<'de>>(status: u16, body: &'de [u8]) -> Result<T, EtcdError> {
    if status != 200 {
        return Err(refusal(status, body));
    }
    serde_json::from_slice(body).map_err(|e| EtcdError::Unparseable(e.to_string()))
}

/// The lease id of a grant (kept as the decimal text etcd understands).
pub fn parse_grant(status: u16, body: &[u8]) -> Result<String, EtcdError> {
    let reply: GrantReply = parse(status, body)?;
    number(reply.id.as_ref(), "lease ID missing or not a number").map(|id| id.to_string())
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
    let reply: AuthReply = parse(status, body)?;
    match reply.token {
        Some(t) if !t.is_empty() => Ok(t),
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
    let reply: TxnReply = parse(status, body)?;
    let first_kv = |i: usize| {
        reply
            .responses
            .get(i)
            .and_then(|r| r.response_range.as_ref())
            .and_then(|r| r.kvs.first())
    };
    if !reply.succeeded {
        let seen = (0..orders)
            .map(|i| match first_kv(i) {
                None => Ok(SeenClaim {
                    mod_revision: 0,
                    owner: None,
                    until_ms: None,
                }),
                Some(kv) => {
                    let value = Base64::decode_vec(&kv.value)
                        .map_err(|_| EtcdError::Unparseable("claim value not base64".into()))?;
                    let (owner, until_ms) = read_claim_value(&value);
                    Ok(SeenClaim {
                        mod_revision: number(
                            kv.mod_revision.as_ref(),
                            "claim without mod_revision",
                        )?,
                        owner,
                        until_ms,
                    })
                }
            })
            .collect::<Result<Vec<_>, EtcdError>>()?;
        return Ok(Claimed::Contested(seen));
    }
    let mut lines = Vec::new();
    for r in reply.responses.iter().skip(orders) {
        for kv in r.response_range.iter().flat_map(|r| &r.kvs) {
            lines.push(line_record(kv, keys)?);
        }
    }
    Ok(Claimed::Taken {
        revision: reply.revision()?,
        lines,
    })
}

fn line_record(kv: &Kv, keys: &Keys<'_>) -> Result<LineRecord, EtcdError> {
    let bad = |what: &'static str| EtcdError::Unparseable(what.to_owned());
    let key = Base64::decode_vec(&kv.key)
        .map_err(|_| bad("line record with a key that is not base64"))?;
    let key =
        std::str::from_utf8(&key).map_err(|_| bad("line record with a key that is not text"))?;
    let item = key
        .strip_prefix(keys.prefix)
        .and_then(|k| k.rsplit('/').next())
        .and_then(SfId::parse)
        .ok_or_else(|| bad("line record with a key that names no order line"))?;
    let value = Base64::decode_vec(&kv.value)
        .map_err(|_| bad("line record with a value that is not base64"))?;
    Ok(LineRecord {
        item,
        state: LineState::decode(&value),
        mod_revision: number(
            kv.mod_revision.as_ref(),
            "mod_revision missing or not a number",
        )?,
    })
}

/// The reply to a compare-and-swap: `Some(revision)` the line now has, `None` when the compare
/// failed (the claim expired and was taken over, or the line changed under us).
pub fn parse_cas(status: u16, body: &[u8]) -> Result<Option<i64>, EtcdError> {
    let reply: TxnReply = parse(status, body)?;
    if !reply.succeeded {
        return Ok(None);
    }
    reply.revision().map(Some)
}

/// The reply to [`final_body`]: were the claims still ours (and released)?
pub fn parse_final(status: u16, body: &[u8]) -> Result<bool, EtcdError> {
    parse::<TxnReply>(status, body).map(|r| r.succeeded)
}
