//! Identifier → device, a cache over the store's `devices` table.
//!
//! Positive answers are cached for the life of the process (a device's id never
//! changes; disabling one takes effect on its next connection after a restart — the API
//! issue adds invalidation). Unknown identifiers are remembered with when and how often
//! they were seen: that list is what admins look at to register devices, it makes
//! "logged once per identifier" possible, and it spares the database a query per
//! reconnect of a device that keeps knocking.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use chrono::{DateTime, Utc};
use protocols::Protocol;
use serde::Serialize;
use sqlx::PgPool;

use crate::config::UnknownDevices;
use crate::error::Result;

/// What [`Registry::resolve`] decided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resolution {
    Known(i64),
    /// Not registered (or disabled) and the policy is `refuse`. `first_time` is true the
    /// first time this identifier is refused since start, for logging once.
    Refused {
        first_time: bool,
    },
}

/// An unregistered identifier that tried to connect.
#[derive(Debug, Clone, Serialize)]
pub struct UnknownDevice {
    pub protocol: String,
    pub identifier: String,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    pub attempts: u64,
}

#[derive(Debug)]
struct Unknown {
    info: UnknownDevice,
    checked: Instant,
}

/// How long a refusal is trusted before the database is asked again (a device added
/// with `clutch device add` is accepted at most this long after).
const NEGATIVE_TTL: Duration = Duration::from_secs(10);

#[derive(Debug)]
pub struct Registry {
    pool: PgPool,
    policy: UnknownDevices,
    default_tenant: String,
    known: Mutex<HashMap<(Protocol, String), i64>>,
    unknown: Mutex<HashMap<(Protocol, String), Unknown>>,
}

impl Registry {
    pub fn new(pool: PgPool, policy: UnknownDevices, default_tenant: impl Into<String>) -> Self {
        Registry {
            pool,
            policy,
            default_tenant: default_tenant.into(),
            known: Mutex::new(HashMap::new()),
            unknown: Mutex::new(HashMap::new()),
        }
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub fn policy(&self) -> UnknownDevices {
        self.policy
    }

    pub async fn resolve(&self, protocol: Protocol, identifier: &str) -> Result<Resolution> {
        let key = (protocol, identifier.to_string());
        if let Some(id) = lock(&self.known).get(&key) {
            return Ok(Resolution::Known(*id));
        }
        if self.policy == UnknownDevices::Refuse
            && let Some(u) = lock(&self.unknown).get_mut(&key)
            && u.checked.elapsed() < NEGATIVE_TTL
        {
            u.info.attempts += 1;
            u.info.last_seen = Utc::now();
            return Ok(Resolution::Refused { first_time: false });
        }
        let row: Option<(i64, bool)> =
            sqlx::query_as("SELECT id, disabled FROM devices WHERE protocol = $1 AND identifier = $2")
                .bind(protocol.name())
                .bind(identifier)
                .fetch_optional(&self.pool)
                .await?;
        let id = match (row, self.policy) {
            (Some((id, false)), _) => id,
            (None, UnknownDevices::Register) => {
                let id = add_device(&self.pool, &self.default_tenant, identifier, protocol).await?;
                tracing::info!(%protocol, identifier, device_id = id, "registered new device");
                id
            }
            // A disabled device is refused whatever the policy.
            (Some((_, true)), _) | (None, UnknownDevices::Refuse) => {
                let now = Utc::now();
                let mut unknown = lock(&self.unknown);
                let first_time = !unknown.contains_key(&key);
                let u = unknown.entry(key).or_insert_with(|| Unknown {
                    info: UnknownDevice {
                        protocol: protocol.name().into(),
                        identifier: identifier.into(),
                        first_seen: now,
                        last_seen: now,
                        attempts: 0,
                    },
                    checked: Instant::now(),
                });
                u.info.attempts += 1;
                u.info.last_seen = now;
                u.checked = Instant::now();
                metrics::gauge!(crate::metrics::UNKNOWN_DEVICES).set(unknown.len() as f64);
                return Ok(Resolution::Refused { first_time });
            }
        };
        lock(&self.unknown).remove(&key);
        lock(&self.known).insert(key, id);
        Ok(Resolution::Known(id))
    }

    /// Unknown identifiers seen since start, most recent first.
    pub fn unknown_devices(&self) -> Vec<UnknownDevice> {
        let mut v: Vec<UnknownDevice> = lock(&self.unknown).values().map(|u| u.info.clone()).collect();
        v.sort_by_key(|u| std::cmp::Reverse(u.last_seen));
        v
    }
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    // The maps stay consistent under any panic (single inserts), so poisoning is moot.
    m.lock().unwrap_or_else(|e| e.into_inner())
}

/// The tenant named `name`, created when missing.
pub async fn ensure_tenant(pool: &PgPool, name: &str) -> Result<i64> {
    if let Some(id) = sqlx::query_scalar("SELECT id FROM tenants WHERE name = $1 ORDER BY id LIMIT 1")
        .bind(name)
        .fetch_optional(pool)
        .await?
    {
        return Ok(id);
    }
    Ok(
        sqlx::query_scalar("INSERT INTO tenants (name) VALUES ($1) RETURNING id")
            .bind(name)
            .fetch_one(pool)
            .await?,
    )
}

/// Registers a device (idempotent: an existing one keeps its id and tenant).
pub async fn add_device(pool: &PgPool, tenant: &str, identifier: &str, protocol: Protocol) -> Result<i64> {
    add_device_named(pool, tenant, identifier, protocol.name()).await
}

/// [`add_device`] with the protocol as stored: a tracker protocol's name, or `mqtt`.
pub async fn add_device_named(pool: &PgPool, tenant: &str, identifier: &str, protocol: &str) -> Result<i64> {
    let tenant_id = ensure_tenant(pool, tenant).await?;
    // DO UPDATE (a no-op) rather than DO NOTHING so RETURNING yields the existing id.
    Ok(sqlx::query_scalar(
        "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, $2, $3) \
         ON CONFLICT (protocol, identifier) DO UPDATE SET identifier = EXCLUDED.identifier RETURNING id",
    )
    .bind(tenant_id)
    .bind(identifier)
    .bind(protocol)
    .fetch_one(pool)
    .await?)
}
