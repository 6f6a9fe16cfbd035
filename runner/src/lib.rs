//! A local stand-in for `spin up`: serves a Spin HTTP application's components on wasmtime
//! with `wasmtime-wasi-http`, and Spin's key-value store over SQLite in the file and schema
//! `spin up` uses, or over Redis as Spin's runtime configuration may choose. See
//! `runner/README.md`.

pub mod cache;
pub mod commit_rate;
pub mod host;
pub mod kv;
pub mod manifest;
mod outbound;
pub mod routes;
pub mod runtime_config;
pub mod server;
pub mod variables;

pub use server::{bind, engine, serve, App, Options};
