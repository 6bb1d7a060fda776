//! One HTTP stream through the gate, against the [`Host`] port: decide on the head, buffer the
//! body (or take trailers as its end), run the core's flow, answer locally. The SDK's HTTP
//! context (`sdk::request`) only forwards its callbacks here.

use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::flow::{Command, Flow, Level, Response};
use keygate_core::inbound::{self, HeadDecision, RequestHead};
use keygate_core::webhook;

use crate::commands::{carry_out, with_env, Calls};
use crate::port::{Host, Verdict};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    Headers,
    /// Not ours, or refused to be ours: everything goes on untouched.
    PassThrough,
    ReadingBody,
    Running,
    Replied,
}

pub struct Stream {
    config: Rc<Config>,
    context_id: u32,
    phase: Phase,
    flow: Option<Flow>,
    /// The host's call token → the core's call id.
    calls: Calls,
}

impl Stream {
    pub fn new(config: Rc<Config>, context_id: u32) -> Stream {
        Stream {
            config,
            context_id,
            phase: Phase::Headers,
            flow: None,
            calls: Calls::default(),
        }
    }

    pub fn phase(&self) -> Phase {
        self.phase
    }

    /// The most of a call's answer the core reads (one byte more tells it is too large).
    pub fn max_reply_bytes(&self) -> usize {
        self.config.max_reply_bytes
    }

    fn who(&self) -> String {
        format!("keygate[{}]", self.context_id)
    }

