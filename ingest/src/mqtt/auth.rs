//! Device credentials for MQTT: a per-device secret stored only as an argon2id PHC
//! string in `devices.mqtt_secret_hash`.
//!
//! A device logs in with username = its identifier (or `devices.mqtt_username` when
//! set) and its secret as the password. Hashing is deliberately slow (that is the
//! point of argon2), so it runs on the blocking pool, and successful logins are cached
//! for a short while: a fleet reconnecting after a broker restart must not cost a
//! hash per device per retry.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use argon2::Argon2;
use argon2::password_hash::rand_core::OsRng;
use argon2::password_hash::{PasswordHash, PasswordHasher, PasswordVerifier, SaltString};
use sqlx::PgPool;

use crate::error::Result;

/// An authenticated MQTT device.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct MqttDevice {
    pub device_id: i64,
    /// `devices.identifier`: the `<id>` in its topics.
    pub identifier: String,
    /// `devices.mqtt_username` when it differs from the identifier (also accepted as `<id>`).
    pub username: Option<String>,
    /// `devices.protocol`, for encoding downlink commands.
    pub protocol: String,
}

impl MqttDevice {
    /// Whether `id` (the second topic level) names this device.
    pub fn owns(&self, id: &str) -> bool {
        id == self.identifier || self.username.as_deref() == Some(id)
    }
}

/// Why a CONNECT was refused; the `reason` label of the refusals counter.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refusal {
    /// No username or no password in the CONNECT.
    NoCredentials,
    UnknownDevice,
    Disabled,
    /// Registered without MQTT credentials (and auto-registration is off).
    NoSecret,
    WrongSecret,
    /// The client id names another device.
    ClientId,
    Unavailable,
}

impl Refusal {
    pub fn as_str(self) -> &'static str {
        match self {
            Refusal::NoCredentials => "no_credentials",
            Refusal::UnknownDevice => "unknown_device",
            Refusal::Disabled => "disabled",
            Refusal::NoSecret => "no_secret",
            Refusal::WrongSecret => "wrong_secret",
            Refusal::ClientId => "client_id",
            Refusal::Unavailable => "unavailable",
        }
    }
}

/// Hashes a secret as an argon2id PHC string (random salt, the crate's default cost).
pub fn hash_secret(secret: &str) -> String {
    let salt = SaltString::generate(&mut OsRng);
    Argon2::default()
        .hash_password(secret.as_bytes(), &salt)
        .map(|h| h.to_string())
        // Only fails for parameters out of range, which the defaults are not.
        .unwrap_or_default()
}

/// Whether `secret` matches a stored PHC string; a malformed hash matches nothing.
pub fn verify_secret(secret: &str, phc: &str) -> bool {
    PasswordHash::new(phc)
        .map(|h| Argon2::default().verify_password(secret.as_bytes(), &h).is_ok())
        .unwrap_or(false)
}

