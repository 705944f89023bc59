//! The one configuration struct: defaults → TOML file → `CLUTCH__…` environment
//! variables (`CLUTCH__INGEST__UNKNOWN_DEVICES=register` sets `ingest.unknown_devices`).
//! Unknown keys are errors at start-up, so a typo never silently means "default".
//! Secrets are redacted by the sections' `Debug` (the store URL's password).

use std::net::{IpAddr, Ipv4Addr};
use std::path::{Path, PathBuf};

use anyhow::Context;
use figment::Figment;
use figment::providers::{Env, Format, Serialized, Toml};
use ingest::IngestConfig;
use operators::OperatorsConfig;
use serde::{Deserialize, Serialize};
use store::StoreConfig;
use stream::BusConfig;

#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct Config {
    pub http: HttpConfig,
    pub ingest: IngestConfig,
    pub bus: BusConfig,
    pub store: StoreConfig,
    /// `[api]`: the fleet API on the HTTP port.
    pub api: api::ApiConfig,
    /// `[operators]`: trips, behaviour, geofences, online/offline (operators crate).
    pub operators: OperatorsConfig,
}

impl Default for Config {
    fn default() -> Self {
        let mut store = StoreConfig::default();
        // Devices wait for their ack, so a group commits as soon as the writer's queue
        // is empty (`max_delay` 0): with two workers the next group forms during the
        // previous COMMIT, so groups grow with load by themselves. Waiting for company
        // (5 ms, 50 ms) only added latency and, devices being closed loops, cut
        // throughput. Measured in ingest/README.md.
        store.writer.max_delay = std::time::Duration::ZERO;
        Config {
            http: HttpConfig::default(),
            ingest: IngestConfig::default(),
            bus: BusConfig::default(),
            store,
            api: api::ApiConfig::default(),
            operators: OperatorsConfig::default(),
        }
    }
}

/// `[http]`: health, metrics (and the API, later).
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HttpConfig {
    pub bind: IpAddr,
    /// `0` disables the HTTP port.
    pub port: u16,
}

impl Default for HttpConfig {
    fn default() -> Self {
        HttpConfig {
            bind: IpAddr::V4(Ipv4Addr::UNSPECIFIED),
            port: 8080,
        }
    }
}

impl Config {
    /// Layers the sources; `data_dir` (the `--data-dir` flag) overrides all of them.
    pub fn load(file: Option<&Path>, data_dir: Option<&Path>) -> anyhow::Result<Config> {
        let mut fig = Figment::from(Serialized::defaults(Config::default()));
        if let Some(file) = file {
            anyhow::ensure!(file.exists(), "config file {} not found", file.display());
            fig = fig.merge(Toml::file(file));
        }
        fig = fig.merge(Env::prefixed("CLUTCH__").split("__"));
        let mut config: Config = fig.extract().map_err(|e| {
            // Every error, not just the first, so one start-up shows all mistakes.
            let all: Vec<String> = e.into_iter().map(|e| e.to_string()).collect();
            anyhow::anyhow!("invalid configuration:\n  {}", all.join("\n  "))
        })?;
        if let Some(d) = data_dir {
            config.store.managed.data_dir = PathBuf::from(d);
        }
        // The conventional variable wins, as tools and platforms set it.
        if let Ok(url) = std::env::var("DATABASE_URL")
            && !url.is_empty()
        {
            config.store.url = Some(url);
        }
        Ok(config)
    }
}

/// A database for a command: `store.url` / `DATABASE_URL`, or the managed cluster under
/// the data directory (started if needed; kept in the returned guard).
pub async fn database(config: &Config) -> anyhow::Result<(String, Option<store::managed::ManagedCluster>)> {
    if let Some(url) = &config.store.url {
        return Ok((url.clone(), None));
    }
    let cfg = config.store.managed.clone();
    let cluster = tokio::task::spawn_blocking(move || store::managed::ManagedCluster::start(&cfg))
        .await?
        .context("starting the managed PostgreSQL (set DATABASE_URL to use your own)")?;
    cluster.ensure_database().await?;
    let url = cluster.socket_url();
    Ok((url, Some(cluster)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    // figment's own test helper fixes the closure's error type.
    #[allow(clippy::result_large_err)]
    fn layers_and_rejects_unknown_keys() {
        figment::Jail::expect_with(|jail| {
            jail.create_file("c.toml", "[ingest]\nmax_connections = 7\n[ingest.ports]\ngt06 = 0\n")?;
            jail.set_env("CLUTCH__INGEST__UNKNOWN_DEVICES", "register");
            jail.set_env("CLUTCH__HTTP__PORT", "9090");
            jail.set_env("CLUTCH__INGEST__MQTT__PORT", "0");
            let c = Config::load(Some(Path::new("c.toml")), Some(Path::new("/tmp/d"))).expect("loads");
            assert_eq!(c.ingest.max_connections, 7);
            assert_eq!(c.ingest.ports.gt06, 0);
            assert_eq!(c.ingest.ports.teltonika, 5027);
            assert_eq!(c.ingest.unknown_devices, ingest::UnknownDevices::Register);
            assert_eq!(c.http.port, 9090);
            assert_eq!(c.ingest.mqtt.port, 0);
            assert_eq!(c.store.managed.data_dir, PathBuf::from("/tmp/d"));

            jail.create_file("bad.toml", "[ingest]\nmax_conections = 7\n")?;
            let e = Config::load(Some(Path::new("bad.toml")), None).expect_err("typo rejected");
            assert!(e.to_string().contains("max_conections"), "{e}");
            Ok(())
        });
    }

    #[test]
    #[allow(clippy::result_large_err)]
    fn operators_section_has_defaults_and_layers() {
        figment::Jail::expect_with(|jail| {
            let c = Config::load(None, None).expect("defaults");
            assert!(c.operators.enabled);
            assert_eq!(c.operators.behaviour.speed_limit_kmh, 90.0);
            jail.set_env("CLUTCH__OPERATORS__BEHAVIOUR__SPEED_LIMIT_KMH", "110");
            jail.create_file("o.toml", "[operators]\noffline_timeout_s = 120\n")?;
            let c = Config::load(Some(Path::new("o.toml")), None).expect("loads");
            assert_eq!(c.operators.behaviour.speed_limit_kmh, 110.0);
            assert_eq!(c.operators.offline_timeout_s, 120);
            Ok(())
        });
    }
}
