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
