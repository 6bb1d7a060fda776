//! The Keygen (keygen.sh) license-server stand-in: the part of Keygen's JSON:API that keygate uses,
//! served on the license listener under `/v1/accounts/{account}/…`, as the source of
//! `keygen-sh/keygen-api` answers it:
//! - `POST /licenses` (`licenses_controller.rb#create`, `app/models/license.rb`): the key, the
//!   expiry from the policy's duration (Rails' `ActiveSupport::Duration.build`, calendar months
//!   included: see [`expiry_after`]), `maxMachines` from the policy unless given, metadata keys
//!   stored snake_cased and answered lowerCamelCased, Keygen's 400/422 errors;
//! - `GET /licenses?metadata[…]=…&page[size]=…&page[number]=…` (`has_scope :metadata`,
//!   `License.search_metadata`, `concerns/pagination.rb`, `Pageable`): newest first unless
//!   `order=asc`, offset pages of 1..100 with Keygen's links;
//! - `GET`/`PATCH`/`PUT /licenses/{id or key}`; `POST /licenses/{id or key}/actions/suspend`,
//!   `/reinstate`, `/renew` (`licenses/actions/permits_controller.rb`);
//! - `GET /policies/{id}` (a fixed table of two policies) and `GET /me` (the product token's
//!   bearer, `profiles_controller.rb#me`);
//! - Rack::Attack's throttle (`config/initializers/rack_attack.rb`), off until switched on.
//!
//! Shapes follow the serializers (`app/serializers/{license,policy,product,token}_serializer.rb`)
//! of the source-available edition (no `permissions` attribute, no `environment` relationship).
//! What the source does not settle is marked UNCONFIRMED in `testdata/keygen/README.md`.

use std::collections::BTreeMap;
use std::time::{SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::clock::{civil_from_days, days_from_civil};
use crate::http::{reason, Request, Response};
use crate::ids::Rng;
use crate::record::Endpoint;
use crate::state::{Shared, State};

/// Every Keygen route starts here (`/v1/accounts/{account}/…`).
pub const PATH_PREFIX: &str = "/v1/accounts/";
/// The account's slug: the paths may name the account by slug or by id.
pub const ACCOUNT: &str = "acme";
pub const ACCOUNT_ID: &str = "8c5d1f3e-7a2b-4c6d-9e0f-1a2b3c4d5e6f";
/// The one product token the stand-in accepts (`Authorization: Bearer …`).
pub const TOKEN: &str = "standin-keygen-token";
pub const TOKEN_ID: &str = "6a7b8c9d-0e1f-4a2b-8c3d-4e5f6a7b8c9d";
/// The token's bearer: the product every policy belongs to.
pub const PRODUCT_ID: &str = "3f1e2d4c-5b6a-4978-8a9b-0c1d2e3f4a5b";
/// A policy without a duration (licenses never expire; renew answers 422); floating, 1 machine.
pub const POLICY_PERPETUAL: &str = "0b6f1c2e-7d3a-4e5b-9c8d-1f2a3b4c5d6e";
/// A policy of 365 days (`duration` 31536000 s, `renewalBasis` FROM_EXPIRY); floating, 5
/// machines.
pub const POLICY_ANNUAL: &str = "5e4d3c2b-1a0f-4e9d-8c7b-6a5f4e3d2c1b";
/// [`POLICY_ANNUAL`]'s `duration` in seconds (365 days).
pub const ANNUAL_DURATION_S: u64 = 365 * 86_400;
/// What every Keygen reply is served as.
pub const CONTENT_TYPE: &str = "application/vnd.api+json; charset=utf-8";

const DAY_MS: i64 = 86_400_000;
const DOCS: &str = "https://keygen.sh/docs/api/";
/// `Pageable::SIZE_UPPER`, `PAGE_UPPER`, `Limitable::LIMIT_UPPER` (and 1 the lower bound of each).
const PAGE_UPPER: i64 = 100;
/// `Pagination::DEFAULT_PAGE_SIZE`.
const DEFAULT_PAGE_SIZE: i64 = 10;
/// `License` metadata: `json: { maximum_bytesize: 16.kilobytes, maximum_depth: 4,
/// maximum_keys: 64 }`.
const METADATA_MAX_KEYS: usize = 64;
const METADATA_MAX_BYTES: usize = 16 * 1024;
/// `typed_params` on the controllers: `metadata` has `depth: { maximum: 2 }`.
const METADATA_MAX_DEPTH: usize = 2;
/// The `max_*` attributes a license can override (`licenses_controller.rb` typed params).
const LIMITS: [&str; 7] = [
    "max_machines",
    "max_processes",
    "max_users",
    "max_cores",
    "max_memory",
    "max_disk",
    "max_uses",
];
/// `numericality … less_than_or_equal_to: 2_147_483_647` (max_memory and max_disk allow more;
/// the stand-in keeps one bound).
const INT4_MAX: i64 = 2_147_483_647;

/// One row of the stand-in's fixed policy table.
#[derive(Debug)]
struct Policy {
    id: &'static str,
    name: &'static str,
    /// Seconds; `None`: licenses never expire.
    duration: Option<u64>,
    max_machines: Option<i64>,
}

const POLICIES: [Policy; 2] = [
    Policy {
        id: POLICY_PERPETUAL,
        name: "Perpetual",
        duration: None,
        max_machines: Some(1),
    },
    Policy {
        id: POLICY_ANNUAL,
        name: "Annual",
        duration: Some(ANNUAL_DURATION_S),
        max_machines: Some(5),
    },
];

fn policy(id: &str) -> Option<&'static Policy> {
    POLICIES.iter().find(|p| p.id.eq_ignore_ascii_case(id))
}

/// When the fixed resources (product, policies, token) were "created": 2026-01-05T09:00:00Z.
fn fixture_created_ms() -> i64 {
    days_from_civil(2026, 1, 5) * DAY_MS + 9 * 3_600_000
}

/// A license as the stand-in holds it at the end of a test (`Standins::keygen_licenses`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct KeygenLicense {
    pub id: String,
    pub key: String,
    pub name: Option<String>,
    /// The policy id.
    pub policy: String,
    pub suspended: bool,
    /// `2027-12-06T18:00:00.000Z`; `None`: never expires.
    pub expiry: Option<String>,
    /// The license's own `maxMachines`, else its policy's.
    pub max_machines: Option<u64>,
    /// As the API answers it: keys lowerCamelCased.
    pub metadata: Map<String, Value>,
    /// Successful `actions/renew` calls.
    pub renewals: u32,
    /// Creation order since the start or the last reset, from 1.
    pub created_seq: u64,
    pub created: String,
    pub updated: String,
}

/// Rack::Attack's throttle as the stand-in applies it: `limit` calls per fixed window of
/// `window_s` seconds (windows start at multiples of `window_s` since the epoch).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeygenRateLimit {
    pub limit: u32,
    pub window_s: u64,
}

#[derive(Debug, Clone)]
struct Stored {
    id: String,
    key: String,
    name: Option<String>,
    policy: &'static Policy,
    suspended: bool,
    protected: Option<bool>,
    expiry: Option<i64>,
    /// `max_*_override` columns that are set (snake_case names of [`LIMITS`]).
    overrides: BTreeMap<&'static str, i64>,
    /// As Keygen's database holds it: keys snake_cased.
    metadata: Map<String, Value>,
    renewals: u32,
    seq: u64,
    created: i64,
    updated: i64,
}

impl Stored {
    fn max_machines(&self) -> Option<i64> {
        self.overrides
            .get("max_machines")
            .copied()
            .or(self.policy.max_machines)
    }

    fn public(&self) -> KeygenLicense {
        KeygenLicense {
            id: self.id.clone(),
            key: self.key.clone(),
            name: self.name.clone(),
            policy: self.policy.id.to_owned(),
            suspended: self.suspended,
            expiry: self.expiry.map(iso_ms),
            max_machines: self.max_machines().and_then(|n| u64::try_from(n).ok()),
            metadata: camel_keys(&self.metadata),
            renewals: self.renewals,
            created_seq: self.seq,
            created: iso_ms(self.created),
            updated: iso_ms(self.updated),
        }
    }
}

/// The Keygen part of the stand-ins' state.
#[derive(Debug, Default)]
pub struct KeygenState {
    /// In creation order.
    licenses: Vec<Stored>,
    seq: u64,
    pub rate_limit: Option<KeygenRateLimit>,
    /// The current throttle window (its index since the epoch) and the calls counted in it.
    window: Option<(i64, u64)>,
}

impl KeygenState {
    /// Forgets every license and switches the throttle off.
    pub fn reset(&mut self) {
        *self = KeygenState::default();
    }

    /// Key → license.
    pub fn licenses(&self) -> BTreeMap<String, KeygenLicense> {
        self.licenses
            .iter()
            .map(|l| (l.key.clone(), l.public()))
            .collect()
    }

    /// A new throttle (`None`: off); the count starts over.
    pub fn set_rate_limit(&mut self, limit: Option<KeygenRateLimit>) {
        self.rate_limit = limit.map(|l| KeygenRateLimit {
            limit: l.limit,
            window_s: l.window_s.max(1),
        });
        self.window = None;
    }

    /// Counts one call; the throttle's state after it, when a throttle is on.
    fn count(&mut self, now_ms: i64) -> Option<Throttle> {
        let limit = self.rate_limit?;
        let period = i64::try_from(limit.window_s).unwrap_or(i64::MAX).max(1);
        let now = now_ms.div_euclid(1000);
        let index = now.div_euclid(period);
        let count = match self.window {
            Some((i, n)) if i == index => n + 1,
            _ => 1,
        };
        self.window = Some((index, count));
        Some(Throttle {
            limit,
            count,
            now,
            period,
        })
    }
}

