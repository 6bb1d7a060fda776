//! The hostile corpus (testdata/hostile) against the core: each attack gets its specific status
//! and fault, and no callout is ever started. The end-to-end suite replays the same corpus
//! through a real Envoy. It reads the corpus directory at run time: natively, and on wasm32-wasip1
//! (scripts/run-wasi.mjs gives the module the repository), not under wasm-bindgen.
#![cfg(not(all(target_arch = "wasm32", target_os = "unknown")))]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Command, Env};
use keygate_core::inbound::{on_headers, HeadDecision, RequestHead};
use keygate_core::reply::Reply;
use keygate_core::store::MemStore;
use keygate_core::webhook;

const FULL: &str = include_str!("../../../testdata/config/full.json");

fn env(name: &str) -> Option<String> {
    match name {
        "KEYGATE_HOOK_USER" => Some("hook-user".into()),
        "KEYGATE_HOOK_PASSWORD" => Some("hook-password".into()),
        _ => Some(format!("secret-{name}")),
    }
}

fn corpus() -> Vec<(String, Vec<u8>, BTreeMap<String, String>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../testdata/hostile");
    let mut out = Vec::new();
    for entry in std::fs::read_dir(&dir).unwrap() {
        let path = entry.unwrap().path();
        if path.extension().is_some_and(|e| e == "expect") {
            let expect = std::fs::read_to_string(&path).unwrap();
            let map = expect
                .lines()
                .filter_map(|l| l.split_once(": "))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            let body = std::fs::read(path.with_extension("xml")).unwrap();
            out.push((
                path.file_stem().unwrap().to_string_lossy().into_owned(),
                body,
                map,
            ));
        }
    }
    out.sort_by(|a, b| a.0.cmp(&b.0));
    out
}

/// The body as sent: padded inside OrderNumber when the case asks for a huge one.
pub fn padded(body: &[u8], expect: &BTreeMap<String, String>) -> Vec<u8> {
    match expect
        .get("pad-to-bytes")
        .map(|n| n.parse::<usize>().unwrap())
    {
        None => body.to_vec(),
        Some(n) => {
            let text = String::from_utf8(body.to_vec()).unwrap();
            let pad = "9".repeat(n.saturating_sub(text.len()));
            text.replacen("00000114", &format!("00000114{pad}"), 1)
                .into_bytes()
        }
    }
}

fn path_for(auth: &str) -> &'static str {
    match auth {
        "none" => "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?is_vendor=salesforce",
        "wrong" => "/QlmWebHookHandler?is_user=hook-user&is_pwd=guess",
        "wrong-user" => "/QlmWebHookHandler?is_user=mallory&is_pwd=hook-password",
        _ => "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler?is_vendor=salesforce&is_user=hook-user&is_pwd=hook-password&is_affiliateid=salesforce",
    }
}

#[test]
fn every_hostile_message_gets_its_fault_and_no_callout() {
    let cfg = Rc::new(Config::from_json(FULL.as_bytes(), &env).unwrap());
    let cases = corpus();
    // Exact: a case deleted (or added without its .expect) must show here.
    assert_eq!(
        cases.len(),
        58,
        "the corpus in testdata/hostile has changed"
    );
    for (name, body, expect) in cases {
        let body = padded(&body, &expect);
        let want_status: u16 = expect["status"].parse().unwrap();
        let head = RequestHead {
            method: expect.get("method").map(String::as_str).unwrap_or("POST"),
            path: path_for(expect.get("auth").map(String::as_str).unwrap_or("good")),
            content_type: Some(
                expect
                    .get("content-type")
                    .map(String::as_str)
                    .unwrap_or("text/xml; charset=utf-8"),
            ),
            content_length: Some(body.len() as u64),
            secret_header: None,
        };
        let reply: Reply = match on_headers(&cfg, &head) {
            HeadDecision::PassThrough => panic!("{name}: passed through"),
            HeadDecision::Reply(r) => r,
            HeadDecision::ReadBody => {
                let mut store = MemStore::new();
                let mut env = Env {
                    now_ms: 0,
                    store: &mut store,
                };
                let (flow, cmds) = webhook::on_body(&cfg, &body, 1, &mut env);
                assert!(flow.is_none(), "{name}: a flow was started");
                assert!(
                    !cmds.iter().any(|c| matches!(c, Command::Dispatch(_))),
                    "{name}: a callout was made"
                );
                for c in &cmds {
                    if let Command::Log(_, m) = c {
                        assert!(
                            !m.contains("hook-password") && !m.contains("secret-"),
                            "{name}: secret in log: {m}"
                        );
                    }
                }
                match cmds.into_iter().last() {
                    Some(Command::Reply(r)) => r,
                    other => panic!("{name}: last command is {other:?}"),
                }
            }
        };
        assert_eq!(reply.status, want_status, "{name}: {}", reply.body);
        let fault = &expect["fault"];
        let escaped = fault
            .replace('&', "&amp;")
            .replace('\'', "&apos;")
            .replace('<', "&lt;")
            .replace('>', "&gt;");
        assert!(
            reply.body.contains(&escaped),
            "{name}: fault should contain '{fault}': {}",
            reply.body
        );
        assert!(
            !reply.body.contains("hook-password"),
            "{name}: secret echoed"
        );
    }
}
