//! The tests' server is the library's own acking server.

pub use firmware_sim::ack_server::*;
