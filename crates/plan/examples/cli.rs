//! A stand-in for the `anychip` binary's planner commands, for end-to-end testing:
//! `cargo run -p anychip-plan --example cli -- plan --model llama3-8b --chips h100:64 --tokens 1e12`.

use anychip_plan::cli::{run_chips, run_fleet, run_plan, ChipsArgs, FleetArgs, PlanArgs};
use clap::{Parser, Subcommand};

#[derive(Parser)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Best parallel layouts of one job on one chip kind.
    Plan(PlanArgs),
    /// List, show or compare chips.
    Chips(ChipsArgs),
    /// Place jobs on a fleet of chip pools.
    Fleet(FleetArgs),
}

fn main() {
    let cli = Cli::parse();
    let r = match &cli.command {
        Command::Plan(a) => run_plan(a),
        Command::Chips(a) => run_chips(a),
        Command::Fleet(a) => run_fleet(a),
    };
    if let Err(e) = r {
        eprintln!("error: {e:#}");
        std::process::exit(2);
    }
}
