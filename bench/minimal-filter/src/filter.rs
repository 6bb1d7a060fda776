//! The filter: the SDK's contexts (wasm only).
#![allow(unsafe_code)] // the SDK's entry point (`#[no_mangle] _initialize`)

use std::time::Duration;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{Action, ContextType};

use crate::calls_configured;

proxy_wasm::main! {{
    proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> { Box::new(Root { calls: 0 }) });
}}

struct Root {
    calls: u32,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
        let config = self.get_plugin_configuration().unwrap_or_default();
        match calls_configured(&config) {
            Some(n) => {
                self.calls = n;
                true
            }
            None => false,
        }
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }

    fn create_http_context(&self, _context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(Box::new(Minimal {
            calls_left: self.calls,
        }))
    }
}

struct Minimal {
    /// Calls still to make before the ack.
    calls_left: u32,
}

impl Minimal {
    /// The next call, or the ack once every call is made.
    fn proceed(&mut self) {
        if self.calls_left == 0 {
            self.ack();
        } else {
            self.call();
        }
    }

    /// The next call: a GET to the stand-ins' echo; a refused dispatch is answered 503.
    fn call(&mut self) {
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
    }

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
        if status.as_deref() != Some(b"200") {
            self.send_http_response(502, vec![], Some(b"dispatched call failed"));
            return;
        }
        self.calls_left = self.calls_left.saturating_sub(1);
        self.proceed();
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
        self.proceed();
        Action::Pause
    }
}
