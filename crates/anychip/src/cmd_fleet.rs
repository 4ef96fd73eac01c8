//! `anychip fleet`: place training jobs on a fleet of chip pools.

use crate::cmd_plan::{fmt_opt, ChipOpts};
use anychip_plan::chart;
use anychip_plan::fleet::{self, Objective};
use anychip_plan::stack::{self, DEFAULT_STACK};
use anyhow::Result;
use std::path::PathBuf;

/// What the scheduler minimises (the command-line spelling of [`Objective`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq, clap::ValueEnum)]
pub enum ObjectiveArg {
    /// Time until the last job finishes.
    Makespan,
    /// Total chip rental cost.
    Cost,
}

impl From<ObjectiveArg> for Objective {
    fn from(o: ObjectiveArg) -> Objective {
        match o {
            ObjectiveArg::Makespan => Objective::Makespan,
            ObjectiveArg::Cost => Objective::Cost,
        }
    }
}

/// `anychip fleet`: place training jobs on a fleet of chip pools.
#[derive(clap::Args, Debug, Clone)]
pub struct FleetArgs {
    /// Fleet file: [[pool]] tables with name, chip, count, optional price_per_hour and overrides.
    #[arg(long, value_name = "FLEET.toml")]
    pub fleet: PathBuf,
    /// Jobs file: [[job]] tables with name, model, tokens, optional seq, global_batch, require, forbid, heterogeneous, stack, precision, deadline_days.
    #[arg(long, value_name = "JOBS.toml")]
    pub jobs: PathBuf,
    /// What to minimise.
    #[arg(long, value_enum, default_value_t = ObjectiveArg::Makespan)]
    pub objective: ObjectiveArg,
    /// Directory for fleet.svg and fleet.png.
    #[arg(long, default_value = ".")]
    pub out: PathBuf,
    /// Print JSON instead of a table.
    #[arg(long)]
    pub json: bool,
    /// Software stack profile (name or TOML stack file) for jobs that do not name one.
    #[arg(long, value_name = "NAME|FILE", default_value = DEFAULT_STACK)]
    pub stack: String,
    #[command(flatten)]
    pub chip_opts: ChipOpts,
}

/// Run `anychip fleet`.
pub fn run_fleet(args: &FleetArgs) -> Result<()> {
    let db = args.chip_opts.db()?;
    let stack = stack::resolve(&args.stack)?;
    let k = args.chip_opts.constants(&db)?;
    let sched = fleet::schedule_files(&args.fleet, &args.jobs, &db, args.objective.into(), &stack, &k)?;
    if args.json {
        println!("{}", serde_json::to_string_pretty(&sched)?);
        return Ok(());
    }
    println!("objective: {:?}", sched.objective);
    println!(
        "{:<18} {:<16} {:<22} {:>7} {:>7} {:>7} {:>6} {:>12} {:>12}  layout",
        "job", "model", "chips", "start d", "end d", "days", "MFU", "cost USD", "error"
    );
    for a in &sched.assignments {
        let chips: Vec<String> = a.shares.iter().map(|s| format!("{} x {}", s.count, s.chip)).collect();
        let layouts: Vec<String> = a.shares.iter().map(|s| s.layout.clone()).collect();
        let mfu = a.shares.iter().map(|s| s.mfu).sum::<f64>() / a.shares.len() as f64;
        let errors: Vec<&str> = a.shares.iter().map(|s| s.error.as_str()).collect();
        println!(
            "{:<18} {:<16} {:<22} {:>7.1} {:>7.1} {:>7.1} {:>5.1}% {:>12} {:>12}  {}",
            a.job,
            a.model,
            chips.join(" + "),
            a.start_days,
            a.end_days(),
            a.days,
            100.0 * mfu,
            fmt_opt(a.cost_usd, |c| format!("{c:.0}")),
            errors.join(" + "),
            layouts.join(" + ")
        );
    }
    for a in &sched.assignments {
        if let Some(note) = &a.model_note {
            println!("job {}: {note}", a.job);
        }
    }
    print_deadlines(&sched);
    let measured: Vec<String> = k
        .chip_residual
        .iter()
        .filter_map(|(chip, r)| {
            r.measured.as_ref().map(|f| format!("{chip} x{:.3} from {} runs in {f}", r.factor, r.runs))
        })
        .collect();
    if !measured.is_empty() {
        println!("residuals from your measured runs: {}", measured.join("; "));
    }
    println!(
        "makespan {:.1} days; total cost {}",
        sched.makespan_days,
        fmt_opt(sched.cost_usd, |c| format!("{c:.0} USD"))
    );
    let files = chart::gantt(&args.out, "fleet", &sched)?;
    let shown: Vec<String> = files.iter().map(|p| p.display().to_string()).collect();
    println!("gantt chart: {}", shown.join(", "));
    Ok(())
}

/// One line for the jobs with a deadline: each met, or missed by how much.
fn print_deadlines(sched: &fleet::Schedule) {
    let with: Vec<String> = sched
        .assignments
        .iter()
        .filter_map(|a| {
            let d = a.deadline_days?;
            Some(if a.meets_deadline == Some(true) {
                format!("{} by {d:.1} d: met (ends {:.1})", a.job, a.end_days())
            } else {
                let need: Vec<String> = a.chips_for_deadline.iter().map(|(kind, n)| format!("{n} x {kind}")).collect();
                let need = if need.is_empty() {
                    String::new()
                } else {
                    format!(", {} would end it in time from day 0", need.join(" or "))
                };
                format!(
                    "{} by {d:.1} d: MISSED, ends {:.1} ({:.1} d late{need})",
                    a.job,
                    a.end_days(),
                    a.end_days() - d
                )
            })
        })
        .collect();
    if !with.is_empty() {
        let met = sched.assignments.iter().filter(|a| a.meets_deadline == Some(true)).count();
        println!("deadlines: {met} of {} met; {}", with.len(), with.join("; "));
    }
}
