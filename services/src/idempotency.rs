//! Idempotency keys for mutating requests (SERVICES.md, ledger 4): the same key with the
//! same request returns the stored response, errors included; the same key with a
//! different request is refused; concurrent requests with one key run once, because the
//! key's row is inserted in the same transaction as the work and a second inserter waits
//! on it. Keys are kept at least 24 hours ([`purge`] removes older ones).

use serde::Serialize;
use serde::de::DeserializeOwned;
use sha2::{Digest, Sha256};
use sqlx::{PgConnection, PgPool};

use crate::error::{Result, ServiceError};

/// The fingerprint of a request: what must be equal for a replay to be "the same request".
pub fn request_hash(request: &impl Serialize) -> Vec<u8> {
    let bytes = serde_json::to_vec(request).unwrap_or_default();
    Sha256::digest(&bytes).to_vec()
}

/// What a stored key says.
#[derive(Debug)]
pub enum Claim<T> {
    /// First use: do the work, then [`complete`] in the same transaction.
    Fresh,
    /// Seen before with the same request: this is the stored outcome.
    Replay(Result<T, StoredError>),
}

/// An error outcome stored under a key, replayed as-is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct StoredError {
    pub status: u16,
    pub code: String,
    pub message: String,
}

/// Claims `(scope, key)` inside `conn`'s transaction.
pub async fn claim<T: DeserializeOwned>(
    conn: &mut PgConnection,
    scope: &str,
    key: &str,
    hash: &[u8],
) -> Result<Claim<T>> {
    if key.is_empty() || key.len() > 255 {
        return Err(ServiceError::invalid("Idempotency-Key must be 1 to 255 characters"));
    }
    let inserted = sqlx::query(
        "INSERT INTO service_idempotency_keys (scope, key, request_hash) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .execute(&mut *conn)
    .await?
    .rows_affected();
    if inserted == 1 {
        return Ok(Claim::Fresh);
    }
    let (stored_hash, status, response): (Vec<u8>, Option<i32>, Option<serde_json::Value>) = sqlx::query_as(
        "SELECT request_hash, status_code, response FROM service_idempotency_keys WHERE scope = $1 AND key = $2",
    )
    .bind(scope)
    .bind(key)
    .fetch_one(&mut *conn)
    .await?;
    if stored_hash != hash {
        return Err(ServiceError::IdempotencyMismatch);
    }
    let response = response.ok_or_else(|| ServiceError::conflict("a request with this key is still in progress"))?;
    if status.unwrap_or(200) >= 400 {
        let e: StoredError = serde_json::from_value(response).map_err(|e| ServiceError::invalid(e.to_string()))?;
        return Ok(Claim::Replay(Err(e)));
    }
    let v: T = serde_json::from_value(response).map_err(|e| ServiceError::invalid(e.to_string()))?;
    Ok(Claim::Replay(Ok(v)))
}

/// Stores the successful outcome under the key claimed in this transaction.
pub async fn complete(conn: &mut PgConnection, scope: &str, key: &str, response: &impl Serialize) -> Result<()> {
    let v = serde_json::to_value(response).map_err(|e| ServiceError::invalid(e.to_string()))?;
    sqlx::query("UPDATE service_idempotency_keys SET status_code = 200, response = $3 WHERE scope = $1 AND key = $2")
        .bind(scope)
        .bind(key)
        .bind(v)
        .execute(conn)
        .await?;
    Ok(())
}

/// Stores a refusal under the key after the work's transaction rolled back, so a retry
/// with the same key gets the same refusal. Database failures are not stored: they are
/// ours, and the retry should get a real second attempt.
pub async fn record_error(pool: &PgPool, scope: &str, key: &str, hash: &[u8], e: &ServiceError) -> Result<()> {
    if matches!(e, ServiceError::Database(_) | ServiceError::GatewayUnavailable(_)) {
        return Ok(());
    }
    let stored = StoredError {
        status: e.http_status(),
        code: e.code().to_owned(),
        message: e.to_string(),
    };
    sqlx::query(
        "INSERT INTO service_idempotency_keys (scope, key, request_hash, status_code, response) VALUES ($1, $2, $3, $4, $5)
         ON CONFLICT DO NOTHING",
    )
    .bind(scope)
    .bind(key)
    .bind(hash)
    .bind(i32::from(stored.status))
    .bind(serde_json::to_value(&stored).unwrap_or_default())
    .execute(pool)
    .await?;
    Ok(())
}

/// Removes keys older than `hours` (never less than 24).
pub async fn purge(pool: &PgPool, hours: i64) -> Result<u64> {
    let hours = hours.max(24);
    Ok(
        sqlx::query("DELETE FROM service_idempotency_keys WHERE created_at < now() - make_interval(hours => $1::int)")
            .bind(hours as i32)
            .execute(pool)
            .await?
            .rows_affected(),
    )
}
