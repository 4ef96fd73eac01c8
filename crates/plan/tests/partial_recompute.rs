//! Partial full recompute (`--layout ...,recompute=full,recompute_layers=N`, Megatron-Core's
//! `recompute_method` block with `recompute_num_layers`): the first N layers of each model chunk
//! rerun their forward in backward and keep only their inputs, the chunk's other layers keep
//! every activation. Its time and memory lie between recomputing none and all, in proportion.

use anychip_plan::calib;
use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::{check_layout, estimate, Estimate, Job, Precision, Rates};
use anychip_plan::search::{parse_layout, search, Request};
use anychip_plan::stack;
use anyhow::Result;

/// Llama 3 70B in BF16, 8k tokens, global batch 256, on `count` H100s under `stack`.
fn run_on(stack: &str, layout: &str, count: usize) -> Result<Estimate> {
    let m = model::resolve("llama3-70b").unwrap();
    let chip = ChipDb::builtin().find("h100").unwrap().clone();
    let k = calib::shipped();
    let l = parse_layout(layout, count)?;
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 256, precision: Precision::Bf16 };
    check_layout(&job, &l)?;
    let st = stack::find(stack).unwrap();
    st.check_runs(&l)?;
    let rates = Rates::of(&chip, &k, l.chips(), Precision::Bf16).unwrap();
    estimate(&job, &l, &rates, &k, &st, f64::INFINITY)
}

#[test]
fn a_partial_recompute_costs_and_saves_in_proportion_to_its_layers() {
    // 80 layers over 4 stages of 2 chunks: 10 layers a chunk, 20 a stage. 3 of each chunk's
    // layers recompute: 6 of the stage's 20, 30%.
    let base = "tp=8,pp=4,vp=2,mb=1,zero=1";
    let none = run_on("nemo-2025", &format!("{base},recompute=none"), 64).unwrap();
    let part = run_on("nemo-2025", &format!("{base},recompute=full,recompute_layers=3"), 64).unwrap();
    let all = run_on("nemo-2025", &format!("{base},recompute=full"), 64).unwrap();
    assert_eq!(none.time.recompute, 0.0);
    let share = part.time.recompute / all.time.recompute;
    assert!((share - 0.3).abs() < 1e-9, "recompute share {share}");
    // Stored activations: 30% of the layers keep their inputs (as under a full recompute, less
    // the layer rematerialised during its backward), the rest all of theirs.
    let remat = none.memory.activations / 80.0 * 4.0 / (1.0 + 3.0 / 8.0) / 4.0;
    let stored = |e: &Estimate| e.memory.activations;
    let want = 0.3 * (stored(&all) - remat) + 0.7 * stored(&none) + remat;
    assert!((stored(&part) / want - 1.0).abs() < 0.02, "{} against {want}", stored(&part));
    assert!(stored(&none) > stored(&part) && stored(&part) > stored(&all));
    assert!(none.tokens_per_s > part.tokens_per_s && part.tokens_per_s > all.tokens_per_s);
    // Every layer of a chunk is the full recompute itself.
    let every = run_on("nemo-2025", &format!("{base},recompute=full,recompute_layers=10"), 64).unwrap();
    assert_eq!(every.tokens_per_s, all.tokens_per_s);
    assert_eq!(every.memory.activations, all.memory.activations);
}

#[test]
fn recompute_layers_needs_a_full_recompute_within_a_chunk_on_a_stack_that_has_it() {
    let err = |layout: &str, stack: &str| run_on(stack, layout, 64).unwrap_err().to_string();
    let e = err("tp=8,pp=4,vp=2,mb=1,recompute=selective,recompute_layers=3", "nemo-2025");
    assert!(e.contains("recompute_layers=3 needs recompute=full"), "{e}");
    let e = err("tp=8,pp=4,vp=2,mb=1,recompute=full,recompute_layers=11", "nemo-2025");
    assert!(e.contains("more than a chunk's 10 layers"), "{e}");
    let e = err("tp=8,pp=4,mb=1,recompute=full,recompute_layers=3", "megatron-2021");
    assert!(e.contains("recomputes every layer or none"), "{e}");
    let e = err("tp=8,pp=4,mb=1,recompute=full,recompute_layers=x", "nemo-2025");
    assert!(e.contains("recompute_layers=x is not a whole number"), "{e}");
}

#[test]
fn the_search_recomputes_no_more_layers_than_memory_needs() {
    // Llama 3.1 405B on 256 H100s at 8k tokens: nothing fits without recompute; recomputing a
    // few layers of each stage is faster than recomputing all of them.
    let plan_on = |stack: stack::Stack| {
        let req = Request {
            model: model::resolve("llama3-405b").unwrap(),
            count: 256,
            tokens: 1e12,
            seq: 8192,
            global_batch: None,
            precision: Precision::Bf16,
            stack,
            pinned: None,
        };
        search(&req, ChipDb::builtin().find("h100").unwrap()).unwrap()
    };
    let nemo = stack::find("nemo-2025").unwrap();
    let partial = plan_on(nemo.clone());
    let best = &partial.best().estimate;
    assert!(best.layout.recompute_layers > 0, "{}", best.layout);
    assert!(best.memory.total() <= best.capacity);
    // One layer fewer recomputed no longer fits.
    let fewer = anychip_plan::perf::Layout { recompute_layers: best.layout.recompute_layers - 1, ..best.layout };
    let m = model::resolve("llama3-405b").unwrap();
    let db = ChipDb::builtin();
    let chip = db.find("h100").unwrap();
    let k = calib::shipped();
    let job = Job { arch: &m.arch, seq: 8192, global_batch: best.global_batch, precision: Precision::Bf16 };
    let rates = Rates::of(chip, &k, 256, Precision::Bf16).unwrap();
    let capacity = chip.usable_memory_bytes().unwrap();
    let e = if fewer.recompute_layers == 0 {
        anychip_plan::perf::Layout { recompute: anychip_plan::perf::Recompute::None, ..fewer }
    } else {
        fewer
    };
    let est = estimate(&job, &e, &rates, &k, &stack::find("nemo-2025").unwrap(), capacity).unwrap();
    assert!(!est.fits(), "{} fits too", e);
    // The same stack recomputing every layer or none: no partial layout, and a slower best.
    let whole = plan_on(stack::Stack { partial_recompute: false, ..nemo });
    assert!(whole.ranked.iter().all(|r| r.estimate.layout.recompute_layers == 0));
    assert!(whole.best().estimate.tokens_per_s < best.tokens_per_s * 0.97);
}
