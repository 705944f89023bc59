//! The ingest crate's errors.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum IngestError {
    #[error("database: {0}")]
    Database(#[from] sqlx::Error),
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: std::net::SocketAddr,
        source: std::io::Error,
    },
    #[error("mqtt: {0}")]
    Mqtt(String),
    #[error("{0}")]
    Unsupported(#[from] protocols::UnsupportedTransport),
}

pub type Result<T> = std::result::Result<T, IngestError>;
