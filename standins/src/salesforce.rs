//! The Salesforce stand-in: OAuth token endpoint, SOQL query (+ `nextRecordsUrl` pages) and the
//! sObject Collections update used to write license keys back to order products.

use std::collections::{BTreeMap, HashMap};
use std::io;
use std::path::Path;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{json, Map, Value};

use crate::http::{parse_form, Request, Response};
use crate::ids::{base64, is_sf_id, sf_id18};
use crate::record::Endpoint;
use crate::state::{Shared, State};

pub const CLIENT_ID: &str = "standin-client-id";
pub const CLIENT_SECRET: &str = "standin-client-secret";
pub const USERNAME: &str = "integration@example.com";
/// The password with the security token appended, as the password grant wants it.
pub const PASSWORD: &str = "standin-passwordTOKEN";
pub const ORG_ID: &str = "00D5Y000001MPM7UAO";

/// The version the fixture's `attributes.url` values are written with; rewritten per request.
const FIXTURE_VERSION: &str = "v60.0";
/// sObject Collections take at most 200 records per call.
const MAX_COLLECTION_RECORDS: usize = 200;
/// `License_Keys__c` is a long text area: 131,072 characters at most.
const MAX_TEXT_FIELD: usize = 131_072;

/// The fixture: Order records keyed by 18-character id, as `GET query` returns them.
#[derive(Debug, Clone)]
pub struct Orders {
    by_id: BTreeMap<String, Value>,
    /// 15-character base → 18-character order id (SOQL accepts either form).
    order_base: HashMap<String, String>,
    /// 15-character base → 18-character order product id.
    item_base: HashMap<String, String>,
}

impl Orders {
    pub fn load(path: &Path) -> io::Result<Orders> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            io::Error::new(e.kind(), format!("orders fixture {}: {e}", path.display()))
        })?;
        Orders::from_json(&text).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("orders fixture {}: {e}", path.display()),
            )
        })
    }

    pub fn from_json(text: &str) -> Result<Orders, String> {
        let by_id: BTreeMap<String, Value> =
            serde_json::from_str(text).map_err(|e| e.to_string())?;
        let mut order_base = HashMap::new();
        let mut item_base = HashMap::new();
        for (id, order) in &by_id {
            if id.len() != 18 || !is_sf_id(id) {
                return Err(format!("order key {id:?} is not an 18-character id"));
            }
            if order.get("Id").and_then(Value::as_str) != Some(id.as_str()) {
                return Err(format!("order {id}: \"Id\" differs from its key"));
            }
            if order.pointer("/attributes/type").and_then(Value::as_str) != Some("Order") {
                return Err(format!("order {id}: attributes.type is not \"Order\""));
            }
            order_base.insert(id.get(..15).unwrap_or(id).to_owned(), id.clone());
            match order.get("OrderItems") {
                None | Some(Value::Null) => {}
                Some(items) => {
                    let records = items
                        .get("records")
                        .and_then(Value::as_array)
                        .ok_or_else(|| format!("order {id}: OrderItems.records is not a list"))?;
                    for item in records {
                        let iid = item
                            .get("Id")
                            .and_then(Value::as_str)
                            .filter(|i| i.len() == 18 && is_sf_id(i))
                            .ok_or_else(|| {
                                format!("order {id}: an OrderItem lacks an 18-character Id")
                            })?;
                        item_base.insert(iid.get(..15).unwrap_or(iid).to_owned(), iid.to_owned());
                    }
                }
            }
        }
        Ok(Orders {
            by_id,
            order_base,
            item_base,
        })
    }

    pub fn ids(&self) -> Vec<String> {
        self.by_id.keys().cloned().collect()
    }

    pub fn get(&self, id: &str) -> Option<&Value> {
        self.by_id.get(id)
    }

    /// The 18-character id of the order named by a 15- or 18-character id, if it exists.
    /// 15-character ids are case-sensitive, so only the base is compared.
    fn resolve_order(&self, id: &str) -> Option<&String> {
        self.order_base.get(id.get(..15)?)
    }

    fn resolve_item(&self, id: &str) -> Option<&String> {
        self.item_base.get(id.get(..15)?)
    }

    /// The fixture's 18-character id of an order given in either length.
    pub fn order_id18(&self, id: &str) -> Option<String> {
        self.resolve_order(id).cloned()
    }

    /// The fixture's 18-character id of an OrderItem given in either length (as given when
    /// unknown).
    pub fn item_id18(&self, id: &str) -> String {
        self.resolve_item(id)
            .cloned()
            .unwrap_or_else(|| id.to_owned())
    }
}

