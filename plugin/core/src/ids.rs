//! Salesforce record ids: 15 case-sensitive or 18 case-insensitive-safe alphanumerics.
//!
//! Every id that reaches a SOQL string or a shared-data key has passed through [`SfId::parse`], so
//! no quote, space or control character can ever reach them.

use std::fmt;

/// A syntactically valid Salesforce id (15 or 18 ASCII alphanumerics; an 18-character id's
/// suffix must be checksum characters).
/// Held inline (no heap allocation): a message carries a few hundred of them.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SfId {
    /// The id as written, ASCII alphanumerics, zero-padded after `len`.
    raw: [u8; 18],
    len: u8,
    /// The exact 15-character form, computed once: comparisons are then a 15-byte compare.
    canon: [u8; 15],
}

const SUFFIX_ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";

impl SfId {
    pub fn parse(s: &str) -> Option<SfId> {
        let ok = (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric());
        if !ok {
            return None;
        }
        let bytes = s.as_bytes();
        let mut canon = [0u8; 15];
        canon.copy_from_slice(bytes.get(..15)?);
        // An 18-character id is safe to compare without regard to case: its suffix encodes the
        // case of the first 15 characters, so the exact form is restored from it.
        if let Some(suffix) = bytes.get(15..18) {
            for (chunk, s) in suffix.iter().enumerate() {
                let bits = match s.to_ascii_uppercase() {
                    c @ b'A'..=b'Z' => c - b'A',
                    c @ b'0'..=b'5' => c - b'0' + 26,
                    _ => return None,
                };
                for i in 0..5 {
                    if let Some(c) = canon.get_mut(chunk * 5 + i) {
                        *c = if bits & (1 << i) != 0 {
                            c.to_ascii_uppercase()
                        } else {
                            c.to_ascii_lowercase()
                        };
                    }
                }
            }
        }
        let mut raw = [0u8; 18];
        raw.get_mut(..bytes.len())?.copy_from_slice(bytes);
        Some(SfId {
            raw,
            len: bytes.len() as u8,
            canon,
        })
    }

    /// The id as it was written.
    pub fn as_str(&self) -> &str {
        let bytes = self.raw.get(..usize::from(self.len)).unwrap_or(&[]);
        // Always ASCII (checked by `parse`), so this never falls back.
        std::str::from_utf8(bytes).unwrap_or("")
    }

    /// The 3-character key prefix that names the object type (`801` = Order, `00D` = organization).
    pub fn key_prefix(&self) -> &str {
        self.as_str().get(..3).unwrap_or("")
    }

    /// The canonical 18-character form: the same for every spelling of one record's id.
    pub fn to_18(&self) -> String {
        let mut out = String::with_capacity(18);
        out.extend(self.canon.iter().map(|&b| char::from(b)));
        for chunk in self.canon.chunks(5) {
            let mut bits = 0usize;
            for (i, b) in chunk.iter().enumerate() {
                if b.is_ascii_uppercase() {
                    bits |= 1 << i;
                }
            }
            if let Some(&c) = SUFFIX_ALPHABET.get(bits) {
                out.push(char::from(c));
            }
        }
        out
    }

    /// The exact 15-character form as bytes: equal for every spelling of one record's id, and
    /// cheap to compare or sort.
    pub fn record_key(&self) -> [u8; 15] {
        self.canon
    }

    /// True when both name the same record (15-character ids are case-sensitive; 18-character
    /// ids are compared through the exact form their suffix encodes).
    pub fn same_record(&self, other: &SfId) -> bool {
        self.canon == other.canon
    }
}

impl fmt::Debug for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl fmt::Display for SfId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}
