//! QLM's strict authentication ("How to invoke a QLM HTTP method that requires strict
//! authentication", `soraco/qlm` qlmdocs/how-to): an HMAC-SHA256 of the URL being invoked, all
//! arguments included, followed by the timestamp and the algorithm's version, keyed with the
//! 3rd-party extension's API key, as lowercase hex.
//!
//! The page contradicts itself; keygate follows its C# sample, the code that runs:
//! the hash goes in `X-Qlm-Authentication-Token` (the prose says `X-Qlm-Authentication`, the curl
//! sample `Qlm-Authentication-Token`), and the version is joined with `:` (the prose example
//! uses `=`). Both are UNCONFIRMED in the README.

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::secret::Secret;
use crate::text::utc_datetime;

/// `X-Qlm-Authentication-Version`: "The latest version is 2".
pub const AUTH_VERSION: u32 = 2;

/// The value of `X-Qlm-Authentication-Token` for a call to `url` (scheme, host, path and the
/// whole query, exactly as sent) at `timestamp` ([`qlm_timestamp`]).
pub fn sign(api_key: &Secret, url: &str, timestamp: &str) -> String {
    // HMAC takes a key of any length; `new_from_slice` cannot fail for it.
    let Ok(mut mac) = Hmac::<Sha256>::new_from_slice(api_key.expose().as_bytes()) else {
        return String::new();
    };
    mac.update(url.as_bytes());
    mac.update(b"&X-Qlm-Timestamp:");
    mac.update(timestamp.as_bytes());
    mac.update(b"&X-Qlm-Authentication-Version:");
    mac.update(AUTH_VERSION.to_string().as_bytes());
    base16ct::lower::encode_string(&mac.finalize().into_bytes())
}

/// `X-Qlm-Timestamp`: the UTC time `now_ms` (milliseconds since the Unix epoch, the host clock)
/// as `yyyy-MM-dd HH:mm:ss` ([`utc_datetime`]). The server honours it only within its
/// `security/strictAuthenticationTimestampTolerance`, so the gateway's clock must be right.
pub fn qlm_timestamp(now_ms: u64) -> String {
    utc_datetime(now_ms)
}