/// JSON text of one value.
fn j<T: serde::Serialize + ?Sized>(v: &T) -> String {
    serde_json::to_string(v).unwrap_or_else(|_| "null".to_owned())
}

/// JSON object text with keys in the order given: serde_json's `Map` sorts keys, Salesforce
/// does not, and the samples in testdata/ should read like the real thing.
fn obj(pairs: &[(&str, String)]) -> String {
    let fields: Vec<String> = pairs
        .iter()
        .map(|(k, v)| format!("{}:{v}", j(*k)))
        .collect();
    format!("{{{}}}", fields.join(","))
}

fn json_reply(status: u16, text: String) -> Response {
    Response::new(status, "application/json;charset=UTF-8", text)
}

fn sf_error(status: u16, code: &str, message: &str) -> Response {
    json_reply(
        status,
        format!(
            "[{}]",
            obj(&[("message", j(message)), ("errorCode", j(code))])
        ),
    )
}

fn oauth_error(error: &str, description: &str) -> Response {
    json_reply(
        400,
        obj(&[("error", j(error)), ("error_description", j(description))]),
    )
}

pub fn invalid_session() -> Response {
    sf_error(401, "INVALID_SESSION_ID", "Session expired or invalid")
}

/// A plausible Salesforce error body for an injected status.
pub fn fault_reply(endpoint: Endpoint, status: u16) -> Response {
    if endpoint == Endpoint::Token {
        // What the token endpoint says when it is having a bad day.
        return json_reply(
            status,
            obj(&[
                ("error", j("unknown_error")),
                ("error_description", j("retry your request")),
            ]),
        );
    }
    let (code, message) = match status {
        400 => ("MALFORMED_QUERY", "stand-in injected fault"),
        401 => ("INVALID_SESSION_ID", "Session expired or invalid"),
        403 => ("REQUEST_LIMIT_EXCEEDED", "TotalRequests Limit exceeded."),
        404 => ("NOT_FOUND", "The requested resource does not exist"),
        503 => ("SERVER_UNAVAILABLE", "Server is temporarily unavailable."),
        _ => (
            "UNKNOWN_EXCEPTION",
            "An unexpected error occurred. Please include this ErrorId if you contact support: 1234567890-12345 (-1234567890)",
        ),
    };
    sf_error(status, code, message)
}

/// Routes a path on the Salesforce listener; returns the endpoint and the API version.
pub fn route(path: &str) -> (Endpoint, &str) {
    if path == "/services/oauth2/token" {
        return (Endpoint::Token, "");
    }
    let Some(rest) = path.strip_prefix("/services/data/") else {
        return (Endpoint::Other, "");
    };
    let (version, tail) = rest.split_once('/').unwrap_or((rest, ""));
    if !valid_version(version) {
        return (Endpoint::Other, "");
    }
    match tail {
        "query" | "query/" => (Endpoint::Query, version),
        "composite/sobjects" | "composite/sobjects/" => (Endpoint::Composite, version),
        t if t.starts_with("query/") && t.len() > "query/".len() => (Endpoint::QueryMore, version),
        _ => (Endpoint::Other, version),
    }
}

fn valid_version(v: &str) -> bool {
    v.strip_prefix('v')
        .and_then(|n| n.split_once('.'))
        .is_some_and(|(major, minor)| {
            !major.is_empty()
                && !minor.is_empty()
                && major.bytes().all(|b| b.is_ascii_digit())
                && minor.bytes().all(|b| b.is_ascii_digit())
        })
}

pub fn not_found() -> Response {
    sf_error(404, "NOT_FOUND", "The requested resource does not exist")
}

fn method_not_allowed(method: &str, allowed: &str) -> Response {
    sf_error(
        405,
        "METHOD_NOT_ALLOWED",
        &format!("HTTP Method '{method}' not allowed. Allowed are {allowed}"),
    )
}

