//! The `store` section of clutch's configuration.
//!
//! Durations are given in milliseconds or seconds in the field name (`max_delay_ms`),
//! so a config file never needs a duration syntax.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

/// `[store]`. `url` unset means "run a managed PostgreSQL under `managed.data_dir`".
#[derive(Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StoreConfig {
    /// `postgres://…`; `DATABASE_URL` wins over it. Redacted in `Debug`.
    pub url: Option<String>,
    pub max_connections: u32,
    pub managed: ManagedConfig,
    pub writer: WriterConfig,
    pub maintenance: MaintenanceConfig,
}

impl Default for StoreConfig {
    fn default() -> Self {
        StoreConfig {
            url: None,
            max_connections: 10,
            managed: ManagedConfig::default(),
            writer: WriterConfig::default(),
            maintenance: MaintenanceConfig::default(),
        }
    }
}

impl fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("StoreConfig")
            .field("url", &self.url.as_deref().map(redact_url))
            .field("max_connections", &self.max_connections)
            .field("managed", &self.managed)
            .field("writer", &self.writer)
            .field("maintenance", &self.maintenance)
            .finish()
    }
}

/// Replaces the password in a `postgres://user:password@host/db` URL with `***`.
pub fn redact_url(url: &str) -> String {
    let Some(scheme_end) = url.find("://") else {
        return url.to_string();
    };
    let rest = &url[scheme_end + 3..];
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{}{}:***{}", &url[..scheme_end + 3], &authority[..colon], &rest[at..])
        }
        _ => url.to_string(),
    }
}

/// `[store.managed]`: the local cluster clutch runs itself when no URL is given.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ManagedConfig {
    /// clutch's data directory; the cluster lives in `<data_dir>/postgres`.
    pub data_dir: PathBuf,
    /// TCP port on 127.0.0.1 (the unix socket is always there too). Not 5432, so a
    /// system PostgreSQL on the same machine does not collide.
    pub port: u16,
    /// OS user to run PostgreSQL as when clutch runs as root (PostgreSQL refuses root).
    /// Default: `postgres` if that user exists, else `nobody`.
    pub run_as: Option<String>,
    /// `shared_buffers`: modest, because clutch shares the machine with it.
    pub shared_buffers: String,
}

impl Default for ManagedConfig {
    fn default() -> Self {
        ManagedConfig {
            data_dir: PathBuf::from("./data"),
            port: 5433,
            run_as: None,
            shared_buffers: "256MB".into(),
        }
    }
}

/// `[store.writer]`: group commit and back-pressure.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WriterConfig {
    /// Flush a group once it holds this many rows…
    pub max_rows: usize,
    /// …or this long after its first batch arrived, whichever comes first.
    #[serde(rename = "max_delay_ms", with = "millis")]
    pub max_delay: Duration,
    /// Submitted batches waiting for the writer. When full, `submit` waits: that is the
    /// back-pressure the ingest tier passes on to devices (it stops reading sockets).
    pub channel_capacity: usize,
    /// Concurrent write transactions. Two overlap one group's COPY with the other's
    /// encoding and commit (fsync) wait: measured 1.5× one worker (README).
    pub workers: usize,
    /// First retry delay after a retryable failure; doubles up to `retry_max_delay`.
    #[serde(rename = "retry_initial_delay_ms", with = "millis")]
    pub retry_initial_delay: Duration,
    #[serde(rename = "retry_max_delay_ms", with = "millis")]
    pub retry_max_delay: Duration,
    /// Give up on a group (fail its receipts, so nothing is acknowledged and devices
    /// resend) after retrying this long.
    #[serde(rename = "give_up_after_ms", with = "millis")]
    pub give_up_after: Duration,
    /// One attempt (BEGIN … COMMIT) longer than this is abandoned and retried: a server
    /// that stops answering must not hold a group forever.
    #[serde(rename = "attempt_timeout_ms", with = "millis")]
    pub attempt_timeout: Duration,
}

impl Default for WriterConfig {
    fn default() -> Self {
        WriterConfig {
            max_rows: 10_000,
            max_delay: Duration::from_millis(50),
            channel_capacity: 1024,
            workers: 2,
            retry_initial_delay: Duration::from_millis(50),
            retry_max_delay: Duration::from_secs(5),
            give_up_after: Duration::from_secs(120),
            attempt_timeout: Duration::from_secs(30),
        }
    }
}

/// `[store.maintenance]`: partitions, retention, rollups.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct MaintenanceConfig {
    #[serde(rename = "interval_ms", with = "millis")]
    pub interval: Duration,
    /// Daily partitions kept ready ahead of today (native mode).
    pub partitions_ahead_days: u32,
    /// Positions older than this are dropped (whole partitions / chunks). 0 = keep forever.
    pub positions_retention_days: u32,
    /// Events older than this are dropped. 0 = keep forever.
    pub events_retention_days: u32,
    /// Hourly rollups older than this are deleted. 0 = keep forever.
    pub rollup_retention_days: u32,
}

impl Default for MaintenanceConfig {
    fn default() -> Self {
        MaintenanceConfig {
            interval: Duration::from_secs(60),
            partitions_ahead_days: 3,
            positions_retention_days: 90,
            events_retention_days: 365,
            rollup_retention_days: 730,
        }
    }
}

mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(d: &Duration, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_u64(d.as_millis() as u64)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Duration, D::Error> {
        Ok(Duration::from_millis(u64::deserialize(d)?))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redacts_passwords_only() {
        assert_eq!(redact_url("postgres://u:secret@h:5/db"), "postgres://u:***@h:5/db");
        assert_eq!(redact_url("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(
            redact_url("postgres://u:p@/db?host=/tmp/x"),
            "postgres://u:***@/db?host=/tmp/x"
        );
    }

    #[test]
    fn unknown_keys_are_rejected() {
        let e = serde_json::from_str::<StoreConfig>(r#"{"writer": {"max_rowz": 1}}"#).unwrap_err();
        assert!(e.to_string().contains("max_rowz"), "{e}");
        let c: StoreConfig = serde_json::from_str(r#"{"writer": {"max_delay_ms": 5}}"#).unwrap();
        assert_eq!(c.writer.max_delay, Duration::from_millis(5));
    }
}
