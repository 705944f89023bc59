//! `clutch user add`: bootstrap an API user (the first admin of a fresh install).

use std::io::{BufRead, IsTerminal};
use std::path::PathBuf;
use std::process::ExitCode;

use api::auth::Role;
use clap::{Args, Subcommand};

use crate::config::{Config, database};

#[derive(Debug, Args)]
pub struct UserArgs {
    #[command(subcommand)]
    command: UserCommand,
}

#[derive(Debug, Subcommand)]
enum UserCommand {
    /// Create a user (and its tenant if needed). The password is read from stdin; with
    /// nothing on stdin (or a terminal) one is generated and printed once.
    Add {
        #[arg(long)]
        data_dir: Option<PathBuf>,
        #[arg(long)]
        config: Option<PathBuf>,
        #[arg(long)]
        tenant: String,
        #[arg(long)]
        email: String,
        /// admin, fleet_manager, dispatcher, driver, customer or partner.
        #[arg(long, default_value = "admin")]
        role: String,
        #[arg(long, default_value = "")]
        name: String,
    },
}

pub fn run(args: UserArgs) -> ExitCode {
    match run_inner(args) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            ExitCode::FAILURE
        }
    }
}

fn run_inner(args: UserArgs) -> anyhow::Result<()> {
    let UserCommand::Add {
        data_dir,
        config,
        tenant,
        email,
        role,
        name,
    } = args.command;
    let role = Role::parse(&role).ok_or_else(|| {
        anyhow::anyhow!("unknown role {role:?} (admin, fleet_manager, dispatcher, driver, customer, partner)")
    })?;
    let stdin = std::io::stdin();
    let password = if stdin.is_terminal() {
        None
    } else {
        let mut line = String::new();
        stdin.lock().read_line(&mut line)?;
        let p = line.trim_end_matches(['\r', '\n']).to_string();
        (!p.is_empty()).then_some(p)
    };
    let config = Config::load(config.as_deref(), data_dir.as_deref())?;
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?
        .block_on(async {
            let (url, _cluster) = database(&config).await?;
            let pool = store::connect(&url, 2).await?;
            store::Store::open(pool.clone()).await?;
            let tenant_id = api::users::ensure_tenant(&pool, &tenant).await?;
            let (id, generated) = api::users::create_user_in(&pool, tenant_id, &email, &name, role, password)
                .await
                .map_err(|e| anyhow::anyhow!("{}", e.message))?;
            println!(
                "user {id} ({email}, {}) in tenant {tenant_id} ({tenant})",
                role.as_str()
            );
            if let Some(p) = generated {
                println!("password: {p}");
                println!("(shown once; change it with POST /api/v1/me/password)");
            }
            pool.close().await;
            Ok(())
        })
}
