//! Small text helpers shared by the parsers.

/// Does `s` say "error" in any case (`Error:`, `<errorMessage>`, `ERROR`)? Without allocating.
pub fn mentions_error(s: &str) -> bool {
    s.as_bytes()
        .windows(5)
        .any(|w| w.eq_ignore_ascii_case(b"error"))
}

/// A short, printable excerpt of untrusted text, safe to put in a fault string or a log line.
pub fn excerpt(s: &str) -> String {
    const MAX: usize = 64;
    let mut out: String = s
        .chars()
        .take(MAX)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if s.chars().nth(MAX).is_some() {
        out.push('…');
    }
    out
}

/// The UTC time `ms` (milliseconds since the Unix epoch) as `yyyy-MM-dd HH:mm:ss`: for a person
/// (a mark in Salesforce, a fault's "until"), and QLM's strict-authentication timestamp.
pub fn utc_datetime(ms: u64) -> String {
    let secs = i64::try_from(ms / 1000).unwrap_or(i64::MAX);
    let t =
        time::OffsetDateTime::from_unix_timestamp(secs).unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02}:{:02}",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute(),
        t.second()
    )
}
