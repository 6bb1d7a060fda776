//! The least a body-reading webhook filter can do: pause on the headers, buffer the body, read
//! it once, answer keygate's SOAP ack locally. `scripts/bench` loads it into the same Envoy as
//! the plugin, on a listener of its own, so "validate + ack" is measured against what any
//! proxy-wasm filter on this route costs (row 2).
#![cfg(target_arch = "wasm32")]
#![allow(unsafe_code)] // the SDK's entry point (`#[no_mangle] _initialize`)

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

proxy_wasm::main! {{
    proxy_wasm::set_http_context(|_, _| -> Box<dyn HttpContext> { Box::new(Minimal) });
}}

struct Minimal;

impl Context for Minimal {}

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
        self.send_http_response(
            200,
            vec![("content-type", keygate_core::reply::CONTENT_TYPE)],
            Some(keygate_core::soap::ack().as_bytes()),
        );
        Action::Pause
    }
}
