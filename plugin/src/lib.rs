//! The proxy-wasm adapter from Envoy callbacks to `edge_policy`.
