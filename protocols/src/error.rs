//! Typed errors. Every decoder is total: any input gives `Ok` or one of these.

use thiserror::Error;

/// How many bytes of an offending frame to keep in an error for the log.
pub const EXCERPT_BYTES: usize = 48;

/// Lower-case hex of at most [`EXCERPT_BYTES`] bytes, with `…` when cut.
pub fn hex_excerpt(bytes: &[u8]) -> String {
    let n = bytes.len().min(EXCERPT_BYTES);
    let mut s = hex::encode(&bytes[..n]);
    if bytes.len() > n {
        s.push('…');
    }
    s
}

/// Why bytes could not be cut into a frame.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{reason}")]
pub struct FrameError {
    pub reason: String,
}

impl FrameError {
    pub fn new(reason: impl Into<String>) -> Self {
        FrameError { reason: reason.into() }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum DecodeError {
    #[error("framing: {0}")]
    Framing(FrameError),
    #[error("truncated frame: {excerpt}")]
    Truncated { excerpt: String },
    #[error("bad checksum: expected {expected}, frame carries {actual} ({excerpt})")]
    Checksum {
        expected: String,
        actual: String,
        excerpt: String,
    },
    #[error("length field says {declared} bytes but {actual} are present ({excerpt})")]
    Length {
        declared: usize,
        actual: usize,
        excerpt: String,
    },
    #[error("unsupported {what}: {value}")]
    Unsupported { what: &'static str, value: String },
    #[error("invalid {field}: {reason} ({excerpt})")]
    Invalid {
        field: &'static str,
        reason: String,
        excerpt: String,
    },
    #[error("no device identity: {0}")]
    NoIdentity(String),
}

impl DecodeError {
    pub fn invalid(field: &'static str, reason: impl Into<String>, frame: &[u8]) -> Self {
        DecodeError::Invalid {
            field,
            reason: reason.into(),
            excerpt: hex_excerpt(frame),
        }
    }

    pub fn checksum(expected: impl std::fmt::Display, actual: impl std::fmt::Display, frame: &[u8]) -> Self {
        DecodeError::Checksum {
            expected: expected.to_string(),
            actual: actual.to_string(),
            excerpt: hex_excerpt(frame),
        }
    }

    pub fn truncated(frame: &[u8]) -> Self {
        DecodeError::Truncated {
            excerpt: hex_excerpt(frame),
        }
    }

    /// A short machine-readable outcome label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            DecodeError::Framing(_) => "framing",
            DecodeError::Truncated { .. } => "truncated",
            DecodeError::Checksum { .. } => "checksum",
            DecodeError::Length { .. } => "length",
            DecodeError::Unsupported { .. } => "unsupported",
            DecodeError::Invalid { .. } => "invalid",
            DecodeError::NoIdentity(_) => "no_identity",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum EncodeError {
    #[error("{protocol} cannot encode {what}")]
    Unsupported { protocol: &'static str, what: String },
    #[error("invalid value for {field}: {reason}")]
    Invalid { field: &'static str, reason: String },
}
