//! The proxy-wasm adapter from Envoy callbacks to [`edge_policy::Worker`].
//!
//! Contexts come in pairs: [`root::FilterRoot`] (one per worker VM: configuration, timer)
//! makes [`http::FilterHttp`] (one per request). Everything they decide is decided by
//! `edge_policy`; this crate only moves bytes between Envoy and it. Its modules depend on
//! one another in one direction only:
//!
//! ```text
//! abi ← metrics ← host ← vm ← request ← keys ← http ← root
//! ```

mod abi;
mod host;
mod http;
mod keys;
mod metrics;
mod request;
mod root;
mod trap;
mod vm;

use proxy_wasm::types::LogLevel;

proxy_wasm::main! {{
    proxy_wasm::set_log_level(LogLevel::Info);
    // A panic aborts the VM; say so loudly, where operators look, before it does.
    std::panic::set_hook(Box::new(|info| {
        let _ = abi::log(5, &format!("edge filter panicked: {info}"));
    }));
    proxy_wasm::set_root_context(|_| Box::<root::FilterRoot>::default());
}}