    pub fn on_headers(&mut self, host: &mut dyn Host, end_of_stream: bool) -> Verdict {
        let path = host.request_header(":path").unwrap_or_default();
        // Most traffic through a gateway is not ours: decide on the path alone, one hostcall.
        if !inbound::is_webhook_path(&self.config, &path) {
            self.phase = Phase::PassThrough;
            return Verdict::Continue;
        }
        // Ours: the rest of the head in one hostcall.
        let headers = host.request_headers();
        let header = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.as_str())
        };
        let secret_header = self
            .config
            .inbound_secret
            .as_ref()
            .and_then(|s| header(&s.header));
        let head = RequestHead {
            method: header(":method").unwrap_or_default(),
            path: &path,
            content_type: header("content-type"),
            content_length: header("content-length").and_then(|v| v.trim().parse::<u64>().ok()),
            secret_header,
        };
        match inbound::on_headers(&self.config, &head) {
            HeadDecision::PassThrough => {
                self.phase = Phase::PassThrough;
                Verdict::Continue
            }
            HeadDecision::Reply(reply) => {
                self.run(host, webhook::early_reply(reply));
                Verdict::Pause
            }
            HeadDecision::ReadBody => {
                self.phase = Phase::ReadingBody;
                if end_of_stream {
                    self.handle_body(host, &[]);
                    return Verdict::Pause;
                }
                if self.config.hold_request_headers {
                    return Verdict::Pause;
                }
                // Without allow_on_headers_stop_iteration a paused head never gets its body
                // callbacks: let the head go on to the router, minus anything secret. The body
                // is held below and never follows; the plugin's reply resets the upstream stream.
                self.strip_forwarded_head(host, &path);
                Verdict::Continue
            }
        }
    }

    /// `body_size` is the size buffered so far (cumulative), not this chunk's.
    pub fn on_body(
        &mut self,
        host: &mut dyn Host,
        body_size: usize,
        end_of_stream: bool,
    ) -> Verdict {
        match self.phase {
            Phase::PassThrough => return Verdict::Continue,
            Phase::ReadingBody => {}
            // Already answered or working: swallow the rest, never forward it.
            _ => return Verdict::Pause,
        }
        if body_size > self.config.max_body_bytes {
            self.run(host, webhook::early_reply(inbound::too_large(&self.config)));
            return Verdict::Pause;
        }
        if end_of_stream {
            self.on_complete_body(host);
        }
        Verdict::Pause
    }

    /// Trailers end the stream: the body callback never saw `end_of_stream`, so the message is
    /// complete only now. Going on here would forward the request unchecked.
    pub fn on_trailers(&mut self, host: &mut dyn Host) -> Verdict {
        match self.phase {
            Phase::PassThrough => Verdict::Continue,
            Phase::ReadingBody => {
                self.on_complete_body(host);
                Verdict::Pause
            }
            _ => Verdict::Pause,
        }
    }

    /// The reply headers the core reads of the call under `token`.
    pub fn reply_headers(&self, token: u32) -> &'static [&'static str] {
        self.calls.reply_headers(token)
    }

    /// The answer to the call the host dispatched under `token`.
    pub fn on_call_response(&mut self, host: &mut dyn Host, token: u32, resp: Response) {
        let Some(call_id) = self.calls.answered(token) else {
            return;
        };
        let Some(flow) = self.flow.as_mut() else {
            return;
        };
        let commands = with_env(host, |env| flow.on_response(call_id, resp, env));
        self.run(host, commands);
    }

    /// The stream is over. If the flow had not replied, Salesforce hung up: the host cancels
    /// our calls; release claims so the redelivery is not blocked.
    pub fn on_done(&mut self, host: &mut dyn Host) {
        if let Some(flow) = self.flow.as_mut() {
            if !flow.is_finished() {
                with_env(host, |env| flow.on_cancel(env));
                let msg = format!(
                    "{}: downstream went away before the reply; Salesforce will redeliver",
                    self.who()
                );
                host.log(Level::Warn, &msg);
            }
        }
    }

    /// A per-request owner id for order claims, unique across workers (random via RandomState).
    fn owner_id(&self, now_ms: u64) -> u64 {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u32(self.context_id);
        h.write_u64(now_ms);
        h.finish()
    }

    /// The whole body is here (end of stream, or trailers): read it once, at most one byte over
    /// the limit (enough to tell it is too large), then run the core.
    fn on_complete_body(&mut self, host: &mut dyn Host) {
        let limit = self.config.max_body_bytes;
        let body = host.request_body(limit.saturating_add(1));
        if body.len() > limit {
            self.run(host, webhook::early_reply(inbound::too_large(&self.config)));
            return;
        }
        self.handle_body(host, &body);
    }

    /// What the route's upstream may see of a webhook request: the path without its query
    /// (QLM's `is_user`/`is_pwd` travel there), no secret header.
    fn strip_forwarded_head(&self, host: &mut dyn Host, path: &str) {
        if let Some((bare, _)) = path.split_once('?') {
            host.set_request_header(":path", Some(bare));
        }
        if let Some(s) = &self.config.inbound_secret {
            host.set_request_header(&s.header, None);
        }
    }

    fn handle_body(&mut self, host: &mut dyn Host, body: &[u8]) {
        self.phase = Phase::Running;
        // One clock read for the owner id and the flow.
        let now = host.now_ms();
        let owner = self.owner_id(now);
        let config = Rc::clone(&self.config);
        let (flow, commands) = with_env(host, |env| {
            env.now_ms = now;
            webhook::on_body(&config, body, owner, env)
        });
        self.flow = flow;
        self.run(host, commands);
    }

    /// Carry out the flow's commands (`commands::carry_out`); its reply answers Salesforce.
    fn run(&mut self, host: &mut dyn Host, commands: Vec<Command>) {
        let who = self.who();
        let (flow, phase) = (&mut self.flow, &mut self.phase);
        carry_out(
            commands,
            &mut self.calls,
            host,
            &who,
            |host, id, resp| {
                flow.as_mut().map_or_else(Vec::new, |f| {
                    with_env(host, |env| f.on_response(id, resp, env))
                })
            },
            |host, reply| {
                *phase = Phase::Replied;
                if !host.send_reply(reply.status, reply.body.as_bytes()) {
                    host.log(Level::Error, &format!("{who}: cannot send the reply"));
                }
            },
        );
    }
}
