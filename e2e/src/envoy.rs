//! Rendering `host-config/envoy.local.yaml` for one test: other ports, an absolute wasm path, and a
//! patched plugin configuration. Plain text work on purpose: the YAML stays the single source.
//! The scripts render it with this code too (`render-envoy-config`, called by scripts/lib.sh).

use serde_json::{Map, Value};
use std::path::Path;

/// The wasm path as written in envoy.local.yaml (relative to the repo root).
pub const DEFAULT_WASM: &str = "target/wasm32-wasip1/release/keygate.wasm";

/// Ports to put in place of the defaults of envoy.local.yaml.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Ports {
    pub gateway: u16,
    pub floor: u16,
    pub admin: u16,
    pub upstream: u16,
    pub salesforce: u16,
    pub license: u16,
}

impl Ports {
    /// The defaults written in envoy.local.yaml (docs/architecture.md, "Ports").
    pub const DEFAULT: Ports = Ports {
        gateway: 10000,
        floor: 10001,
        admin: 9901,
        upstream: 18080,
        salesforce: 18081,
        license: 18082,
    };

    fn pairs(&self) -> [(u16, u16); 6] {
        let d = Ports::DEFAULT;
        [
            (d.gateway, self.gateway),
            (d.floor, self.floor),
            (d.admin, self.admin),
            (d.upstream, self.upstream),
            (d.salesforce, self.salesforce),
            (d.license, self.license),
        ]
    }
}

/// Replaces each default port, written as `port_value: P` or `127.0.0.1:P`, and the wasm path.
/// Two passes through placeholders, so a new port that equals another default is not rewritten twice.
pub fn render_envoy_config(template: &str, ports: &Ports, wasm: &Path) -> String {
    let mut text = template.replace(DEFAULT_WASM, &wasm.display().to_string());
    for (i, (from, _)) in ports.pairs().iter().enumerate() {
        for form in ["port_value: ", "127.0.0.1:"] {
            text = text.replace(&format!("{form}{from}"), &format!("{form}@port{i}@"));
        }
    }
    for (i, (_, to)) in ports.pairs().iter().enumerate() {
        text = text.replace(&format!("@port{i}@"), &to.to_string());
    }
    text
}

/// A rendered config with the module fetched over HTTP (`vm_config.code.remote`) from
/// `http://127.0.0.1:{port}/keygate.wasm` through a `keygate_module` cluster, checked against
/// `sha256`, instead of read from a local file. host-config/README.md shows the same block.
pub fn with_remote_code(yaml: &str, port: u16, sha256: &str) -> String {
    let lines: Vec<&str> = yaml.lines().collect();
    let code = lines
        .iter()
        .position(|l| l.trim() == "code:")
        .expect("a vm_config.code block");
    let pad = " ".repeat(lines[code].len() - lines[code].trim_start().len());
    // `code:`, `local:`, `filename: …` become the remote source.
    let remote = format!(
        "{pad}code:\n{pad}  remote:\n{pad}    http_uri:\n{pad}      uri: http://127.0.0.1:{port}/keygate.wasm\n\
         {pad}      cluster: keygate_module\n{pad}      timeout: 10s\n{pad}    sha256: \"{sha256}\""
    );
    let mut out: Vec<String> = lines[..code].iter().map(|l| l.to_string()).collect();
    out.push(remote);
    out.extend(lines[code + 3..].iter().map(|l| l.to_string()));
    let cluster = format!(
        "  clusters:\n  - name: keygate_module\n    type: STATIC\n    connect_timeout: 2s\n\
         \x20   load_assignment:\n      cluster_name: keygate_module\n      endpoints:\n\
         \x20     - lb_endpoints:\n        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {port} }} }} }}\n"
    );
    (out.join("\n") + "\n").replacen("  clusters:\n", &cluster, 1)
}

