//! The Keygen backend's reply readers (`keygate_core::license::backend` for
//! `license_server.kind: "keygen"`) on arbitrary replies.
//!
//! Input: bytes 0-1 are the HTTP status (big-endian u16), byte 2 picks the reader (0 an issue's
//! reply, 1 a lookup's, 2 a suspend's, 3 a reinstate's, 4 an expiry read) and whether the reply
//! says JSON:API (bit 7 clear) or `text/html` (set); byte 3 is `Retry-After` in seconds
//! (255: none); the rest is the body. scripts/fuzz prefixes testdata/keygen/*.json with each reader.
//!
//! Properties: keys only from a 2xx JSON reply, each printable ASCII without white space of 1 to
//! `MAX_KEY_BYTES`; "done" from a non-2xx only for Keygen's 422 "already" on suspend/reinstate;
//! `Throttled` only for 429, never before now nor more than 10 minutes on; `UnknownKey` only for a
//! 404 on a key; `Status` carries the real status; every error's text printable and short, and
//! never the token.
#![no_main]

use std::sync::OnceLock;

use keygate_core::config::Config;
use keygate_core::license::{self, KeyChange, LicenseError, LicenseReply};
use keygate_fuzz::assert_reason;
use libfuzzer_sys::fuzz_target;

const TOKEN: &str = "fuzz-keygen-token-never-shown";
const NOW_MS: u64 = 1_780_000_000_000;
const MAX_KEY_BYTES: usize = 4096;

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let json = r#"{"allowed_org_ids": ["00D5Y000001MPM7UAO"],
            "salesforce": {"cluster": "sf", "authority": "sf.example.com",
                           "client_id_env": "ID", "client_secret_env": "SECRET"},
            "license_server": {"kind": "keygen", "cluster": "keygen", "authority": "api.keygen.sh",
                               "account": "acme", "token_env": "KEYGEN_TOKEN"},
            "products": {"001": {"policy": "p"}}}"#;
        let env = |name: &str| Some(if name == "KEYGEN_TOKEN" { TOKEN } else { "x" }.to_owned());
        match Config::from_json(json.as_bytes(), &env) {
            Ok(c) => c,
            Err(e) => panic!("the fuzz target's configuration: {e}"),
        }
    })
}

fn check_error(e: &LicenseError, status: u16, key_addressed: bool) {
    let text = e.to_string();
    assert_reason("LicenseError", &text);
    assert!(!text.contains(TOKEN), "the token in an error: {text}");
    match e {
        LicenseError::Throttled { until_ms } => {
            assert_eq!(status, 429, "Throttled for {status}");
            assert!(
                (NOW_MS..=NOW_MS + 600_000).contains(until_ms),
                "throttled until {until_ms}"
            );
        }
        LicenseError::UnknownKey(_) => {
            assert!(status == 404 && key_addressed, "UnknownKey for {status}")
        }
        LicenseError::Status(s) => {
            assert_eq!(*s, status);
            assert!(!(200..300).contains(s), "Status error for {s}");
        }
        LicenseError::Refused(m) | LicenseError::Unparseable(m) => {
            assert_reason("LicenseError message", m)
        }
    }
}

fn check_keys(keys: &[String], status: u16, json: bool) {
    assert!((200..300).contains(&status) && json, "keys from {status} (JSON:API {json})");
    for k in keys {
        assert!(
            !k.is_empty() && k.len() <= MAX_KEY_BYTES && k.bytes().all(|b| b.is_ascii_graphic()),
            "key {k:?}"
        );
    }
}

fuzz_target!(|data: &[u8]| {
    let [s0, s1, pick, retry, body @ ..] = data else {
        return;
    };
    let status = u16::from_be_bytes([*s0, *s1]);
    let json = pick & 0x80 == 0;
    let mut headers = vec![(
        "content-type",
        if json { "application/vnd.api+json; charset=utf-8" } else { "text/html" }.to_owned(),
    )];
    if *retry != 255 {
        headers.push(("retry-after", retry.to_string()));
    }
    let reply = LicenseReply {
        status,
        headers: &headers,
        body,
        now_ms: NOW_MS,
    };
    let Some(issuing) = config().issuing.as_ref() else {
        return;
    };
    let backend = license::backend(&issuing.license);
    match pick & 0x7f {
        0 => match backend.issued(&reply) {
            Ok(keys) => check_keys(&keys, status, json),
            Err(e) => check_error(&e, status, false),
        },
        1 => match backend.found(&reply) {
            Ok(keys) => check_keys(&keys, status, json),
            Err(e) => check_error(&e, status, false),
        },
        n @ (2 | 3) => {
            let change = if n == 2 { KeyChange::Revoke } else { KeyChange::Restore };
            match backend.change_applied(&change, &reply) {
                Ok(()) => assert!(
                    (200..300).contains(&status) || status == 422,
                    "a change done at {status}"
                ),
                Err(e) => check_error(&e, status, true),
            }
        }
        _ => match backend.expiry(&reply) {
            Ok(expiry) => {
                assert!((200..300).contains(&status), "an expiry from {status}");
                if let Some(x) = expiry {
                    assert!(!x.contains(TOKEN));
                }
            }
            Err(e) => check_error(&e, status, true),
        },
    }
});
