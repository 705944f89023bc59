//! `clutch db url|info|migrate`: the store from the command line.
//!
//! Without `--database-url` (or `DATABASE_URL`) these act on the managed PostgreSQL in
//! `<data-dir>/postgres`, starting it for the command and stopping it afterwards unless
//! a running clutch owns it (then they attach to it and leave it alone).

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Args, Subcommand};
use store::managed::{ManagedCluster, read_urls};
use store::{ManagedConfig, Store, config::redact_url};

#[derive(Debug, Args)]
pub struct DbArgs {
    /// clutch's data directory; the managed PostgreSQL lives in <DATA_DIR>/postgres.
    #[arg(long, default_value = "./data", global = true)]
    data_dir: PathBuf,
    /// An existing PostgreSQL to use instead of the managed one [env: DATABASE_URL].
    #[arg(long, global = true)]
    database_url: Option<String>,
    /// TCP port of the managed PostgreSQL on 127.0.0.1.
    #[arg(long, default_value_t = 5433, global = true)]
    pg_port: u16,
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Print the database URL (managed: TCP on 127.0.0.1 with its password).
    Url {
        /// Print the unix-socket URL instead (no password; for local tools).
        #[arg(long)]
        socket: bool,
    },
    /// Print the storage mode (TimescaleDB or native partitioning) and schema state as JSON.
    Info,
    /// Apply pending migrations and create the upcoming partitions.
    Migrate,
}

pub fn run(args: DbArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("{}", serde_json::json!({ "error": format!("{e:#}") }));
            ExitCode::from(1)
        }
    }
}

fn run_inner(args: DbArgs) -> anyhow::Result<()> {
    let external = args.database_url.clone().or_else(|| std::env::var("DATABASE_URL").ok());
    if let DbCommand::Url { socket } = args.command {
        let url = match external {
            Some(u) => u,
            None => {
                let (tcp, sock) = read_urls(&args.data_dir)?;
                if socket { sock } else { tcp }
            }
        };
        println!("{url}");
        return Ok(());
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    let (managed, result) = rt.block_on(async {
        let (managed, url) = match external {
            Some(u) => (None, u),
            None => {
                let cfg = ManagedConfig {
                    data_dir: args.data_dir.clone(),
                    port: args.pg_port,
                    ..ManagedConfig::default()
                };
                let m = tokio::task::spawn_blocking(move || ManagedCluster::start(&cfg)).await??;
                m.ensure_database().await?;
                let url = m.socket_url();
                (Some(m), url)
            }
        };
        let result = command(&args.command, &url, managed.is_some()).await;
        Ok::<_, anyhow::Error>((managed, result))
    })?;
    drop(rt);
    // Stops the cluster if this command started it.
    drop(managed);
    result
}

async fn command(cmd: &DbCommand, url: &str, managed: bool) -> anyhow::Result<()> {
    let pool = store::connect(url, 2)
        .await
        .with_context(|| format!("connecting to {}", redact_url(url)))?;
    let out = match cmd {
        DbCommand::Url { .. } => unreachable!("handled without connecting"),
        DbCommand::Info => {
            let migrated: bool = sqlx_exists(&pool).await?;
            if !migrated {
                serde_json::json!({
                    "url": redact_url(url), "managed": managed, "migrated": false,
                    "hint": "run `clutch db migrate`",
                })
            } else {
                let store = Store::attach(pool.clone()).await?;
                let info = store.info().await?;
                let mut v = serde_json::to_value(&info)?;
                v["url"] = redact_url(url).into();
                v["managed"] = managed.into();
                v["migrated"] = true.into();
                v
            }
        }
        DbCommand::Migrate => {
            let store = Store::open(pool.clone()).await?;
            let report =
                store::maintenance::run_once(&store, &store::MaintenanceConfig::default(), chrono::Utc::now()).await?;
            serde_json::json!({
                "mode": store.mode(),
                "migrations": store.info().await?.migrations,
                "partitions_created": report.partitions_created,
            })
        }
    };
    pool.close().await;
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}

async fn sqlx_exists(pool: &store::sqlx::PgPool) -> anyhow::Result<bool> {
    Ok(
        store::sqlx::query_scalar("SELECT to_regclass('clutch_meta') IS NOT NULL")
            .fetch_one(pool)
            .await?,
    )
}
