//! Envoy counters per decision and reason: `edge_filter.<outcome>.<reason>`. Envoy files
//! them as `wasmcustom.edge_filter.…` on `/stats` and as `edge_filter_<outcome>_<reason>`
//! on `/stats/prometheus`.

use std::collections::HashMap;

use crate::abi;

/// Counter ids defined so far in this VM.
#[derive(Default)]
pub struct Metrics {
    ids: HashMap<String, u32>,
}

impl Metrics {
    /// Adds one to `edge_filter.<name>`, defining the counter on first use.
    pub fn count(&mut self, name: &str) {
        let id = match self.ids.get(name) {
            Some(id) => *id,
            None => match abi::define_counter(&format!("edge_filter.{name}")) {
                Ok(id) => {
                    self.ids.insert(name.to_owned(), id);
                    id
                }
                Err(_) => return,
            },
        };
        let _ = abi::increment(id, 1);
    }
}