/// A rendered config with an `etcd` cluster of the members listening on `client_ports` (the
/// plugin's ledger goes on it with [`etcd_ledger_patch`]). Envoy health-checks each member every second
/// (`/health` answers 503 without a leader) and ejects one on its first connection failure, so a
/// dead member leaves the rotation at once (a dispatched call is not retried on another host).
/// host-config/README.md shows the same cluster for a fleet.
pub fn with_etcd_cluster(yaml: &str, client_ports: &[u16]) -> String {
    let endpoints: String = client_ports
        .iter()
        .map(|p| {
            format!("        - endpoint: {{ address: {{ socket_address: {{ address: 127.0.0.1, port_value: {p} }} }} }}\n")
        })
        .collect();
    let cluster = format!(
        "  clusters:\n  - name: etcd\n    type: STATIC\n    connect_timeout: 1s\n\
         \x20   load_assignment:\n      cluster_name: etcd\n      endpoints:\n      - lb_endpoints:\n{endpoints}\
         \x20   health_checks:\n    - timeout: 1s\n      interval: 1s\n      no_traffic_interval: 1s\n\
         \x20     unhealthy_threshold: 1\n      healthy_threshold: 1\n      http_health_check: {{ path: /health }}\n\
         \x20   outlier_detection:\n      split_external_local_origin_errors: true\n\
         \x20     consecutive_local_origin_failure: 1\n      base_ejection_time: 5s\n"
    );
    yaml.replacen("  clusters:\n", &cluster, 1)
}

/// [`with_etcd_cluster`] and the plugin's ledger on it, for a config whose plugin JSON is as
/// rendered (scripts/run's `KEYGATE_ETCD_PORTS`).
pub fn with_etcd_ledger(yaml: &str, client_ports: &[u16]) -> String {
    let mut config = plugin_config(yaml);
    merge_patch(&mut config, &etcd_ledger_patch(client_ports));
    with_etcd_cluster(&with_plugin_config(yaml, &config), client_ports)
}

/// The plugin configuration patch that puts the ledger on [`with_etcd_cluster`]'s cluster.
pub fn etcd_ledger_patch(client_ports: &[u16]) -> Value {
    let first = client_ports.first().copied().unwrap_or(2379);
    serde_json::json!({"ledger": {"backend": "etcd",
        "etcd": {"cluster": "etcd", "authority": format!("127.0.0.1:{first}"), "prefix": "keygate/"}}})
}

/// The plugin configuration patches, applied in turn, that put licensing on the Keygen stand-in
/// (the license listener answers Keygen's paths too) instead of QLM: the QLM products out (a
/// merge patch would merge a policy into a QLM mapping), then the QLM fields out, the account
/// and the token variable in, 001 on the perpetual policy with seats from the Quantity, 002 on
/// the annual one (scripts/run's `KEYGATE_LICENSE_SERVER=keygen`, e2e/tests/keygen.rs).
pub fn keygen_patches() -> [Value; 2] {
    use keygate_standins::{KEYGEN_ACCOUNT, KEYGEN_POLICY_ANNUAL, KEYGEN_POLICY_PERPETUAL};
    let keygen = serde_json::json!({
        "license_server": {"kind": "keygen", "account": KEYGEN_ACCOUNT,
                           "token_env": "KEYGATE_KEYGEN_TOKEN", "path_prefix": null,
                           "user_env": null, "password_env": null, "strict_auth": null,
                           "vendor": null, "affiliate_id": null, "line_reference": null},
        "products": {"001": {"policy": KEYGEN_POLICY_PERPETUAL, "seats": "quantity"},
                     "002": {"policy": KEYGEN_POLICY_ANNUAL}}
    });
    [serde_json::json!({"products": null}), keygen]
}