/// One call's view of the throttle (Rack::Attack's `match_data`).
#[derive(Debug, Clone, Copy)]
struct Throttle {
    limit: KeygenRateLimit,
    count: u64,
    /// Seconds since the epoch.
    now: i64,
    period: i64,
}

impl Throttle {
    fn exceeded(&self) -> bool {
        self.count > u64::from(self.limit.limit)
    }

    /// `X-RateLimit-Window`: the last part of the throttle's name, e.g. `req/ip/1m` → `1m`.
    fn window_name(&self) -> String {
        if self.period % 60 == 0 {
            format!("{}m", self.period / 60)
        } else {
            format!("{}s", self.period)
        }
    }

    /// `now + (period - now % period)`: the next window's start, epoch seconds.
    fn reset(&self) -> i64 {
        self.now + (self.period - self.now.rem_euclid(self.period))
    }

    /// The `X-RateLimit-*` headers (`DefaultHeaders#add_rate_limiting_headers`; the 429 adds
    /// `Retry-After`).
    fn headers(&self, resp: Response) -> Response {
        let remaining = u64::from(self.limit.limit).saturating_sub(self.count);
        resp.with_header("X-RateLimit-Window", self.window_name())
            .with_header("X-RateLimit-Count", self.count.to_string())
            .with_header("X-RateLimit-Limit", self.limit.limit.to_string())
            .with_header("X-RateLimit-Remaining", remaining.to_string())
            .with_header("X-RateLimit-Reset", self.reset().to_string())
    }

    /// Rack::Attack's `throttled_responder`.
    fn too_many(&self) -> Response {
        let body = json!({"errors": [{
            "title": "Too many requests",
            "detail": "Throttle limit has been reached for your IP address. Please slow down. See https://keygen.sh/docs/api/rate-limiting/ for more info.",
            "code": "TOO_MANY_REQUESTS",
        }]});
        let retry_after = self.period - self.now.rem_euclid(self.period);
        self.headers(doc(429, &body))
            .with_header("Retry-After", retry_after.to_string())
    }
}

// ---------------------------------------------------------------------------------------------
// Time

fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

/// `2027-12-06T18:00:00.000Z`: a time as Rails encodes it in JSON (UTC, milliseconds).
pub fn iso_ms(ms: i64) -> String {
    let secs = ms.div_euclid(1000);
    let (y, m, d) = civil_from_days(secs.div_euclid(86_400));
    let s = secs.rem_euclid(86_400);
    format!(
        "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        s / 3600,
        s % 3600 / 60,
        s % 60,
        ms.rem_euclid(1000)
    )
}

fn digits(s: &str, n: usize) -> Option<i64> {
    (s.len() == n && s.bytes().all(|b| b.is_ascii_digit()))
        .then(|| s.parse().ok())
        .flatten()
}

/// An ISO 8601 time as an `expiry` attribute may carry it: `yyyy-MM-dd`, or
/// `yyyy-MM-ddTHH:mm[:ss[.fff…]]` with `Z`, `±HH:mm`, `±HHmm` or no zone (UTC). Milliseconds
/// since the epoch.
pub fn parse_time(s: &str) -> Option<i64> {
    let s = s.trim();
    let (date, rest) = match s.find(['T', 't', ' ']) {
        Some(i) => (s.get(..i)?, Some(s.get(i + 1..)?)),
        None => (s, None),
    };
    let mut parts = date.split('-');
    let (y, m, d) = (
        digits(parts.next()?, 4)?,
        digits(parts.next()?, 2)?,
        digits(parts.next()?, 2)?,
    );
    if parts.next().is_some() {
        return None;
    }
    let (m, d) = (u32::try_from(m).ok()?, u32::try_from(d).ok()?);
    let day = days_from_civil(y, m, d);
    if civil_from_days(day) != (y, m, d) {
        return None;
    }
    let Some(rest) = rest else {
        return Some(day * DAY_MS);
    };
    let (time, offset_s) = if let Some(t) = rest.strip_suffix(['Z', 'z']) {
        (t, 0)
    } else if let Some(i) = rest.rfind(['+', '-']) {
        let (t, zone) = (rest.get(..i)?, rest.get(i..)?);
        let sign = if zone.starts_with('-') { -1 } else { 1 };
        let zone = zone.get(1..)?.replace(':', "");
        let (hh, mm) = (digits(zone.get(..2)?, 2)?, digits(zone.get(2..)?, 2)?);
        (t, sign * (hh * 3600 + mm * 60))
    } else {
        (rest, 0)
    };
    let (hms, frac) = match time.split_once('.') {
        Some((hms, f)) if !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()) => (hms, f),
        Some(_) => return None,
        None => (time, ""),
    };
    let mut t = hms.split(':');
    let hh = digits(t.next()?, 2)?;
    let mm = digits(t.next()?, 2)?;
    let ss = t.next().map_or(Some(0), |s| digits(s, 2))?;
    if t.next().is_some() || hh > 23 || mm > 59 || ss > 60 {
        return None;
    }
    let milli = format!("{frac:0<3}").get(..3)?.parse::<i64>().ok()?;
    Some(day * DAY_MS + (hh * 3600 + mm * 60 + ss - offset_s) * 1000 + milli)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    let next = if m == 12 {
        days_from_civil(y + 1, 1, 1)
    } else {
        days_from_civil(y, m + 1, 1)
    };
    u32::try_from(next - days_from_civil(y, m, 1)).unwrap_or(28)
}

/// Ruby's `Date#>>`: `n` months later, the day clamped to the month's last.
fn add_months(ms: i64, n: i64) -> i64 {
    let (day, time) = (ms.div_euclid(DAY_MS), ms.rem_euclid(DAY_MS));
    let (y, m, d) = civil_from_days(day);
    let total = y * 12 + i64::from(m) - 1 + n;
    let (ny, nm) = (total.div_euclid(12), total.rem_euclid(12) + 1);
    let nm = u32::try_from(nm).unwrap_or(1);
    let nd = d.min(days_in_month(ny, nm));
    days_from_civil(ny, nm, nd) * DAY_MS + time
}

/// `time + ActiveSupport::Duration.build(seconds)`, as Keygen computes an expiry on creation
/// (`License#set_expiry_on_creation`) and on renewal (`License#renew!`): the seconds are split
/// into years (31556952 s), months (2629746 s), weeks, days, hours, minutes and seconds, and
/// the years and months are calendar steps (`Date#>>`, clamping the day). So 365 days
/// (31536000 s) is 11 months, 4 weeks, 2 days, 4 h 39 min 54 s: `2026-01-31T00:00:00Z` →
/// `2027-01-30T04:39:54Z`.
pub fn add_duration(ms: i64, seconds: u64) -> i64 {
    const YEAR: u64 = 31_556_952;
    const MONTH: u64 = 2_629_746;
    const WEEK: u64 = 604_800;
    const DAY: u64 = 86_400;
    let mut rem = seconds;
    let years = rem / YEAR;
    rem %= YEAR;
    let months = rem / MONTH;
    rem %= MONTH;
    let weeks = rem / WEEK;
    rem %= WEEK;
    let days = rem / DAY;
    rem %= DAY;
    let as_i64 = |n: u64| i64::try_from(n).unwrap_or(i64::MAX / 4);
    let mut t = ms;
    if years > 0 {
        t = add_months(t, as_i64(years).saturating_mul(12));
    }
    if months > 0 {
        t = add_months(t, as_i64(months));
    }
    t.saturating_add(as_i64(weeks * 7 + days).saturating_mul(DAY_MS))
        .saturating_add(as_i64(rem).saturating_mul(1000))
}

/// [`add_duration`] on ISO 8601 text: the expiry Keygen gives a license expiring at `expiry`
/// after one renewal under a policy of `duration_s` seconds (FROM_EXPIRY).
pub fn expiry_after(expiry: &str, duration_s: u64) -> Option<String> {
    parse_time(expiry).map(|t| iso_ms(add_duration(t, duration_s)))
}

// ---------------------------------------------------------------------------------------------
// Key transforms

/// Rails' `key.to_s.underscore.parameterize(separator: '_')`, which Keygen applies to every
/// key of a JSON body (`config/initializers/jsonapi.rb`) and to metadata filter keys
/// (`License.search_metadata`). Non-ASCII letters become `_` (Rails transliterates them).
pub fn snake(key: &str) -> String {
    let chars: Vec<char> = key.chars().collect();
    let mut under = String::new();
    for (i, &c) in chars.iter().enumerate() {
        let prev = i.checked_sub(1).and_then(|j| chars.get(j)).copied();
        let next = chars.get(i + 1).copied();
        if c.is_ascii_uppercase() {
            let boundary = match prev {
                Some(p) if p.is_ascii_lowercase() || p.is_ascii_digit() => true,
                Some(p) if p.is_ascii_uppercase() => next.is_some_and(|n| n.is_ascii_lowercase()),
                _ => false,
            };
            if boundary {
                under.push('_');
            }
        }
        under.push(if c == '-' { '_' } else { c });
    }
    let mut out = String::new();
    for c in under.chars() {
        let c = if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
            c.to_ascii_lowercase()
        } else {
            '_'
        };
        if c == '_' && (out.is_empty() || out.ends_with('_')) {
            continue;
        }
        out.push(c);
    }
    while out.ends_with('_') {
        out.pop();
    }
    out
}

/// Rails' `camelize(:lower)`, as the serializers answer metadata keys.
pub fn camel(key: &str) -> String {
    let mut out = String::new();
    for (i, part) in key.split('_').enumerate() {
        if i == 0 {
            let mut cs = part.chars();
            if let Some(first) = cs.next() {
                out.extend(first.to_lowercase());
                out.push_str(cs.as_str());
            }
        } else {
            let mut cs = part.chars();
            if let Some(first) = cs.next() {
                out.extend(first.to_uppercase());
                out.push_str(&cs.as_str().to_lowercase());
            }
        }
    }
    out
}

