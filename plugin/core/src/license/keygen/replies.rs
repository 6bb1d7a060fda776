//! What Keygen's replies mean: a license document, a list of them, or JSON:API errors; and a
//! throttled call (429). Every shape is derived (serde); the fixtures in `testdata/keygen` are
//! Keygen's documented examples, with their sources.

use serde::Deserialize;

use super::Addressed;
use crate::config::KeygenConfig;
use crate::license::{KeyChange, LicenseError, LicenseReply};
use crate::text::excerpt;

/// JSON:API's media type, which Keygen answers in and asks for.
pub const KEYGEN_MEDIA_TYPE: &str = "application/vnd.api+json";

/// The reply headers a Keygen reply is read with: its type, and when a throttled account may
/// call again.
pub(super) const HEADERS: &[&str] = &["content-type", "retry-after", "x-ratelimit-reset"];

/// The longest key accepted: a signed Keygen key (a scheme's base64 payload and signature) runs
/// to a few hundred bytes; anything much longer is not a key.
pub const MAX_KEY_BYTES: usize = 4096;

/// Without a usable header, a throttled account waits Keygen's shortest window (30 s); with
/// one, never longer than its longest (10 min): a wrong header cannot stop licensing for long.
const THROTTLE_DEFAULT_MS: u64 = 30_000;
const THROTTLE_MAX_MS: u64 = 600_000;

#[derive(Deserialize)]
struct One {
    data: License,
}

#[derive(Deserialize)]
struct Many {
    data: Vec<License>,
}

/// A license resource: the parts keygate reads.
#[derive(Deserialize)]
pub(crate) struct License {
    pub attributes: LicenseAttributes,
}

#[derive(Deserialize)]
pub(crate) struct LicenseAttributes {
    /// What is written back to Salesforce.
    pub key: String,
    /// ISO 8601, or `null`: never expires.
    #[serde(default)]
    pub expiry: Option<String>,
}

/// `{"errors": [...]}`.
#[derive(Deserialize)]
struct Errors {
    errors: Vec<ApiError>,
}

/// One JSON:API error object.
#[derive(Debug, Deserialize)]
pub struct ApiError {
    #[serde(default)]
    pub title: Option<String>,
    #[serde(default)]
    pub detail: Option<String>,
    #[serde(default)]
    pub code: Option<String>,
    #[serde(default)]
    pub source: Option<ErrorSource>,
}

#[derive(Debug, Deserialize)]
pub struct ErrorSource {
    #[serde(default)]
    pub pointer: Option<String>,
}

impl ApiError {
    /// `title: detail (code CODE, at /pointer)`, each part bounded and printable.
    fn describe(&self) -> String {
        let mut out = String::new();
        for part in [&self.title, &self.detail].into_iter().flatten() {
            if !out.is_empty() {
                out.push_str(": ");
            }
            out.push_str(&excerpt(part));
        }
        let code = self.code.as_deref().map(|c| format!("code {}", excerpt(c)));
        let at = self
            .source
            .as_ref()
            .and_then(|s| s.pointer.as_deref())
            .map(|p| format!("at {}", excerpt(p)));
        let extra: Vec<String> = [code, at].into_iter().flatten().collect();
        if !extra.is_empty() {
            out.push_str(&format!(" ({})", extra.join(", ")));
        }
        out
    }
}

/// The first JSON:API error of a reply body, if it is one.
pub fn api_error(body: &[u8]) -> Option<ApiError> {
    serde_json::from_slice::<Errors>(body)
        .ok()?
        .errors
        .into_iter()
        .next()
}

fn is_json(reply: &LicenseReply<'_>) -> bool {
    // Keygen answers in JSON:API; a proxy may relabel it plain JSON (UNCONFIRMED: accepted). A
    // reply without a content type is read for what it is.
    reply.header("content-type").is_none_or(|ct| {
        let ct = ct.trim_start().to_ascii_lowercase();
        ct.starts_with(KEYGEN_MEDIA_TYPE) || ct.starts_with("application/json")
    })
}

/// A 2xx reply's document, or why the call failed.
fn read<T: for<'de> Deserialize<'de>>(
    reply: &LicenseReply<'_>,
    cfg: &KeygenConfig,
    addressed: Addressed,
) -> Result<T, LicenseError> {
    if !(200..300).contains(&reply.status) {
        return Err(failure(reply, cfg, addressed));
    }
    if !is_json(reply) {
        return Err(LicenseError::Unparseable(format!(
            "HTTP {} with content type {}, not JSON:API",
            reply.status,
            excerpt(reply.header("content-type").unwrap_or(""))
        )));
    }
    serde_json::from_slice(reply.body).map_err(|e| {
        // serde's message quotes the value it met: the server's text, bounded like any other.
        LicenseError::Unparseable(format!(
            "HTTP {}: not a Keygen license document: {}",
            reply.status,
            excerpt(&e.to_string())
        ))
    })
}

