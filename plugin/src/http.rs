//! The request context: Envoy's per-request callbacks, each handed to its step of the
//! request's state machine (`request`).

use std::cell::RefCell;
use std::rc::Rc;

use proxy_wasm::traits::{Context, HttpContext};
use proxy_wasm::types::Action;

use crate::abi;
use crate::keys;
use crate::request::{self, Held, Vm};

/// The request context of a configured VM.
pub struct FilterHttp {
    id: u32,
    vm: Rc<RefCell<Vm>>,
    request: Held,
}

impl FilterHttp {
    /// A context for request `id`.
    pub fn new(id: u32, vm: Rc<RefCell<Vm>>) -> Self {
        Self {
            id,
            vm,
            request: Held::default(),
        }
    }
}

impl Context for FilterHttp {
    fn on_http_call_response(
        &mut self,
        token_id: u32,
        _headers: usize,
        body_size: usize,
        _trailers: usize,
    ) {
        // A key fetch this request started while it waited.
        keys::on_answer(&mut self.vm.borrow_mut(), token_id, body_size);
        // Resuming other requests moved the effective context; give this one back.
        let _ = abi::set_effective_context(self.id);
    }

    fn on_grpc_call_response(&mut self, token_id: u32, status_code: u32, response_size: usize) {
        // A rate limit call this request (or one it resumed) started.
        request::rate_limit_answered(
            &mut self.vm.borrow_mut(),
            token_id,
            status_code,
            response_size,
        );
        let _ = abi::set_effective_context(self.id);
    }

    fn on_done(&mut self) -> bool {
        // A request that waited and went away must not be resumed later.
        self.vm.borrow_mut().keys.gone(self.id);
        true
    }
}

impl HttpContext for FilterHttp {
    fn on_http_request_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        crate::trap::check();
        request::on_headers(
            &self.request,
            &mut self.vm.borrow_mut(),
            self.id,
            end_of_stream,
        )
    }

    fn on_http_request_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut vm = self.vm.borrow_mut();
        self.request
            .borrow_mut()
            .on_body(&mut vm, body_size, end_of_stream)
    }

    fn on_http_request_trailers(&mut self, _num_trailers: usize) -> Action {
        self.request
            .borrow_mut()
            .on_trailers(&mut self.vm.borrow_mut())
    }

    fn on_http_response_headers(&mut self, _num_headers: usize, end_of_stream: bool) -> Action {
        self.request
            .borrow_mut()
            .on_response_headers(&mut self.vm.borrow_mut(), end_of_stream)
    }

    fn on_http_response_body(&mut self, body_size: usize, end_of_stream: bool) -> Action {
        let mut vm = self.vm.borrow_mut();
        self.request
            .borrow_mut()
            .on_response_body(&mut vm, body_size, end_of_stream)
    }

    fn on_log(&mut self) {
        self.request
            .borrow_mut()
            .on_log(&mut self.vm.borrow_mut(), self.id);
    }
}

/// The request context of a VM that has no configuration (Envoy creates none once it has
/// refused one): every request fails closed.
pub struct Unconfigured;

impl Context for Unconfigured {}

impl HttpContext for Unconfigured {
    fn on_http_request_headers(&mut self, _num_headers: usize, _end_of_stream: bool) -> Action {
        let _ = abi::send_local_response(503, &[], b"");
        Action::Pause
    }
}
