//! Carries out the key-fetch schedule (`edge_policy::keyfetch`): the timer and the fetch
//! answers go in, and its commands are executed here: keys installed, failures counted,
//! waiting requests decided again and resumed.

use edge_policy::keyfetch::{self, Command, Waiter};

use crate::abi::{self, Buffer, Map};
use crate::host::{self, KeyCalls};
use crate::request::{self, Held, Vm};

/// The timer: due fetches start, requests whose wait is over are resumed.
pub fn tick(vm: &mut Vm) {
    let now = host::now_ms();
    let commands = vm.keys.tick(now, &mut KeyCalls(&mut vm.metrics));
    run(vm, commands);
}

/// The answer to fetch `token` (delivered to whichever context started it).
pub fn on_answer(vm: &mut Vm, token: u32, body_size: usize) {
    let status = abi::header(Map::HttpCallResponse, ":status")
        .ok()
        .flatten()
        .unwrap_or_default();
    // `body_size` is the server's; how much of it is read is the schedule's bound.
    let limit = body_size.min(keyfetch::MAX_BODY_READ);
    let body = abi::buffer(Buffer::HttpCallResponseBody, 0, limit).unwrap_or_default();
    let now = host::now_ms();
    let commands = vm
        .keys
        .fetched(token, &status, &body, now, &mut KeyCalls(&mut vm.metrics));
    run(vm, commands);
}

fn run(vm: &mut Vm, commands: Vec<Command<Held>>) {
    for command in commands {
        match command {
            Command::Install { issuer, keys } => {
                vm.worker.set_remote_keys(issuer, keys);
                vm.metrics.count("jwks_fetch.ok");
            }
            Command::Failed { issuer, why } => {
                KeyCalls(&mut vm.metrics).failed(issuer, &format!("failed: {why}"));
            }
            Command::Resume(Waiter { id, request }) => {
                // Host calls made now must act on the waiting request's stream; one that is
                // gone has no context left to resume.
                if abi::set_effective_context(id).is_ok() {
                    request::resumed(&request, vm);
                }
            }
        }
    }
}