/// The plugin JSON of envoy.local.yaml: the block scalar after the first `value: |` line.
/// Returns (line index of `value: |`, indentation of the block, block end line index, JSON).
fn plugin_block(yaml: &str) -> (usize, usize, usize, Value) {
    let lines: Vec<&str> = yaml.lines().collect();
    let start = lines
        .iter()
        .position(|l| l.trim_end().ends_with("value: |"))
        .expect("envoy.local.yaml: no `value: |` block holding the plugin JSON");
    let indent_of = |l: &str| l.len() - l.trim_start().len();
    let outer = indent_of(lines[start]);
    let end = (start + 1..lines.len())
        .find(|&i| !lines[i].trim().is_empty() && indent_of(lines[i]) <= outer)
        .unwrap_or(lines.len());
    let body = &lines[start + 1..end];
    let inner = body
        .iter()
        .filter(|l| !l.trim().is_empty())
        .map(|l| indent_of(l))
        .min()
        .unwrap_or(0);
    let json: String = body
        .iter()
        .map(|l| format!("{}\n", l.get(inner..).unwrap_or("")))
        .collect();
    let value = serde_json::from_str(&json)
        .unwrap_or_else(|e| panic!("envoy.local.yaml: plugin JSON does not parse: {e}"));
    (start, inner, end, value)
}

/// The plugin configuration JSON embedded in envoy.local.yaml.
pub fn plugin_config(yaml: &str) -> Value {
    plugin_block(yaml).3
}

/// envoy.local.yaml with its plugin JSON replaced by `config` (pretty-printed, same indentation).
pub fn with_plugin_config(yaml: &str, config: &Value) -> String {
    let (start, inner, end, _) = plugin_block(yaml);
    let lines: Vec<&str> = yaml.lines().collect();
    let pretty = serde_json::to_string_pretty(config).expect("JSON values always serialize");
    let pad = " ".repeat(inner);
    let mut out: Vec<String> = lines[..=start].iter().map(|l| l.to_string()).collect();
    out.extend(pretty.lines().map(|l| format!("{pad}{l}")));
    out.extend(lines[end..].iter().map(|l| l.to_string()));
    out.join("\n") + "\n"
}

/// `yaml` (a rendered envoy.local.yaml) with the access log block of `production`
/// (envoy.production.yaml, between its `keygate-access-log-begin`/`-end` marks) on the gateway
/// listener: the shipped block itself, so a test of it tests what production runs.
pub fn with_production_access_log(yaml: &str, production: &str) -> Result<String, String> {
    let begin = production
        .find("# keygate-access-log-begin\n")
        .ok_or("envoy.production.yaml has no keygate-access-log-begin mark")?;
    let end = production
        .find("          # keygate-access-log-end")
        .ok_or("envoy.production.yaml has no keygate-access-log-end mark")?;
    let block = production
        .get(begin + "# keygate-access-log-begin\n".len()..end)
        .ok_or("access log marks out of order")?;
    let anchor = "          stat_prefix: gateway\n";
    if !yaml.contains(anchor) {
        return Err("envoy.local.yaml has no gateway listener (stat_prefix: gateway)".into());
    }
    Ok(yaml.replacen(anchor, &format!("{anchor}{block}"), 1))
}

/// RFC 7386 JSON merge patch: objects merge key by key, `null` removes a key, anything else replaces.
/// The license cluster's circuit breakers set to `n` requests and `n` pending requests.
pub fn with_license_breakers(yaml: &str, n: u32) -> Result<String, String> {
    const SHIPPED: &str = "max_pending_requests: 16, max_requests: 16";
    let at = yaml
        .find("  - name: license_server\n")
        .ok_or("no license_server cluster")?;
    let rel = yaml[at..]
        .find(SHIPPED)
        .ok_or("the license_server cluster has no shipped circuit breakers")?;
    let mut out = yaml.to_owned();
    out.replace_range(
        at + rel..at + rel + SHIPPED.len(),
        &format!("max_pending_requests: {n}, max_requests: {n}"),
    );
    Ok(out)
}

