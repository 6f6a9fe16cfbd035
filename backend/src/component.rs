//! The Spin adapter: reads the request (at most `MAX_BODY_BYTES` of body), opens the store
//! and the keys, and writes the response.

use edge_contract::Verifier;
use futures::StreamExt;
use spin_sdk::http::{IncomingRequest, Response};
use spin_sdk::http_component;

use crate::app::{self, Env};
use crate::http::{ApiRequest, MAX_BODY_BYTES};
use crate::spin_store::SpinKv;
use crate::store::{Kv, StoreError};

/// A store that fails every call: used when the store cannot be opened, so the request
/// still gets a proper 503 (after authentication) instead of a trap.
struct Unavailable(String);

impl Kv for Unavailable {
    fn get(&self, _: &str) -> Result<Option<Vec<u8>>, StoreError> {
        Err(StoreError(self.0.clone()))
    }
    fn set(&self, _: &str, _: &[u8]) -> Result<(), StoreError> {
        Err(StoreError(self.0.clone()))
    }
    fn delete(&self, _: &str) -> Result<(), StoreError> {
        Err(StoreError(self.0.clone()))
    }
    fn increment(&self, _: &str, _: i64) -> Result<i64, StoreError> {
        Err(StoreError(self.0.clone()))
    }
    fn compare_and_swap(&self, _: &str, _: Option<&[u8]>, _: &[u8]) -> Result<bool, StoreError> {
        Err(StoreError(self.0.clone()))
    }
}

async fn read(req: IncomingRequest) -> ApiRequest {
    let method = req.method().to_string();
    let path_and_query = req.path_with_query().unwrap_or_else(|| "/".into());
    let mut api = ApiRequest::new(&method, &path_and_query);
    // Values stay bytes: whether one is acceptable text is the pipeline's decision.
    api.headers = req
        .headers()
        .entries()
        .into_iter()
        .map(|(name, value)| (name.to_ascii_lowercase(), value))
        .collect();
    if api.declared_length().is_some_and(|n| n > MAX_BODY_BYTES) {
        api.body_too_large = true;
        return api;
    }
    // Read no more than the limit, whatever the declared length: a chunked body may lie.
    let mut stream = req.into_body_stream();
    while let Some(chunk) = stream.next().await {
        let Ok(chunk) = chunk else { break };
        if api.body.len() + chunk.len() > MAX_BODY_BYTES {
            api.body_too_large = true;
            break;
        }
        api.body.extend_from_slice(&chunk);
    }
    api
}

#[http_component]
async fn handle(req: IncomingRequest) -> Response {
    let api = read(req).await;
    let keys = spin_sdk::variables::get(crate::KEYS_VARIABLE)
        .ok()
        .and_then(|v| crate::parse_keys(&v));
    if keys.is_none() {
        eprintln!(
            "variable {} is unset or has no key of at least {} bytes",
            crate::KEYS_VARIABLE,
            edge_contract::MIN_KEY_LEN
        );
    }
    let verifier = keys.map(Verifier::new);
    let spin_kv;
    let unavailable;
    let kv: &dyn Kv = match SpinKv::open("default") {
        Ok(kv) => {
            spin_kv = kv;
            &spin_kv
        }
        Err(e) => {
            eprintln!("key-value store unavailable: {e}");
            unavailable = Unavailable(e.0);
            &unavailable
        }
    };
    let env = Env {
        kv,
        verifier: verifier.as_ref(),
        now: chrono::Utc::now(),
        new_uuid: &uuid::Uuid::new_v4,
    };
    let response = app::handle(&api, &env);
    let mut builder = Response::builder();
    builder.status(response.status);
    for (name, value) in &response.headers {
        builder.header(name, value);
    }
    builder.body(response.body).build()
}
