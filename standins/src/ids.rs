//! Identifiers: Salesforce ids (with their real case-checksum suffix), random tokens and
//! QLM-shaped activation keys. No `rand` dependency: a seeded SplitMix64 is plenty for test data.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::time::{SystemTime, UNIX_EPOCH};

/// Orders of the generated family: `family_order_id(n)` for `n` in `0..FAMILY_SIZE`.
pub const FAMILY_SIZE: usize = 100;

/// The 18-character form of a 15-character Salesforce id: three suffix characters, each encoding
/// which of five characters is upper case. Anything that is not 15 characters is returned as is.
pub fn sf_id18(id15: &str) -> String {
    if id15.len() != 15 || !id15.is_ascii() {
        return id15.to_owned();
    }
    const ALPHABET: &[u8; 32] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ012345";
    let mut out = id15.to_owned();
    for chunk in id15.as_bytes().chunks(5) {
        let bits = chunk
            .iter()
            .enumerate()
            .filter(|(_, b)| b.is_ascii_uppercase())
            .fold(0usize, |acc, (i, _)| acc | (1 << i));
        if let Some(&c) = ALPHABET.get(bits) {
            out.push(char::from(c));
        }
    }
    out
}

/// True for 15 or 18 ASCII alphanumerics (what Salesforce accepts as an id literal).
pub fn is_sf_id(s: &str) -> bool {
    (s.len() == 15 || s.len() == 18) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Id of order `n` of the generated fixture family (`8015Y00000B0000QAB` …).
pub fn family_order_id(n: usize) -> String {
    sf_id18(&format!("8015Y00000B{:04}", n % 10_000))
}

/// Id of the single order product of family order `n` (`8025Y00000B0000QAB` …).
pub fn family_item_id(n: usize) -> String {
    sf_id18(&format!("8025Y00000B{:04}", n % 10_000))
}

pub struct Rng(u64);

impl Rng {
    /// Seeded from std's per-process random hasher keys and the clock, so keys differ between runs.
    pub fn new() -> Rng {
        let mut h = RandomState::new().build_hasher();
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default();
        h.write_u128(nanos);
        h.write_u32(std::process::id());
        Rng(h.finish())
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    pub fn string(&mut self, alphabet: &[u8], len: usize) -> String {
        (0..len)
            .map(|_| {
                let i = (self.next_u64() % alphabet.len().max(1) as u64) as usize;
                alphabet.get(i).map_or('0', |&b| char::from(b))
            })
            .collect()
    }

    /// `A1B2C-D3E4F-G5H6J-K7L8M-N9P0Q-RSTUVW`: five groups of five and one of six, as QLM prints.
    pub fn activation_key(&mut self) -> String {
        const KEY: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789";
        let groups: Vec<String> = [5, 5, 5, 5, 5, 6]
            .iter()
            .map(|&n| self.string(KEY, n))
            .collect();
        groups.join("-")
    }

    /// An access token shaped like Salesforce's: `<org id 15>!<opaque>`.
    pub fn access_token(&mut self) -> String {
        const TOK: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._";
        format!("00D5Y000001MPM7!AQ4AQ{}", self.string(TOK, 96))
    }

    pub fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| (self.next_u64() >> 56) as u8).collect()
    }
}

pub fn base64(data: &[u8]) -> String {
    const B64: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let sym = |i: u32| char::from(*B64.get((i & 63) as usize).unwrap_or(&b'A'));
    let mut out = String::new();
    for chunk in data.chunks(3) {
        let b = |i: usize| u32::from(chunk.get(i).copied().unwrap_or(0));
        let n = (b(0) << 16) | (b(1) << 8) | b(2);
        out.push(sym(n >> 18));
        out.push(sym(n >> 12));
        out.push(if chunk.len() > 1 { sym(n >> 6) } else { '=' });
        out.push(if chunk.len() > 2 { sym(n) } else { '=' });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id18_matches_salesforce_samples() {
        assert_eq!(sf_id18("8015Y000001AbCd"), "8015Y000001AbCdQAK");
        assert_eq!(sf_id18("00D5Y000001MPM7"), "00D5Y000001MPM7UAO");
        assert_eq!(sf_id18("8025Y00000AbCdE"), "8025Y00000AbCdEQAV");
        assert_eq!(family_order_id(0), "8015Y00000B0000QAB");
        assert_eq!(family_order_id(99), "8015Y00000B0099QAB");
        assert_eq!(family_item_id(7), "8025Y00000B0007QAB");
    }

    #[test]
    fn key_shape() {
        let mut rng = Rng::new();
        let key = rng.activation_key();
        let groups: Vec<usize> = key.split('-').map(str::len).collect();
        assert_eq!(groups, [5, 5, 5, 5, 5, 6]);
        assert!(key
            .bytes()
            .all(|b| b == b'-' || b.is_ascii_uppercase() || b.is_ascii_digit()));
    }

    #[test]
    fn base64_padding() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foobar"), "Zm9vYmFy");
    }
}