fn first<'a>(pairs: &'a [(String, String)], name: &str) -> Option<&'a str> {
    pairs
        .iter()
        .find(|(k, _)| k == name)
        .map(|(_, v)| v.as_str())
}

/// `POST /services/oauth2/token`.
pub fn token(shared: &Shared, req: &Request) -> Response {
    if req.method != "POST" {
        return oauth_error("invalid_request", "must use HTTP POST");
    }
    // Salesforce reads only form bodies here; a JSON body simply has no grant_type.
    let params = if req.is_form() || req.header("content-type").is_none() {
        parse_form(&req.body)
    } else {
        Vec::new()
    };
    let grant = first(&params, "grant_type");
    if !matches!(grant, Some("client_credentials" | "password")) {
        return oauth_error("unsupported_grant_type", "grant type not supported");
    }
    if first(&params, "client_id") != Some(CLIENT_ID)
        || first(&params, "client_secret") != Some(CLIENT_SECRET)
    {
        return oauth_error("invalid_client", "invalid client credentials");
    }
    if grant == Some("password")
        && (first(&params, "username") != Some(USERNAME)
            || first(&params, "password") != Some(PASSWORD))
    {
        return oauth_error("invalid_grant", "authentication failure");
    }
    let issued_at = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis())
        .unwrap_or_default();
    let mut state = shared.lock();
    let token = state.rng.access_token();
    let signature = base64(&state.rng.bytes(32));
    state.tokens.insert(token.clone());
    let instance = &shared.salesforce_url;
    let id = format!("{instance}/id/{ORG_ID}/{}", sf_id18("0055Y00000Int9g"));
    json_reply(
        200,
        obj(&[
            ("access_token", j(&token)),
            ("signature", j(&signature)),
            ("scope", j("api")),
            ("instance_url", j(instance)),
            ("id", j(&id)),
            ("token_type", j("Bearer")),
            ("issued_at", j(&issued_at.to_string())),
        ]),
    )
}

/// The token of an `Authorization: Bearer …` (or Salesforce's older `OAuth …`) header.
fn bearer(req: &Request) -> Option<&str> {
    let (scheme, token) = req.header("authorization")?.split_once(' ')?;
    (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("oauth"))
        .then(|| token.trim())
}

fn authorized(state: &State, req: &Request) -> bool {
    bearer(req).is_some_and(|t| state.tokens.contains(t))
}

/// `GET /services/data/vXX.X/query?q=SOQL`.
pub fn query(shared: &Shared, req: &Request, version: &str) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed(&req.method, "GET,HEAD");
    }
    let mut state = shared.lock();
    if !authorized(&state, req) {
        return invalid_session();
    }
    let Some(soql) = req
        .query_pairs()
        .into_iter()
        .find(|(k, _)| k == "q")
        .map(|(_, v)| v)
    else {
        return sf_error(400, "MALFORMED_QUERY", "A query string has to be specified");
    };
    let ids = match soql_order_ids(&soql) {
        Ok(ids) => ids,
        Err((code, message)) => return sf_error(400, code, &message),
    };
    let mut seen = Vec::new();
    for id in &ids {
        if let Some(full) = shared.orders.resolve_order(id) {
            if !seen.contains(full) {
                seen.push(full.clone());
            }
        }
    }
    let mut records: Vec<Value> = seen
        .iter()
        .filter_map(|id| render_order(shared, &state, id, version))
        .collect();
    // A long order's OrderItems come in pages of their own, each with its own cursor.
    let items_page = state.items_page_size.max(1);
    for order in &mut records {
        let Some(sub) = order.get_mut("OrderItems") else {
            continue;
        };
        let Some(items) = sub.get("records").and_then(Value::as_array).cloned() else {
            continue;
        };
        *sub = page_of(&mut state, version, items, 0, items_page, None);
    }
    let page_size = state.page_size.max(1);
    let page = page_of(&mut state, version, records, 0, page_size, None);
    json_reply(200, obj_text(&page))
}

