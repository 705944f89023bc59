//! `clutch device add`: register a device from the command line; `clutch device unknown`:
//! the identifiers that tried to report without being registered.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Subcommand};
use protocols::Protocol;

use crate::config::{Config, database};

#[derive(Debug, Args)]
pub struct DeviceArgs {
    #[command(subcommand)]
    command: DeviceCommand,
}

#[derive(Debug, Subcommand)]
enum DeviceCommand {
    /// Register a device (idempotent) and print its id.
    Add {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// IMEI, or the vendor id for H02, Freematics, OsmAnd. MQTT devices use it as
        /// their username and in their topics (`clutch/<identifier>/…`).
        #[arg(long)]
        identifier: String,
        /// A tracker protocol, or `mqtt` for a device that only publishes JSON telemetry.
        #[arg(long, value_parser = parse_protocol)]
        protocol: String,
        #[arg(long, default_value = "default")]
        tenant: String,
        /// Set the device's MQTT secret (stored only as an argon2id hash).
        #[arg(long, value_name = "SECRET", conflicts_with = "mqtt_secret_generate")]
        mqtt_secret: Option<String>,
        /// Generate a random MQTT secret and print it once (it cannot be shown again).
        #[arg(long)]
        mqtt_secret_generate: bool,
        /// An MQTT username other than the identifier.
        #[arg(long, value_name = "NAME")]
        mqtt_username: Option<String>,
    },
    /// List devices that tried to report but are not registered
    /// (`ingest.unknown_devices = refuse`), most recently seen first.
    Unknown {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        /// Print JSON lines instead of a table.
        #[arg(long)]
        json: bool,
    },
}

fn parse_protocol(s: &str) -> Result<String, String> {
    if s == ingest::mqtt::auth::MQTT_PROTOCOL {
        return Ok(s.to_string());
    }
    s.parse::<Protocol>()
        .map(|p| p.name().to_string())
        .map_err(|e| format!("{e} (or `mqtt`)"))
}

pub fn run(args: DeviceArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: DeviceArgs) -> anyhow::Result<()> {
    match args.command {
        DeviceCommand::Add {
            data_dir,
            config,
            identifier,
            protocol,
            tenant,
            mqtt_secret,
            mqtt_secret_generate,
            mqtt_username,
        } => {
            anyhow::ensure!(
                mqtt_username.is_none() || mqtt_secret.is_some() || mqtt_secret_generate,
                "--mqtt-username needs --mqtt-secret or --mqtt-secret-generate"
            );
            let secret = match (mqtt_secret, mqtt_secret_generate) {
                (Some(s), _) => {
                    anyhow::ensure!(!s.is_empty(), "--mqtt-secret must not be empty");
                    Some((s, false))
                }
                (None, true) => Some((ingest::mqtt::auth::generate_secret(), true)),
                (None, false) => None,
            };
            with_pool(config, data_dir, |pool| async move {
                let id = ingest::registry::add_device_named(&pool, &tenant, &identifier, &protocol).await?;
                println!("{id}");
                if let Some((secret, generated)) = secret {
                    ingest::mqtt::auth::set_secret(&pool, id, &secret, mqtt_username.as_deref()).await?;
                    if generated {
                        // Printed once: only the hash is stored.
                        println!("mqtt secret: {secret}");
                    }
                }
                Ok(())
            })
        }
        DeviceCommand::Unknown { data_dir, config, json } => with_pool(config, data_dir, |pool| async move {
            let list = ingest::registry::list_unknown(&pool).await?;
            if json {
                for u in &list {
                    println!("{}", serde_json::to_string(u)?);
                }
            } else if list.is_empty() {
                println!("no unknown devices");
            } else {
                println!(
                    "{:<10} {:<20} {:>8}  {:<20} {:<20} remote address",
                    "protocol", "identifier", "attempts", "first seen (UTC)", "last seen (UTC)"
                );
                for u in &list {
                    println!(
                        "{:<10} {:<20} {:>8}  {:<20} {:<20} {}",
                        u.protocol,
                        u.identifier,
                        u.attempts,
                        u.first_seen.format("%Y-%m-%d %H:%M:%S"),
                        u.last_seen.format("%Y-%m-%d %H:%M:%S"),
                        u.remote_addr.as_deref().unwrap_or("-")
                    );
                }
            }
            Ok(())
        }),
    }
}

/// Runs `f` with a pool on the configured database (starting the managed PostgreSQL for
/// the command's duration when `serve` is not running it).
fn with_pool<F, Fut>(config: Option<PathBuf>, data_dir: Option<PathBuf>, f: F) -> anyhow::Result<()>
where
    F: FnOnce(store::sqlx::PgPool) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let config = Config::load(config.as_deref(), data_dir.as_deref())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The guard stops a cluster this command started (not one `serve` runs).
            let (url, _cluster) = database(&config).await?;
            let pool = store::connect(&url, 2).await?;
            store::Store::open(pool.clone()).await?;
            let r = f(pool.clone()).await;
            pool.close().await;
            r
        })
}