pub fn merge_patch(target: &mut Value, patch: &Value) {
    let Value::Object(patch) = patch else {
        *target = patch.clone();
        return;
    };
    if !target.is_object() {
        *target = Value::Object(Map::new());
    }
    if let Value::Object(target) = target {
        for (key, value) in patch {
            if value.is_null() {
                target.remove(key);
            } else {
                merge_patch(target.entry(key.clone()).or_insert(Value::Null), value);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;
    use std::path::PathBuf;

    fn template() -> String {
        std::fs::read_to_string(crate::repo_root().join("host-config/envoy.local.yaml")).unwrap()
    }

    /// The `stats_config` block (and the comment above it) of a shipped config.
    fn stats_block(file: &str) -> String {
        let yaml = std::fs::read_to_string(crate::repo_root().join(file)).unwrap();
        let start = yaml
            .find("# Prometheus labels")
            .expect("stats_config comment");
        let end = yaml.find("\nadmin:").expect("admin after stats_config");
        yaml[start..end].to_owned()
    }

    #[test]
    fn both_envoy_configs_tag_the_counters_alike() {
        let local = stats_block("host-config/envoy.local.yaml");
        assert!(local.contains("stats_tags:"), "{local}");
        assert_eq!(local, stats_block("host-config/envoy.production.yaml"));
    }

    /// The license cluster's circuit breakers: the ceiling `scripts/soak` checks the license
    /// server against is the same in the local and the production config.
    #[test]
    fn both_envoy_configs_cap_the_license_server_alike() {
        let breakers = |file: &str| {
            let yaml = std::fs::read_to_string(crate::repo_root().join(file)).expect(file);
            let cluster = yaml
                .split("  - name: license_server\n")
                .nth(1)
                .expect("license_server cluster");
            let at = cluster
                .find("    circuit_breakers:\n")
                .expect("circuit_breakers");
            let block = &cluster[at..];
            let end = block
                .find("\n    load_assignment:")
                .expect("the cluster goes on");
            block[..end].to_owned()
        };
        let local = breakers("host-config/envoy.local.yaml");
        assert!(local.contains("max_requests: 16"), "{local}");
        assert_eq!(local, breakers("host-config/envoy.production.yaml"));
    }

    #[test]
    fn render_replaces_every_default_once() {
        // New ports deliberately equal to other defaults: a naive sequential replace would chain.
        let ports = Ports {
            gateway: 10001,
            floor: 9901,
            admin: 18080,
            upstream: 18081,
            salesforce: 18082,
            license: 10000,
        };
        let out = render_envoy_config(&template(), &ports, &PathBuf::from("/abs/keygate.wasm"));
        assert!(out.contains("filename: /abs/keygate.wasm"));
        assert!(!out.contains("filename: target/"));
        assert!(
            out.contains("address: 127.0.0.1, port_value: 10001 }"),
            "gateway listener"
        );
        assert!(
            out.contains("\"authority\": \"127.0.0.1:18082\""),
            "salesforce authority"
        );
        assert!(
            out.contains("\"authority\": \"127.0.0.1:10000\""),
            "license authority"
        );
        assert_eq!(
            out.matches("port_value: 10000").count(),
            1,
            "only the license cluster"
        );
    }

    #[test]
    fn plugin_json_round_trips_and_patches() {
        let yaml = template();
        let mut config = plugin_config(&yaml);
        assert_eq!(config["handler_name"], "QlmWebHookHandler");
        assert_eq!(config["salesforce"]["cluster"], "salesforce");
        merge_patch(
            &mut config,
            &json!({"max_body_bytes": 4096, "salesforce": {"grant": "password"}, "license_server": null}),
        );
        let patched = with_plugin_config(&yaml, &config);
        let back = plugin_config(&patched);
        assert_eq!(back["max_body_bytes"], 4096);
        assert_eq!(back["salesforce"]["grant"], "password");
        assert_eq!(back["salesforce"]["contact"], "BillToContact");
        assert!(back.get("license_server").is_none());
        // The YAML around the block is untouched.
        assert!(patched.contains("- name: envoy.filters.http.router"));
        assert!(patched.contains("allow_on_headers_stop_iteration: true"));
    }
}
