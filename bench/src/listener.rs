//! The extra listeners the benchmark adds to the plugin's Envoy: each has the gateway listener's
//! HTTP stack and routes everything to the same cluster, so that only the filters differ.
//! - `minimal`: the minimal SDK filter (`bench/minimal-filter`) in place of keygate (row 1b);
//! - `minimal_dispatch`: the same filter making one dispatched call per request (row 1d), or
//!   several one after another (row 3b);
//! - `bare`: no wasm filter at all, the pass-through baseline (row 1c).

use std::path::Path;

/// A `static_resources.listeners` item named `name` on `port` with these HTTP filters before the
/// router (YAML list items at the `http_filters` indentation; empty for none).
fn listener(name: &str, port: u16, filters: &str) -> String {
    format!(
        r#"  - name: {name}
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    per_connection_buffer_limit_bytes: 2097152
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {name}
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
          codec_type: AUTO
          route_config:
            name: {name}
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: keygate_passthrough, timeout: 60s }}
          http_filters:
{filters}          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}

/// The listener with the minimal SDK filter loaded from `wasm`, answering at once.
pub fn minimal(port: u16, wasm: &Path) -> String {
    listener("minimal", port, &minimal_filter("minimal", "", wasm))
}

/// The minimal SDK filter making `calls` dispatched calls per request, one after another, before
/// it answers (row 1d: one; row 3b: as many as the full flow). Listener and root are named
/// `minimal_dispatch`, with the count after it when there is more than one call.
pub fn minimal_dispatch(port: u16, wasm: &Path, calls: u32) -> String {
    let name = match calls {
        1 => "minimal_dispatch".to_owned(),
        n => format!("minimal_dispatch{n}"),
    };
    let config = format!(
        r#"                configuration:
                  "@type": type.googleapis.com/google.protobuf.StringValue
                  value: dispatch {calls}
"#
    );
    listener(&name, port, &minimal_filter(&name, &config, wasm))
}

/// The wasm filter item: `root` names the plugin (one VM serves both), `config` its
/// `configuration` lines (empty for none).
fn minimal_filter(root: &str, config: &str, wasm: &Path) -> String {
    format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: {root}
                root_id: {root}
                allow_on_headers_stop_iteration: true
{config}                vm_config:
                  vm_id: minimal
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
"#,
        wasm = wasm.display()
    )
}

/// The listener without any wasm filter.
pub fn bare(port: u16) -> String {
    listener("bare", port, "")
}
