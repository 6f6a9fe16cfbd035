//! The workspace service, a Spin HTTP component.
//!
//! It serves `POST /api/workspaces` and `POST /api/v3/workspaces` (the two contracts in
//! `shared/seeds/`), reads them back, lists an organization's workspaces and manages
//! organization settings, storing everything in Spin's key-value store. Identity comes only
//! from the gateway's signed forwarding (`edge-contract`).
//!
//! The Spin adapter (`component`, wasm only) converts Spin's request into an
//! [`http::ApiRequest`] and calls [`app::handle`]; everything else is host-independent and
//! tested on the native target against [`store::MemoryKv`].

#![warn(missing_docs)]

pub mod app;
pub mod body;
pub mod handlers;
pub mod http;
pub mod i18n;
pub mod idempotency;
mod messages;
pub mod model;
pub mod problem;
pub mod replay;
pub mod repo;
pub mod router;
pub mod store;
pub mod validate;

#[cfg(target_arch = "wasm32")]
mod component;
#[cfg(target_arch = "wasm32")]
mod spin_store;

/// The Spin variable with the comma-separated gateway HMAC keys.
pub const KEYS_VARIABLE: &str = "gateway_hmac_keys";

/// The keys of a `gateway_hmac_keys` value: comma-separated, trimmed; `None` when none is
/// at least [`edge_contract::MIN_KEY_LEN`] bytes long (every key then fails closed).
pub fn parse_keys(value: &str) -> Option<Vec<Vec<u8>>> {
    let keys: Vec<Vec<u8>> = value
        .split(',')
        .map(str::trim)
        .filter(|k| k.len() >= edge_contract::MIN_KEY_LEN)
        .map(|k| k.as_bytes().to_vec())
        .collect();
    (!keys.is_empty()).then_some(keys)
}

#[cfg(test)]
mod tests {
    #[test]
    fn keys_are_comma_separated_and_short_ones_ignored() {
        let long_a = "a".repeat(32);
        let long_b = "b".repeat(40);
        let keys = super::parse_keys(&format!(" {long_a} ,short,{long_b},")).unwrap();
        assert_eq!(keys, vec![long_a.into_bytes(), long_b.into_bytes()]);
        assert_eq!(super::parse_keys(""), None);
        assert_eq!(super::parse_keys("short,also-short"), None);
    }
}
