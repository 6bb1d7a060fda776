//! The least a body-reading webhook filter can do: pause on the headers, buffer the body, read
//! it once, answer keygate's SOAP ack locally. `scripts/bench` loads it into the same Envoy as
//! the plugin, on a listener of its own, so "validate + ack" is measured against what any
//! proxy-wasm filter on this route costs (row 2).
//!
//! Configured with the text `dispatch`, it first makes one dispatched call (a GET to the
//! stand-ins' echo on the `keygate_passthrough` cluster) and acks when it answers 200: the Envoy
//! cost of one callout, the unit keygate's full flow is made of (row 1d). `dispatch N` makes N
//! such calls one after another, as the full flow does (`dispatch 4`: row 3b, the floor of row 3).

// The filter runs only in wasm; how it reads its configuration is tested natively too.
#[cfg(target_arch = "wasm32")]
mod filter;

/// Most calls one request may be configured to make.
const MAX_CALLS: u32 = 16;

/// Calls per request from the plugin configuration: `dispatch` (one) or `dispatch N`; none for
/// any other configuration (row 5c loads this filter with keygate's). `None` for a bad count,
/// which fails the configuration.
#[cfg_attr(not(target_arch = "wasm32"), allow(dead_code))]
fn calls_configured(config: &[u8]) -> Option<u32> {
    let Some(count) = config.strip_prefix(b"dispatch") else {
        return Some(0);
    };
    match std::str::from_utf8(count).ok()?.trim() {
        "" => Some(1),
        n => n.parse().ok().filter(|n| (1..=MAX_CALLS).contains(n)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_how_many_calls_to_make() {
        assert_eq!(calls_configured(b""), Some(0));
        // Row 5c loads the filter with keygate's own configuration: no calls.
        assert_eq!(calls_configured(br#"{"salesforce": {}}"#), Some(0));
        assert_eq!(calls_configured(b"dispatch"), Some(1));
        assert_eq!(calls_configured(b"dispatch 4"), Some(4));
        assert_eq!(calls_configured(b"dispatch 16"), Some(16));
        for bad in [
            &b"dispatch 0"[..],
            b"dispatch 17",
            b"dispatch four",
            b"dispatch -1",
        ] {
            assert_eq!(
                calls_configured(bad),
                None,
                "{:?}",
                String::from_utf8_lossy(bad)
            );
        }
    }
}
