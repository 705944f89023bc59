//! One error type for every domain, carrying what the API needs to answer with the right
//! 4xx: a stable code, a message, and the HTTP status it maps to.

/// Why a service operation did not happen. Nothing is half-written when one is returned:
/// every operation runs in a database transaction.
#[derive(Debug, thiserror::Error)]
pub enum ServiceError {
    #[error("{what} not found")]
    NotFound { what: &'static str },
    /// The request is well-formed but not acceptable (over-refund, bad amount, currency
    /// mismatch, unknown currency).
    #[error("{0}")]
    Invalid(String),
    /// The state does not allow it (transition not allowed, slot taken).
    #[error("{0}")]
    Conflict(String),
    #[error("insufficient funds")]
    InsufficientFunds,
    #[error("idempotency key reused with a different request")]
    IdempotencyMismatch,
    /// The payment gateway declined (a final answer).
    #[error("declined by the gateway: {0}")]
    Declined(String),
    /// The payment gateway could not be reached or answered garbage; retry later.
    #[error("payment gateway unavailable: {0}")]
    GatewayUnavailable(String),
    #[error("database: {0}")]
    Database(#[source] sqlx::Error),
}

impl ServiceError {
    /// A stable machine-readable code for the API's error body.
    pub fn code(&self) -> &'static str {
        match self {
            ServiceError::NotFound { .. } => "not_found",
            ServiceError::Invalid(_) => "invalid",
            ServiceError::Conflict(_) => "conflict",
            ServiceError::InsufficientFunds => "insufficient_funds",
            ServiceError::IdempotencyMismatch => "idempotency_mismatch",
            ServiceError::Declined(_) => "declined",
            ServiceError::GatewayUnavailable(_) => "gateway_unavailable",
            ServiceError::Database(_) => "internal",
        }
    }

    /// The HTTP status the API answers with.
    pub fn http_status(&self) -> u16 {
        match self {
            ServiceError::NotFound { .. } => 404,
            ServiceError::Invalid(_) | ServiceError::IdempotencyMismatch => 422,
            ServiceError::Conflict(_) | ServiceError::InsufficientFunds => 409,
            ServiceError::Declined(_) => 402,
            ServiceError::GatewayUnavailable(_) => 503,
            ServiceError::Database(_) => 500,
        }
    }

    pub(crate) fn invalid(msg: impl Into<String>) -> Self {
        ServiceError::Invalid(msg.into())
    }

    pub(crate) fn conflict(msg: impl Into<String>) -> Self {
        ServiceError::Conflict(msg.into())
    }
}

/// Turns the database's refusals (the invariants enforced in SQL) into domain errors.
impl From<sqlx::Error> for ServiceError {
    fn from(e: sqlx::Error) -> Self {
        if let sqlx::Error::Database(db) = &e {
            match db.constraint() {
                Some("ledger_accounts_no_overdraft") => return ServiceError::InsufficientFunds,
                Some("ledger_transactions_reverses_key") => {
                    return ServiceError::conflict("the transaction is already reversed");
                }
                Some("bookings_no_overlap") => return ServiceError::conflict("the slot is already booked"),
                Some("payment_intents_refunded_le_captured") => {
                    return ServiceError::invalid("refunds would exceed the captured amount");
                }
                Some("payment_intents_captured_le_authorized") => {
                    return ServiceError::invalid("capture would exceed the authorised amount");
                }
                _ => {}
            }
            // Raised by the ledger triggers (unbalanced, currency mismatch): a caller bug,
            // but reported as a refusal rather than a crash.
            if db.code().as_deref() == Some("23514") {
                return ServiceError::Invalid(db.message().to_owned());
            }
        }
        ServiceError::Database(e)
    }
}

pub type Result<T, E = ServiceError> = std::result::Result<T, E>;
