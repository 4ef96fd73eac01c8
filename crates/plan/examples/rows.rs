//! Every published row under the shipped constants (or refitted ones with `fit`), for working on
//! the model: `cargo run -p anychip-plan --example rows [fit|cv|why|moe|mem|search|write]`
//! (`write` does what `anychip plan calibrate --out crates/plan/data/calibration.toml` does).
//! `search` compares the best layout the search finds for each row's job with the published run.
//! With `ANYCHIP_HELD_OUT=1`, `why`, `moe`, `mem` and `search` read the held-out file instead (no
//! fit reads it).

use anychip_plan::calib;
use anychip_plan::validation::{cross_validate, prepare, table};

fn main() -> anyhow::Result<()> {
    let mode = std::env::args().nth(1).unwrap_or_default();
    // Only the read-only views take the held-out rows: a fit never sees them.
    let held_out =
        std::env::var_os("ANYCHIP_HELD_OUT").is_some() && matches!(mode.as_str(), "why" | "moe" | "mem" | "search");
    let rows = if held_out { anychip_plan::validation::prepare_held_out()? } else { prepare()? };
    if mode == "write" {
        std::fs::write("crates/plan/data/calibration.toml", anychip_plan::validation::calibration_file()?)?;
        return Ok(());
    }
    if mode == "cv" {
        let (k, cv) = cross_validate(&rows)?;
        println!("{k:?}");
        for c in &cv {
            let r = &rows[c.index].row;
            println!(
                "{:<44} {:<22} cv {:>+7.1}%  in {:>+7.1}%",
                r.id,
                r.group,
                100.0 * c.cv_error,
                100.0 * c.in_sample_error
            );
        }
        for (g, n, m, w, i) in table(&rows, &cv) {
            println!(
                "{g:<24} {n:>3}  cv mean {:>5.1}%  worst {:>5.1}%  in-sample {:>5.1}%",
                100.0 * m,
                100.0 * w,
                100.0 * i
            );
        }
        return Ok(());
    }
    if mode == "search" {
        // The best layout the search finds for each row's job against the published layout.
        let k = calib::shipped();
        for r in &rows {
            let pinned = r.error(&k)?;
            match r.searched(&k) {
                Ok((layout, err)) => {
                    println!("{:<44} {:>+7.1}% pinned {:>+7.1}%  {layout}", r.row.id, 100.0 * err, 100.0 * pinned)
                }
                Err(e) => println!("{:<44} none fits pinned {:>+7.1}%  {e}", r.row.id, 100.0 * pinned),
            }
        }
        return Ok(());
    }
    if mode == "why" {
        // Where each row's predicted step goes, per micro-batch, next to the published step.
        let k = calib::shipped();
        println!(
            "{:<42} {:>6} {:>7} {:>7} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} | {:>6} {:>6}",
            "row", "err", "pub s", "pred s", "comp", "recmp", "tp", "ep", "pp", "bubble", "dp", "opt", "GiB", "usable"
        );
        for r in &rows {
            let e = r.estimate(&k)?;
            let t = e.time;
            let pct = |x: f64| 100.0 * x / t.total();
            println!(
                "{:<42} {:>+5.0}% {:>7.2} {:>7.2} | {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% {:>5.1}% | {:>6.1} {:>6.1}",
                r.row.id,
                100.0 * (r.published_step() / t.total() - 1.0),
                r.published_step(),
                t.total(),
                pct(t.compute),
                pct(t.recompute),
                pct(t.tp_comm + t.cp_comm),
                pct(t.ep_comm),
                pct(t.pp_comm),
                pct(t.bubble),
                pct(t.dp_comm),
                pct(t.optimizer),
                e.memory.total() / anychip_plan::chips::GIB,
                e.capacity / anychip_plan::chips::GIB,
            );
        }
        return Ok(());
    }
    if mode == "moe" {
        // MoE rows per layer and micro-batch: published and predicted milliseconds (step over
        // micro-batches plus bubble, over the stage's layers), local experts and tokens per expert.
        let k = calib::shipped();
        println!(
            "{:<42} {:>6} {:>8} {:>8} {:>6} {:>8} {:>5} {:>22}",
            "row", "err", "pub ms", "pred ms", "local", "tok/exp", "prec", "stack"
        );
        for r in rows.iter().filter(|r| r.row.ep > 1) {
            let e = r.estimate(&k)?;
            let l = &e.layout;
            let per = e.micro_batches as f64 + (l.pp as f64 - 1.0) / l.v as f64;
            let layers = {
                let m = anychip_plan::model::resolve(&r.row.model)?;
                m.arch.layers.div_ceil(l.pp) as f64
            };
            let m = anychip_plan::model::resolve(&r.row.model)?.arch.moe.expect("moe row");
            let tok = (l.mb * r.row.seq / l.cp) as f64 / l.tp as f64 * m.top_k as f64;
            println!(
                "{:<42} {:>+5.0}% {:>8.2} {:>8.2} {:>6} {:>8.0} {:>5} {:>22}",
                r.row.id,
                100.0 * (r.published_step() / e.time.total() - 1.0),
                1e3 * r.published_step() / per / layers,
                1e3 * e.time.total() / per / layers,
                m.experts / l.ep,
                tok * l.ep as f64 / m.experts as f64,
                r.row.precision,
                r.row.stack
            );
        }
        return Ok(());
    }
    if mode == "mem" {
        // Each row's predicted memory per chip, GiB, by part.
        let k = calib::shipped();
        let g = |x: f64| x / anychip_plan::chips::GIB;
        println!(
            "{:<42} {:>6} {:>6} | {:>6} {:>6} {:>6} {:>6} {:>6} {:>6} {:>6}",
            "row", "total", "usable", "weight", "grad", "optim", "gather", "activ", "logits", "reserv"
        );
        for r in &rows {
            let m = r.estimate(&k)?.memory;
            println!(
                "{:<42} {:>6.1} {:>6.1} | {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1} {:>6.1}",
                r.row.id,
                g(m.total()),
                g(r.estimate(&k)?.capacity),
                g(m.weights),
                g(m.gradients),
                g(m.optimizer),
                g(m.gathered),
                g(m.activations),
                g(m.logits),
                g(m.reserve)
            );
        }
        return Ok(());
    }
    let k = if mode == "fit" {
        let all: Vec<usize> = (0..rows.len()).collect();
        let f = |k: &calib::Constants, w: &[usize]| anychip_plan::validation::errors(&rows, k, w);
        calib::fit(&f, &all, &anychip_plan::validation::chip_names(&rows))?
    } else {
        calib::shipped()
    };
    println!("{k:?}");
    let mut sum = 0.0;
    for r in &rows {
        let e = r.error(&k)?;
        sum += e.abs();
        println!("{:<44} {:<22} {:>+7.1}%", r.row.id, r.row.group, 100.0 * e);
    }
    println!("mean abs {:.1}%", 100.0 * sum / rows.len() as f64);
    Ok(())
}
