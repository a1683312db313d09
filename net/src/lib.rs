//! tickdb's server.
pub mod api;
pub mod config;
pub mod databases;
pub mod http;
pub mod hub;
pub mod identity;
pub mod json;
pub mod json_protocol;
pub mod server;

pub use config::ServerConfig;
pub use server::{ServerError, ServerHandle, start};
