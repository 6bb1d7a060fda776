//! QLM's gate in front of its HTTP methods: strict authentication (an HMAC of the URL, as
//! `qlmdocs/how-to/how-to-invoke-a-qlm-http-method-that-requires-strict-authentication.md`
//! describes it) and the allowed-IP list (`httpAdminMethodsAllowedIPAddresses`).

use std::net::IpAddr;

use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::clock;
use crate::http::Request;

/// The authentication version the page calls the latest, and the lowest the stand-in accepts
/// (`security/strictAuthenticationMinimumVersion`; its default is not documented).
pub const MIN_VERSION: u32 = 2;
/// `security/strictAuthenticationTimestampTolerance`: QLM's default is not documented; 300 s
/// is the stand-in's choice (the older `webMethodMaximumDelay` of the .NET API defaults to 600).
pub const DEFAULT_TOLERANCE_S: u64 = 300;

/// The hash header under the three names the page gives it: the C# sample's (which runs), the
/// prose's, and the curl sample's.
pub const TOKEN_HEADERS: [&str; 3] = [
    "x-qlm-authentication-token",
    "x-qlm-authentication",
    "qlm-authentication-token",
];
/// The timestamp header; the curl sample drops the `X-` (accepted too).
const TIMESTAMP_HEADERS: [&str; 2] = ["x-qlm-timestamp", "qlm-timestamp"];
const VERSION_HEADER: &str = "x-qlm-authentication-version";

/// Lower-case hex HMAC-SHA256 of `message` keyed with `key` (ASCII), as the page's
/// `CalcHMACSHA256Hash` computes it.
pub fn hmac_hex(key: &str, message: &str) -> String {
    mac(key, message)
        .finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

fn mac(key: &str, message: &str) -> Hmac<Sha256> {
    // HMAC takes a key of any length: `new_from_slice` cannot fail for it.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key.as_bytes())
        .unwrap_or_else(|_| unreachable!("HMAC accepts any key length"));
    mac.update(message.as_bytes());
    mac
}

/// What the client hashes: `{url}&X-Qlm-Timestamp:{ts}&X-Qlm-Authentication-Version{sep}{v}`,
/// `sep` `:` (the C# sample) or `=` (the prose example).
pub fn message(url: &str, timestamp: &str, version: &str, sep: char) -> String {
    format!("{url}&X-Qlm-Timestamp:{timestamp}&X-Qlm-Authentication-Version{sep}{version}")
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if s.len() % 2 != 0 {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

/// The first of `names` the request carries.
fn header<'a>(req: &'a Request, names: &[&str]) -> Option<&'a str> {
    names.iter().find_map(|n| req.header(n))
}

/// Checks a strict-authentication call. `url` is the URL the server believes it was called at
/// (`{strict_url_base}/{Method}?{raw query}`). The `Err` says why, without the key.
pub fn check(
    req: &Request,
    url: &str,
    api_key: &str,
    tolerance_s: u64,
    now: i64,
) -> Result<(), String> {
    let Some(token) = header(req, &TOKEN_HEADERS) else {
        return Err("missing header X-Qlm-Authentication-Token".into());
    };
    let Some(timestamp) = header(req, &TIMESTAMP_HEADERS) else {
        return Err("missing header X-Qlm-Timestamp".into());
    };
    let Some(version) = req.header(VERSION_HEADER) else {
        return Err("missing header X-Qlm-Authentication-Version".into());
    };
    let Ok(v) = version.parse::<u32>() else {
        return Err("malformed header X-Qlm-Authentication-Version".into());
    };
    if v < MIN_VERSION {
        return Err(format!(
            "authentication version {v} is below the minimum version {MIN_VERSION}"
        ));
    }
    let Some(at) = clock::parse_datetime(timestamp) else {
        return Err("malformed header X-Qlm-Timestamp (expected yyyy-MM-dd HH:mm:ss, UTC)".into());
    };
    // The wording of QLM's documented clock-skew error for its web methods
    // (qlmdocs/faq/failed-to-validate-request-because-the-time-between-server-and-client-is-not-synchronized.md).
    if now.abs_diff(at) > tolerance_s {
        return Err(format!(
            "the time between server and client is not synchronized. Difference in time is > {tolerance_s} seconds"
        ));
    }
    let Some(sent) = unhex(token.trim()) else {
        return Err("invalid hash".into());
    };
    let ok = [':', '='].iter().any(|&sep| {
        // `verify_slice` compares in constant time.
        mac(api_key, &message(url, timestamp, version, sep))
            .verify_slice(&sent)
            .is_ok()
    });
    if ok {
        Ok(())
    } else {
        Err("invalid hash".into())
    }
}

/// One entry of an allowed-IP list: an address, or a CIDR block (documented as supported).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IpRule {
    net: IpAddr,
    prefix: u8,
}

impl IpRule {
    pub fn parse(s: &str) -> Result<IpRule, String> {
        let s = s.trim();
        let (addr, prefix) = match s.split_once('/') {
            Some((a, p)) => (a, Some(p)),
            None => (s, None),
        };
        let net: IpAddr = addr
            .parse()
            .map_err(|_| format!("allowed_ips: {s:?} is not an IP address or CIDR block"))?;
        let max = if net.is_ipv4() { 32 } else { 128 };
        let prefix = match prefix {
            None => max,
            Some(p) => p
                .parse::<u8>()
                .ok()
                .filter(|p| *p <= max)
                .ok_or_else(|| format!("allowed_ips: bad prefix length in {s:?}"))?,
        };
        Ok(IpRule { net, prefix })
    }

    pub fn allows(&self, ip: IpAddr) -> bool {
        let ip = match ip {
            IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(ip, IpAddr::V4),
            v4 => v4,
        };
        match (ip, self.net) {
            (IpAddr::V4(a), IpAddr::V4(n)) => {
                // A shift by the full width (prefix 0) is `None`: every address matches.
                let mask = u32::MAX
                    .checked_shl(32 - u32::from(self.prefix))
                    .unwrap_or(0);
                u32::from(a) & mask == u32::from(n) & mask
            }
            (IpAddr::V6(a), IpAddr::V6(n)) => {
                let mask = u128::MAX
                    .checked_shl(128 - u32::from(self.prefix))
                    .unwrap_or(0);
                u128::from(a) & mask == u128::from(n) & mask
            }
            _ => false,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_known_answer() {
        assert_eq!(
            hmac_hex("key", "The quick brown fox jumps over the lazy dog"),
            "f7bc83f430538424b13298e6aa6fb143ef4d59a14946175997479dbc2d1a3cd8"
        );
    }

    #[test]
    fn ip_rules() {
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let r = IpRule::parse("127.0.0.1").unwrap();
        assert!(r.allows(ip("127.0.0.1")) && !r.allows(ip("127.0.0.2")));
        assert!(r.allows(ip("::ffff:127.0.0.1")));
        let r = IpRule::parse("10.0.0.0/8").unwrap();
        assert!(r.allows(ip("10.1.2.3")) && !r.allows(ip("11.0.0.1")) && !r.allows(ip("::1")));
        assert!(IpRule::parse("0.0.0.0/0").unwrap().allows(ip("8.8.8.8")));
        let r = IpRule::parse("fd00::/8").unwrap();
        assert!(r.allows(ip("fd12::1")) && !r.allows(ip("fe80::1")));
        assert!(IpRule::parse("::1").unwrap().allows(ip("::1")));
        assert!(IpRule::parse("10.0.0.0/33").is_err());
        assert!(IpRule::parse("example.com").is_err());
    }
}
