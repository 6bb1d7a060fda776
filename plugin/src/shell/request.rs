//! One HTTP stream: gate on headers, buffer the body, run the core's flow, answer locally.

use std::collections::VecDeque;
use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use crate::config::Config;
use crate::flow::{Command, Env, Flow, Level, Response};
use crate::inbound::{self, HeadDecision, RequestHead};
use crate::reply::CONTENT_TYPE;
use crate::webhook;

use super::abi::{self, Action, Buffer, LogLevel, Map};
use super::host::{log, now_ms, HostStore, Metrics};

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
    calls: Vec<(u32, u32)>,
}

impl Request {
    pub fn new(config: Rc<Config>, metrics: Rc<Metrics>, context_id: u32) -> Request {
        Request {
            config,
            metrics,
            context_id,
            phase: Phase::Headers,
            flow: None,
            calls: Vec::new(),
        }
    }

    /// Is this stream waiting for the HTTP call with this token?
    pub fn awaits(&self, token: u32) -> bool {
        self.calls.iter().any(|(t, _)| *t == token)
    }

    fn header(name: &str) -> Option<String> {
        abi::get_header(Map::HttpRequestHeaders, name)
    }

    /// A per-request owner id for order claims, unique across workers (WASI random via RandomState).
    fn owner_id(&self) -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(self.context_id);
        h.write_u64(now_ms());
        h.finish()
    }

    fn handle_body(&mut self, body: &[u8]) {
        self.phase = Phase::Running;
        let owner = self.owner_id();
        let mut store = HostStore;
        let mut env = Env {
            now_ms: now_ms(),
            store: &mut store,
        };
        let (flow, commands) = webhook::on_body(&self.config, body, owner, &mut env);
        self.flow = flow;
        self.run(commands);
    }

    /// Carry out commands. A dispatch the host refuses at once becomes a failed response fed
    /// straight back into the flow, so the flow always sees one response per call.
    fn run(&mut self, commands: Vec<Command>) {
        let mut queue: VecDeque<Command> = commands.into();
        while let Some(cmd) = queue.pop_front() {
            match cmd {
                Command::Dispatch(call) => {
                    let mut headers: Vec<(&str, &str)> = vec![
                        (":method", call.method),
                        (":path", &call.path),
                        (":authority", &call.authority),
                    ];
                    headers.extend(call.headers.iter().map(|(k, v)| (*k, v.as_str())));
                    let body = (!call.body.is_empty()).then_some(call.body.as_slice());
                    let timeout_ms = u32::try_from(call.timeout_ms).unwrap_or(u32::MAX);
                    match abi::http_call(&call.cluster, &headers, body, timeout_ms) {
                        Ok(token) => {
                            self.calls.push((token, call.id));
                        }
                        Err(status) => {
                            log(
                                LogLevel::Error,
                                &format!(
                                    "keygate[{}]: dispatch to cluster '{}' refused ({status:?}); is the cluster defined?",
                                    self.context_id, call.cluster
                                ),
                            );
                            if let Some(flow) = self.flow.as_mut() {
                                let mut store = HostStore;
                                let mut env = Env {
                                    now_ms: now_ms(),
                                    store: &mut store,
                                };
                                let failed = Response {
                                    status: None,
                                    body: Vec::new(),
                                };
                                queue.extend(flow.on_response(call.id, failed, &mut env));
                            }
                        }
                    }
                }
                Command::Reply(reply) => {
                    self.phase = Phase::Replied;
                    if let Err(e) = abi::send_local_response(
                        u32::from(reply.status),
                        &[("content-type", CONTENT_TYPE)],
                        reply.body.as_bytes(),
                    ) {
                        log(
                            LogLevel::Error,
                            &format!("keygate[{}]: cannot send reply: {e:?}", self.context_id),
                        );
                    }
                }
                Command::Log(level, msg) => {
                    let level = match level {
                        Level::Info => LogLevel::Info,
                        Level::Warn => LogLevel::Warn,
                        Level::Error => LogLevel::Error,
                    };
                    log(level, &format!("keygate[{}]: {msg}", self.context_id));
                }
                Command::Count(metric, n) => self.metrics.add(metric, n),
            }
        }
    }

    pub fn on_http_call_response(&mut self, token: u32, num_headers: usize, body_size: usize) {
        let Some(pos) = self.calls.iter().position(|(t, _)| *t == token) else {
            return;
        };
        let (_, call_id) = self.calls.swap_remove(pos);
        // On reset/overflow Envoy calls back with no headers at all: no status = no answer.
        let status = if num_headers == 0 {
            None
        } else {
            abi::get_header(Map::HttpCallResponseHeaders, ":status")
                .and_then(|s| s.parse::<u16>().ok())
        };
        let body = if status.is_some() && body_size > 0 {
            abi::get_buffer(Buffer::HttpCallResponseBody, 0, body_size).unwrap_or_default()
        } else {
            Vec::new()
        };
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        let mut store = HostStore;
        let mut env = Env {
            now_ms: now_ms(),
            store: &mut store,
        };
        let commands = flow.on_response(call_id, Response { status, body }, &mut env);
        self.run(commands);
    }

    pub fn on_request_headers(&mut self, end_of_stream: bool) -> Action {
        let path = Self::header(":path").unwrap_or_default();
        // Most traffic through a gateway is not ours: decide on the path alone, one hostcall.
        if !inbound::is_webhook_path(&self.config, &path) {
            self.phase = Phase::PassThrough;
            return Action::Continue;
        }
        // Ours: the rest of the head in one hostcall.
        let headers = abi::get_header_pairs(Map::HttpRequestHeaders);
        let method = headers.get(":method").unwrap_or_default();
        let content_type = headers.get("content-type");
        let content_length = headers
            .get("content-length")
            .and_then(|v| v.trim().parse::<u64>().ok());
        let secret_header = self
            .config
            .inbound_secret
            .as_ref()
            .and_then(|s| headers.get(&s.header));
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
                }
                Action::Pause
            }
        }
    }

    pub fn on_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
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
        if !end_of_stream {
            return Action::Pause;
        }
        let body = abi::get_buffer(Buffer::HttpRequestBody, 0, body_size).unwrap_or_default();
        self.handle_body(&body);
        Action::Pause
    }

    pub fn on_log(&mut self) {
        // The stream is over. If the flow had not replied, Salesforce hung up: Envoy cancels our
        // callouts; release claims so the redelivery is not blocked.
        if let Some(flow) = self.flow.as_mut() {
            if !flow.is_finished() {
                let mut store = HostStore;
                let mut env = Env {
                    now_ms: now_ms(),
                    store: &mut store,
                };
                flow.on_cancel(&mut env);
                log(
                    LogLevel::Warn,
                    &format!("keygate[{}]: downstream went away before the reply; Salesforce will redeliver", self.context_id),
                );
            }
        }
    }
}
