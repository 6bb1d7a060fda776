//! End-to-end harness: the stand-ins in-process, a real Envoy loading the built keygate.wasm with
//! `host-config/envoy.local.yaml` rendered onto free ports, and a small HTTP client.
//!
//! ```no_run
//! use keygate_e2e::{Gateway, GatewayOptions, testdata};
//! let gw = Gateway::start(GatewayOptions::default().patch(serde_json::json!({"max_body_bytes": 4096})));
//! let reply = gw.post_webhook(testdata("soap/valid/not_activated_one.xml"));
//! assert_eq!(reply.status, 200);
//! ```
//! Needs `scripts/setup` (Envoy in .venv) and `scripts/build` (the .wasm); tests run with
//! `--test-threads` small, each gateway is a real process with two workers.

pub mod envoy;
pub mod etcd;
pub mod gateway;
pub mod http;
pub mod soap_reply;

pub use gateway::{wasm_path, webhook_path_with_secret, Gateway, GatewayOptions, HeadersMode};
pub use http::Response;
pub use serde_json::{json, Value};

use keygate_standins as standins;
use std::path::PathBuf;

/// The webhook route as QLM documents it; the plugin matches on the last segment.
pub const WEBHOOK_PATH: &str = "/qlmLicenseServer/qlmservice.asmx/QlmWebHookHandler";

/// The inbound shared secret the tests configure (not a stand-in credential: only the plugin checks it).
pub const HOOK_USER: &str = "keygate-hook";
pub const HOOK_PASSWORD: &str = "standin-hook-password";

/// Environment Envoy gets for every `*_env` of the plugin JSON: the credentials the stand-ins
/// accept (docs/architecture.md, "Stand-ins HTTP contract"). scripts/lib.sh exports the same values.
pub const SECRET_ENV: [(&str, &str); 10] = [
    ("KEYGATE_HOOK_USER", HOOK_USER),
    ("KEYGATE_HOOK_PASSWORD", HOOK_PASSWORD),
    ("KEYGATE_SF_CLIENT_ID", standins::CLIENT_ID),
    ("KEYGATE_SF_CLIENT_SECRET", standins::CLIENT_SECRET),
    ("KEYGATE_SF_USERNAME", standins::USERNAME),
    ("KEYGATE_SF_PASSWORD", standins::PASSWORD),
    ("KEYGATE_QLM_USER", standins::QLM_USER),
    ("KEYGATE_QLM_PASSWORD", standins::QLM_PASSWORD),
    ("KEYGATE_QLM_API_KEY", standins::QLM_API_KEY),
    ("KEYGATE_KEYGEN_TOKEN", standins::KEYGEN_TOKEN),
];

/// The workspace root (this crate lives in `<root>/e2e`).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("e2e/ has a parent")
        .to_path_buf()
}

/// A fixture under `testdata/`, as text.
pub fn testdata(relative: &str) -> String {
    let path = repo_root().join("testdata").join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
}
pub mod duplex;
pub mod exactly_once;
