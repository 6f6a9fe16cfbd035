//! The root context: one per worker VM. Reads and validates the configuration into the
//! VM's state, runs the timer, and makes the request contexts.

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext, RootContext};
use proxy_wasm::types::ContextType;

use crate::abi::{self, Buffer};
use crate::host::{self, Level};
use crate::http::{FilterHttp, Unconfigured};
use crate::keys;
use crate::request::{self, Vm};

/// The root context; `vm` is `None` until configured.
#[derive(Default)]
pub struct FilterRoot {
    vm: Option<Rc<RefCell<Vm>>>,
}

impl FilterRoot {
    fn configure(&mut self) -> Result<(), String> {
        let text = abi::buffer(Buffer::PluginConfiguration, 0, usize::MAX)
            .map_err(|s| format!("cannot read the plugin configuration: {s:?}"))?;
        let vm = Vm::configure(&text)?;
        if let Some(period_ms) = vm.keys.tick_period_ms() {
            abi::set_tick_period_ms(period_ms)
                .map_err(|s| format!("cannot set the tick period: {s:?}"))?;
        }
        self.vm = Some(Rc::new(RefCell::new(vm)));
        Ok(())
    }
}

impl Context for FilterRoot {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        // A key fetch the timer started.
        if let Some(vm) = &self.vm {
            keys::on_answer(&mut vm.borrow_mut(), token_id, body_size);
        }
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // A rate limit call of a request the timer resumed.
        if let Some(vm) = &self.vm {
            request::rate_limit_answered(
                &mut vm.borrow_mut(),
                token_id,
                status_code,
                response_size,
            );
        }
    }
}

impl RootContext for FilterRoot {
    fn on_configure(&mut self, _plugin_configuration_size: usize) -> bool {
        match self.configure() {
            Ok(()) => true,
            Err(message) => {
                // One line naming the field; Envoy then refuses the configuration.
                host::log(Level::Error, &message);
                false
            }
        }
    }

    fn on_tick(&mut self) {
        if let Some(vm) = &self.vm {
            keys::tick(&mut vm.borrow_mut());
        }
    }

    fn create_http_context(&self, context_id: u32) -> Option<Box<dyn HttpContext>> {
        Some(match &self.vm {
            Some(vm) => Box::new(FilterHttp::new(context_id, Rc::clone(vm))),
            None => Box::new(Unconfigured),
        })
    }

    fn get_type(&self) -> Option<ContextType> {
        Some(ContextType::HttpContext)
    }
}