fn transform_keys(value: &Value, f: &dyn Fn(&str) -> String) -> Value {
    match value {
        Value::Object(map) => Value::Object(
            map.iter()
                .map(|(k, v)| (f(k), transform_keys(v, f)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(items.iter().map(|v| transform_keys(v, f)).collect()),
        other => other.clone(),
    }
}

fn camel_keys(map: &Map<String, Value>) -> Map<String, Value> {
    map.iter()
        .map(|(k, v)| (camel(k), transform_keys(v, &camel)))
        .collect()
}

// ---------------------------------------------------------------------------------------------
// Routing

/// The endpoint of a Keygen path (which starts with [`PATH_PREFIX`]); `Other` for what Keygen
/// routes nowhere (answered 404).
pub fn route(method: &str, path: &str) -> Endpoint {
    let Some(rest) = path.strip_prefix(PATH_PREFIX) else {
        return Endpoint::Other;
    };
    let rest = rest.strip_suffix('/').unwrap_or(rest);
    let mut segs = rest.split('/');
    let _account = segs.next();
    let tail: Vec<&str> = segs.collect();
    let method = if method == "HEAD" { "GET" } else { method };
    match (method, tail.as_slice()) {
        ("POST", ["licenses"]) => Endpoint::KeygenCreate,
        ("GET", ["licenses"]) => Endpoint::KeygenList,
        ("GET", ["licenses", _]) => Endpoint::KeygenRead,
        ("PATCH" | "PUT", ["licenses", _]) => Endpoint::KeygenUpdate,
        ("POST", ["licenses", _, "actions", "suspend"]) => Endpoint::KeygenSuspend,
        ("POST", ["licenses", _, "actions", "reinstate"]) => Endpoint::KeygenReinstate,
        ("POST", ["licenses", _, "actions", "renew"]) => Endpoint::KeygenRenew,
        ("GET", ["policies", _]) => Endpoint::KeygenPolicy,
        ("GET", ["me"]) => Endpoint::KeygenMe,
        _ => Endpoint::Other,
    }
}

/// True for a path the Keygen stand-in answers (anything else on the license listener is QLM's).
pub fn is_keygen_path(path: &str) -> bool {
    path.starts_with(PATH_PREFIX)
}

/// `/v1/accounts/{account}/{segment}/{this}/…`: the path's segment after `segment`,
/// percent-decoded (Rails decodes path parameters; `+` stays `+`).
fn path_param(path: &str, after: &str) -> Option<String> {
    let rest = path.strip_prefix(PATH_PREFIX)?;
    let mut segs = rest.split('/').skip(1);
    segs.find(|s| *s == after)?;
    segs.next().map(percent_decode)
}

fn path_account(path: &str) -> String {
    let rest = path.strip_prefix(PATH_PREFIX).unwrap_or_default();
    percent_decode(rest.split('/').next().unwrap_or_default())
}

fn percent_decode(s: &str) -> String {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while let Some(&b) = bytes.get(i) {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok())
            .and_then(|h| u8::from_str_radix(h, 16).ok());
        match (b, hex) {
            (b'%', Some(v)) => {
                out.push(v);
                i += 3;
            }
            _ => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Keygen's `UUID_RE` (`/\A[0-9A-F]{8}-?[0-9A-F]{4}-?[0-9A-F]{4}-?[0-9A-F]{4}-?[0-9A-F]{12}\z/i`).
fn is_uuid(s: &str) -> bool {
    let mut rest = s.as_bytes();
    for (i, n) in [8usize, 4, 4, 4, 12].into_iter().enumerate() {
        if i > 0 {
            if let Some(r) = rest.strip_prefix(b"-") {
                rest = r;
            }
        }
        match rest.get(..n) {
            Some(group) if group.iter().all(u8::is_ascii_hexdigit) => {
                rest = rest.get(n..).unwrap_or_default();
            }
            _ => return false,
        }
    }
    rest.is_empty()
}

// ---------------------------------------------------------------------------------------------
// Replies

fn doc(status: u16, body: &Value) -> Response {
    Response::new(status, CONTENT_TYPE, body.to_string())
}

/// One JSON:API error object: `title`, `detail` and the optional members that are given.
fn error_object(
    title: &str,
    detail: &str,
    code: Option<&str>,
    source: Option<Value>,
    links: Option<Value>,
) -> Value {
    let mut e = Map::new();
    e.insert("title".into(), title.into());
    e.insert("detail".into(), detail.into());
    if let Some(c) = code {
        e.insert("code".into(), c.into());
    }
    if let Some(s) = source {
        e.insert("source".into(), s);
    }
    if let Some(l) = links {
        e.insert("links".into(), l);
    }
    Value::Object(e)
}

fn pointer(p: &str) -> Option<Value> {
    Some(json!({ "pointer": p }))
}

/// An error answered by a controller: `{"meta": {"id": request id}, "errors": [...]}`.
fn controller_errors(status: u16, request_id: &str, errors: Vec<Value>) -> Response {
    doc(
        status,
        &json!({ "meta": { "id": request_id }, "errors": errors }),
    )
}

/// An error answered by Keygen's Rack middleware (`lib/keygen/middleware.rb`): no `meta`.
fn middleware_error(status: u16, title: &str, detail: &str, code: &str) -> Response {
    doc(
        status,
        &json!({ "errors": [error_object(title, detail, Some(code), None, None)] }),
    )
}

fn endpoint_not_found() -> Response {
    middleware_error(
        404,
        "Not found",
        "The requested endpoint was not found (check your HTTP method, Accept header, and URL path)",
        "NOT_FOUND",
    )
}

/// `render_not_found detail: "The requested {model} '{id}' was not found"`.
fn not_found(request_id: &str, model: &str, id: &str) -> Response {
    controller_errors(
        404,
        request_id,
        vec![error_object(
            "Not found",
            &format!("The requested {model} '{id}' was not found"),
            Some("NOT_FOUND"),
            None,
            None,
        )],
    )
}

/// `render_bad_request` for a typed-params or query-parameter error.
fn bad_request(request_id: &str, detail: &str, source: Value) -> Response {
    controller_errors(
        400,
        request_id,
        vec![error_object(
            "Bad request",
            detail,
            None,
            Some(source),
            None,
        )],
    )
}

/// `render_unprocessable_entity` (the permits controller's refusals): no code.
fn unprocessable_entity(request_id: &str, detail: &str, source: Option<Value>) -> Response {
    controller_errors(
        422,
        request_id,
        vec![error_object(
            "Unprocessable entity",
            detail,
            None,
            source,
            None,
        )],
    )
}

/// A model validation error as `render_unprocessable_resource` answers it: title
/// `Unprocessable resource`, a code built from the attribute and the error type, the pointer,
/// and a link to the attribute's documentation.
fn resource_error(attr: &str, kind: &str, detail: &str) -> Value {
    let (pointer_path, anchor) = match attr {
        "id" => ("/data/id".to_owned(), "licenses-object".to_owned()),
        "policy" | "product" | "owner" | "group" => (
            format!("/data/relationships/{attr}"),
            format!("licenses-object-relationships-{attr}"),
        ),
        _ => {
            let c = camel(attr);
            (
                format!("/data/attributes/{c}"),
                format!("licenses-object-attrs-{c}"),
            )
        }
    };
    let code = format!("{attr}_{kind}").to_ascii_uppercase();
    error_object(
        "Unprocessable resource",
        detail,
        Some(&code),
        pointer(&pointer_path),
        Some(json!({ "about": format!("{DOCS}licenses/#{anchor}") })),
    )
}

/// A 401 as `Authentication` raises it and `rescue_from_exceptions` renders it.
fn unauthorized(request_id: &str, code: &str) -> Response {
    let about = match code {
        "TOKEN_MISSING" => format!("{DOCS}authentication/"),
        _ => format!("{DOCS}authentication/#token-authentication"),
    };
    let detail = match code {
        "TOKEN_FORMAT_INVALID" => "Token format is invalid (make sure that you're providing a token value, not a token's UUID identifier)",
        _ => "You must be authenticated to complete the request",
    };
    controller_errors(
        401,
        request_id,
        vec![error_object(
            "Unauthorized",
            detail,
            Some(code),
            None,
            Some(json!({ "about": about })),
        )],
    )
    .with_header("WWW-Authenticate", r#"Bearer realm="keygen""#)
}

/// The reply of an injected `status` fault on a Keygen endpoint: the error body Keygen's own
/// renderer (or Rack::Attack, for 429) gives that status.
pub fn fault_reply(status: u16, rate: Option<KeygenRateLimit>, request_id: &str) -> Response {
    if status == 429 {
        let limit = rate.unwrap_or(KeygenRateLimit {
            limit: 60,
            window_s: 30,
        });
        let now = now_ms().div_euclid(1000);
        let period = i64::try_from(limit.window_s).unwrap_or(30).max(1);
        return Throttle {
            limit,
            count: u64::from(limit.limit) + 1,
            now,
            period,
        }
        .too_many();
    }
    if status == 401 {
        return unauthorized(request_id, "TOKEN_INVALID");
    }
    let (title, detail, code) = match status {
        400 => ("Bad request", "The request could not be completed", None),
        403 => (
            "Access denied",
            "You do not have permission to complete the request",
            None,
        ),
        404 => (
            "Not found",
            "The requested resource was not found",
            Some("NOT_FOUND"),
        ),
        409 => (
            "Conflict",
            "The request could not be completed because of a conflict",
            None,
        ),
        422 => (
            "Unprocessable entity",
            "The request could not be completed",
            None,
        ),
        500 => (
            "Internal server error",
            "Looks like something went wrong! Our engineers have been notified. If you continue to have problems, please contact support@keygen.sh.",
            None,
        ),
        503 => (
            "Service unavailable",
            "Our services are currently unavailable. Please see https://status.keygen.sh for our uptime status and contact support@keygen.sh with any questions.",
            None,
        ),
        _ => (reason(status), "The request could not be completed", None),
    };
    controller_errors(
        status,
        request_id,
        vec![error_object(title, detail, code, None, None)],
    )
}

/// 200 with a body that is neither whole JSON nor UTF-8.
pub fn garbage() -> Response {
    Response::new(
        200,
        CONTENT_TYPE,
        b"{\"data\":{\"id\":\"\xff\xfe\",\"type\":\"licen".to_vec(),
    )
}

// ---------------------------------------------------------------------------------------------
// Serialisation (the serializers' attributes, relationships and links, in their order)

fn account_relationship() -> Value {
    json!({
        "links": { "related": format!("/v1/accounts/{ACCOUNT_ID}") },
        "data": { "type": "accounts", "id": ACCOUNT_ID },
    })
}

fn status_of(l: &Stored, now: i64) -> &'static str {
    match l.expiry {
        _ if l.suspended => "SUSPENDED",
        Some(e) if e < now => "EXPIRED",
        Some(e) if e < now + 3 * DAY_MS => "EXPIRING",
        _ if l.created < now - 90 * DAY_MS => "INACTIVE",
        _ => "ACTIVE",
    }
}

fn license_json(l: &Stored, now: i64) -> Value {
    let base = format!("/v1/accounts/{ACCOUNT_ID}/licenses/{}", l.id);
    let limit = |name: &str| match name {
        "max_machines" => l.max_machines().map_or(Value::Null, Value::from),
        _ => l
            .overrides
            .get(name)
            .map_or(Value::Null, |n| Value::from(*n)),
    };
    json!({
        "id": l.id,
        "type": "licenses",
        "attributes": {
            "name": l.name,
            "key": l.key,
            "expiry": l.expiry.map(iso_ms),
            "status": status_of(l, now),
            "uses": 0,
            "suspended": l.suspended,
            "scheme": null,
            "encrypted": false,
            "strict": false,
            "floating": true,
            "protected": l.protected.unwrap_or(false),
            "version": null,
            "maxMachines": limit("max_machines"),
            "maxProcesses": limit("max_processes"),
            "maxUsers": limit("max_users"),
            "maxCores": limit("max_cores"),
            "maxMemory": limit("max_memory"),
            "maxDisk": limit("max_disk"),
            "maxUses": limit("max_uses"),
            "requireHeartbeat": false,
            "requireCheckIn": false,
            "lastValidated": null,
            "lastCheckIn": null,
            "nextCheckIn": null,
            "lastCheckOut": null,
            "metadata": camel_keys(&l.metadata),
            "created": iso_ms(l.created),
            "updated": iso_ms(l.updated),
        },
        "relationships": {
            "account": account_relationship(),
            "product": {
                "links": { "related": format!("{base}/product") },
                "data": { "type": "products", "id": PRODUCT_ID },
            },
            "policy": {
                "links": { "related": format!("{base}/policy") },
                "data": { "type": "policies", "id": l.policy.id },
            },
            "group": { "links": { "related": format!("{base}/group") }, "data": null },
            "owner": { "links": { "related": format!("{base}/owner") }, "data": null },
            "users": {
                "links": { "related": format!("{base}/users") },
                "meta": { "count": 0 },
            },
            "machines": {
                "links": { "related": format!("{base}/machines") },
                "meta": { "cores": 0, "memory": 0, "disk": 0, "count": 0 },
            },
            "tokens": { "links": { "related": format!("{base}/tokens") } },
            "entitlements": { "links": { "related": format!("{base}/entitlements") } },
        },
        "links": { "self": base },
    })
}

fn policy_json(p: &Policy) -> Value {
    let base = format!("/v1/accounts/{ACCOUNT_ID}/policies/{}", p.id);
    let created = iso_ms(fixture_created_ms());
    // Two halves: one `json!` of every attribute is over the macro's recursion limit.
    let mut attributes = json!({
        "name": p.name,
        "duration": p.duration,
        "strict": false,
        "floating": true,
        "usePool": false,
        "maxMachines": p.max_machines,
        "maxProcesses": null,
        "maxUsers": null,
        "maxCores": null,
        "maxMemory": null,
        "maxDisk": null,
        "maxUses": null,
        "machineUniquenessStrategy": "UNIQUE_PER_LICENSE",
        "machineMatchingStrategy": "MATCH_ANY",
        "componentUniquenessStrategy": "UNIQUE_PER_MACHINE",
        "componentMatchingStrategy": "MATCH_ANY",
        "expirationStrategy": "RESTRICT_ACCESS",
        "expirationBasis": "FROM_CREATION",
        "renewalBasis": "FROM_EXPIRY",
        "transferStrategy": "KEEP_EXPIRY",
        "authenticationStrategy": "TOKEN",
        "machineLeasingStrategy": "PER_LICENSE",
        "processLeasingStrategy": "PER_MACHINE",
        "overageStrategy": "NO_OVERAGE",
    });
    let rest = json!({
        "scheme": null,
        "encrypted": false,
        "protected": false,
        "requireProductScope": false,
        "requirePolicyScope": false,
        "requireMachineScope": false,
        "requireFingerprintScope": false,
        "requireComponentsScope": false,
        "requireUserScope": false,
        "requireChecksumScope": false,
        "requireVersionScope": false,
        "requireCheckIn": false,
        "checkInInterval": null,
        "checkInIntervalCount": null,
        "heartbeatDuration": null,
        "heartbeatCullStrategy": "DEACTIVATE_DEAD",
        "heartbeatResurrectionStrategy": "NO_REVIVE",
        "heartbeatBasis": "FROM_FIRST_PING",
        "requireHeartbeat": false,
        "metadata": {},
        "created": created,
        "updated": created,
    });
    if let (Some(a), Value::Object(r)) = (attributes.as_object_mut(), rest) {
        a.extend(r);
    }
    json!({
        "id": p.id,
        "type": "policies",
        "attributes": attributes,
        "relationships": {
            "account": account_relationship(),
            "product": {
                "links": { "related": format!("{base}/product") },
                "data": { "type": "products", "id": PRODUCT_ID },
            },
            "pool": { "links": { "related": format!("{base}/pool") } },
            "licenses": { "links": { "related": format!("{base}/licenses") } },
            "entitlements": { "links": { "related": format!("{base}/entitlements") } },
        },
        "links": { "self": base },
    })
}

/// `GET /me` with the product token: the product, and the token under `included`.
fn me_json() -> Value {
    let product = format!("/v1/accounts/{ACCOUNT_ID}/products/{PRODUCT_ID}");
    let created = iso_ms(fixture_created_ms());
    let rel = |name: &str| json!({ "links": { "related": format!("{product}/{name}") } });
    json!({
        "data": {
            "id": PRODUCT_ID,
            "type": "products",
            "attributes": {
                "name": "Keygate Stand-in",
                "code": "keygate",
                "distributionStrategy": "LICENSED",
                "url": null,
                "platforms": null,
                "metadata": {},
                "created": created,
                "updated": created,
            },
            "relationships": {
                "account": account_relationship(),
                "policies": rel("policies"),
                "licenses": rel("licenses"),
                "machines": rel("machines"),
                "users": rel("users"),
                "tokens": rel("tokens"),
                "platforms": rel("platforms"),
                "channels": rel("channels"),
                "releases": rel("releases"),
                "artifacts": rel("artifacts"),
            },
            "links": { "self": product },
        },
        "included": [{
            "id": TOKEN_ID,
            "type": "tokens",
            "attributes": {
                "kind": "product-token",
                "expiry": null,
                "name": null,
                "created": created,
                "updated": created,
            },
            "relationships": {
                "account": account_relationship(),
                "bearer": {
                    "links": { "related": product },
                    "data": { "type": "products", "id": PRODUCT_ID },
                },
            },
            "links": { "self": format!("/v1/accounts/{ACCOUNT_ID}/tokens/{TOKEN_ID}") },
        }],
    })
}

// ---------------------------------------------------------------------------------------------
// Request handling

/// What one call carries through the handlers.
struct Call<'a> {
    req: &'a Request,
    now: i64,
    request_id: String,
    /// The JSON body with every key snake_cased (`None`: no body Keygen would parse).
    body: Option<Value>,
}

/// A random version-4 UUID (`SecureRandom.uuid`): ids and request ids.
pub fn request_id(rng: &mut Rng) -> String {
    uuid(rng)
}

fn uuid(rng: &mut Rng) -> String {
    let hex = rng.string(b"0123456789abcdef", 32);
    let h = |a: usize, b: usize| hex.get(a..b).unwrap_or("0").to_owned();
    // Version 4, variant 10xx: the shape `SecureRandom.uuid` gives.
    let variant = ["8", "9", "a", "b"]
        .get(usize::try_from(rng.next_u64() % 4).unwrap_or(0))
        .copied()
        .unwrap_or("8");
    format!(
        "{}-{}-4{}-{}{}-{}",
        h(0, 8),
        h(8, 12),
        h(13, 16),
        variant,
        h(17, 20),
        h(20, 32)
    )
}

/// `generate_unencrypted_key!`: 16 random bytes as hex, its last two characters replaced by the
/// algorithm version `v3`, split every 6 characters with `-`, upper-cased
/// (`C1B6DE-39A6E3-DE1529-8F710B-A7C1E8-V3`).
fn license_key(rng: &mut Rng) -> String {
    let hex = rng.string(b"0123456789abcdef", 30) + "v3";
    hex.as_bytes()
        .chunks(6)
        .map(|c| String::from_utf8_lossy(c).to_ascii_uppercase())
        .collect::<Vec<_>>()
        .join("-")
}

/// `Accept` must allow JSON:API, JSON or binary (`MimeTypeConstraint`): a missing header does.
fn accept_ok(req: &Request) -> bool {
    let Some(accept) = req.header("accept") else {
        return true;
    };
    let types: Vec<String> = accept
        .split(',')
        .map(|t| {
            t.split(';')
                .next()
                .unwrap_or_default()
                .trim()
                .to_ascii_lowercase()
        })
        .filter(|t| !t.is_empty())
        .collect();
    types.is_empty()
        || types.iter().any(|t| {
            matches!(
                t.as_str(),
                "*/*"
                    | "application/vnd.api+json"
                    | "application/json"
                    | "application/octet-stream"
            )
        })
}

/// The body as Keygen's JSON parameter parser reads it (`config/initializers/jsonapi.rb` after
/// `Keygen::Middleware::DefaultContentType`): POST/PUT/PATCH bodies whose content type is JSON,
/// JSON:API, missing, a form or text; keys snake_cased; a non-object wrapped as `data`.
/// `Err` for a body that is not JSON.
fn parse_body(req: &Request) -> Result<Option<Value>, ()> {
    if !matches!(req.method.as_str(), "POST" | "PUT" | "PATCH") || req.body.is_empty() {
        return Ok(None);
    }
    let mime = req
        .header("content-type")
        .and_then(|ct| ct.split(';').next())
        .map(|m| m.trim().to_ascii_lowercase())
        .unwrap_or_default();
    let parsed = mime.is_empty()
        || matches!(
            mime.as_str(),
            "application/json"
                | "application/vnd.api+json"
                | "application/x-www-form-urlencoded"
                | "multipart/form-data"
        )
        || mime.starts_with("text/");
    if !parsed {
        return Ok(None);
    }
    let value: Value = serde_json::from_slice(&req.body).map_err(|_| ())?;
    let value = match value {
        Value::Object(_) => value,
        other => json!({ "data": other }),
    };
    Ok(Some(transform_keys(&value, &snake)))
}

/// The credentials (`Authentication#authenticate_with_token!`): `Ok` for the product token,
/// else the 401 code.
fn authenticate(req: &Request) -> Result<(), &'static str> {
    let auth = req.header("authorization").unwrap_or_default();
    let (scheme, value) = auth.split_once(' ').unwrap_or((auth, ""));
    let value = value.trim();
    let token = match scheme.to_ascii_lowercase().as_str() {
        "bearer" | "token" => value.to_owned(),
        "basic" => {
            let decoded = base64_decode(value).unwrap_or_default();
            let (user, pass) = decoded.split_once(':').unwrap_or((&decoded, ""));
            match user {
                "token" | "license" => pass.to_owned(),
                _ => user.to_owned(),
            }
        }
        _ => {
            let pairs = req.query_pairs();
            let query = pairs
                .iter()
                .find(|(k, _)| k == "token" || k == "auth")
                .map(|(_, v)| v.clone())
                .unwrap_or_default();
            match query.split_once(':') {
                Some(("token" | "license", pass)) => pass.to_owned(),
                _ => query,
            }
        }
    };
    if token.is_empty() {
        return Err("TOKEN_MISSING");
    }
    if is_uuid(&token) {
        return Err("TOKEN_FORMAT_INVALID");
    }
    if token == TOKEN {
        Ok(())
    } else {
        Err("TOKEN_INVALID")
    }
}

fn base64_decode(s: &str) -> Option<String> {
    let mut bits = 0u32;
    let mut n = 0;
    let mut out = Vec::new();
    for c in s.trim_end_matches('=').bytes() {
        let v = match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        };
        bits = (bits << 6) | u32::from(v);
        n += 6;
        if n >= 8 {
            n -= 8;
            out.push(u8::try_from((bits >> n) & 0xff).ok()?);
        }
    }
    String::from_utf8(out).ok()
}

/// A Keygen call: the throttle, then Keygen's own order (route and mime type, body, account,
/// token, the controller). Every reply but the Rack-level ones carries the `X-RateLimit-*`
/// headers while a throttle is on.
pub fn serve(shared: &Shared, endpoint: Endpoint, req: &Request) -> Response {
    let mut state = shared.lock();
    let now = now_ms();
    let throttle = state.keygen.count(now);
    if let Some(t) = throttle.filter(Throttle::exceeded) {
        return t.too_many();
    }
    let (resp, controller) = handle(&mut state, endpoint, req, now);
    match throttle {
        Some(t) if controller => t.headers(resp),
        _ => resp,
    }
}

/// The reply, and whether a controller (not the Rack middleware) gave it.
fn handle(state: &mut State, endpoint: Endpoint, req: &Request, now: i64) -> (Response, bool) {
    if endpoint == Endpoint::Other {
        return (endpoint_not_found(), false);
    }
    if !accept_ok(req) {
        let resp = middleware_error(
            400,
            "Bad request",
            "The mime type of the request is not acceptable (check content-type and accept headers)",
            "MIME_TYPE_INVALID",
        );
        return (resp, false);
    }
    let Ok(body) = parse_body(req) else {
        let resp = middleware_error(
            400,
            "Bad request",
            "The request could not be completed because it contains invalid JSON (check formatting/encoding)",
            "JSON_INVALID",
        );
        return (resp, false);
    };
    let call = Call {
        req,
        now,
        request_id: uuid(&mut state.rng),
        body,
    };
    let account = path_account(&req.path);
    if account != ACCOUNT && !account.eq_ignore_ascii_case(ACCOUNT_ID) {
        return (not_found(&call.request_id, "account", &account), true);
    }
    if let Err(code) = authenticate(req) {
        return (unauthorized(&call.request_id, code), true);
    }
    let resp = match endpoint {
        Endpoint::KeygenCreate => create(state, &call),
        Endpoint::KeygenList => list(state, &call),
        Endpoint::KeygenRead => with_license(state, &call, |l, call| {
            doc(200, &json!({ "data": license_json(l, call.now) }))
        }),
        Endpoint::KeygenUpdate => update(state, &call),
        Endpoint::KeygenSuspend => with_license(state, &call, suspend),
        Endpoint::KeygenReinstate => with_license(state, &call, reinstate),
        Endpoint::KeygenRenew => with_license(state, &call, renew),
        Endpoint::KeygenPolicy => {
            let id = path_param(&req.path, "policies").unwrap_or_default();
            match policy(&id) {
                Some(p) => doc(200, &json!({ "data": policy_json(p) })),
                None => not_found(&call.request_id, "policy", &id),
            }
        }
        Endpoint::KeygenMe => doc(200, &me_json()),
        _ => endpoint_not_found(),
    };
    (resp, true)
}

/// `FindByAliasService.call(licenses, id:, aliases: :key)`: the license whose id (when the
/// path segment looks like a UUID) or key it is, the oldest first; 404 otherwise.
fn with_license(
    state: &mut State,
    call: &Call<'_>,
    f: impl FnOnce(&mut Stored, &Call<'_>) -> Response,
) -> Response {
    let id = path_param(&call.req.path, "licenses").unwrap_or_default();
    let by_id = is_uuid(&id);
    let found = state.keygen.licenses.iter_mut().find(|l| {
        (by_id
            && l.id
                .replace('-', "")
                .eq_ignore_ascii_case(&id.replace('-', "")))
            || l.key == id
    });
    match found {
        Some(l) => f(l, call),
        None => not_found(&call.request_id, "license", &id),
    }
}

fn suspend(l: &mut Stored, call: &Call<'_>) -> Response {
    if l.suspended {
        return unprocessable_entity(
            &call.request_id,
            "is already suspended",
            pointer("/data/attributes/suspended"),
        );
    }
    l.suspended = true;
    l.updated = call.now;
    doc(200, &json!({ "data": license_json(l, call.now) }))
}

fn reinstate(l: &mut Stored, call: &Call<'_>) -> Response {
    if !l.suspended {
        return unprocessable_entity(
            &call.request_id,
            "is not suspended",
            pointer("/data/attributes/suspended"),
        );
    }
    l.suspended = false;
    l.updated = call.now;
    doc(200, &json!({ "data": license_json(l, call.now) }))
}

/// `License#renew!` under `renewalBasis` FROM_EXPIRY: every call adds the duration.
fn renew(l: &mut Stored, call: &Call<'_>) -> Response {
    let Some(duration) = l.policy.duration else {
        return unprocessable_entity(
            &call.request_id,
            "cannot be renewed because the policy does not have a duration",
            None,
        );
    };
    let Some(expiry) = l.expiry else {
        // `renew!` returns false without an error: `render_unprocessable_resource` of a
        // license without errors.
        return controller_errors(422, &call.request_id, Vec::new());
    };
    l.expiry = Some(add_duration(expiry, duration));
    l.renewals += 1;
    l.updated = call.now;
    doc(200, &json!({ "data": license_json(l, call.now) }))
}

// --- typed params ----------------------------------------------------------------------------

/// A 400 from `typed_params` (`rescue_from_exceptions`): detail and JSON pointer.
struct ParamError(String, String);

fn type_name(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "float",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn mismatch(v: &Value, expected: &str, at: &str) -> ParamError {
    ParamError(
        format!(
            "type mismatch (received {} expected {expected})",
            type_name(v)
        ),
        at.to_owned(),
    )
}

fn missing(at: &str) -> ParamError {
    ParamError("is missing".into(), at.into())
}

fn unpermitted(at: &str) -> ParamError {
    ParamError("unpermitted parameter".into(), at.into())
}

/// `data` and `data.type` (`license` or `licenses`); the `data` object.
fn data_object(body: Option<&Value>) -> Result<&Map<String, Value>, ParamError> {
    let data = body
        .and_then(|b| b.get("data"))
        .ok_or_else(|| missing("/data"))?;
    let data = data
        .as_object()
        .ok_or_else(|| mismatch(data, "object", "/data"))?;
    match data.get("type") {
        None => return Err(missing("/data/type")),
        Some(Value::String(t)) if t == "license" || t == "licenses" => {}
        Some(Value::String(_)) => return Err(ParamError("is invalid".into(), "/data/type".into())),
        Some(other) => return Err(mismatch(other, "string", "/data/type")),
    }
    Ok(data)
}

/// What a create or an update asks to change.
#[derive(Default)]
struct Changes {
    id: Option<String>,
    name: Option<Option<String>>,
    key: Option<String>,
    expiry: Option<Option<i64>>,
    suspended: Option<bool>,
    protected: Option<bool>,
    limits: BTreeMap<&'static str, Option<i64>>,
    metadata: Option<Map<String, Value>>,
    policy: Option<String>,
    /// Relationships given with data that the stand-in has none of (`owner`, `group`).
    missing_relations: Vec<&'static str>,
}

fn metadata_depth_ok(value: &Value, depth: usize) -> bool {
    let children: Vec<&Value> = match value {
        Value::Object(m) => m.values().collect(),
        Value::Array(a) => a.iter().collect(),
        _ => return true,
    };
    children.into_iter().all(|v| match v {
        Value::Object(_) | Value::Array(_) => {
            depth < METADATA_MAX_DEPTH && metadata_depth_ok(v, depth + 1)
        }
        _ => true,
    })
}

/// The attributes of a create (`create: true`) or an update, as the controllers' typed params
/// take them (keys already snake_cased).
fn attributes(attrs: &Map<String, Value>, create: bool, c: &mut Changes) -> Result<(), ParamError> {
    for (k, v) in attrs {
        let at = format!("/data/attributes/{}", camel(k));
        // Optional parameters sent as null are dropped unless they allow null
        // (`ignore_nil_optionals`).
        match (k.as_str(), v) {
            ("name", Value::Null) => c.name = Some(None),
            ("name", Value::String(s)) => c.name = Some(Some(s.clone())),
            ("name", _) => return Err(mismatch(v, "string", &at)),
            ("key", _) if !create => return Err(unpermitted(&at)),
            ("key", Value::Null) => {}
            ("key", Value::String(s)) => c.key = Some(s.clone()),
            ("key", _) => return Err(mismatch(v, "string", &at)),
            ("expiry", Value::Null) => c.expiry = Some(None),
            ("expiry", Value::String(s)) => match parse_time(s) {
                Some(t) => c.expiry = Some(Some(t)),
                None => return Err(ParamError("failed to coerce string to time".into(), at)),
            },
            ("expiry", _) => {
                return Err(ParamError(
                    format!("failed to coerce {} to time", type_name(v)),
                    at,
                ))
            }
            ("suspended" | "protected", Value::Null) => {}
            ("suspended", Value::Bool(b)) => c.suspended = Some(*b),
            ("protected", Value::Bool(b)) => c.protected = Some(*b),
            ("suspended" | "protected", _) => return Err(mismatch(v, "boolean", &at)),
            ("metadata", Value::Null) => {}
            ("metadata", Value::Object(m)) => {
                if !metadata_depth_ok(v, 0) {
                    return Err(ParamError(
                        format!("maximum depth of {METADATA_MAX_DEPTH} exceeded"),
                        at,
                    ));
                }
                c.metadata = Some(m.clone());
            }
            ("metadata", _) => return Err(mismatch(v, "object", &at)),
            (name, _) => match LIMITS.iter().find(|l| **l == name) {
                Some(limit) => match v {
                    Value::Null => {
                        c.limits.insert(limit, None);
                    }
                    Value::Number(n) if n.is_i64() => {
                        c.limits.insert(limit, n.as_i64());
                    }
                    _ => return Err(mismatch(v, "integer", &at)),
                },
                None => return Err(unpermitted(&at)),
            },
        }
    }
    Ok(())
}

/// `relationships` of a create: `policy` required, `owner` (alias `user`) and `group` optional.
fn relationships(rels: &Value, c: &mut Changes) -> Result<(), ParamError> {
    let rels = rels
        .as_object()
        .ok_or_else(|| mismatch(rels, "object", "/data/relationships"))?;
    for (k, v) in rels {
        let (name, type_ok): (&'static str, &[&str]) = match k.as_str() {
            "policy" => ("policy", &["policy", "policies"]),
            "owner" | "user" => ("owner", &["user", "users"]),
            "group" => ("group", &["group", "groups"]),
            _ => return Err(unpermitted(&format!("/data/relationships/{}", camel(k)))),
        };
        let at = format!("/data/relationships/{name}");
        let rel = v.as_object().ok_or_else(|| mismatch(v, "object", &at))?;
        let data_at = format!("{at}/data");
        let data = match rel.get("data") {
            None => return Err(missing(&data_at)),
            Some(Value::Null) if name != "policy" => continue,
            Some(Value::Null) => return Err(ParamError("cannot be null".into(), data_at)),
            Some(Value::Object(d)) => d,
            Some(other) => return Err(mismatch(other, "object", &data_at)),
        };
        match data.get("type") {
            None => return Err(missing(&format!("{data_at}/type"))),
            Some(Value::String(t)) if type_ok.contains(&t.as_str()) => {}
            Some(Value::String(_)) => {
                return Err(ParamError("is invalid".into(), format!("{data_at}/type")))
            }
            Some(other) => return Err(mismatch(other, "string", &format!("{data_at}/type"))),
        }
        let id_at = format!("{data_at}/id");
        let id = match data.get("id") {
            None => return Err(missing(&id_at)),
            Some(Value::String(id)) if is_uuid(id) => id.clone(),
            Some(other) => return Err(mismatch(other, "UUID string", &id_at)),
        };
        if name == "policy" {
            c.policy = Some(id);
        } else {
            c.missing_relations.push(name);
        }
    }
    if c.policy.is_none() {
        return Err(missing("/data/relationships/policy"));
    }
    Ok(())
}

/// The model's validations that can fail here, in their declaration order.
fn validate(
    state: &State,
    c: &Changes,
    policy: Option<&Policy>,
    this: Option<&str>,
    create: bool,
) -> Vec<Value> {
    let mut errors = Vec::new();
    if create && policy.is_none() {
        errors.push(resource_error("policy", "not_found", "must exist"));
        errors.push(resource_error("product", "not_found", "must exist"));
    }
    for rel in &c.missing_relations {
        errors.push(resource_error(rel, "not_found", "must exist"));
    }
    if let Some(id) = &c.id {
        if state
            .keygen
            .licenses
            .iter()
            .any(|l| l.id.eq_ignore_ascii_case(id))
        {
            errors.push(resource_error(
                "id",
                "conflict",
                "must not conflict with another license",
            ));
        }
    }
    if let Some(m) = &c.metadata {
        let stored = Value::Object(m.clone());
        if stored.to_string().len() > METADATA_MAX_BYTES {
            errors.push(resource_error(
                "metadata",
                "too_long",
                &format!("too large (exceeded limit of {METADATA_MAX_BYTES} bytes)"),
            ));
        }
        if count_keys(&stored) > METADATA_MAX_KEYS {
            errors.push(resource_error(
                "metadata",
                "too_long",
                &format!("too many keys (exceeded limit of {METADATA_MAX_KEYS} keys)"),
            ));
        }
    }
    if let Some(key) = &c.key {
        if key == "actions" || key == "action" {
            errors.push(resource_error("key", "not_allowed", "is reserved"));
        }
        if state.keygen.licenses.iter().any(|l| &l.key == key) {
            errors.push(resource_error("key", "taken", "has already been taken"));
        }
        if key.chars().count() < 6 {
            errors.push(resource_error(
                "key",
                "too_short",
                "is too short (minimum is 6 characters)",
            ));
        }
        if is_uuid(key)
            && state
                .keygen
                .licenses
                .iter()
                .any(|l| l.id.eq_ignore_ascii_case(key) && Some(l.id.as_str()) != this)
        {
            errors.push(resource_error(
                "key",
                "conflict",
                "must not conflict with another license's identifier (UUID)",
            ));
        }
    }
    if let Some(Some(name)) = &c.name {
        if name.chars().count() > 1024 {
            errors.push(resource_error(
                "name",
                "too_long",
                "is too long (maximum is 1024 characters)",
            ));
        }
    }
    for (limit, value) in &c.limits {
        let Some(n) = value else { continue };
        let floor = match *limit {
            "max_machines" | "max_uses" | "max_processes" | "max_users" => 0,
            _ => 1,
        };
        let detail = if *n < floor {
            format!("must be greater than or equal to {floor}")
        } else if *n > INT4_MAX && !matches!(*limit, "max_memory" | "max_disk") {
            format!("must be less than or equal to {INT4_MAX}")
        } else if *limit == "max_machines" && *n < 1 {
            // The policies are floating.
            "must be greater than or equal to 1 for floating policy".to_owned()
        } else {
            continue;
        };
        errors.push(resource_error(limit, "invalid", &detail));
    }
    errors
}

fn count_keys(v: &Value) -> usize {
    match v {
        Value::Object(m) => m.len() + m.values().map(count_keys).sum::<usize>(),
        Value::Array(a) => a.iter().map(count_keys).sum(),
        _ => 0,
    }
}

fn apply(l: &mut Stored, c: Changes) {
    if let Some(name) = c.name {
        l.name = name;
    }
    if let Some(expiry) = c.expiry {
        l.expiry = expiry;
    }
    if let Some(s) = c.suspended {
        l.suspended = s;
    }
    if let Some(p) = c.protected {
        l.protected = Some(p);
    }
    for (limit, value) in c.limits {
        match value {
            Some(n) => l.overrides.insert(limit, n),
            None => l.overrides.remove(limit),
        };
    }
    if let Some(m) = c.metadata {
        l.metadata = m;
    }
}

/// `POST /licenses`.
fn create(state: &mut State, call: &Call<'_>) -> Response {
    let mut c = Changes::default();
    let parsed = (|| {
        let data = data_object(call.body.as_ref())?;
        for k in data.keys() {
            if !matches!(k.as_str(), "type" | "id" | "attributes" | "relationships") {
                return Err(unpermitted(&format!("/data/{}", camel(k))));
            }
        }
        match data.get("id") {
            None | Some(Value::Null) => {}
            Some(Value::String(id)) if is_uuid(id) => c.id = Some(id.to_ascii_lowercase()),
            Some(other) => return Err(mismatch(other, "UUID string", "/data/id")),
        }
        match data.get("attributes") {
            None | Some(Value::Null) => {}
            Some(Value::Object(a)) => attributes(a, true, &mut c)?,
            Some(other) => return Err(mismatch(other, "object", "/data/attributes")),
        }
        let rels = data
            .get("relationships")
            .ok_or_else(|| missing("/data/relationships"))?;
        relationships(rels, &mut c)
    })();
    if let Err(ParamError(detail, at)) = parsed {
        return bad_request(&call.request_id, &detail, json!({ "pointer": at }));
    }
    let policy = c.policy.as_deref().and_then(policy);
    let errors = validate(state, &c, policy, None, true);
    let Some(policy) = policy.filter(|_| errors.is_empty()) else {
        return controller_errors(422, &call.request_id, errors);
    };
    let id = match c.id.take() {
        Some(id) => id,
        None => uuid(&mut state.rng),
    };
    let key = match c.key.take() {
        Some(k) => k,
        None => loop {
            let k = license_key(&mut state.rng);
            if !state.keygen.licenses.iter().any(|l| l.key == k) {
                break k;
            }
        },
    };
    state.keygen.seq += 1;
    let mut license = Stored {
        id,
        key,
        name: None,
        policy,
        suspended: false,
        protected: None,
        expiry: None,
        overrides: BTreeMap::new(),
        metadata: Map::new(),
        renewals: 0,
        seq: state.keygen.seq,
        created: call.now,
        updated: call.now,
    };
    apply(&mut license, c);
    // `set_expiry_on_creation`: an expiry left out (or null) comes from the policy.
    if license.expiry.is_none() {
        license.expiry = policy.duration.map(|d| add_duration(call.now, d));
    }
    let body = json!({ "data": license_json(&license, call.now) });
    let host = call.req.header("host").unwrap_or("localhost");
    let location = format!(
        "http://{host}/v1/accounts/{ACCOUNT_ID}/licenses/{}",
        license.id
    );
    state.keygen.licenses.push(license);
    doc(201, &body).with_header("Location", location)
}

/// `PATCH`/`PUT /licenses/{id or key}`.
fn update(state: &mut State, call: &Call<'_>) -> Response {
    let id = path_param(&call.req.path, "licenses").unwrap_or_default();
    let by_id = is_uuid(&id);
    let Some(index) = state.keygen.licenses.iter().position(|l| {
        (by_id
            && l.id
                .replace('-', "")
                .eq_ignore_ascii_case(&id.replace('-', "")))
            || l.key == id
    }) else {
        return not_found(&call.request_id, "license", &id);
    };
    let mut c = Changes::default();
    let parsed = (|| {
        let data = data_object(call.body.as_ref())?;
        for k in data.keys() {
            if !matches!(k.as_str(), "type" | "id" | "attributes") {
                return Err(unpermitted(&format!("/data/{}", camel(k))));
            }
        }
        match data.get("attributes") {
            None => Err(missing("/data/attributes")),
            Some(Value::Object(a)) => attributes(a, false, &mut c),
            Some(other) => Err(mismatch(other, "object", "/data/attributes")),
        }
    })();
    if let Err(ParamError(detail, at)) = parsed {
        return bad_request(&call.request_id, &detail, json!({ "pointer": at }));
    }
    let this = state
        .keygen
        .licenses
        .get(index)
        .map(|l| (l.id.clone(), l.policy));
    let Some((this_id, policy)) = this else {
        return not_found(&call.request_id, "license", &id);
    };
    let errors = validate(state, &c, Some(policy), Some(&this_id), false);
    if !errors.is_empty() {
        return controller_errors(422, &call.request_id, errors);
    }
    let Some(l) = state.keygen.licenses.get_mut(index) else {
        return not_found(&call.request_id, "license", &id);
    };
    apply(l, c);
    l.updated = call.now;
    doc(200, &json!({ "data": license_json(l, call.now) }))
}

// --- the list ----------------------------------------------------------------------------------

/// A query parameter as Rails nests `a[b][c]=v`.
#[derive(Debug, Clone, PartialEq)]
enum Param {
    Value(String),
    Nested(BTreeMap<String, Param>),
}

/// Rails' parameter nesting of a query string (`a[b]=1&a[c]=2` → `{a: {b: 1, c: 2}}`); later
/// values win; array forms (`a[]=`) are dropped.
fn nest_query(pairs: &[(String, String)]) -> BTreeMap<String, Param> {
    let mut root: BTreeMap<String, Param> = BTreeMap::new();
    for (k, v) in pairs {
        let (head, rest) = match k.find('[') {
            Some(i) => (
                k.get(..i).unwrap_or_default(),
                k.get(i..).unwrap_or_default(),
            ),
            None => (k.as_str(), ""),
        };
        let mut path = vec![head.to_owned()];
        let mut rest = rest;
        let mut ok = true;
        while let Some(r) = rest.strip_prefix('[') {
            match r.split_once(']') {
                Some((key, tail)) if !key.is_empty() => {
                    path.push(key.to_owned());
                    rest = tail;
                }
                _ => {
                    ok = false;
                    break;
                }
            }
        }
        if !ok || head.is_empty() {
            continue;
        }
        insert_param(&mut root, &path, v.clone());
    }
    root
}

fn insert_param(map: &mut BTreeMap<String, Param>, path: &[String], value: String) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    if rest.is_empty() {
        map.insert(first.clone(), Param::Value(value));
        return;
    }
    let entry = map
        .entry(first.clone())
        .or_insert_with(|| Param::Nested(BTreeMap::new()));
    if let Param::Value(_) = entry {
        *entry = Param::Nested(BTreeMap::new());
    }
    if let Param::Nested(inner) = entry {
        insert_param(inner, rest, value);
    }
}

/// Ruby's `CGI.escape`.
fn cgi_escape(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'_' | b'.' | b'-' | b'~' => {
                out.push(char::from(b))
            }
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// Rails' `Hash#to_query`: `key=value` pairs, nested keys as `a[b]`, escaped, each level sorted.
fn to_query(map: &BTreeMap<String, Param>, namespace: Option<&str>) -> String {
    let mut parts: Vec<String> = map
        .iter()
        .filter_map(|(k, v)| {
            let key = match namespace {
                Some(ns) => format!("{ns}[{k}]"),
                None => k.clone(),
            };
            match v {
                Param::Value(s) => Some(format!("{}={}", cgi_escape(&key), cgi_escape(s))),
                Param::Nested(inner) if inner.is_empty() => None,
                Param::Nested(inner) => Some(to_query(inner, Some(&key))),
            }
        })
        .collect();
    parts.sort();
    parts.join("&")
}

fn param_str<'a>(map: &'a BTreeMap<String, Param>, key: &str) -> Option<&'a str> {
    match map.get(key) {
        Some(Param::Value(s)) => Some(s),
        _ => None,
    }
}

/// Ruby's `String#to_i`: leading white space, an optional sign, digits; 0 when none.
fn ruby_to_i(s: &str) -> i64 {
    let s = s.trim_start();
    let (sign, digits) = match s.strip_prefix('-') {
        Some(rest) => (-1, rest),
        None => (1, s.strip_prefix('+').unwrap_or(s)),
    };
    let n: String = digits.chars().take_while(char::is_ascii_digit).collect();
    n.parse::<i64>().map_or(0, |v| sign * v)
}

/// `License.search_metadata`: the stored value equals the query value as a string, or as
/// Keygen casts it (`true`, `false`, `null`, an integer, a decimal).
fn metadata_matches(stored: &Map<String, Value>, filters: &[(String, String)]) -> bool {
    filters.iter().all(|(key, value)| {
        let Some(have) = stored.get(&snake(key)) else {
            return false;
        };
        if have.as_str() == Some(value.as_str()) {
            return true;
        }
        let is_int = !value.is_empty() && value.bytes().all(|b| b.is_ascii_digit());
        let is_dec = value.split_once('.').is_some_and(|(a, b)| {
            !a.is_empty()
                && !b.is_empty()
                && a.bytes().all(|c| c.is_ascii_digit())
                && b.bytes().all(|c| c.is_ascii_digit())
        });
        match value.as_str() {
            "true" => have == &Value::Bool(true),
            "false" => have == &Value::Bool(false),
            "null" => have.is_null(),
            _ if is_int || is_dec => {
                matches!((have.as_f64(), value.parse::<f64>()), (Some(a), Ok(b)) if a == b)
            }
            _ => false,
        }
    })
}

/// `GET /licenses`: `apply_scopes` (metadata, policy, status, suspended) then `apply_pagination`.
fn list(state: &mut State, call: &Call<'_>) -> Response {
    let rid = call.request_id.as_str();
    let params = nest_query(&call.req.query_pairs());
    // `Pagination::Params`: page is absent, or `{number[, size]}` / `{cursor[, size]}`.
    let page = match params.get("page") {
        None => None,
        Some(Param::Nested(p))
            if (p.keys().all(|k| k == "number" || k == "size") && p.contains_key("number"))
                || (p.keys().all(|k| k == "cursor" || k == "size") && p.contains_key("cursor")) =>
        {
            Some(p)
        }
        Some(_) => {
            return bad_request(
                rid,
                "page must be an object containing a cursor or number and optional size",
                json!({ "parameter": "page" }),
            )
        }
    };
    let order = param_str(&params, "order").unwrap_or("desc");
    let descending = match order.to_ascii_uppercase().as_str() {
        "DESC" => true,
        "ASC" => false,
        _ => return bad_request(rid, "order is invalid", json!({ "parameter": "order" })),
    };
    let limit = param_str(&params, "limit").map_or(DEFAULT_PAGE_SIZE, ruby_to_i);
    let page_str = |k: &str| match page.and_then(|p| p.get(k)) {
        Some(Param::Value(s)) => Some(s.as_str()),
        _ => None,
    };
    if page.is_some_and(|p| p.contains_key("cursor")) {
        return bad_request(
            rid,
            "page[cursor]: keyset pagination is not served by the stand-in",
            json!({ "parameter": "page[cursor]" }),
        );
    }
    let offset =
        page_str("number").map(|n| (ruby_to_i(n), page_str("size").map_or(limit, ruby_to_i)));
    let size = match offset {
        Some((number, size)) => {
            if !(1..=PAGE_UPPER).contains(&number) {
                let more = if number > PAGE_UPPER {
                    ", please use cursor-based pagination instead"
                } else {
                    ""
                };
                return bad_request(
                    rid,
                    &format!("page number must be a number between 1 and {PAGE_UPPER} (got {number}{more})"),
                    json!({ "parameter": "page[number]" }),
                );
            }
            if !(1..=PAGE_UPPER).contains(&size) {
                return bad_request(
                    rid,
                    &format!("page size must be a number between 1 and {PAGE_UPPER} (got {size})"),
                    json!({ "parameter": "page[size]" }),
                );
            }
            size
        }
        None => {
            if !(1..=PAGE_UPPER).contains(&limit) {
                return bad_request(
                    rid,
                    &format!("limit must be a number between 1 and {PAGE_UPPER} (got {limit})"),
                    json!({ "parameter": "limit" }),
                );
            }
            limit
        }
    };
    let metadata: Vec<(String, String)> = match params.get("metadata") {
        Some(Param::Nested(m)) => m
            .iter()
            .filter_map(|(k, v)| match v {
                Param::Value(s) => Some((k.clone(), s.clone())),
                Param::Nested(_) => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let policy_filter = param_str(&params, "policy");
    let status_filter = param_str(&params, "status").map(str::to_ascii_uppercase);
    let suspended_filter = param_str(&params, "suspended").map(|s| s == "true");
    let now = call.now;
    let mut found: Vec<&Stored> = state
        .keygen
        .licenses
        .iter()
        .filter(|l| metadata_matches(&l.metadata, &metadata))
        .filter(|l| policy_filter.is_none_or(|p| l.policy.id.eq_ignore_ascii_case(p)))
        .filter(|l| {
            status_filter
                .as_deref()
                .is_none_or(|s| status_of(l, now) == s)
        })
        .filter(|l| suspended_filter.is_none_or(|s| l.suspended == s))
        .collect();
    found.sort_by_key(|l| (l.created, l.seq));
    if descending {
        found.reverse();
    }
    let size_u = usize::try_from(size).unwrap_or(1);
    let Some((number, _)) = offset else {
        let data: Vec<Value> = found
            .iter()
            .take(size_u)
            .map(|l| license_json(l, now))
            .collect();
        return doc(200, &json!({ "data": data }));
    };
    let count = found.len();
    let pages = count.div_ceil(size_u);
    let number_u = usize::try_from(number).unwrap_or(1);
    let data: Vec<Value> = found
        .iter()
        .skip((number_u - 1) * size_u)
        .take(size_u)
        .map(|l| license_json(l, now))
        .collect();
    let mut base = params.clone();
    base.remove("token");
    base.remove("auth");
    let link = |n: Option<usize>| -> Value {
        let Some(n) = n else { return Value::Null };
        let mut q = base.clone();
        let page: BTreeMap<String, Param> = [
            ("number".to_owned(), Param::Value(n.to_string())),
            ("size".to_owned(), Param::Value(size.to_string())),
        ]
        .into_iter()
        .collect();
        q.insert("page".into(), Param::Nested(page));
        Value::String(format!("{}?{}", call.req.path, to_query(&q, None)))
    };
    let out_of_range = number_u > pages;
    let prev = (number_u > 1 && !out_of_range).then(|| number_u - 1);
    let next = (number_u != pages && !out_of_range).then(|| number_u + 1);
    let links = json!({
        "self": link(Some(number_u)),
        "prev": link(prev),
        "next": link(next),
        "first": link(Some(1)),
        "last": link(Some(pages)),
        "meta": { "pages": pages, "count": count },
    });
    doc(200, &json!({ "data": data, "links": links }))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::parse_form;

    #[test]
    fn rails_duration_arithmetic() {
        let t = parse_time("2026-01-31T00:00:00.000Z").unwrap();
        assert_eq!(
            iso_ms(add_duration(t, ANNUAL_DURATION_S)),
            "2027-01-30T04:39:54.000Z"
        );
        assert_eq!(
            expiry_after("2027-01-30T04:39:54.000Z", ANNUAL_DURATION_S).as_deref(),
            Some("2028-01-29T09:19:48.000Z")
        );
        // A Gregorian year is one calendar year: Feb 29 clamps to Feb 28.
        assert_eq!(
            expiry_after("2028-02-29T12:00:00Z", 31_556_952).as_deref(),
            Some("2029-02-28T12:00:00.000Z")
        );
        // 30 days: 4 weeks and 2 days, no month.
        assert_eq!(
            expiry_after("2026-03-01T00:00:00.250Z", 30 * 86_400).as_deref(),
            Some("2026-03-31T00:00:00.250Z")
        );
    }

    #[test]
    fn times_parse_and_print() {
        assert_eq!(
            parse_time("2027-12-06T18:00:00.000Z")
                .map(iso_ms)
                .as_deref(),
            Some("2027-12-06T18:00:00.000Z")
        );
        assert_eq!(
            parse_time("2027-12-06T19:00:00+01:00")
                .map(iso_ms)
                .as_deref(),
            Some("2027-12-06T18:00:00.000Z")
        );
        assert_eq!(
            parse_time("2027-12-06").map(iso_ms).as_deref(),
            Some("2027-12-06T00:00:00.000Z")
        );
        assert_eq!(
            parse_time("2027-12-06T18:00:00.1234Z")
                .map(iso_ms)
                .as_deref(),
            Some("2027-12-06T18:00:00.123Z")
        );
        for bad in ["2027-02-30", "tomorrow", "2027-12-06T25:00:00Z", ""] {
            assert_eq!(parse_time(bad), None, "{bad}");
        }
    }

    #[test]
    fn key_transforms_follow_rails() {
        assert_eq!(snake("salesforceOrderItemId"), "salesforce_order_item_id");
        assert_eq!(
            snake("salesforce_order_item_id"),
            "salesforce_order_item_id"
        );
        assert_eq!(snake("HTTPServer"), "http_server");
        assert_eq!(snake("contact-email"), "contact_email");
        assert_eq!(snake("a b"), "a_b");
        assert_eq!(camel("salesforce_order_item_id"), "salesforceOrderItemId");
        assert_eq!(camel("company"), "company");
        assert_eq!(camel("item_2x"), "item2x");
    }

    #[test]
    fn queries_nest_and_serialise_as_rails_does() {
        let pairs = parse_form(
            b"metadata%5BsalesforceOrderItemId%5D=802 5&page[size]=100&page[number]=1&token=t",
        );
        let nested = nest_query(&pairs);
        assert_eq!(
            to_query(&nested, None),
            "metadata%5BsalesforceOrderItemId%5D=802+5&page%5Bnumber%5D=1&page%5Bsize%5D=100&token=t"
        );
    }

    #[test]
    fn keys_and_ids_have_keygen_shapes() {
        let mut rng = Rng::new();
        let key = license_key(&mut rng);
        let groups: Vec<usize> = key.split('-').map(str::len).collect();
        assert_eq!(groups, [6, 6, 6, 6, 6, 2]);
        assert!(key.ends_with("-V3"));
        assert!(key
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_digit() || (b'A'..=b'F').contains(&b) || b == b'V'));
        let id = uuid(&mut rng);
        assert!(is_uuid(&id), "{id}");
        assert_eq!(id.get(14..15), Some("4"));
        for p in [
            POLICY_PERPETUAL,
            POLICY_ANNUAL,
            ACCOUNT_ID,
            PRODUCT_ID,
            TOKEN_ID,
        ] {
            assert!(is_uuid(p), "{p}");
        }
        assert!(!is_uuid(TOKEN));
    }

    #[test]
    fn routes() {
        let p = |s: &str| format!("/v1/accounts/acme{s}");
        assert_eq!(route("POST", &p("/licenses")), Endpoint::KeygenCreate);
        assert_eq!(route("GET", &p("/licenses")), Endpoint::KeygenList);
        assert_eq!(route("GET", &p("/licenses/K-1")), Endpoint::KeygenRead);
        assert_eq!(route("PUT", &p("/licenses/K-1")), Endpoint::KeygenUpdate);
        assert_eq!(
            route("POST", &p("/licenses/K-1/actions/renew")),
            Endpoint::KeygenRenew
        );
        assert_eq!(
            route("GET", &p("/licenses/K-1/actions/renew")),
            Endpoint::Other
        );
        assert_eq!(route("GET", &p("/policies/x")), Endpoint::KeygenPolicy);
        assert_eq!(route("GET", &p("/me")), Endpoint::KeygenMe);
        assert_eq!(route("DELETE", &p("/licenses/x")), Endpoint::Other);
        assert_eq!(
            path_param(&p("/licenses/AB%2FCD/actions/suspend"), "licenses").as_deref(),
            Some("AB/CD")
        );
    }
}
