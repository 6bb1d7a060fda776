//! The proxy-wasm shell: the only code that talks to Envoy. It reads headers and bodies, hands
//! them to the core, and carries out the core's commands (dispatch, reply, log, count).
//!
//! `abi` is our own binding of the proxy-wasm ABI (see there why not the SDK) and the only
//! `unsafe` code of the crate. This module is the dispatcher: it keeps the VM's contexts (one
//! `Root` per plugin configuration, one `Request` per HTTP stream) and routes each host callback
//! to its context. Hostcalls never panic: a panic kills the VM for the whole worker.

#[allow(unsafe_code)]
mod abi;
mod host;
mod request;

use std::cell::RefCell;
use std::rc::Rc;

use crate::config::Config;
use crate::ledger::Ledger;

use abi::{Action, Buffer, LogLevel};
use host::{log, HostStore, Metrics};
use request::Request;

/// Every live context of this VM. A handful of roots and the worker's in-flight streams: a
/// linear scan of a `Vec` is cheaper in code (and no slower at these sizes) than a map.
struct Vm {
    roots: Vec<(u32, Root)>,
    streams: Vec<(u32, Request)>,
}

thread_local! {
    // A wasm32-wasip1 VM runs one thread (no `atomics`), so this is a plain static: with a
    // `const` initialiser std's wasm thread-local is a static with no lazy init or destructor.
    static VM: RefCell<Vm> = const {
        RefCell::new(Vm {
            roots: Vec::new(),
            streams: Vec::new(),
        })
    };
}

/// Run `f` on the VM's contexts; `None` if they are already borrowed (a host callback re-entered
/// the module during a hostcall, which Envoy does not do: it defers its own callbacks).
fn with_vm<R>(f: impl FnOnce(&mut Vm) -> R) -> Option<R> {
    VM.with(|vm| vm.try_borrow_mut().ok().map(|mut vm| f(&mut vm)))
}

/// A host callback we cannot honour (a host bug: no such stream, or no configuration). The SDK
/// panicked here, killing the VM for every request on the worker; we fail closed for this
/// request only: a 503 SOAP fault, and the stream is paused so nothing goes through unchecked.
fn refuse(what: &str) -> Action {
    log(
        LogLevel::Critical,
        &format!("keygate: {what}; refusing the request"),
    );
    let body = crate::soap::fault(crate::soap::FaultCode::Server, "gateway plugin not ready");
    let _ = abi::send_local_response(
        503,
        &[("content-type", crate::reply::CONTENT_TYPE)],
        body.as_bytes(),
    );
    Action::Pause
}

fn init() {
    std::panic::set_hook(Box::new(|info| {
        // Last words before the VM traps: make the cause visible in Envoy's log.
        log(LogLevel::Critical, &format!("keygate: panic: {info}"));
    }));
}

fn on_context_create(context_id: u32, root_context_id: u32) {
    let created = with_vm(|vm| {
        if root_context_id == 0 {
            vm.roots.push((context_id, Root::default()));
            return true;
        }
        let request = vm
            .roots
            .iter()
            .find(|(id, _)| *id == root_context_id)
            .and_then(|(_, root)| root.new_request(context_id));
        match request {
            Some(r) => {
                vm.streams.push((context_id, r));
                true
            }
            None => false,
        }
    });
    if created != Some(true) {
        // Its callbacks find no stream and are refused (see `with_stream`).
        log(
            LogLevel::Critical,
            "keygate: stream context without a configured plugin",
        );
    }
}

fn on_configure(context_id: u32) -> bool {
    with_vm(|vm| {
        vm.roots
            .iter_mut()
            .find(|(id, _)| *id == context_id)
            .is_some_and(|(_, root)| root.on_configure())
    })
    .unwrap_or(false)
}

/// The gate: a stream we do not know here would go unchecked, so it is refused instead.
fn with_stream(context_id: u32, f: impl FnOnce(&mut Request) -> Action) -> Action {
    let done = with_vm(|vm| {
        vm.streams
            .iter_mut()
            .find(|(id, _)| *id == context_id)
            .map(|(_, r)| f(r))
    });
    match done.flatten() {
        Some(r) => r,
        None => refuse("request callback for an unknown stream"),
    }
}

fn on_request_headers(context_id: u32, end_of_stream: bool) -> Action {
    with_stream(context_id, |r| r.on_request_headers(end_of_stream))
}

fn on_request_body(context_id: u32, body_size: usize, end_of_stream: bool) -> Action {
    with_stream(context_id, |r| r.on_request_body(body_size, end_of_stream))
}

fn on_http_call_response(token: u32, num_headers: usize, body_size: usize) {
    // The call was ours only while its stream lives: Envoy may still answer after the stream is
    // gone (the host issues calls from the root context), and then nobody is waiting.
    with_vm(|vm| {
        if let Some((id, r)) = vm.streams.iter_mut().find(|(_, r)| r.awaits(token)) {
            // The answer arrives on the root context; replies and header reads are the stream's.
            // (It cannot fail for a live stream; if it did, the reply would fail and be logged.)
            let _ = abi::set_effective_context(*id);
            r.on_http_call_response(token, num_headers, body_size);
        }
    });
}

fn on_log(context_id: u32) {
    with_vm(|vm| {
        if let Some((_, r)) = vm.streams.iter_mut().find(|(id, _)| *id == context_id) {
            r.on_log();
        }
    });
}

fn on_delete(context_id: u32) {
    with_vm(|vm| {
        if let Some(i) = vm.streams.iter().position(|(id, _)| *id == context_id) {
            vm.streams.swap_remove(i);
        } else if let Some(i) = vm.roots.iter().position(|(id, _)| *id == context_id) {
            vm.roots.swap_remove(i);
        }
    });
}

/// One plugin configuration (Envoy's root context).
#[derive(Default)]
struct Root {
    config: Option<Rc<Config>>,
    metrics: Rc<Metrics>,
}

impl Root {
    fn on_configure(&mut self) -> bool {
        let bytes = match abi::get_buffer(Buffer::PluginConfiguration, 0, usize::MAX) {
            Some(b) if !b.is_empty() => b,
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

    fn new_request(&self, context_id: u32) -> Option<Request> {
        let config = self.config.clone()?;
        Some(Request::new(config, Rc::clone(&self.metrics), context_id))
    }
}
