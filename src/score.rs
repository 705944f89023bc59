//! `clutch score --truth T.jsonl`: detected events in the store against a firmware-sim
//! ground-truth file; precision and recall per kind (matching rules in
//! `operators::score`). The database is found like `clutch db` finds it.

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::Args;
use store::ManagedConfig;
use store::managed::ManagedCluster;

#[derive(Debug, Args)]
pub struct ScoreArgs {
    /// Ground truth, JSON lines (`clutch sim run --ground-truth`).
    #[arg(long)]
    truth: PathBuf,
    /// clutch's data directory (the managed PostgreSQL lives in <DATA_DIR>/postgres).
    #[arg(long, default_value = "./data")]
    data_dir: PathBuf,
    /// An existing PostgreSQL instead of the managed one [env: DATABASE_URL].
    #[arg(long)]
    database_url: Option<String>,
    /// TCP port of the managed PostgreSQL on 127.0.0.1.
    #[arg(long, default_value_t = 5433)]
    pg_port: u16,
    /// Seconds a detection may be off the truth's time and still match.
    #[arg(long, default_value_t = 10.0)]
    tolerance: f64,
    /// Print JSON instead of a table.
    #[arg(long)]
    json: bool,
}

pub fn run(args: ScoreArgs) -> ExitCode {
    match run_inner(&args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::from(if e.is::<BadInput>() { 2 } else { 1 })
        }
    }
}

/// Bad command-line input: exit code 2.
#[derive(Debug)]
struct BadInput(String);

impl std::error::Error for BadInput {}

impl std::fmt::Display for BadInput {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

fn run_inner(args: &ScoreArgs) -> anyhow::Result<()> {
    let text =
        std::fs::read_to_string(&args.truth).map_err(|e| BadInput(format!("reading {}: {e}", args.truth.display())))?;
    let truth = operators::score::parse_truth(&text).map_err(BadInput)?;
    if !(args.tolerance.is_finite() && args.tolerance >= 0.0) {
        return Err(BadInput(format!(
            "--tolerance must be a non-negative number of seconds, got {}",
            args.tolerance
        ))
        .into());
    }
    let external = args.database_url.clone().or_else(|| std::env::var("DATABASE_URL").ok());
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
        let result = async {
            let pool = store::connect(&url, 2)
                .await
                .with_context(|| format!("connecting to {}", store::config::redact_url(&url)))?;
            let report = operators::score::score_store(&pool, &truth, args.tolerance).await?;
            pool.close().await;
            Ok::<_, anyhow::Error>(report)
        }
        .await;
        Ok::<_, anyhow::Error>((managed, result))
    })?;
    drop(rt);
    drop(managed);
    let report = result?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        println!("tolerance {} s, {} device(s)", report.tolerance_s, report.devices);
        print!("{}", report.table());
    }
    Ok(())
}
