//! keygate.wasm: the proxy-wasm shell Envoy loads, on the proxy-wasm Rust SDK.
//!
//! It only moves bytes between Envoy and the host-free core (`keygate-core`): request heads and
//! bodies in, the core's commands (dispatch a call, reply, log, count) out. The contexts are the
//! SDK's: one root context per plugin configuration, one HTTP context per stream.
//!
//! Nothing here panics: hostcalls go through `proxy_wasm::hostcalls`, whose `Result`s we handle,
//! rather than the trait helpers that unwrap them, and header values are read as bytes. What
//! could still panic is inside the SDK (a host breaking the ABI); the shipped configs set
//! `FAIL_RELOAD` so such a VM is reloaded, and the panic hook leaves its last words in Envoy's log.
//!
//! The stream's phase logic (`stream`) and the command runner (`commands`) are written against a
//! small host port (`port`), so they build and are tested natively (`tests/stream.rs`); `sdk` is
//! the thin adapter onto the SDK, built for wasm32 only.

pub mod commands;
pub mod port;
pub mod stream;
// The stream's tests, in tests/ rather than beside the code they test, but compiled as this
// crate's unit tests (a cdylib has no rlib for an integration test to link).
#[cfg(test)]
#[path = "../tests/stream.rs"]
mod stream_tests;

#[cfg(target_arch = "wasm32")]
mod sdk;

// The SDK's entry point exports `_initialize` (`#[no_mangle]`, which the `unsafe_code` lint
// counts): the one place the shell needs it.
#[cfg(target_arch = "wasm32")]
#[allow(unsafe_code)]
mod entry {
    use proxy_wasm::traits::RootContext;
    use proxy_wasm::types::LogLevel;

    proxy_wasm::main! {{
        std::panic::set_hook(Box::new(|info| {
            // Last words before the VM traps: make the cause visible in Envoy's log.
            crate::sdk::host::log(LogLevel::Critical, &format!("keygate: panic: {info}"));
        }));
        proxy_wasm::set_root_context(|_| -> Box<dyn RootContext> {
            Box::<crate::sdk::root::Root>::default()
        });
    }}
}
