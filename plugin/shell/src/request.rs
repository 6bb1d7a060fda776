//! One HTTP stream: gate on headers, buffer the body, run the core's flow, answer locally.

use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Command, Env, Flow};
use keygate_core::inbound::{self, HeadDecision, RequestHead};
use keygate_core::reply::{FaultKind, Reply, CONTENT_TYPE};
use keygate_core::webhook;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::{Action, BufferType, LogLevel, MapType};

use crate::commands::{call_response, carry_out, Calls};
use crate::host::{log, lossy, now_ms, HostStore, Metrics};

#[derive(Debug, PartialEq, Eq)]
enum Phase {
    Headers,
    PassThrough,
    ReadingBody,
    Running,
    Replied,
}

pub struct Request {
    config: Rc<Config>,
    metrics: Rc<Metrics>,
    context_id: u32,
    phase: Phase,
    flow: Option<Flow>,
    /// proxy-wasm call token → the core's call id.
    calls: Calls,
}

fn send_reply(status: u16, body: &[u8]) -> Result<(), proxy_wasm::types::Status> {
    hostcalls::send_http_response(
        u32::from(status),
        vec![("content-type", CONTENT_TYPE)],
        Some(body),
    )
}

/// One request header as text; `None` when absent or the host refuses.
fn request_header(name: &str) -> Option<String> {
    hostcalls::get_map_value_bytes(MapType::HttpRequestHeaders, name)
        .ok()
        .flatten()
        .map(lossy)
}

pub fn with_env<R>(f: impl FnOnce(&mut Env<'_>) -> R) -> R {
    with_env_at(now_ms(), f)
}

/// As [`with_env`], at a time the caller already read.
fn with_env_at<R>(now_ms: u64, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
    let mut store = HostStore;
    let mut env = Env {
        now_ms,
        store: &mut store,
    };
    f(&mut env)
}

impl Request {
    pub fn new(config: Rc<Config>, metrics: Rc<Metrics>, context_id: u32) -> Request {
        Request {
            config,
            metrics,
            context_id,
            phase: Phase::Headers,
            flow: None,
            calls: Calls::default(),
        }
    }

    /// A per-request owner id for order claims, unique across workers (WASI random via RandomState).
    fn owner_id(&self, now_ms: u64) -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(self.context_id);
        h.write_u64(now_ms);
        h.finish()
    }

    /// The whole body is here (end of stream, or trailers): read it once, at most one byte over
    /// the limit (enough to tell it is too large), then run the core.
    fn on_complete_body(&mut self) {
        let limit = self.config.max_body_bytes;
        let body = hostcalls::get_buffer(BufferType::HttpRequestBody, 0, limit.saturating_add(1))
            .ok()
            .flatten()
            .unwrap_or_default();
        if body.len() > limit {
            self.run(webhook::early_reply(inbound::too_large(&self.config)));
            return;
        }
        self.handle_body(&body);
    }

    /// What the route's upstream may see of a webhook request: the path without its query
    /// (QLM's `is_user`/`is_pwd` travel there), no secret header.
    fn strip_forwarded_head(&self, path: &str) {
        if let Some((bare, _)) = path.split_once('?') {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, ":path", Some(bare));
        }
        if let Some(s) = &self.config.inbound_secret {
            let _ = hostcalls::set_map_value(MapType::HttpRequestHeaders, &s.header, None);
        }
    }

    fn handle_body(&mut self, body: &[u8]) {
        self.phase = Phase::Running;
        // One clock read for the owner id and the flow.
        let now = now_ms();
        let owner = self.owner_id(now);
        let config = Rc::clone(&self.config);
        let (flow, commands) = with_env_at(now, |env| webhook::on_body(&config, body, owner, env));
        self.flow = flow;
        self.run(commands);
    }

    /// Carry out the flow's commands (`commands::carry_out`); its reply answers Salesforce.
    fn run(&mut self, commands: Vec<Command>) {
        let who = format!("keygate[{}]", self.context_id);
        let (flow, phase) = (&mut self.flow, &mut self.phase);
        carry_out(
            commands,
            &mut self.calls,
            &self.metrics,
            &who,
            |id, resp| {
                flow.as_mut()
                    .map_or_else(Vec::new, |f| with_env(|env| f.on_response(id, resp, env)))
            },
            |reply| {
                *phase = Phase::Replied;
                if let Err(e) = send_reply(reply.status, reply.body.as_bytes()) {
                    log(LogLevel::Error, &format!("{who}: cannot send reply: {e:?}"));
                }
            },
        );
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
        let Some(call_id) = self.calls.answered(token) else {
            return;
        };
        let resp = call_response(num_headers, body_size, self.config.max_reply_bytes);
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        let commands = with_env(|env| flow.on_response(call_id, resp, env));
        self.run(commands);
    }
}

