//! One plugin configuration (Envoy's root context): reads and checks it, sets up the ledger and
//! the counters, gives every HTTP stream its context, and runs the start-up self-check on the
//! root context's timer.

use std::hash::{BuildHasher, Hasher};
use std::rc::Rc;
use std::time::Duration;

use keygate_core::config::Config;
use keygate_core::flow::Command;
use keygate_core::ledger::Ledger;
use keygate_core::selfcheck::{self, SelfCheck};
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use super::host::{call_response, log, Metrics, SdkHost};
use super::request::{Request, Unconfigured};
use crate::commands::{carry_out, with_env, Calls};
use crate::port::Host;

/// How often each worker looks whether a self-check round is due (one shared-data read).
const TICK: Duration = Duration::from_secs(1);

pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
    host: SdkHost,
    /// The self-check round this worker runs, if any.
    check: Option<SelfCheck>,
    /// proxy-wasm call token → the self-check's call id.
    calls: Calls,
}

impl Default for Root {
    fn default() -> Root {
        let metrics = Rc::new(Metrics::default());
        Root {
            config: None,
            host: SdkHost::new(Rc::clone(&metrics)),
            metrics,
            check: None,
            calls: Calls::default(),
        }
    }
}

impl Root {
    /// Carry out the self-check's commands (`commands::carry_out`); it never replies.
    fn run(&mut self, commands: Vec<Command>) {
        let check = &mut self.check;
        carry_out(
            commands,
            &mut self.calls,
            &mut self.host,
            "keygate",
            |host, id, resp| {
                check.as_mut().map_or_else(Vec::new, |c| {
                    with_env(host, |env| c.on_response(id, resp, env))
                })
            },
            |_, _| {},
        );
        if self.check.as_ref().is_some_and(SelfCheck::is_finished) {
            self.check = None;
        }
    }
}

impl Context for Root {
    fn on_http_call_response(
        &mut self,
        token: u32,
        num_headers: usize,
        body_size: usize,
        _num_trailers: usize,
    ) {
        let names = self.calls.reply_headers(token);
        let Some(call_id) = self.calls.answered(token) else {
            return;
        };
        let max = self.config.as_ref().map_or(0, |c| c.max_reply_bytes);
        let resp = call_response(num_headers, body_size, max, names);
        let Some(check) = self.check.as_mut() else {
            return;
        };
        let commands = with_env(&mut self.host, |env| check.on_response(call_id, resp, env));
        self.run(commands);
    }
}

impl RootContext for Root {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        let bytes = match hostcalls::get_buffer(BufferType::PluginConfiguration, 0, usize::MAX) {
            Ok(Some(b)) if !b.is_empty() => b,
            _ => {
                log(
                    LogLevel::Error,
                    "keygate: no plugin configuration given; refusing to start",
                );
                return false;
            }
        };
        let config = match Config::from_json(&bytes, &|name| std::env::var(name).ok()) {
            Ok(c) => c,
            Err(e) => {
                // The error names fields and variables only, never secret values.
                log(LogLevel::Error, &format!("keygate: {e}"));
                return false;
            }
        };
        // The nonce names this Envoy's lifetime in the issuing marks it writes (WASI random).
        let nonce = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let now = self.host.now_ms();
        Ledger::new(&config.state_prefix, config.ledger).init(self.host.store(), now, nonce);
        self.metrics = Rc::new(Metrics::define());
        self.host = SdkHost::new(Rc::clone(&self.metrics));
        log(
            LogLevel::Info,
            &format!(
                "keygate {} configured: {}",
                env!("CARGO_PKG_VERSION"),
                config.summary()
            ),
        );
        if config.issuing.is_some() {
            with_env(&mut self.host, |env| selfcheck::init(&config, env));
            // The first tick comes one period from now; a failed timer only means no self-check.
            let _ = hostcalls::set_tick_period(TICK);
        }
        self.config = Some(Rc::new(config));
        true
    }

    fn on_tick(&mut self) {
        if self.check.is_some() {
            return;
        }
        let Some(config) = self.config.as_ref().map(Rc::clone) else {
            return;
        };
        if let Some((check, commands)) =
            with_env(&mut self.host, |env| selfcheck::tick(&config, env))
        {
            self.check = Some(check);
            self.run(commands);
        }
    }

    /// Always a context: the SDK panics (killing the VM) when there is none. A stream that
    /// arrives before a configuration (a host bug) is refused, never passed through unchecked.
    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.config {
            Some(config) => Box::new(Request::new(
                Rc::clone(config),
                Rc::clone(&self.metrics),
                context_id,
            )),
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
