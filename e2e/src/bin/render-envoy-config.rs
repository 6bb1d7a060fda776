//! `render-envoy-config OUT [WASM]`: host-config/envoy.local.yaml with the ports of the
//! `KEYGATE_*_PORT` variables (scripts/lib.sh's defaults when unset) and an absolute wasm path
//! (WASM, else `KEYGATE_WASM`, else the build output). The scripts call it, so they and the e2e
//! harness render the file with one function (`keygate_e2e::envoy::render_envoy_config`).
//! `KEYGATE_ETCD_PORTS` (comma-separated client ports) puts the plugin's ledger on those etcd
//! members (`keygate_e2e::envoy::with_etcd_ledger`); `KEYGATE_PLUGIN_PATCH` (a JSON merge patch)
//! changes the plugin configuration (scripts/run turns the order lifecycle on with it);
//! `KEYGATE_LICENSE_SERVER=keygen` licenses with the Keygen stand-in (`keygate_e2e::envoy::keygen_patches`)
//! before that patch applies.

use keygate_e2e::envoy::{
    keygen_patches, merge_patch, plugin_config, render_envoy_config, with_etcd_ledger,
    with_plugin_config, Ports, DEFAULT_WASM,
};
use keygate_e2e::repo_root;
use std::process::ExitCode;

fn port(var: &str, default: u16) -> Result<u16, String> {
    match std::env::var(var) {
        Ok(v) => v
            .parse()
            .map_err(|_| format!("{var}={v:?} is not a port number")),
        Err(_) => Ok(default),
    }
}

fn run() -> Result<(), String> {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let (out, wasm) = match args.as_slice() {
        [out] => (out.clone(), None),
        [out, wasm] => (out.clone(), Some(wasm.clone())),
        _ => return Err("usage: render-envoy-config OUT [WASM]".into()),
    };
    let d = Ports::DEFAULT;
    let ports = Ports {
        gateway: port("KEYGATE_PORT", d.gateway)?,
        floor: port("KEYGATE_FLOOR_PORT", d.floor)?,
        admin: port("KEYGATE_ADMIN_PORT", d.admin)?,
        upstream: port("KEYGATE_UPSTREAM_PORT", d.upstream)?,
        salesforce: port("KEYGATE_SF_PORT", d.salesforce)?,
        license: port("KEYGATE_QLM_PORT", d.license)?,
    };
    let root = repo_root();
    let wasm = wasm
        .or_else(|| std::env::var("KEYGATE_WASM").ok())
        .map_or_else(|| root.join(DEFAULT_WASM), Into::into);
    let template = std::fs::read_to_string(root.join("host-config/envoy.local.yaml"))
        .map_err(|e| format!("reading host-config/envoy.local.yaml: {e}"))?;
    let mut yaml = render_envoy_config(&template, &ports, &wasm);
    if let Ok(list) = std::env::var("KEYGATE_ETCD_PORTS") {
        let etcd: Vec<u16> = list
            .split(',')
            .map(|p| {
                p.trim()
                    .parse()
                    .map_err(|_| format!("KEYGATE_ETCD_PORTS: {p:?} is not a port number"))
            })
            .collect::<Result<_, _>>()?;
        yaml = with_etcd_ledger(&yaml, &etcd);
    }
    match std::env::var("KEYGATE_LICENSE_SERVER").as_deref() {
        Err(_) | Ok("qlm") => {}
        Ok("keygen") => {
            let mut config = plugin_config(&yaml);
            for patch in keygen_patches() {
                merge_patch(&mut config, &patch);
            }
            yaml = with_plugin_config(&yaml, &config);
        }
        Ok(other) => {
            return Err(format!(
                "KEYGATE_LICENSE_SERVER must be qlm or keygen, not {other:?}"
            ))
        }
    }
    if let Ok(patch) = std::env::var("KEYGATE_PLUGIN_PATCH") {
        let patch: serde_json::Value = serde_json::from_str(&patch)
            .map_err(|e| format!("KEYGATE_PLUGIN_PATCH is not JSON: {e}"))?;
        let mut config = plugin_config(&yaml);
        merge_patch(&mut config, &patch);
        yaml = with_plugin_config(&yaml, &config);
    }
    std::fs::write(&out, yaml).map_err(|e| format!("writing {out}: {e}"))
}

fn main() -> ExitCode {
    match run() {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("render-envoy-config: {e}");
            ExitCode::FAILURE
        }
    }
}
