//! `clutch`: the one binary. Thin composition root; each subcommand lives in its own module.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod config;
mod db;
mod decode;
mod device;
mod roles;
mod score;
mod serve;
mod user;

#[derive(Debug, Parser)]
#[command(name = "clutch", version, about = "Clutch telematics backend")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Decode tracker frames and print them as JSON (the stable decoder contract).
    Decode(decode::DecodeArgs),
    /// Run the server: device listeners, bus, store writer, HTTP (health, metrics).
    Serve(serve::ServeArgs),
    /// Manage devices in the registry.
    Device(device::DeviceArgs),
    /// The database: print its URL, show the storage mode, apply migrations.
    Db(db::DbArgs),
    /// API users: `add` bootstraps an admin.
    User(user::UserArgs),
    /// Precision and recall of detected events against a firmware-sim ground truth.
    Score(score::ScoreArgs),
    /// Simulate devices: `run` a fleet, `replay` a capture, `check` a server's acks.
    Sim(firmware_sim::cli::SimArgs),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    match cli.command {
        Command::Decode(args) => decode::run(args),
        Command::Serve(args) => serve::run(args),
        Command::Device(args) => device::run(args),
        Command::Db(args) => db::run(args),
        Command::User(args) => user::run(args),
        Command::Sim(args) => firmware_sim::cli::main(args),
        Command::Score(args) => score::run(args),
    }
}
