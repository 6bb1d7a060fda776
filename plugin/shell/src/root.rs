//! One plugin configuration (Envoy's root context): reads and checks it, sets up the ledger and
//! the counters, and gives every HTTP stream its context.

use std::rc::Rc;

use keygate_core::config::Config;
use keygate_core::ledger::Ledger;
use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::host::{log, HostStore, Metrics};
use crate::request::{Request, Unconfigured};

#[derive(Default)]
pub struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

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
        Ledger::new(&config.state_prefix, config.ledger).init(&mut HostStore);
        self.metrics = Rc::new(Metrics::define());
        log(
            LogLevel::Info,
            &format!(
                "keygate {} configured: {}",
                env!("CARGO_PKG_VERSION"),
                config.summary()
            ),
        );
        self.config = Some(Rc::new(config));
        true
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
