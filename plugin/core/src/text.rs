//! Small text helpers shared by the parsers.

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
