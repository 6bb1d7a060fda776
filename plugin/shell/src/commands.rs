//! Carrying out the core's commands, for both sans-IO machines the shell runs: a delivery's flow
//! (HTTP contexts) and the start-up self-check (the root context). Each dispatches calls, logs,
//! counts and sets gauges the same way, and reads a call's answer the same bounded way.

use std::collections::VecDeque;

use keygate_core::flow::{Command, Response, NOT_DISPATCHED};
use keygate_core::reply::Reply;
use proxy_wasm::hostcalls;
use proxy_wasm::types::{BufferType, LogLevel, MapType, Status};

use crate::host::{dispatch, level, log, Metrics};

/// The calls a context has dispatched and not yet had answered: the host's token → the core's
/// call id.
#[derive(Default)]
pub struct Calls(Vec<(u32, u32)>);

impl Calls {
    /// The core's id of the call the host answers under `token` (forgotten from now on).
    pub fn answered(&mut self, token: u32) -> Option<u32> {
        let pos = self.0.iter().position(|(t, _)| *t == token)?;
        Some(self.0.swap_remove(pos).1)
    }
}

/// Carry out `commands`. A dispatch the host refuses at once becomes a response without status
/// fed straight back through `respond`, so the machine always sees one response per call;
/// what `respond` returns is carried out in turn. A reply goes to `reply`. Log lines start with
/// `who`.
pub fn carry_out(
    commands: Vec<Command>,
    calls: &mut Calls,
    metrics: &Metrics,
    who: &str,
    mut respond: impl FnMut(u32, Response) -> Vec<Command>,
    mut reply: impl FnMut(Reply),
) {
    let mut queue: VecDeque<Command> = commands.into();
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            Command::Dispatch(call) => match dispatch(&call) {
                Ok(token) => calls.0.push((token, call.id)),
                Err(status) => {
                    // Envoy answers a call it fails before sending (a circuit breaker on the
                    // cluster open) while dispatching it, and then refuses the dispatch itself.
                    let (lvl, why) = match status {
                        Status::InternalFailure => (
                            LogLevel::Warn,
                            "Envoy failed it before sending (is a circuit breaker on the cluster open?)",
                        ),
                        _ => (LogLevel::Error, "is the cluster defined?"),
                    };
                    log(
                        lvl,
                        &format!(
                            "{who}: dispatch to cluster '{}' refused ({status:?}): {why}",
                            call.cluster
                        ),
                    );
                    let failed = Response {
                        status: None,
                        body: NOT_DISPATCHED.to_vec(),
                    };
                    queue.extend(respond(call.id, failed));
                }
            },
            Command::Reply(r) => reply(r),
            Command::Log(l, msg) => log(level(l), &format!("{who}: {msg}")),
            Command::Count(metric, n) => metrics.add(metric, n),
            Command::Gauge(gauge, value) => metrics.set(gauge, value),
        }
    }
}

/// The answer to a dispatched call, read once: on reset or overflow Envoy calls back with no
/// headers at all (no status: no answer), and the body is read at most one byte over
/// `max_reply_bytes`, enough for the core to refuse it.
pub fn call_response(num_headers: usize, body_size: usize, max_reply_bytes: usize) -> Response {
    let status = if num_headers == 0 {
        None
    } else {
        hostcalls::get_map_value_bytes(MapType::HttpCallResponseHeaders, ":status")
            .ok()
            .flatten()
            .and_then(|s| std::str::from_utf8(&s).ok()?.parse::<u16>().ok())
    };
    let body = if status.is_some() && body_size > 0 {
        let max = body_size.min(max_reply_bytes.saturating_add(1));
        hostcalls::get_buffer(BufferType::HttpCallResponseBody, 0, max)
            .ok()
            .flatten()
            .unwrap_or_default()
    } else {
        Vec::new()
    };
    Response { status, body }
}
