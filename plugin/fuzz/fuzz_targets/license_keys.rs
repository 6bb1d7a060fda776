//! `keygate_core::license::parse_keys` on license-server replies.
//!
//! Input: bytes 0-1 are the HTTP status (big-endian u16), the rest is the body. scripts/fuzz
//! prefixes the testdata/license/* seeds with status 200.
//!
//! Properties: Ok only for 2xx; every key is non-empty printable ASCII without whitespace, at most
//! 512 bytes, at most 10 001 of them; an error's text is printable and short; `Status` carries
//! the real status and only for non-2xx.
#![no_main]

use keygate_core::license::{parse_keys, LicenseError};
use keygate_fuzz::assert_reason;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let [s0, s1, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    let ok_status = (200..300).contains(&status);
    match parse_keys(status, body) {
        Ok(keys) => {
            assert!(ok_status, "keys accepted with status {status}");
            assert!(keys.len() <= 10_001, "{} keys", keys.len());
            for k in &keys {
                assert!(!k.is_empty(), "empty key");
                assert!(k.len() <= 512, "key of {} bytes", k.len());
                assert!(
                    k.bytes().all(|b| b.is_ascii_graphic()),
                    "key {k:?} is not printable ASCII without whitespace"
                );
            }
        }
        Err(e) => {
            assert_reason("LicenseError", &e.to_string());
            match e {
                LicenseError::Status(s) => {
                    assert_eq!(s, status);
                    assert!(!ok_status, "Status error for {status}");
                }
                LicenseError::Refused(m) | LicenseError::Unparseable(m) => {
                    assert!(ok_status, "body parsed at status {status}");
                    assert_reason("LicenseError message", &m);
                }
                // QLM's reader says neither: an unknown key is a refusal the backend names.
                LicenseError::UnknownKey(_) | LicenseError::Throttled { .. } => {
                    panic!("parse_keys returned {e:?}")
                }
            }
        }
    }
});
