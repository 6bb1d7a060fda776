//! The listener that carries the minimal SDK filter (`bench/minimal-filter`) in the same Envoy
//! as the plugin: the gateway listener's HTTP stack, the webhook route to the same cluster, and
//! the minimal module in place of keygate.

use std::path::Path;

/// A `static_resources.listeners` item on `port`, loading `wasm`.
pub fn listener(port: u16, wasm: &Path) -> String {
    format!(
        r#"  - name: minimal
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    per_connection_buffer_limit_bytes: 2097152
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: minimal
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
          codec_type: AUTO
          route_config:
            name: minimal
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: keygate_passthrough, timeout: 60s }}
          http_filters:
          - name: envoy.filters.http.wasm
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
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#,
        wasm = wasm.display()
    )
}
