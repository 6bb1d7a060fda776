//! Envoy start-to-ready with and without the plugin: `host-config/envoy.local.yaml` rendered onto
//! free ports, and the same file with the wasm HTTP filter cut out. Timed from spawn to the first
//! 200 from the admin `/ready` (Envoy is ready only once every listener's filter chain, the wasm
//! VM included, is built), then to the first answered request on a listener.

use keygate_e2e::envoy::{render_envoy_config, Ports};
use keygate_e2e::{repo_root, SECRET_ENV};
use std::fs::File;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

const WASM_FILTER: &str = "- name: envoy.filters.http.wasm";
/// The per-route settings of the wasm filter (the shipped configs turn it off on other routes).
const PER_FILTER: &str = "typed_per_filter_config:";

/// The config without the wasm HTTP filter (its list item, up to the next line at the same or a
/// lower indentation) and without the routes' per-filter settings for it: what is left is the
/// same listeners, routes and clusters with no plugin.
pub fn without_plugin(yaml: &str) -> Result<String, String> {
    let mut lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut cut_filter = false;
    while let Some(start) = lines.iter().position(|l| {
        let t = l.trim_start();
        t.starts_with(WASM_FILTER) || t == PER_FILTER
    }) {
        cut_filter |= lines[start].trim_start().starts_with(WASM_FILTER);
        let end = (start + 1..lines.len())
            .find(|&i| !lines[i].trim().is_empty() && indent(lines[i]) <= indent(lines[start]))
            .ok_or("the wasm filter is the last line")?;
        lines.drain(start..end);
    }
    if !cut_filter {
        return Err("no wasm filter in the config".into());
    }
    let out = lines.join("\n") + "\n";
    if out.contains("envoy.filters.http.wasm") {
        return Err("the wasm filter is still named in the config".into());
    }
    Ok(out)
}

/// The e2e harness's: never the same port twice in one process.
pub use keygate_e2e::gateway::free_port;

/// Base ids apart from the e2e harness (100000 + …) and scripts/run (1000 + …).
fn base_id() -> u32 {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    7_000_000 + (std::process::id() % 100_000) * 16 + NEXT.fetch_add(1, Ordering::Relaxed) % 16
}

/// Renders the local config onto fresh ports; the stand-in clusters point at closed ports,
/// which is fine: nothing is sent to them while starting.
pub fn render(wasm: &Path) -> Result<(String, Ports), String> {
    let template = std::fs::read_to_string(repo_root().join("host-config/envoy.local.yaml"))
        .map_err(|e| format!("reading host-config/envoy.local.yaml: {e}"))?;
    let ports = Ports {
        gateway: free_port(),
        floor: free_port(),
        admin: free_port(),
        upstream: free_port(),
        salesforce: free_port(),
        license: free_port(),
    };
    Ok((render_envoy_config(&template, &ports, wasm), ports))
}

#[derive(Debug, Clone, Copy)]
pub struct StartTime {
    /// Spawn to admin `/ready` answering 200.
    pub ready: Duration,
    /// Spawn to the first 200 on a listener (the gateway for the plugin, the floor without it).
    pub first_response: Duration,
}

/// Starts Envoy on `yaml`, times it, stops it.
pub fn time_start(
    envoy: &Path,
    yaml: &str,
    ports: &Ports,
    with_plugin: bool,
    concurrency: u32,
    dir: &Path,
) -> Result<StartTime, String> {
    let id = base_id();
    let config = dir.join(format!("start-{id}.yaml"));
    std::fs::write(&config, yaml).map_err(|e| e.to_string())?;
    let log_path = dir.join(format!("start-{id}.log"));
    let log = File::create(&log_path).map_err(|e| e.to_string())?;
    let mut cmd = Command::new(envoy);
    cmd.current_dir(repo_root())
        .arg("-c")
        .arg(&config)
        .args(["--concurrency", &concurrency.to_string()])
        .args(["--base-id", &id.to_string()])
        .args(["--log-level", "warn"])
        .stdin(Stdio::null())
        .stdout(log.try_clone().map_err(|e| e.to_string())?)
        .stderr(log);
    for (k, v) in SECRET_ENV {
        cmd.env(k, v);
    }
    let admin = SocketAddr::from(([127, 0, 0, 1], ports.admin));
    let t0 = Instant::now();
    let mut child = cmd
        .spawn()
        .map_err(|e| format!("starting {}: {e}", envoy.display()))?;
    let result = (|| {
        let deadline = t0 + Duration::from_secs(15);
        let ready = poll(deadline, || {
            get(admin, "/ready").is_some_and(|(status, _)| status == 200)
        })
        .ok_or("Envoy not ready within 15 s")?;
        let first_response = poll(deadline, || {
            if with_plugin {
                let addr = SocketAddr::from(([127, 0, 0, 1], ports.gateway));
                let body = keygate_e2e::testdata("soap/valid/not_activated_one.xml");
                let mut conn = crate::client::Conn::new(addr);
                conn.post_soap(&keygate_e2e::webhook_path_with_secret(), body.as_bytes())
                    .is_ok_and(|r| r.is_ack())
            } else {
                let addr = SocketAddr::from(([127, 0, 0, 1], ports.floor));
                get(addr, "/floor").is_some_and(|(status, _)| status == 200)
            }
        })
        .ok_or("no answer on the listener within 15 s")?;
        Ok(StartTime {
            ready: ready - t0,
            first_response: first_response - t0,
        })
    })();
    let _ = child.kill();
    let _ = child.wait();
    let _ = std::fs::remove_file(format!("/dev/shm/envoy_shared_memory_{}", id * 10));
    result.map_err(|e: String| {
        let log = std::fs::read_to_string(&log_path).unwrap_or_default();
        format!("{e}; Envoy log:\n{log}")
    })
}

fn poll(deadline: Instant, mut ok: impl FnMut() -> bool) -> Option<Instant> {
    while Instant::now() < deadline {
        if ok() {
            return Some(Instant::now());
        }
        std::thread::sleep(Duration::from_millis(2));
    }
    None
}

fn get(addr: SocketAddr, path: &str) -> Option<(u16, Vec<u8>)> {
    keygate_e2e::http::request(addr, "GET", path, &[], b"", Duration::from_millis(500))
        .ok()
        .map(|r| (r.status, r.body))
}

/// Where Envoy is (scripts/setup installs it).
pub fn envoy_bin() -> PathBuf {
    repo_root().join(".venv/bin/envoy")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cuts_exactly_the_wasm_filter() {
        let yaml =
            std::fs::read_to_string(repo_root().join("host-config/envoy.local.yaml")).unwrap();
        let out = without_plugin(&yaml).unwrap();
        assert!(!out.contains("envoy.wasm.runtime.v8"));
        assert!(!out.contains("\"handler_name\""));
        // Both listeners keep their router, and the clusters are all there.
        assert_eq!(out.matches("- name: envoy.filters.http.router").count(), 2);
        for c in ["keygate_passthrough", "salesforce", "license_server"] {
            assert!(out.contains(&format!("- name: {c}")), "{c}");
        }
    }
}
