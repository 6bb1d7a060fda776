//! `keygate_core::inbound::on_headers`: the gate in front of the webhook, against the configuration of
//! testdata/config/full.json (inbound user "fuzz-user", password "fuzz-pass").
//!
//! Input: byte 0 is a flag byte (bit 0: a content-type header is present, bit 1: the secret
//! header is present, bit 2: a content-length is present); the rest is split on '\n' into
//! method, path, content-type, secret header and content-length (decimal; else u64::MAX), each
//! decoded lossily as UTF-8 (proxy-wasm hands the core `&str`s).
//!
//! Properties: PassThrough exactly when the last path segment (query and fragment dropped,
//! trailing '/' trimmed) is not QlmWebHookHandler in any ASCII case; never ReadBody for a
//! non-POST, a wrong or missing secret, a content type other than UTF-8 text/xml or
//! application/soap+xml, or an oversize content-length; every reply is a fault with the right
//! status whose body is well-formed XML with the reason escaped and no configured secret in it.
#![no_main]

use std::sync::OnceLock;

use keygate_core::config::Config;
use keygate_core::inbound::{is_webhook_path, on_headers, HeadDecision, RequestHead};
use keygate_core::reply::Outcome;
use keygate_fuzz::{check_fault_body, contains, fields};
use libfuzzer_sys::fuzz_target;

const USER: &str = "fuzz-user";
const PASSWORD: &str = "fuzz-pass";

fn config() -> &'static Config {
    static CONFIG: OnceLock<Config> = OnceLock::new();
    CONFIG.get_or_init(|| {
        let env = |name: &str| match name {
            "KEYGATE_HOOK_USER" => Some(USER.to_owned()),
            "KEYGATE_HOOK_PASSWORD" => Some(PASSWORD.to_owned()),
            _ => Some("x".to_owned()),
        };
        let json = include_bytes!("../../../testdata/config/full.json");
        match Config::from_json(json, &env) {
            Ok(cfg) => cfg,
            Err(e) => panic!("testdata/config/full.json: {e}"),
        }
    })
}

/// The last path segment as documented on `is_webhook_path`, written independently.
/// The last segment of the path as a server behind the gateway would read it, written
/// independently of keygate: query and fragment cut, %XX decoded (invalid escapes kept as is),
/// `\\` as `/`, `;params` dropped, spaces trimmed, `.` and `..` resolved.
fn last_segment(path: &str) -> String {
    let end = path.find(['?', '#']).unwrap_or(path.len());
    let raw = path[..end].as_bytes();
    let mut bytes = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        let hex = |b: u8| (b as char).to_digit(16);
        if raw[i] == b'%' && i + 2 < raw.len() {
            if let (Some(h), Some(l)) = (hex(raw[i + 1]), hex(raw[i + 2])) {
                bytes.push((h * 16 + l) as u8);
                i += 3;
                continue;
            }
        }
        bytes.push(raw[i]);
        i += 1;
    }
    let decoded = String::from_utf8_lossy(&bytes).replace('\\', "/");
    let mut segments: Vec<String> = Vec::new();
    for seg in decoded.split('/') {
        let seg = seg.split(';').next().unwrap_or("").trim();
        match seg {
            "" | "." => {}
            ".." => {
                segments.pop();
            }
            s => segments.push(s.to_owned()),
        }
    }
    segments.pop().unwrap_or_default()
}

fn media_ok(ct: &str) -> bool {
    let mut parts = ct.split(';');
    let media = parts.next().unwrap_or("").trim().to_ascii_lowercase();
    if media != "text/xml" && media != "application/soap+xml" {
        return false;
    }
    parts.all(|p| match p.split_once('=') {
        Some((k, v)) if k.trim().eq_ignore_ascii_case("charset") => {
            let v = v.trim().trim_matches('"').to_ascii_lowercase();
            v == "utf-8" || v == "utf8"
        }
        _ => true,
    })
}

/// Every presented credential is right (query is_pwd/is_user and/or the header), and one was presented.
fn secret_ok(path: &str, header: Option<&str>) -> bool {
    let mut presented = false;
    if let Some(h) = header {
        presented = true;
        if h != PASSWORD {
            return false;
        }
    }
    if let Some((_, q)) = path.split_once('?') {
        let mut user = None;
        let mut pwd = None;
        for (k, v) in form_pairs(q) {
            match k.as_str() {
                "is_pwd" => pwd = Some(v),
                "is_user" => user = Some(v),
                _ => {}
            }
        }
        if let Some(p) = pwd {
            presented = true;
            if p != PASSWORD || user.as_deref().unwrap_or("") != USER {
                return false;
            }
        }
    }
    presented
}

