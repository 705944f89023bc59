//! `clutch-sim`: the simulator on its own (the same commands as `clutch sim`).

use std::process::ExitCode;

use clap::Parser;

#[derive(Debug, Parser)]
#[command(name = "clutch-sim", version, about = "Clutch device simulator")]
struct Cli {
    #[command(flatten)]
    sim: firmware_sim::cli::SimArgs,
}

fn main() -> ExitCode {
    firmware_sim::cli::main(Cli::parse().sim)
}
