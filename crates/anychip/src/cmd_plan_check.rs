//! `anychip plan check --runs FILE`: the planner against a team's own measured runs, as a table
//! or JSON (the pricing is `anychip_plan::check`).

use anychip_plan::calib::{self, Constants};
use anychip_plan::check::{check_runs_file, Report, Summary};
use anychip_plan::chips::ChipDb;
use anyhow::Result;
use std::path::Path;

/// `anychip plan check`: price every run of `path` and report how far off the planner is.
/// `measured`: the `--measured` file whose residuals `k` carries, if any (the header names it).
pub fn run_check(path: &Path, db: &ChipDb, k: &Constants, measured: Option<&Path>, json: bool) -> Result<()> {
    let report = check_runs_file(path, db, k)?;
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        print_report(&report, measured);
    }
    Ok(())
}

fn print_report(r: &Report, measured: Option<&Path>) {
    let fitted = calib::shipped_report();
    let residuals = measured
        .map(|m| format!(", with the residuals of your measured runs in {} for their chips", m.display()))
        .unwrap_or_default();
    println!(
        "runs: {}, {} rows, each priced on its own layout with the shipped calibration (fitted to {} published runs from {} sources, {:.1}% off on them with each source held out; a row marked fitted is one of them){residuals}",
        r.file,
        r.runs.len(),
        fitted.rows,
        fitted.sources,
        100.0 * fitted.cross_validated_mean_abs_error
    );
    for (model, note) in &r.model_notes {
        println!("model {model}: {note}");
    }
    println!(
        "{:<46} {:<12} {:<18} {:<50} {:>10} {:>10} {:>8}  memory GiB (usable)",
        "id", "chips", "model", "layout", "published", "predicted", "error"
    );
    for c in &r.runs {
        let over = if c.fits { "" } else { " over" };
        let mark = if c.fitted { " fitted" } else { "" };
        println!(
            "{:<46} {:<12} {:<18} {:<50} {:>10.0} {:>10.0} {:>+7.1}%  {:.1} ({:.1}){over}{mark}",
            c.id,
            format!("{}:{}", c.chip, c.chips),
            c.model,
            c.layout,
            c.published_tokens_per_chip_s,
            c.predicted_tokens_per_chip_s,
            100.0 * c.error,
            c.memory_gib,
            c.usable_gib
        );
    }
    println!("{}", summary_line("all", &r.summary));
    // Kinds and chips by their names (the lines scripts read since the first release), stacks
    // named as such.
    for (prefix, groups) in [("", &r.by_kind), ("", &r.by_chip), ("stack ", &r.by_stack)] {
        if groups.len() > 1 {
            for (name, s) in groups {
                println!("{}", summary_line(&format!("{prefix}{name}"), s));
            }
        }
    }
    if let Some(s) = &r.measured_leave_one_out {
        println!(
            "{} (each run priced with the residual the file's other runs of its chip give, as --measured {} would for a new run)",
            summary_line("with your other runs as the chip's residual", s),
            r.file
        );
    }
    println!(
        "published and predicted: tokens/s per chip; error = predicted / published throughput - 1 (+: the planner predicts the run faster than it ran); over: the model's peak memory exceeds what the chip can use, though the run ran"
    );
}

fn summary_line(what: &str, s: &Summary) -> String {
    format!(
        "{what}: {} {}, mean error {:.1}%, signed {:+.1}%, 9 in 10 within {:.1}%, worst {:.1}% ({})",
        s.rows,
        if s.rows == 1 { "row" } else { "rows" },
        100.0 * s.mean_abs_error,
        100.0 * s.signed_mean_error,
        100.0 * s.p90_abs_error,
        100.0 * s.worst_abs_error,
        s.worst_id
    ) + &match s.over_memory {
        0 => String::new(),
        n => format!("; {n} priced over usable memory"),
    }
}
