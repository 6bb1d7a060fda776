//! The request once its body is buffered: parse and validate, check the sender, start the flow.

use std::rc::Rc;

use crate::config::Config;
use crate::flow::{Command, Env, Flow, Level};
use crate::inbound::check_org;
use crate::metrics::Metric;
use crate::reply::{outcome_metric, FaultKind, Reply};
use crate::soap::{self, Limits};

/// Handle a complete request body. Returns the flow when callouts are in flight.
pub fn on_body(
    cfg: &Rc<Config>,
    body: &[u8],
    owner: u64,
    env: &mut Env<'_>,
) -> (Option<Flow>, Vec<Command>) {
    let msg = match soap::parse(body, &Limits::default()) {
        Ok(m) => m,
        Err(e) => {
            let reply = Reply::fault(400, FaultKind::Client, &e.to_string());
            return (
                None,
                vec![
                    Command::Log(Level::Warn, format!("refused message ({}): {e}", e.code())),
                    Command::Count(Metric::FaultedClient, 1),
                    Command::Reply(reply),
                ],
            );
        }
    };
    if let Err(reply) = check_org(cfg, &msg) {
        return (
            None,
            vec![
                Command::Log(
                    Level::Warn,
                    format!(
                        "refused message from organization {}: not in allowed_org_ids",
                        msg.organization_id
                    ),
                ),
                Command::Count(outcome_metric(&reply.outcome), 1),
                Command::Reply(reply),
            ],
        );
    }
    Flow::start(Rc::clone(cfg), &msg, owner, env)
}

/// A reply decided on headers alone, as commands (so the shell has one way to carry them out).
pub fn early_reply(reply: Reply) -> Vec<Command> {
    let mut out = vec![Command::Count(outcome_metric(&reply.outcome), 1)];
    if reply.status == 401 || reply.status == 403 {
        out.push(Command::Log(
            Level::Warn,
            format!("refused request: HTTP {}", reply.status),
        ));
    }
    out.push(Command::Reply(reply));
    out
}
