//! Carrying out the core's commands, for both sans-IO machines the shell runs: a delivery's flow
//! (HTTP streams) and the start-up self-check (the root context). Each dispatches calls, logs,
//! counts and sets gauges the same way.

use std::collections::VecDeque;

use keygate_core::flow::{Command, Env, Level, Response, NOT_DISPATCHED};
use keygate_core::reply::Reply;

use crate::port::{DispatchRefused, Host};

/// The calls a context has dispatched and not yet had answered: the host's token → the core's
/// call id and the reply headers it reads.
#[derive(Default)]
pub struct Calls(Vec<(u32, u32, &'static [&'static str])>);

impl Calls {
    /// The core's id of the call the host answers under `token` (forgotten from now on).
    pub fn answered(&mut self, token: u32) -> Option<u32> {
        let pos = self.0.iter().position(|(t, _, _)| *t == token)?;
        Some(self.0.swap_remove(pos).1)
    }

    /// The reply headers the core reads of the call under `token` (none for an unknown token).
    pub fn reply_headers(&self, token: u32) -> &'static [&'static str] {
        self.0
            .iter()
            .find(|(t, _, _)| *t == token)
            .map_or(&[], |(_, _, h)| h)
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

/// Run `f` with the core's view of the host: its clock and shared data.
pub fn with_env<R>(host: &mut dyn Host, f: impl FnOnce(&mut Env<'_>) -> R) -> R {
    let now_ms = host.now_ms();
    let mut env = Env {
        now_ms,
        store: host.store(),
    };
    f(&mut env)
}

/// Carry out `commands`. A dispatch the host refuses at once becomes a response without status
/// (body [`NOT_DISPATCHED`]) fed straight back through `respond`, so the machine always sees one
/// response per call; what `respond` returns is carried out in turn. A reply goes to `reply`.
/// Log lines start with `who`.
pub fn carry_out(
    commands: Vec<Command>,
    calls: &mut Calls,
    host: &mut dyn Host,
    who: &str,
    mut respond: impl FnMut(&mut dyn Host, u32, Response) -> Vec<Command>,
    mut reply: impl FnMut(&mut dyn Host, Reply),
) {
    let mut queue: VecDeque<Command> = commands.into();
    while let Some(cmd) = queue.pop_front() {
        match cmd {
            Command::Dispatch(call) => match host.dispatch(&call) {
                Ok(token) => calls.0.push((token, call.id, call.reply_headers)),
                Err(refused) => {
                    let (level, why) = match &refused {
                        DispatchRefused::FailedBeforeSending => (
                            Level::Warn,
                            "Envoy failed it before sending (is a circuit breaker on the cluster open?)".to_owned(),
                        ),
                        DispatchRefused::Other(status) => {
                            (Level::Error, format!("{status}: is the cluster defined?"))
                        }
                    };
                    let msg = format!(
                        "{who}: dispatch to cluster '{}' refused: {why}",
                        call.cluster
                    );
                    host.log(level, &msg);
                    let failed = Response {
                        status: None,
                        headers: Vec::new(),
                        body: NOT_DISPATCHED.to_vec(),
                    };
                    queue.extend(respond(host, call.id, failed));
                }
            },
            Command::Reply(r) => reply(host, r),
            Command::Log(level, msg) => host.log(level, &format!("{who}: {msg}")),
            Command::Count(metric, n) => host.count(metric, n),
            Command::Gauge(gauge, value) => host.gauge(gauge, value),
        }
    }
}