impl HttpContext for Request {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        let path = request_header(":path").unwrap_or_default();
        // Most traffic through a gateway is not ours: decide on the path alone, one hostcall.
        if !inbound::is_webhook_path(&self.config, &path) {
            self.phase = Phase::PassThrough;
            return Action::Continue;
        }
        // Ours: the rest of the head in one hostcall.
        let headers = hostcalls::get_map_bytes(MapType::HttpRequestHeaders).unwrap_or_default();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| String::from_utf8_lossy(v))
        };
        let method = header(":method").unwrap_or_default();
        let content_type = header("content-type");
        let content_length = header("content-length").and_then(|v| v.trim().parse::<u64>().ok());
        let secret_header = self
            .config
            .inbound_secret
            .as_ref()
            .and_then(|s| header(&s.header));
        let head = RequestHead {
            method: &method,
            path: &path,
            content_type: content_type.as_deref(),
            content_length,
            secret_header: secret_header.as_deref(),
        };
        match inbound::on_headers(&self.config, &head) {
            HeadDecision::PassThrough => {
                self.phase = Phase::PassThrough;
                Action::Continue
            }
            HeadDecision::Reply(reply) => {
                self.run(webhook::early_reply(reply));
                Action::Pause
            }
            HeadDecision::ReadBody => {
                self.phase = Phase::ReadingBody;
                if end_of_stream {
                    self.handle_body(&[]);
                    return Action::Pause;
                }
                if self.config.hold_request_headers {
                    return Action::Pause;
                }
                // Without allow_on_headers_stop_iteration a paused head never gets its body
                // callbacks: let the head go on to the router, minus anything secret. The body
                // is held below and never follows; the plugin's reply resets the upstream stream.
                self.strip_forwarded_head(&path);
                Action::Continue
            }
        }
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        match self.phase {
            Phase::PassThrough => return Action::Continue,
            Phase::ReadingBody => {}
            // Already answered or working: swallow the rest, never forward it.
            _ => return Action::Pause,
        }
        // body_size is the size buffered so far (cumulative), not this chunk's.
        if body_size > self.config.max_body_bytes {
            self.run(webhook::early_reply(inbound::too_large(&self.config)));
            return Action::Pause;
        }
        if end_of_stream {
            self.on_complete_body();
        }
        Action::Pause
    }

    /// Trailers end the stream: the body callback never saw `end_of_stream`, so the message is
    /// complete only now. Returning `Continue` here would forward the request unchecked.
    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        match self.phase {
            Phase::PassThrough => Action::Continue,
            Phase::ReadingBody => {
                self.on_complete_body();
                Action::Pause
            }
            _ => Action::Pause,
        }
    }

    fn on_log(&mut self) {
        // The stream is over. If the flow had not replied, Salesforce hung up: Envoy cancels our
        // callouts; release claims so the redelivery is not blocked.
        if let Some(flow) = self.flow.as_mut() {
            if !flow.is_finished() {
                with_env(|env| flow.on_cancel(env));
                log(
                    LogLevel::Warn,
                    &format!("keygate[{}]: downstream went away before the reply; Salesforce will redeliver", self.context_id),
                );
            }
        }
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
        let _ = send_reply(reply.status, reply.body.as_bytes());
        Action::Pause
    }
}
