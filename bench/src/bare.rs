//! The listener for row 1c's baseline: the gateway listener's HTTP stack and route to the same
//! cluster, without the wasm filter, in the same Envoy. Pass-through traffic through it against
//! the same traffic through the gateway listener (the plugin installed as shipped) shows what
//! the plugin costs routes that are not the webhook.

/// A `static_resources.listeners` item on `port`.
pub fn listener(port: u16) -> String {
    format!(
        r#"  - name: bare
    address:
      socket_address: {{ address: 127.0.0.1, port_value: {port} }}
    per_connection_buffer_limit_bytes: 2097152
    filter_chains:
    - filters:
      - name: envoy.filters.network.http_connection_manager
        typed_config:
          "@type": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: bare
          normalize_path: true
          merge_slashes: true
          path_with_escaped_slashes_action: UNESCAPE_AND_FORWARD
          codec_type: AUTO
          route_config:
            name: bare
            virtual_hosts:
            - name: all
              domains: ["*"]
              routes:
              - match: {{ prefix: "/" }}
                route: {{ cluster: keygate_passthrough, timeout: 60s }}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              "@type": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"#
    )
}
