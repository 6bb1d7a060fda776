//! The proxy-wasm shell: the only code that talks to Envoy. It reads headers and bodies, hands
//! them to the core, and carries out the core's commands (dispatch, reply, log, count).
//!
//! Hostcalls are made through `proxy_wasm::hostcalls` directly, not the trait helpers, because
//! the helpers panic on unexpected host statuses and a panic kills the VM for the whole worker.

mod host;
mod request;

use std::rc::Rc;

use proxy_wasm::hostcalls;
use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::{BufferType, ContextType, LogLevel};

use crate::config::Config;
use crate::ledger::Ledger;

use host::{log, HostStore, Metrics};
use request::Request;

#[allow(unsafe_code)]
mod entry {
    proxy_wasm::main! {{
        proxy_wasm::set_log_level(proxy_wasm::types::LogLevel::Info);
        std::panic::set_hook(Box::new(|info| {
            // Last words before the VM traps: make the cause visible in Envoy's log.
            let _ = proxy_wasm::hostcalls::log(
                proxy_wasm::types::LogLevel::Critical,
                &format!("keygate: panic: {info}"),
            );
        }));
        proxy_wasm::set_root_context(|_| Box::new(super::Root::default()));
    }}
}

#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Context for Root {}

impl RootContext for Root {
    fn on_configure(&mut self, _size: usize) -> bool {
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
                "keygate {} configured: handler '{}', {} allowed org(s), issuing {}",
                env!("CARGO_PKG_VERSION"),
                config.handler_name,
                config.allowed_orgs.len(),
                match &config.issuing {
                    Some(i) => format!(
                        "on ({} grant, {} product mapping(s), write-back {})",
                        i.salesforce.grant.name(),
                        i.products.len(),
                        if i.salesforce.writeback_field.is_some() {
                            "on"
                        } else {
                            "off"
                        }
                    ),
                    None => "off".to_owned(),
                }
            ),
        );
        self.config = Some(Rc::new(config));
        true
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        let config = self.config.clone()?;
        Some(Box::new(Request::new(
            config,
            Rc::clone(&self.metrics),
            context_id,
        )))
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