pub(super) fn one(
    reply: &LicenseReply<'_>,
    cfg: &KeygenConfig,
    addressed: Addressed,
) -> Result<License, LicenseError> {
    let license = read::<One>(reply, cfg, addressed)?.data;
    checked_key(&license.attributes.key)?;
    Ok(license)
}

pub(super) fn many(
    reply: &LicenseReply<'_>,
    cfg: &KeygenConfig,
) -> Result<Vec<License>, LicenseError> {
    let licenses = read::<Many>(reply, cfg, Addressed::Account)?.data;
    for l in &licenses {
        checked_key(&l.attributes.key)?;
    }
    Ok(licenses)
}

/// A key keygate writes back to Salesforce (keys of a line are joined by line breaks there):
/// printable ASCII without white space, at most [`MAX_KEY_BYTES`]. Keygen's own keys and its
/// signed keys are; a custom key that is not is refused, never written back (UNCONFIRMED:
/// Keygen's pages put no limit on custom keys).
fn checked_key(key: &str) -> Result<(), LicenseError> {
    if key.is_empty() || key.len() > MAX_KEY_BYTES || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(LicenseError::Unparseable(format!(
            "a license key that is not printable ASCII of 1 to {MAX_KEY_BYTES} bytes: {}",
            excerpt(key)
        )));
    }
    Ok(())
}

/// Why a call that did not succeed failed: throttled, unknown key, or what Keygen's error says
/// (a 401 or 403 names the variable the token came from, never the token).
fn failure(reply: &LicenseReply<'_>, cfg: &KeygenConfig, addressed: Addressed) -> LicenseError {
    let status = reply.status;
    if status == 429 {
        return LicenseError::Throttled {
            until_ms: throttled_until(reply),
        };
    }
    let error = if is_json(reply) {
        api_error(reply.body)
    } else {
        None
    };
    let said = error.as_ref().map(ApiError::describe);
    match (status, addressed) {
        (404, Addressed::Key) => {
            return LicenseError::UnknownKey(said.unwrap_or_else(|| "HTTP 404".to_owned()))
        }
        (401 | 403, _) => {
            return LicenseError::Refused(format!(
                "HTTP {status}{}: is the token in {} a product, environment or admin token of account {}?",
                said.map(|s| format!(" {s}")).unwrap_or_default(),
                cfg.token_env,
                cfg.account
            ))
        }
        (404, Addressed::Account) => {
            return LicenseError::Refused(format!(
                "HTTP 404{}: is license_server.account {} right?",
                said.map(|s| format!(" {s}")).unwrap_or_default(),
                cfg.account
            ))
        }
        _ => {}
    }
    match said {
        Some(s) => LicenseError::Refused(format!("HTTP {status} {s}")),
        None => LicenseError::Status(status),
    }
}

/// Until when a throttled account waits: `Retry-After` seconds from now, or Keygen's
/// `X-RateLimit-Reset` (Unix seconds), whichever is later; bounded.
fn throttled_until(reply: &LicenseReply<'_>) -> u64 {
    let now = reply.now_ms;
    let number = |name: &str| {
        reply
            .header(name)
            .and_then(|v| v.trim().parse::<u64>().ok())
    };
    let after = number("retry-after").map(|s| now.saturating_add(s.saturating_mul(1000)));
    let reset = number("x-ratelimit-reset").map(|s| s.saturating_mul(1000));
    let until = match (after, reset) {
        (None, None) => now.saturating_add(THROTTLE_DEFAULT_MS),
        (a, r) => a.unwrap_or(0).max(r.unwrap_or(0)),
    };
    until.clamp(now, now.saturating_add(THROTTLE_MAX_MS))
}

/// Is this refusal Keygen saying the license already is as `change` asks (a 422 on suspending
/// a suspended license, or reinstating one that is not)?
pub(super) fn already(change: &KeyChange<'_>, reply: &LicenseReply<'_>) -> bool {
    if reply.status != 422 {
        return false;
    }
    let Some(error) = api_error(reply.body) else {
        return false;
    };
    let detail = error.detail.as_deref().unwrap_or("").to_ascii_lowercase();
    match change {
        KeyChange::Revoke => detail.contains("already suspended"),
        KeyChange::Restore => detail.contains("not suspended"),
        KeyChange::SetQuantity(_) | KeyChange::Renew(_) => false,
    }
}

/// A `GET /policies/{id}` or `GET /me` reply: `Ok` when it is a resource document.
pub fn read_policy(reply: &LicenseReply<'_>) -> Result<(), String> {
    /// A resource with an id: all the self-check needs to know it exists.
    #[derive(Deserialize)]
    struct Doc {
        #[serde(rename = "data")]
        _data: Resource,
    }
    #[derive(Deserialize)]
    struct Resource {
        #[serde(rename = "id")]
        _id: String,
    }
    let status = reply.status;
    if (200..300).contains(&status)
        && is_json(reply)
        && serde_json::from_slice::<Doc>(reply.body).is_ok()
    {
        return Ok(());
    }
    let said = api_error(reply.body).map(|e| e.describe());
    Err(format!(
        "HTTP {status}{}",
        said.map(|s| format!(" {s}")).unwrap_or_default()
    ))
}
