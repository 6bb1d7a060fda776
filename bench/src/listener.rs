//! The extra listeners the benchmark adds to the plugin's Envoy: each has the gateway listener's
//! HTTP stack and routes everything to the same cluster, so that only the filters differ.
//! - `minimal`: the minimal SDK filter (`bench/minimal-filter`) in place of keygate (row 1b);
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

/// The listener with the minimal SDK filter loaded from `wasm`.
pub fn minimal(port: u16, wasm: &Path) -> String {
    let filter = format!(
        r#"          - name: envoy.filters.http.wasm
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm
              config:
                name: minimal
                root_id: minimal
                allow_on_headers_stop_iteration: true
                vm_config:
                  vm_id: minimal
                  runtime: envoy.wasm.runtime.v8
                  code:
                    local:
                      filename: {wasm}
"#,
        wasm = wasm.display()
    );
    listener("minimal", port, &filter)
}

/// The listener without any wasm filter.
pub fn bare(port: u16) -> String {
    listener("bare", port, "")
}