/// `GET /services/data/vXX.X/query/<locator>-<offset>`: the next page of an earlier query.
pub fn query_more(shared: &Shared, req: &Request, version: &str) -> Response {
    if req.method != "GET" && req.method != "HEAD" {
        return method_not_allowed(&req.method, "GET,HEAD");
    }
    let mut state = shared.lock();
    if !authorized(&state, req) {
        return invalid_session();
    }
    let locator = req.path.rsplit('/').next().unwrap_or_default().to_owned();
    let parsed = locator
        .rsplit_once('-')
        .and_then(|(cursor, offset)| Some((cursor, offset.parse::<usize>().ok()?)));
    let Some((cursor, offset)) = parsed else {
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    let Some((records, size)) = state.cursors.get(cursor).cloned() else {
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    };
    if offset == 0 || offset >= records.len() {
        return sf_error(400, "INVALID_QUERY_LOCATOR", "invalid query locator");
    }
    let page = page_of(
        &mut state,
        version,
        records,
        offset,
        size,
        Some(cursor.to_owned()),
    );
    json_reply(200, obj_text(&page))
}

/// One page of `size` records of a query result (or of a subquery: same shape) starting at
/// `offset`; remembers a cursor when more remain.
fn page_of(
    state: &mut State,
    version: &str,
    records: Vec<Value>,
    offset: usize,
    size: usize,
    cursor: Option<String>,
) -> Value {
    let total = records.len();
    let end = offset.saturating_add(size.max(1)).min(total);
    let page: Vec<Value> = records.get(offset..end).unwrap_or_default().to_vec();
    let mut out = Map::new();
    out.insert("totalSize".into(), json!(total));
    out.insert("done".into(), json!(end >= total));
    if end < total {
        let cursor = cursor.unwrap_or_else(|| {
            let id = sf_id18(&format!(
                "01g5Y{}",
                state
                    .rng
                    .string(b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789", 10)
            ));
            state.cursors.insert(id.clone(), (records, size));
            id
        });
        let next = format!("/services/data/{version}/query/{cursor}-{end}");
        out.insert("nextRecordsUrl".into(), json!(next));
    }
    out.insert("records".into(), Value::Array(page));
    Value::Object(out)
}

/// A page as Salesforce writes it: `totalSize`, `done`, `nextRecordsUrl`, `records`, in order.
fn obj_text(page: &Value) -> String {
    let keys = ["totalSize", "done", "nextRecordsUrl", "records"];
    let pairs: Vec<(&str, String)> = keys
        .iter()
        .filter_map(|k| Some((*k, j(page.get(*k)?))))
        .collect();
    obj(&pairs)
}

/// The fixture order with the API version of this request in every `attributes.url` and the
/// current written-back values merged into its order products.
fn render_order(shared: &Shared, state: &State, id: &str, version: &str) -> Option<Value> {
    let mut order = shared.orders.get(id)?.clone();
    if let Some(status) = state.order_status.get(id) {
        order["Status"] = Value::String(status.clone());
    }
    if version != FIXTURE_VERSION {
        rewrite_versions(&mut order, version);
    }
    if let Some(items) = order
        .pointer_mut("/OrderItems/records")
        .and_then(Value::as_array_mut)
    {
        for item in items {
            let written = item
                .get("Id")
                .and_then(Value::as_str)
                .and_then(|iid| state.writebacks.get(iid));
            if let (Some(written), Some(obj)) = (written.cloned(), item.as_object_mut()) {
                obj.extend(written);
            }
        }
    }
    Some(order)
}

fn rewrite_versions(v: &mut Value, version: &str) {
    match v {
        Value::Object(map) => {
            if let Some(Value::String(url)) =
                map.get_mut("attributes").and_then(|a| a.get_mut("url"))
            {
                let from = format!("/services/data/{FIXTURE_VERSION}/");
                if let Some(rest) = url.strip_prefix(&from) {
                    *url = format!("/services/data/{version}/{rest}");
                }
            }
            for child in map.values_mut() {
                rewrite_versions(child, version);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|c| rewrite_versions(c, version)),
        _ => {}
    }
}

#[derive(Debug, Clone, PartialEq)]
enum Tok {
    Word(String),
    Str(String),
    Punct(char),
}

type SoqlError = (&'static str, String);

fn malformed(msg: impl Into<String>) -> SoqlError {
    ("MALFORMED_QUERY", msg.into())
}

fn tokenize(soql: &str) -> Result<Vec<Tok>, SoqlError> {
    let mut toks = Vec::new();
    let mut chars = soql.chars().peekable();
    while let Some(c) = chars.next() {
        if c.is_whitespace() {
            continue;
        }
        if c == '\'' {
            let mut s = String::new();
            loop {
                match chars.next() {
                    None => return Err(malformed("unterminated string literal")),
                    Some('\'') => break,
                    Some('\\') => match chars.next() {
                        Some('n') => s.push('\n'),
                        Some('r') => s.push('\r'),
                        Some('t') => s.push('\t'),
                        Some('b') => s.push('\u{8}'),
                        Some('f') => s.push('\u{c}'),
                        // LIKE wildcards keep their backslash; they mean something there.
                        Some(w @ ('_' | '%')) => {
                            s.push('\\');
                            s.push(w);
                        }
                        Some(e @ ('\'' | '"' | '\\')) => s.push(e),
                        _ => return Err(malformed("invalid escape sequence in string literal")),
                    },
                    Some(other) => s.push(other),
                }
            }
            toks.push(Tok::Str(s));
        } else if c.is_alphanumeric() || c == '_' {
            let mut w = String::from(c);
            while let Some(&n) = chars.peek() {
                if n.is_alphanumeric() || n == '_' || n == '.' {
                    w.push(n);
                    chars.next();
                } else {
                    break;
                }
            }
            toks.push(Tok::Word(w));
        } else {
            toks.push(Tok::Punct(c));
        }
    }
    Ok(toks)
}

fn is_word(t: Option<&Tok>, w: &str) -> bool {
    matches!(t, Some(Tok::Word(x)) if x.eq_ignore_ascii_case(w))
}

/// The order ids a SOQL query asks for: the `Id IN ('…', …)` and `Id = '…'` conditions of the
/// outer `WHERE` of a query `FROM Order`. Anything the stand-in cannot answer faithfully is an
/// error with a Salesforce error code.
pub fn soql_order_ids(soql: &str) -> Result<Vec<String>, SoqlError> {
    let toks = tokenize(soql)?;
    if !is_word(toks.first(), "SELECT") {
        return Err(malformed("unexpected token: query must start with SELECT"));
    }
    let mut depth = 0i32;
    let mut from_type = None;
    let mut where_at = None;
    for (i, t) in toks.iter().enumerate() {
        match t {
            Tok::Punct('(') => depth += 1,
            Tok::Punct(')') => depth -= 1,
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("FROM") && from_type.is_none() => {
                from_type = Some(match toks.get(i + 1) {
                    Some(Tok::Word(obj)) => obj.clone(),
                    _ => return Err(malformed("unexpected token after FROM")),
                });
            }
            Tok::Word(w) if depth == 0 && w.eq_ignore_ascii_case("WHERE") && where_at.is_none() => {
                where_at = Some(i);
            }
            _ => {}
        }
        if depth < 0 {
            return Err(malformed("unbalanced parentheses"));
        }
    }
    if depth != 0 {
        return Err(malformed("unbalanced parentheses"));
    }
    match from_type {
        Some(t) if t.eq_ignore_ascii_case("Order") => {}
        Some(t) => {
            return Err((
                "INVALID_TYPE",
                format!("sObject type '{t}' is not supported by the stand-in."),
            ))
        }
        None => return Err(malformed("unexpected token: missing FROM")),
    }
    let Some(where_at) = where_at else {
        return Err(malformed(
            "the stand-in needs WHERE Id IN ('…') or WHERE Id = '…'",
        ));
    };

    let mut ids = Vec::new();
    let mut i = where_at + 1;
    while let Some(t) = toks.get(i) {
        let is_id_field = matches!(t, Tok::Word(w) if w.eq_ignore_ascii_case("Id") || w.eq_ignore_ascii_case("Order.Id"));
        if !is_id_field {
            i += 1;
            continue;
        }
        match toks.get(i + 1) {
            Some(Tok::Punct('=')) => {
                let Some(Tok::Str(id)) = toks.get(i + 2) else {
                    return Err(malformed("Id = must be followed by a string literal"));
                };
                ids.push(id.clone());
                i += 3;
            }
            Some(Tok::Word(w)) if w.eq_ignore_ascii_case("IN") => {
                if toks.get(i + 2) != Some(&Tok::Punct('(')) {
                    return Err(malformed("IN must be followed by a list"));
                }
                let mut j = i + 3;
                loop {
                    let Some(Tok::Str(id)) = toks.get(j) else {
                        return Err(malformed("IN list must hold string literals"));
                    };
                    ids.push(id.clone());
                    match toks.get(j + 1) {
                        Some(Tok::Punct(',')) => j += 2,
                        Some(Tok::Punct(')')) => break,
                        _ => return Err(malformed("unterminated IN list")),
                    }
                }
                i = j + 2;
            }
            _ => {
                return Err(malformed(
                    "the stand-in understands only Id IN (…) and Id = '…' on Id",
                ))
            }
        }
    }
    if ids.is_empty() {
        return Err(malformed(
            "the stand-in needs WHERE Id IN ('…') or WHERE Id = '…'",
        ));
    }
    if let Some(bad) = ids.iter().find(|id| !is_sf_id(id)) {
        return Err((
            "INVALID_QUERY_FILTER_OPERATOR",
            format!("invalid ID field: {bad}"),
        ));
    }
    let mut unique: Vec<String> = Vec::new();
    for id in ids {
        if !unique.contains(&id) {
            unique.push(id);
        }
    }
    Ok(unique)
}

/// `PATCH /services/data/vXX.X/composite/sobjects` (or `POST …?_HttpMethod=PATCH`).
pub fn composite(shared: &Shared, req: &Request) -> Response {
    let overridden = req
        .query_pairs()
        .iter()
        .any(|(k, v)| k == "_HttpMethod" && v.eq_ignore_ascii_case("PATCH"));
    if !(req.method == "PATCH" || (req.method == "POST" && overridden)) {
        // POST without the override would be a create, which the stand-in does not do.
        return method_not_allowed(&req.method, "PATCH");
    }
    let mut state = shared.lock();
    if !authorized(&state, req) {
        return invalid_session();
    }
    let body: Value = match serde_json::from_slice(&req.body) {
        Ok(v) => v,
        Err(e) => {
            return sf_error(
                400,
                "JSON_PARSER_ERROR",
                &format!("Unexpected character: {e}"),
            )
        }
    };
    let Some(records) = body.get("records").and_then(Value::as_array) else {
        return sf_error(
            400,
            "JSON_PARSER_ERROR",
            "records: a list of sObjects is required",
        );
    };
    if records.len() > MAX_COLLECTION_RECORDS {
        return sf_error(
            400,
            "EXCEEDED_ID_LIMIT",
            "record limit reached. cannot submit more than 200 records into this call",
        );
    }
    let all_or_none = body
        .get("allOrNone")
        .and_then(Value::as_bool)
        .unwrap_or(false);

    let checked: Vec<Checked> = records
        .iter()
        .map(|r| match check_update(shared, r) {
            // Two validation rules a test can switch on per record: one on the keys written
            // back, one on keygate's issuing mark (written before the license calls).
            Ok((full, _)) if is_issuing_mark(r) && state.refuse_marks.contains(&full) => {
                Err(record_error(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "This order product cannot be changed now",
                    &[],
                ))
            }
            Ok((full, _)) if !is_issuing_mark(r) && state.refuse_writeback.contains(&full) => {
                Err(record_error(
                    "FIELD_CUSTOM_VALIDATION_EXCEPTION",
                    "License keys cannot be changed on this order product",
                    &[],
                ))
            }
            other => other,
        })
        .collect();
    let any_failed = checked.iter().any(Result::is_err);
    let results: Vec<String> = checked
        .into_iter()
        .map(|outcome| {
            // As Salesforce does: a failed record's result has no `id` (results come back in
            // request order, which is how a client matches them).
            let id = outcome.as_ref().map(|(full, _)| full.clone()).ok();
            let errors = match outcome {
                Err(error) => vec![error],
                Ok(_) if all_or_none && any_failed => vec![record_error(
                    "ALL_OR_NONE_OPERATION_ROLLED_BACK",
                    "Record rolled back because not all records were valid and the request was using AllOrNone header",
                    &[],
                )],
                Ok((full, fields)) => {
                    state.writebacks.entry(full).or_default().extend(fields);
                    Vec::new()
                }
            };
            let mut result = Vec::new();
            if let Some(id) = id {
                result.push(("id", j(&id)));
            }
            result.push(("success", j(&errors.is_empty())));
            result.push(("errors", format!("[{}]", errors.join(","))));
            obj(&result)
        })
        .collect();
    json_reply(200, format!("[{}]", results.join(",")))
}

/// A valid update (18-character id, fields to write) or the record's error object (JSON text).
type Checked = Result<(String, Map<String, Value>), String>;

/// keygate's issuing mark: a record whose written values include `Issuing; busy until …`.
fn is_issuing_mark(record: &Value) -> bool {
    record.as_object().is_some_and(|fields| {
        fields
            .values()
            .any(|v| v.as_str().is_some_and(|v| v.starts_with(ISSUING_MARK)))
    })
}

/// How keygate's issuing mark starts (its README, "Delivery guarantees").
pub const ISSUING_MARK: &str = "Issuing; busy until ";

fn record_error(code: &str, message: &str, fields: &[&str]) -> String {
    obj(&[
        ("statusCode", j(code)),
        ("message", j(message)),
        ("fields", j(fields)),
    ])
}

/// Validates one record of an update: an existing OrderItem, custom fields only.
fn check_update(shared: &Shared, r: &Value) -> Checked {
    let Some(obj) = r.as_object() else {
        return Err(record_error(
            "JSON_PARSER_ERROR",
            "a record must be an object",
            &[],
        ));
    };
    let kind = obj
        .get("attributes")
        .and_then(|a| a.get("type"))
        .and_then(Value::as_str);
    let Some(kind) = kind else {
        return Err(record_error(
            "INVALID_TYPE",
            "Must send a concrete entity type.",
            &[],
        ));
    };
    let Some(id) = obj
        .get("id")
        .or_else(|| obj.get("Id"))
        .and_then(Value::as_str)
    else {
        return Err(record_error(
            "MISSING_ARGUMENT",
            "Id not specified in an update call",
            &[],
        ));
    };
    if !is_sf_id(id) {
        return Err(record_error(
            "MALFORMED_ID",
            &format!("bad id {id}"),
            &["Id"],
        ));
    }
    if kind != "OrderItem" {
        return Err(record_error(
            "INVALID_TYPE",
            &format!("the stand-in updates OrderItem records only, not {kind}"),
            &[],
        ));
    }
    let Some(full) = shared.orders.resolve_item(id) else {
        return Err(record_error(
            "INVALID_CROSS_REFERENCE_KEY",
            "invalid cross reference id",
            &[],
        ));
    };
    let mut fields = Map::new();
    for (name, value) in obj {
        if matches!(name.as_str(), "attributes" | "id" | "Id") {
            continue;
        }
        if !name.ends_with("__c") {
            return Err(record_error(
                "INVALID_FIELD_FOR_INSERT_UPDATE",
                &format!("Unable to create/update fields: {name}. Please check the security settings of this field and verify that it is read/write for your profile or permission set."),
                &[name.as_str()],
            ));
        }
        if value.is_object() || value.is_array() {
            return Err(record_error(
                "JSON_PARSER_ERROR",
                &format!(
                    "Cannot deserialize instance of string from {} value",
                    if value.is_object() {
                        "START_OBJECT"
                    } else {
                        "START_ARRAY"
                    }
                ),
                &[name.as_str()],
            ));
        }
        if value
            .as_str()
            .is_some_and(|s| s.chars().count() > MAX_TEXT_FIELD)
        {
            return Err(record_error(
                "STRING_TOO_LONG",
                &format!("{name}: data value too large (max length={MAX_TEXT_FIELD})"),
                &[name.as_str()],
            ));
        }
        fields.insert(name.clone(), value.clone());
    }
    Ok((full.clone(), fields))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ids(soql: &str) -> Result<Vec<String>, SoqlError> {
        soql_order_ids(soql)
    }

    const SELECT: &str = "SELECT Id, OrderNumber, Status, Account.Name, (SELECT Id, Quantity, Product2.ProductCode FROM OrderItems) FROM Order";

    #[test]
    fn soql_in_list_and_equals() {
        assert_eq!(
            ids(&format!("{SELECT} WHERE Id IN ('8015Y000001AbCdQAK', '8015Y000001MuLtQAK','8015Y000001AbCdQAK')")),
            Ok(vec!["8015Y000001AbCdQAK".to_owned(), "8015Y000001MuLtQAK".to_owned()])
        );
        assert_eq!(
            ids(&format!("{SELECT} where id = '8015Y000001AbCd' LIMIT 10")),
            Ok(vec!["8015Y000001AbCd".to_owned()])
        );
        assert_eq!(
            ids(
                "select Id from order where (Id='8015Y000001AbCdQAK' OR Id = '8015Y000001MuLtQAK')"
            ),
            Ok(vec![
                "8015Y000001AbCdQAK".to_owned(),
                "8015Y000001MuLtQAK".to_owned()
            ])
        );
    }

    #[test]
    fn soql_rejections() {
        let code = |q: &str| ids(q).map_err(|(c, _)| c);
        assert_eq!(
            code(&format!("{SELECT} WHERE Id IN ('x''y')")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Id IN ('8015Y000001AbCdQAK'")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Id IN ()")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Id IN ('abc')")),
            Err("INVALID_QUERY_FILTER_OPERATOR")
        );
        // An escaped quote stays inside the literal: no injection, just an invalid id.
        assert_eq!(
            code(&format!("{SELECT} WHERE Id = 'a\\' OR \\'1\\'=\\'1'")),
            Err("INVALID_QUERY_FILTER_OPERATOR")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Id = 'unterminated")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Status = 'Activated'")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(
            code(&format!("{SELECT} WHERE Id != '8015Y000001AbCdQAK'")),
            Err("MALFORMED_QUERY")
        );
        assert_eq!(code(SELECT), Err("MALFORMED_QUERY"));
        assert_eq!(
            code("SELECT Id FROM Account WHERE Id = '0015Y00002BFDeLQAX'"),
            Err("INVALID_TYPE")
        );
        assert_eq!(code("DELETE FROM Order"), Err("MALFORMED_QUERY"));
        assert_eq!(code(""), Err("MALFORMED_QUERY"));
    }

    #[test]
    fn soql_subquery_where_is_not_the_outer_where() {
        let q = "SELECT Id, (SELECT Id FROM OrderItems WHERE Id = '8025Y00000AbCdEQAV') FROM Order WHERE Id = '8015Y000001AbCdQAK'";
        assert_eq!(ids(q), Ok(vec!["8015Y000001AbCdQAK".to_owned()]));
    }

    #[test]
    fn fixture_is_valid_and_ids_carry_real_checksums() {
        let path = crate::default_orders_path();
        let orders = Orders::load(&path).unwrap();
        // Four named orders, the family, and the three of the order lifecycle.
        assert_eq!(orders.ids().len(), 4 + crate::ids::FAMILY_SIZE + 3);
        for id in orders.ids() {
            assert_eq!(sf_id18(id.get(..15).unwrap_or_default()), id);
        }
        for id in orders.item_base.values() {
            assert_eq!(sf_id18(id.get(..15).unwrap_or_default()), *id);
        }
        for n in 0..crate::ids::FAMILY_SIZE {
            let order = orders.get(&crate::family_order_id(n));
            assert_eq!(
                order
                    .and_then(|o| o.pointer("/OrderItems/records/0/Id"))
                    .and_then(Value::as_str),
                Some(crate::family_item_id(n).as_str())
            );
        }
    }

    #[test]
    fn routes() {
        assert_eq!(route("/services/oauth2/token").0, Endpoint::Token);
        assert_eq!(
            route("/services/data/v60.0/query"),
            (Endpoint::Query, "v60.0")
        );
        assert_eq!(
            route("/services/data/v58.0/query/01g5Y0000000abcQAA-2000").0,
            Endpoint::QueryMore
        );
        assert_eq!(
            route("/services/data/v60.0/composite/sobjects").0,
            Endpoint::Composite
        );
        assert_eq!(route("/services/data/60.0/query").0, Endpoint::Other);
        assert_eq!(
            route("/services/data/v60.0/sobjects/Order").0,
            Endpoint::Other
        );
    }
}
