//! `clutch device add`: register a device from the command line.

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
        /// IMEI, or the vendor id for H02, Freematics, OsmAnd.
        #[arg(long)]
        identifier: String,
        #[arg(long)]
        protocol: Protocol,
        #[arg(long, default_value = "default")]
        tenant: String,
    },
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
    let DeviceCommand::Add {
        data_dir,
        config,
        identifier,
        protocol,
        tenant,
    } = args.command;
    let config = Config::load(config.as_deref(), data_dir.as_deref())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            // The guard stops a cluster this command started (not one `serve` runs).
            let (url, _cluster) = database(&config).await?;
            let pool = store::connect(&url, 2).await?;
            store::Store::open(pool.clone()).await?;
            let id = ingest::registry::add_device(&pool, &tenant, &identifier, protocol).await?;
            println!("{id}");
            pool.close().await;
            Ok(())
        })
}
