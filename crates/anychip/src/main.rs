//! The `anychip` command line.

mod cmd_bench;
mod cmd_chips;
mod cmd_conform;
mod cmd_eval;
mod cmd_export;
mod cmd_fleet;
mod cmd_measure;
mod cmd_plan;
mod cmd_plan_check;
mod cmd_ports;
mod cmd_sample;
mod cmd_sim;
mod cmd_train;

/// The in-tree ports (crates/ports), shared with the Python package.
use anychip_ports as ports;

use clap::{Parser, Subcommand};
use std::process::ExitCode;

/// anychip: train transformer language models on any chip.
#[derive(Parser)]
#[command(name = "anychip", version, about, long_about = None, after_help = ENVIRONMENT)]
struct Cli {
    #[command(subcommand)]
    cmd: Cmd,
}

/// The environment variables the engine and the cpu port read, for `anychip --help`.
const ENVIRONMENT: &str = "Environment:
  ANYCHIP_BLAS=builtin|mkl|openblas|auto|PATH   what multiplies f32 on the cpu port (default: the gemm crate; mkl after `pip install mkl`)
  ANYCHIP_CPU_BF16_KERNEL=amx|avx512|0          the cpu port's bf16 matmul unit (0: widen to f32)
  ANYCHIP_SHADOW=1                              run every op on `ref` too and name the first that diverges
  ANYCHIP_CACHE=DIR                             where the default corpus and tokenised data are cached";

#[derive(Subcommand)]
enum Cmd {
    /// Train a model (default: a byte-level GPT on the works of Shakespeare).
    Train(Box<cmd_train::TrainArgs>),
    /// Generate text from a checkpoint.
    Sample(cmd_sample::SampleArgs),
    /// Loss of a model (HF or anychip) on one fixed batch, as one JSON line.
    Eval(cmd_eval::EvalArgs),
    /// Write an anychip checkpoint as a Hugging Face checkpoint that transformers loads.
    Export(cmd_export::ExportArgs),
    /// Measure training throughput (tokens/s, step time, MFU, peak memory).
    Bench(cmd_bench::BenchArgs),
    /// List the registered ports and their capabilities.
    Ports,
    /// Run the conformance suite on a port (exit code 2 on any failure).
    Conform(cmd_conform::ConformArgs),
    /// Plan a training job: best parallel layouts, step time, MFU, memory, days, energy, cost.
    Plan(cmd_plan::PlanArgs),
    /// The chip database: list, show one with sources, or compare chips on a job.
    Chips(cmd_measure::ChipsArgs),
    /// Place training jobs on a mixed fleet of chip pools.
    Fleet(cmd_fleet::FleetArgs),
}

/// Give SIGPIPE its default action back: Rust ignores it, so printing into a pipe whose reader has
/// gone (`anychip plan ... | head`) panics with a backtrace instead of ending quietly, as every
/// other command-line tool does. std has no safe way to set a signal disposition.
#[cfg(unix)]
fn default_sigpipe() {
    // SAFETY: called first thing in main, before any thread exists; SIG_DFL is a valid
    // disposition for SIGPIPE and no handler of ours is replaced.
    unsafe {
        libc::signal(libc::SIGPIPE, libc::SIG_DFL);
    }
}

fn main() -> ExitCode {
    #[cfg(unix)]
    default_sigpipe();
    let cli = Cli::parse();
    let res = match cli.cmd {
        Cmd::Train(a) => cmd_train::train(*a),
        Cmd::Sample(a) => cmd_sample::sample(a),
        Cmd::Bench(a) => cmd_bench::bench(a),
        Cmd::Eval(a) => cmd_eval::eval(a),
        Cmd::Export(a) => cmd_export::export(a),
        Cmd::Ports => cmd_ports::ports(),
        Cmd::Conform(a) => cmd_conform::conform(a),
        Cmd::Plan(a) => cmd_plan::run_plan(&a),
        Cmd::Chips(a) => cmd_measure::chips(a),
        Cmd::Fleet(a) => cmd_fleet::run_fleet(&a),
    };
    match res {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // One line: the cause chain joined, so scripts and people see problem and fix together.
            eprintln!("error: {}", format!("{e:#}").replace('\n', " "));
            ExitCode::from(2)
        }
    }
}