/// A random secret for `clutch device add --mqtt-secret-generate`: 24 bytes, hex.
pub fn generate_secret() -> String {
    use rand::RngCore;
    let mut b = [0u8; 24];
    rand::rng().fill_bytes(&mut b);
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// Sets (or replaces) a device's MQTT secret, and its MQTT username when given.
pub async fn set_secret(pool: &PgPool, device_id: i64, secret: &str, username: Option<&str>) -> Result<()> {
    let s = secret.to_string();
    let phc = tokio::task::spawn_blocking(move || hash_secret(&s))
        .await
        .unwrap_or_default();
    sqlx::query("UPDATE devices SET mqtt_secret_hash = $2, mqtt_username = coalesce($3, mqtt_username) WHERE id = $1")
        .bind(device_id)
        .bind(phc)
        .bind(username)
        .execute(pool)
        .await?;
    Ok(())
}

type Row = (i64, String, Option<String>, String, Option<String>, bool);

/// How long a successful login is remembered (same username and secret skip argon2).
const CACHE_TTL: Duration = Duration::from_secs(300);

/// Checks CONNECT credentials against the `devices` table.
#[derive(Debug)]
pub struct Authenticator {
    pool: PgPool,
    /// Unknown usernames are registered (protocol `mqtt`, into `tenant`) and devices
    /// without a secret take the first one presented (trust on first use). Only with
    /// `ingest.unknown_devices = register`, which `clutch serve --demo` sets.
    register_into: Option<String>,
    /// username → (secret presented, device, when) for `CACHE_TTL`; memory only.
    cache: Mutex<HashMap<String, (String, MqttDevice, Instant)>>,
}

impl Authenticator {
    pub fn new(pool: PgPool, register_into: Option<String>) -> Self {
        Authenticator {
            pool,
            register_into,
            cache: Mutex::new(HashMap::new()),
        }
    }

    /// Authenticates `username`/`secret`. The client id must be empty, the username,
    /// the identifier, or start with `<identifier>-` / `<username>-`: the broker
    /// replaces an older session with the same client id, so one device must not be
    /// able to pick another's.
    pub async fn check(
        &self,
        client_id: &str,
        username: &str,
        secret: &str,
    ) -> std::result::Result<MqttDevice, Refusal> {
        // Demo / auto-registration only: a client without credentials (a quick
        // `mosquitto_pub -i truck-1`) is identified by its client id. It still cannot
        // take over a device that has a secret: the empty secret does not verify.
        let username = if username.is_empty() && self.register_into.is_some() {
            client_id
        } else {
            username
        };
        if username.is_empty() {
            return Err(Refusal::NoCredentials);
        }
        let device = self.verify(username, secret).await?;
        let ok_prefix = |p: &str| client_id == p || client_id.strip_prefix(p).is_some_and(|r| r.starts_with('-'));
        if !(client_id.is_empty() || ok_prefix(username) || ok_prefix(&device.identifier)) {
            return Err(Refusal::ClientId);
        }
        Ok(device)
    }

    async fn verify(&self, username: &str, secret: &str) -> std::result::Result<MqttDevice, Refusal> {
        if let Some((s, d, at)) = lock(&self.cache).get(username)
            && at.elapsed() < CACHE_TTL
            && s == secret
        {
            return Ok(d.clone());
        }
        // An explicit MQTT username wins over an identifier; identifiers may repeat across
        // protocols, so every candidate is tried and the secret decides.
        let rows: Vec<Row> = sqlx::query_as(
            "SELECT id, identifier, mqtt_username, protocol, mqtt_secret_hash, disabled FROM devices \
             WHERE mqtt_username = $1 OR (identifier = $1 AND (mqtt_username IS NULL OR mqtt_username = $1)) \
             ORDER BY (mqtt_username = $1) DESC NULLS LAST, (mqtt_secret_hash IS NULL), id",
        )
        .bind(username)
        .fetch_all(&self.pool)
        .await
        .map_err(|error| {
            tracing::error!(%error, "device lookup failed");
            Refusal::Unavailable
        })?;
        let mut refusal = Refusal::UnknownDevice;
        for (id, identifier, mqtt_username, protocol, hash, disabled) in rows {
            let device = MqttDevice {
                device_id: id,
                username: mqtt_username.filter(|u| *u != identifier),
                identifier,
                protocol,
            };
            if disabled {
                refusal = Refusal::Disabled;
                continue;
            }
            match hash {
                Some(phc) => {
                    let s = secret.to_string();
                    let ok = tokio::task::spawn_blocking(move || verify_secret(&s, &phc))
                        .await
                        .unwrap_or(false);
                    if ok {
                        self.remember(username, secret, &device);
                        return Ok(device);
                    }
                    refusal = Refusal::WrongSecret;
                }
                None if self.register_into.is_some() => {
                    if !secret.is_empty() {
                        set_secret(&self.pool, id, secret, None)
                            .await
                            .map_err(|_| Refusal::Unavailable)?;
                        tracing::info!(device_id = id, "MQTT secret set on first use (auto-registration is on)");
                    }
                    self.remember(username, secret, &device);
                    return Ok(device);
                }
                None => {
                    if refusal == Refusal::UnknownDevice {
                        refusal = Refusal::NoSecret;
                    }
                }
            }
        }
        if refusal == Refusal::UnknownDevice
            && let Some(tenant) = &self.register_into
        {
            let id = self.register(tenant, username).await.map_err(|error| {
                tracing::error!(%error, "auto-registering an MQTT device failed");
                Refusal::Unavailable
            })?;
            if !secret.is_empty() {
                set_secret(&self.pool, id, secret, None)
                    .await
                    .map_err(|_| Refusal::Unavailable)?;
            }
            tracing::info!(identifier = username, device_id = id, "registered new MQTT device");
            let device = MqttDevice {
                device_id: id,
                identifier: username.to_string(),
                username: None,
                protocol: MQTT_PROTOCOL.into(),
            };
            self.remember(username, secret, &device);
            return Ok(device);
        }
        Err(refusal)
    }

    async fn register(&self, tenant: &str, identifier: &str) -> Result<i64> {
        let tenant_id = crate::registry::ensure_tenant(&self.pool, tenant).await?;
        Ok(sqlx::query_scalar(
            "INSERT INTO devices (tenant_id, identifier, protocol) VALUES ($1, $2, $3) \
             ON CONFLICT (protocol, identifier) DO UPDATE SET identifier = EXCLUDED.identifier RETURNING id",
        )
        .bind(tenant_id)
        .bind(identifier)
        .bind(MQTT_PROTOCOL)
        .fetch_one(&self.pool)
        .await?)
    }

    fn remember(&self, username: &str, secret: &str, device: &MqttDevice) {
        let mut c = lock(&self.cache);
        if c.len() > 100_000 {
            c.retain(|_, (_, _, at)| at.elapsed() < CACHE_TTL);
        }
        c.insert(
            username.to_string(),
            (secret.to_string(), device.clone(), Instant::now()),
        );
    }
}

/// `devices.protocol` of devices that speak only MQTT JSON (auto-registered ones).
pub const MQTT_PROTOCOL: &str = "mqtt";

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_and_verify() {
        let h = hash_secret("s3cret");
        assert!(h.starts_with("$argon2id$"), "{h}");
        assert!(verify_secret("s3cret", &h));
        assert!(!verify_secret("s3creT", &h));
        assert!(!verify_secret("s3cret", "not a phc string"));
        let g = generate_secret();
        assert_eq!(g.len(), 48);
        assert_ne!(g, generate_secret());
    }
}
