//! The least a body-reading webhook filter can do: pause on the headers, buffer the body, read
//! it once, answer keygate's SOAP ack locally. `scripts/bench` loads it into the same Envoy as
//! the plugin, on a listener of its own, so "validate + ack" is measured against what any
//! proxy-wasm filter on this route costs (row 2).
//!
//! Configured with the text `dispatch`, it first makes one dispatched call (a GET to the
//! stand-ins' echo on the `keygate_passthrough` cluster) and acks when it answers 200: the Envoy
//! cost of one callout, the unit keygate's full flow is made of (row 1d).
#![cfg(target_arch = "wasm32")]
#![allow(unsafe_code)] // the SDK's entry point (`#[no_mangle] _initialize`)

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { dispatch: false }) });
}}

/// The plugin configuration that turns the callout on.
const DISPATCH: &[u8] = b"dispatch";

struct Root {
    dispatch: bool,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        self.dispatch = self.get_plugin_configuration().as_deref() == Some(DISPATCH);
        true
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Minimal {
            dispatch: self.dispatch,
        }))
    }
}

struct Minimal {
    dispatch: bool,
}

impl Minimal {
    fn ack(&self) {
        self.send_http_response(
            200,
            vec![("content-type", keygate_core::reply::CONTENT_TYPE)],
            Some(keygate_core::soap::ack().as_bytes()),
        );
    }
}

impl Context for Minimal {
    /// The call's status read as the plugin reads it; anything but a 200 is answered 502, which
    /// the benchmark counts as an error rather than timing a failed call.
    fn on_http_call_response(
        &mut self,
        _token: u32,
        _headers: usize,
        _body: usize,
        _trailers: usize,
    ) {
        let status = self.get_http_call_response_header_bytes(":status");
        if status.as_deref() == Some(b"200") {
            self.ack();
        } else {
            self.send_http_response(502, vec![], Some(b"dispatched call failed"));
        }
    }
}

impl HttpContext for Minimal {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        Action::Pause
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        if !end_of_stream {
            return Action::Pause;
        }
        // Read the body as the plugin must (a copy into the VM), then answer.
        let body = self.get_http_request_body(0, body_size);
        std::hint::black_box(body);
        if !self.dispatch {
            self.ack();
            return Action::Pause;
        }
        let headers = vec![
            (":method", "GET"),
            (":path", "/hello"),
            (":authority", "keygate-bench"),
        ];
        let sent = self.dispatch_http_call(
            "keygate_passthrough",
            headers,
            None,
            vec![],
            Duration::from_secs(5),
        );
        if sent.is_err() {
            self.send_http_response(503, vec![], Some(b"dispatch refused"));
        }
        Action::Pause
    }
}
