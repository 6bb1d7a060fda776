//! Salesforce record ids: 15 case-sensitive or 18 case-insensitive-safe alphanumerics.
//!
//! Every id that reaches a SOQL string or a shared-data key has passed through [`SfId::parse`], so
//! no quote, space or control character can ever reach them.

use std::fmt;

/// A syntactically valid Salesforce id (15 or 18 ASCII alphanumerics).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfId(String);

impl SfId {
    pub fn parse(s: &str) -> Option<SfId> {
        let ok = (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        ok.then(|| SfId(s.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The 3-character key prefix that names the object type (`801` = Order, `00D` = organization).
    pub fn key_prefix(&self) -> &str {
        self.0.get(..3).unwrap_or("")
    }

    /// The 18-character form. Salesforce derives the 3-character suffix from the case of the first
    /// 15 characters, so the 15- and 18-character forms of one id map to the same value here.
    pub fn to_18(&self) -> String {
        let Some(base) = self.0.get(..15) else {
            return self.0.clone();
        };
        let mut out = String::with_capacity(18);
        out.push_str(base);
        for chunk in base.as_bytes().chunks(5) {
            let mut bits = 0usize;
            for (i, b) in chunk.iter().enumerate() {
                if b.is_ascii_uppercase() {
                    bits |= 1 << i;
                }
            }
            const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
            if let Some(&c) = ALPHABET.get(bits) {
                out.push(char::from(c));
            }
        }
        out
    }

    /// True when both name the same record. 15-character ids are case-sensitive; an 18-character
    /// id is safe to compare without regard to case because its suffix encodes the case of the
    /// first 15 characters, so it is first brought back to its exact 15-character form.
    pub fn same_record(&self, other: &SfId) -> bool {
        let (a, b) = (self.canonical15(), other.canonical15());
        a.is_some() && a == b
    }

    fn canonical15(&self) -> Option<[u8; 15]> {
        let bytes = self.0.as_bytes();
        let mut out = [0u8; 15];
        out.copy_from_slice(bytes.get(..15)?);
        if let Some(suffix) = bytes.get(15..18) {
            for (chunk, s) in suffix.iter().enumerate() {
                let bits = match s.to_ascii_uppercase() {
                    c @ b'A'..=b'Z' => c - b'A',
                    c @ b'0'..=b'5' => c - b'0' + 26,
                    _ => return None,
                };
                for i in 0..5 {
                    if let Some(c) = out.get_mut(chunk * 5 + i) {
                        *c = if bits & (1 << i) != 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        };
                    }
                }
            }
        }
        Some(out)
    }
}

impl fmt::Debug for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Display for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}