/// application/x-www-form-urlencoded pairs, decoded (a small independent decoder).
fn form_pairs(q: &str) -> Vec<(String, String)> {
    fn decode(s: &str) -> String {
        let b = s.as_bytes();
        let mut out = Vec::with_capacity(b.len());
        let mut i = 0;
        while i < b.len() {
            match b[i] {
                b'+' => out.push(b' '),
                b'%' if i + 2 < b.len() => {
                    let hex = |c: u8| (c as char).to_digit(16);
                    match (hex(b[i + 1]), hex(b[i + 2])) {
                        (Some(h), Some(l)) => {
                            out.push((h * 16 + l) as u8);
                            i += 2;
                        }
                        _ => out.push(b'%'),
                    }
                }
                c => out.push(c),
            }
            i += 1;
        }
        String::from_utf8_lossy(&out).into_owned()
    }
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| match p.split_once('=') {
            Some((k, v)) => (decode(k), decode(v)),
            None => (decode(p), String::new()),
        })
        .collect()
}

fuzz_target!(|data: &[u8]| {
    let Some((&flags, rest)) = data.split_first() else {
        return;
    };
    let f = fields(rest, b'\n', 5);
    let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
    let method = text(f[0]);
    let path = text(f[1]);
    let content_type = (flags & 1 != 0).then(|| text(f[2]));
    let secret_header = (flags & 2 != 0).then(|| text(f[3]));
    let content_length = (flags & 4 != 0).then(|| {
        std::str::from_utf8(f[4])
            .ok()
            .and_then(|s| s.parse::<u64>().ok())
            .unwrap_or(u64::MAX)
    });
    let head = RequestHead {
        method: &method,
        path: &path,
        content_type: content_type.as_deref(),
        content_length,
        secret_header: secret_header.as_deref(),
    };
    let cfg = config();
    let decision = on_headers(cfg, &head);

    let ours = last_segment(&path).eq_ignore_ascii_case("QlmWebHookHandler");
    assert_eq!(
        is_webhook_path(cfg, &path),
        ours,
        "is_webhook_path({path:?})"
    );
    match &decision {
        HeadDecision::PassThrough => {
            assert!(!ours, "webhook path {path:?} passed through");
        }
        HeadDecision::ReadBody => {
            assert!(ours, "ReadBody for {path:?}");
            assert_eq!(method, "POST", "ReadBody for method {method:?}");
            assert!(
                secret_ok(&path, secret_header.as_deref()),
                "ReadBody without the right secret: path {path:?}, header {secret_header:?}"
            );
            let ct = content_type.as_deref().unwrap_or("");
            assert!(media_ok(ct), "ReadBody for content type {ct:?}");
            assert!(content_length.unwrap_or(0) <= cfg.max_body_bytes as u64);
        }
        HeadDecision::Reply(reply) => {
            assert!(ours, "reply for {path:?}");
            assert!(matches!(reply.outcome, Outcome::Faulted(_)), "{reply:?}");
            let expected = if method != "POST" {
                405
            } else if !secret_ok(&path, secret_header.as_deref()) {
                401
            } else if !media_ok(content_type.as_deref().unwrap_or("")) {
                415
            } else {
                413
            };
            assert_eq!(reply.status, expected, "{head:?}");
            // The reason is not exposed on its own: check the escaping through the document.
            let start = reply.body.find("<faultstring>").expect("no faultstring") + 13;
            let end = reply
                .body
                .rfind("</faultstring>")
                .expect("no </faultstring>");
            let escaped = &reply.body[start..end];
            let reason = escaped
                .replace("&lt;", "<")
                .replace("&gt;", ">")
                .replace("&quot;", "\"")
                .replace("&apos;", "'")
                .replace("&amp;", "&");
            check_fault_body(&reply.body, "soapenv:Client", &reason);
            if !contains(data, PASSWORD.as_bytes()) {
                assert!(!reply.body.contains(PASSWORD), "fault shows the secret");
            }
        }
    }
});
