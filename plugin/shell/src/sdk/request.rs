//! The SDK's HTTP context: each callback goes to the stream's logic ([`Stream`]) with the host
//! port, and its verdict back as the SDK's `Action`.

use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::reply::{FaultKind, Reply};
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, LogLevel};

use super::host::{call_response, log, Metrics, SdkHost};
use crate::port::{Host, Verdict};
use crate::stream::Stream;

fn action(v: Verdict) -> Action {
    match v {
        Verdict::Continue => Action::Continue,
        Verdict::Pause => Action::Pause,
    }
}

pub struct Request {
    stream: Stream,
    host: SdkHost,
}

impl Request {
    pub fn new(config: Rc<Config>, metrics: Rc<Metrics>, context_id: u32) -> Request {
        Request {
            stream: Stream::new(config, context_id),
            host: SdkHost::new(metrics),
        }
    }
}

impl Context for Request {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let names = self.stream.reply_headers(token);
        let resp = call_response(num_headers, body_size, self.stream.max_reply_bytes(), names);
        self.stream.on_call_response(&mut self.host, token, resp);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        action(self.stream.on_headers(&mut self.host, end_of_stream))
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        action(
            self.stream
                .on_body(&mut self.host, body_size, end_of_stream),
        )
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        action(self.stream.on_trailers(&mut self.host))
    }

    fn on_log(&mut self) {
        self.stream.on_done(&mut self.host);
    }
}

/// The context of a stream that arrived before any configuration (a host bug): fail closed for
/// this request with a 503 fault; nothing passes through unchecked.
pub struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        log(
            LogLevel::Critical,
            "keygate: request on a plugin without configuration; refusing it",
        );
        let reply = Reply::fault(503, FaultKind::Unconfigured, "gateway plugin not ready");
        let _ = SdkHost::new(Rc::default()).send_reply(reply.status, reply.body.as_bytes());
        Action::Pause
    }
}
