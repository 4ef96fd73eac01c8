//! The performance model against published training runs, measured out of sample: every source
//! is held out in turn, the constants refitted on the others, and its rows predicted.

use anychip_plan::calib;
use anychip_plan::stack;
use anychip_plan::validation::{
    calibration_file, cross_validate, cross_validate_by_chip_family, cross_validate_by_publisher, memory_rows,
    predict_memory, prepare, prepare_held_out, summary, table, Prepared, Row,
};
use std::collections::BTreeSet;

#[test]
fn cross_validated_throughput_error() {
    let rows = prepare().unwrap();
    let (_, cv) = cross_validate(&rows).unwrap();
    println!("{:<46} {:<24} {:>9} {:>10}", "row", "source", "CV error", "in-sample");
    for c in &cv {
        let r = &rows[c.index].row;
        println!("{:<46} {:<24} {:>+8.1}% {:>+9.1}%", r.id, r.group, 100.0 * c.cv_error, 100.0 * c.in_sample_error);
    }
    println!("{:<24} {:>4} {:>9} {:>9} {:>10}", "source", "rows", "CV mean", "CV worst", "in-sample");
    for (g, n, m, w, i) in table(&rows, &cv) {
        println!("{g:<24} {n:>4} {:>8.1}% {:>8.1}% {:>9.1}%", 100.0 * m, 100.0 * w, 100.0 * i);
    }
    // The rows cover what the planner claims: dense and MoE, BF16 and FP8, ZeRO-3, three chip kinds.
    let chips: BTreeSet<_> = rows.iter().map(|r| r.row.chip.as_str()).collect();
    assert!(chips.len() >= 3, "{chips:?}");
    for (what, pred) in [
        ("moe", Box::new(|r: &anychip_plan::validation::Row| r.ep > 1) as Box<dyn Fn(&_) -> bool>),
        ("dense", Box::new(|r: &anychip_plan::validation::Row| r.ep == 1)),
        ("fp8", Box::new(|r: &anychip_plan::validation::Row| r.precision == "fp8")),
        ("bf16", Box::new(|r: &anychip_plan::validation::Row| r.precision == "bf16")),
        ("zero3", Box::new(|r: &anychip_plan::validation::Row| r.zero == 3)),
    ] {
        assert!(rows.iter().any(|r| pred(&r.row)), "no {what} row");
    }
    let errs: Vec<f64> = cv.iter().map(|c| c.cv_error).collect();
    let (mean, _) = summary(&errs);
    let dense: Vec<f64> = cv.iter().filter(|c| rows[c.index].row.ep == 1).map(|c| c.cv_error).collect();
    let moe: Vec<f64> = cv.iter().filter(|c| rows[c.index].row.ep > 1).map(|c| c.cv_error).collect();
    let (dense_mean, dense_worst) = summary(&dense);
    let (moe_mean, moe_worst) = summary(&moe);
    println!(
        "overall: mean {:.1}%; dense: mean {:.1}% worst {:.1}%; MoE: mean {:.1}% worst {:.1}%",
        100.0 * mean,
        100.0 * dense_mean,
        100.0 * dense_worst,
        100.0 * moe_mean,
        100.0 * moe_worst
    );
    // Regression bounds just above the figures of docs/planner.md (593 rows: overall 9.0%,
    // dense 6.8% / 36.7% (MLPerf v5.1 Llama 3.1 8B on Cisco's 128 H100), MoE 17.3% / 110.8%; 9.7%,
    // 7.6% / 41.0% and 17.7% / 116.8% before the chip residuals, `calib::chip_residuals`). The
    // worst dense row was MPT-30B at 8k tokens on 8 H100 at 35.8% until the cuDNN of 2025 was
    // priced faster (`attn_gain_2025`, 2026-12-06), which took the Cisco row from +34.3% to
    // +40.7% and the held-out file from 16.2% to 14.1%: the bound moved from 40% to 42% for it,
    // and back to 40% with the residuals (the row +36.9%).
    // The mean is within issue 18's 12% (the 216 llm-foundry rows 5.2% out of sample, the other 377 11.2%);
    // its other bound, every row within 30%, is in `issue_18_bounds`, ignored until it holds: 23
    // rows are beyond it, 18 of them MoE rows of the Megatron-Bridge tables (GPT-OSS-120B
    // everywhere, Qwen3 recipes before 26.02.01/26.04) slower than any physical term explains
    // (docs/planner.md, "Where it is wrong").
    assert!(mean <= 0.12, "cross-validated mean absolute error {:.1}% > 12%", 100.0 * mean);
    // The same errors with every publisher counting once (the mean of each publisher's mean), so
    // that no one table's many rows carry the figure: 15 publishers, 12.3% (MT-NLG's 29% and OPT's
    // one row, 20%, among them; 12.1% before the chip residuals, 11.8% before FP4 GEMMs had their
    // own efficiency, `fp4_gemm_eff`).
    // It was 11.3% before ZeRO-3's gathers paid the contention of any overlapped collective, which took the all-rows mean from 11.0% to 10.4%, every publisher held
    // out at once from 11.2% to 10.7% and the held-out file from 20.1% to 16.2%, but OPT-175B from
    // -9% to -22% and MaxText's TPU rows from 11.9% to 13.8%: a regression bound, above the 12%
    // the issue sets for the all-rows mean.
    let mut by_publisher: std::collections::BTreeMap<&str, Vec<f64>> = Default::default();
    for c in &cv {
        by_publisher.entry(rows[c.index].row.publisher()).or_default().push(c.cv_error);
    }
    let balanced = by_publisher.values().map(|v| summary(v).0).sum::<f64>() / by_publisher.len() as f64;
    println!("publisher-balanced mean ({} publishers): {:.1}%", by_publisher.len(), 100.0 * balanced);
    // 13.3% since the uneven pipeline splits the sources state were written in (2026-12-07), 13.5%
    // once the Megatron-Core stacks balance the splits they must (`balanced_pipeline_split`):
    // BLOOM's one row (BigScience's only fitted row) from 5.6% to 22.8%, its last stage no longer
    // priced with a sixth layer it did not hold; the all-rows mean stayed at 9.0%.
    assert!(balanced <= 0.14, "cross-validated publisher-balanced mean {:.1}% > 14%", 100.0 * balanced);
    assert!(dense_mean <= 0.09, "cross-validated dense mean {:.1}% > 9%", 100.0 * dense_mean);
    assert!(dense_worst <= 0.40, "cross-validated worst dense row {:.1}% > 40%", 100.0 * dense_worst);
    assert!(moe_mean <= 0.185, "cross-validated MoE mean {:.1}% > 18.5%", 100.0 * moe_mean);
    assert!(moe_worst <= 1.2, "cross-validated worst MoE row {:.1}% > 120%", 100.0 * moe_worst);
    // Issue 18: the ZeRO-3 / FSDP rows within the issue's bounds (mean <= 12%, every row within
    // 30%). The mean holds (294 rows, 6.4%); the worst row does not: ModelZoo's Megatron-FSDP
    // Qwen3-235B-A22B on 256 H100 is 36.5% too slow (MPT-30B at 8k tokens on 8 H100, 35.8% too
    // fast before the chip residuals, is within 30% now), so the worst-row bound here is a
    // regression bound.
    let zero3: Vec<f64> = cv.iter().filter(|c| rows[c.index].row.zero == 3).map(|c| c.cv_error).collect();
    let (z3_mean, z3_worst) = summary(&zero3);
    println!("ZeRO-3 ({} rows): mean {:.1}% worst {:.1}%", zero3.len(), 100.0 * z3_mean, 100.0 * z3_worst);
    assert!(z3_mean <= 0.12, "cross-validated ZeRO-3 mean {:.1}% > 12%", 100.0 * z3_mean);
    assert!(z3_worst <= 0.40, "cross-validated worst ZeRO-3 row {:.1}% > 40%", 100.0 * z3_worst);
}

/// Every row predicted with its whole publisher held out (all Megatron-Bridge containers at once,
/// fitted on the other publishers' rows): how far the constants carry to software they were not
/// fitted on. Regression bounds a point or so above docs/planner.md (593 rows: Megatron-Bridge
/// dense 7.9%, MoE 17.5%; torchtitan 8.8%; llm-foundry 4.9%; every row 9.5%): the 31 MLPerf
/// rows of v3.1, v4.0 and v5.1 carry the FP8 constants to the Bridge rows (dense was 19.6%
/// without them). torchtitan (PyTorch FSDP2 and torch.compile) and llm-foundry (Composer FSDP)
/// are code bases outside the Megatron lineage; torchtitan's rows held out together were 20.2%
/// before the llm-foundry rows came in.
#[test]
fn leave_publisher_out_throughput_error() {
    let rows = prepare().unwrap();
    let (_, cv) = cross_validate_by_publisher(&rows).unwrap();
    let subset = |keep: &dyn Fn(&Row) -> bool| {
        let errs: Vec<f64> = cv.iter().filter(|c| keep(&rows[c.index].row)).map(|c| c.cv_error).collect();
        let (mean, worst) = summary(&errs);
        println!("{:>4} rows: mean {:.1}%, worst {:.1}%", errs.len(), 100.0 * mean, 100.0 * worst);
        mean
    };
    let bridge = |r: &Row| r.publisher() == "megatron-bridge";
    print!("Megatron-Bridge dense: ");
    let dense = subset(&|r| bridge(r) && r.ep == 1);
    print!("Megatron-Bridge MoE:   ");
    let moe = subset(&|r| bridge(r) && r.ep > 1);
    print!("torchtitan (PyTorch):  ");
    let titan = subset(&|r| r.publisher() == "torchtitan");
    print!("llm-foundry (MosaicML):");
    let foundry = subset(&|r| r.publisher() == "mosaicml");
    print!("every row:             ");
    let all = subset(&|_| true);
    assert!(dense <= 0.115, "Megatron-Bridge dense held out by publisher {:.1}% > 11.5%", 100.0 * dense);
    assert!(moe <= 0.20, "Megatron-Bridge MoE held out by publisher {:.1}% > 20%", 100.0 * moe);
    assert!(titan <= 0.11, "torchtitan held out by publisher {:.1}% > 11%", 100.0 * titan);
    assert!(foundry <= 0.075, "llm-foundry held out by publisher {:.1}% > 7.5%", 100.0 * foundry);
    assert!(all <= 0.12, "every row held out by publisher {:.1}% > 12%", 100.0 * all);
}

/// Every run of a chip family predicted with the whole family held out of the fit: the case of
/// a new accelerator, whose first plan has no published run of its own. Regression bounds a
/// little above today's figures (AMD 9.0%, Gaudi 12.1%, TPU 12.7% with the other families'
/// runs fitted; NVIDIA 13.4% dense, 21.0% MoE with only the 53 others fitted). A held-out family's
/// chips have no residual (`calib::chip_residuals` needs runs), so these are the datasheet's.
#[test]
fn leave_chip_family_out_throughput_error() {
    let rows = prepare().unwrap();
    let (_, cv) = cross_validate_by_chip_family(&rows).unwrap();
    let family = |f: &str, moe: bool| {
        let errs: Vec<f64> = cv
            .iter()
            .filter(|c| rows[c.index].chip_family() == f && rows[c.index].is_moe() == moe)
            .map(|c| c.cv_error)
            .collect();
        let (mean, worst) = summary(&errs);
        println!(
            "{f:>6} {}: {:>4} rows, mean {:.1}%, worst {:.1}%",
            if moe { "MoE  " } else { "dense" },
            errs.len(),
            100.0 * mean,
            100.0 * worst
        );
        mean
    };
    for (f, moe, bound) in [
        ("amd", false, 0.13),
        ("gaudi", false, 0.15),
        ("tpu", false, 0.14),
        ("nvidia", false, 0.16),
        // 23.0% with the uneven pipeline splits (22.0% before).
        ("nvidia", true, 0.235),
    ] {
        let mean = family(f, moe);
        assert!(mean <= bound, "{f} (moe {moe}) held out as a family: {:.1}% > {:.0}%", 100.0 * mean, 100.0 * bound);
    }
}

/// Issue 18's bounds: cross-validated mean absolute error <= 12% and every row, dense and MoE,
/// within 30%. Fails today (the mean holds, 8.9% over 593 rows, but 23 rows are beyond 30%;
/// docs/planner.md, "Where it is wrong"); run it with `cargo test -p anychip-plan --test
/// validation -- --ignored`.
#[test]
#[ignore = "known gap: 23 rows beyond 30% (GPT-OSS-120B on GB200/B300/GB300, Qwen3-30B-A3B/Qwen3-235B-A22B rows before 26.02.01/26.04, ModelZoo's Megatron-FSDP Qwen3-235B-A22B, MT-NLG on 3,360 A100, MLPerf Llama 3.1 8B on 128 H100 at TP 2, torchtitan's Llama 3 8B at 64k tokens, llm-foundry's MPT-30B at 8k tokens)"]
fn issue_18_bounds() {
    let rows = prepare().unwrap();
    let (_, cv) = cross_validate(&rows).unwrap();
    let errs: Vec<f64> = cv.iter().map(|c| c.cv_error).collect();
    let (mean, _) = summary(&errs);
    let over: Vec<String> = cv
        .iter()
        .filter(|c| c.cv_error.abs() > 0.30)
        .map(|c| format!("{} {:+.1}%", rows[c.index].row.id, 100.0 * c.cv_error))
        .collect();
    assert!(
        mean <= 0.12 && over.is_empty(),
        "cross-validated mean {:.1}% (bound 12%); {} rows beyond 30% out of sample: {}",
        100.0 * mean,
        over.len(),
        over.join(", ")
    );
}

/// The held-out rows (`data/held_out_runs.toml`, which no fit reads) predicted with the shipped
/// constants: tpu-recipes' MaxText runs on TPU v6e (18), v5p (3) and TPU7x Ironwood (16, a chip
/// priced from its datasheet alone: 8 dense Llama rows, 2 of them at 131,072 tokens, and 8 MoE
/// rows), MaxText's 2023 TPU v4 table (6), MLPerf Training v6.0's MoE results (28: GPT-OSS-20B
/// on 8 to 512 Blackwell GPUs, DeepSeek-V3 on 256 to 8,192), NeMo AutoModel's H100 table (8: 7
/// MoE, Llama 3.1 70B), Megatron-MoE-ModelZoo's long-context Qwen3-235B-A22B rows (5: 16k to
/// 128k tokens), NeMo's long-sequence tables (17: Llama 2 7B on H100, Llama 3 8B on B200, 4K to
/// 1M tokens), MLPerf Training v6.0's Llama 3.1 rows (28: 8B and 405B, FP8, NVFP4 and MXFP4),
/// MindSpeed-LLM's Ascend 910B table (66: 60 dense, 6 MoE; a chip priced from its datasheet),
/// FlagPerf's NVIDIA Megatron-LM, FlagScale and DeepSpeed cases (24) and PaddleNLP cases (20), and
/// AMD's Primus Llama 3.1 8B run on 8 MI325X (1).
/// Bounds: the issue's 12% on the mean of the 184 dense rows (docs/planner.md: 10.2%); the 56 MoE
/// rows 25.5% (21.1% over the 50 before the six Ascend MoE runs, 62.6% among them), 21.5% before
/// the chip residuals (MLPerf's DeepSeek-V3 on 8,192 GB200 +81%, 4,096
/// +51%, 2,048 +37%, 512 +32%, +92%, +60%, +45%, +39% before them, at
/// TP 2: the error grows with scale there, while CoreWeave's GB300 runs at TP 1 on 2,048-8,192
/// are +6% to +16%; GPT-OSS-120B on Ironwood +69%; 19.6% over the 41 before the six largest
/// DeepSeek-V3 runs, 20.3% over 29 before the long-context rows), held to a regression bound
/// just above that; single rows are printed, not bounded.
/// MLPerf submissions run layouts their submitters tuned for speed. Given only each job (model,
/// chips, sequence, batch, precision, stack), the planner's best layout should predict about the
/// tuned run's throughput: well above it would mean the search exploits layouts the model
/// overrates (as it did with ZeRO-2's free memory, or layouts the stack cannot run).
#[test]
fn the_planners_own_layout_for_tuned_benchmarks() {
    let rows = prepare().unwrap();
    let k = calib::shipped();
    let mut errs = Vec::new();
    for r in rows.iter().filter(|r| r.row.publisher() == "mlcommons") {
        let (layout, err) = r.searched(&k).unwrap();
        let pinned = r.error(&k).unwrap();
        println!("{:<46} searched {:>+7.1}%  pinned {:>+7.1}%  {layout}", r.row.id, 100.0 * err, 100.0 * pinned);
        errs.push(err);
    }
    let (mean, worst) = summary(&errs);
    let signed = errs.iter().sum::<f64>() / errs.len() as f64;
    println!(
        "{} MLPerf rows, the planner's own layout: mean {:.1}%, signed {:+.1}%, worst {:.1}%",
        errs.len(),
        100.0 * mean,
        100.0 * signed,
        100.0 * worst
    );
    assert!(errs.len() >= 50, "{} MLPerf rows", errs.len());
    assert!(mean <= 0.12 && signed <= 0.06, "mean {mean}, signed {signed}");
}

/// What a planner is for is picking the layout. Where a source ran one job (same model, chips,
/// sequence, batch, precision and software) in several layouts, the layout the model predicts
/// fastest should be the fastest published one, or close: the regret is the fastest published
/// throughput over the throughput of the model's pick, less 1. Fitted and held-out rows both.
#[test]
fn the_planner_picks_the_fastest_of_a_sources_layouts() {
    let k = calib::shipped();
    let mut sweeps: std::collections::BTreeMap<String, Vec<(String, f64, f64)>> = Default::default();
    for r in prepare().unwrap().into_iter().chain(prepare_held_out().unwrap()) {
        let row = &r.row;
        let layout = r.layout().to_string();
        // The FP8 recipe (MXFP8 or current scaling) is not a planner input; it shows in the id.
        let recipe = if row.id.contains("mxfp8") || row.id.contains("fp8-mx") { "mx" } else { "" };
        let job = format!(
            "{} {} {} {} {}x{} {} {} {} {:?}",
            row.group,
            recipe,
            row.model,
            row.chip,
            row.tp * row.pp * row.dp * row.cp,
            row.seq,
            row.global_batch,
            row.precision,
            row.stack,
            row.chip_overrides
        );
        let predicted = 1.0 / r.estimate(&k).unwrap().time.total();
        sweeps.entry(job).or_default().push((layout, 1.0 / r.published_step(), predicted));
    }
    let (mut regrets, mut pairs, mut right) = (Vec::new(), 0, 0);
    for runs in sweeps.values() {
        let layouts: BTreeSet<_> = runs.iter().map(|r| &r.0).collect();
        if layouts.len() < 2 {
            continue;
        }
        let fastest = runs.iter().map(|r| r.1).fold(0.0, f64::max);
        let pick = runs.iter().max_by(|a, b| a.2.total_cmp(&b.2)).unwrap();
        regrets.push(fastest / pick.1 - 1.0);
        for (i, a) in runs.iter().enumerate() {
            for b in &runs[i + 1..] {
                if (a.1 / b.1 - 1.0).abs() > 0.02 {
                    pairs += 1;
                    right += usize::from((a.1 > b.1) == (a.2 > b.2));
                }
            }
        }
    }
    let (mean, worst) = summary(&regrets);
    let fastest = regrets.iter().filter(|r| **r == 0.0).count();
    println!(
        "{} sweeps: the model's pick is the fastest published layout in {fastest}, mean regret {:.1}%, worst {:.1}%; {right} of {pairs} pairs ordered as published",
        regrets.len(),
        100.0 * mean,
        100.0 * worst
    );
    assert!(regrets.len() >= 50, "{} sweeps", regrets.len());
    assert!(mean <= 0.03 && right as f64 >= 0.8 * pairs as f64, "mean regret {mean}, {right} of {pairs} pairs");
}

#[test]
fn held_out_runs_predicted_blind() {
    let held = prepare_held_out().unwrap();
    let fitted: BTreeSet<String> = prepare().unwrap().into_iter().map(|r| r.row.id).collect();
    let k = calib::shipped();
    let (mut dense, mut moe, mut hybrid, mut gdn) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    for r in &held {
        assert!(!fitted.contains(&r.row.id), "{} is in both published_runs.toml and held_out_runs.toml", r.row.id);
        let e = r.error(&k).unwrap();
        println!("{:<45} {:<18} {:+7.1}%", r.row.id, r.row.group, 100.0 * e);
        match r.kind() {
            "moe" => moe.push(e),
            "hybrid" => hybrid.push(e),
            "gdn-hybrid" => gdn.push(e),
            _ => dense.push(e),
        }
    }
    let all: Vec<f64> = dense.iter().chain(&moe).chain(&hybrid).chain(&gdn).copied().collect();
    let kinds = [("dense", &dense), ("MoE", &moe), ("hybrid", &hybrid), ("Gated DeltaNet hybrid", &gdn), ("all", &all)];
    for (what, errs) in kinds {
        let (mean, worst) = summary(errs);
        println!("held out, {what}: {} rows, mean {:.1}%, worst {:.1}%", errs.len(), 100.0 * mean, 100.0 * worst);
    }
    assert!(
        dense.len() >= 505 && moe.len() >= 143 && hybrid.len() >= 54 && !gdn.is_empty(),
        "held-out rows missing: {} dense, {} MoE, {} hybrid, {} Gated DeltaNet hybrid",
        dense.len(),
        moe.len(),
        hybrid.len(),
        gdn.len()
    );
    let (dense_mean, moe_mean) = (summary(&dense).0, summary(&moe).0);
    // Dense: 34 rows at 5.6%; with NeMo's long-sequence tables (17 rows, 4K-1M tokens, blind 15.5%:
    // B200 -5% at 8K to -37.5% at 1M) and MLPerf v6.0's first nine Llama 3.1 rows (blind 11.4%),
    // 60 rows at 9.3% before the softmax was priced under asynchronous attention's products; 67
    // rows at 7.3%, then 6.3% once FP4 GEMMs had their own efficiency (`fp4_gemm_eff`); 71 rows
    // at 6.3% with four more MLPerf v6.0 8B partner runs priced before they were compared, 75
    // at 6.6% with Nebius's four (-7% to -14%), 78 at 6.7% with Lambda's, Cisco's and ASUSTeK's
    // (-14%, -7%, -5%); 6.8% with the chip residuals; 79 at 6.8% with Dell's 8 H200 NVL (+10.6%, a
    // chip file written from the datasheet, no residual); 108 at 8.4% with 29 Ascend 910B runs
    // (below, 12.6%); 132 at 8.7% with FlagPerf's 24 NVIDIA runs (10.1%); 163 at 9.1% with 31 more
    // Ascend runs of the same table (10.7%); 164 at 9.0% with AMD's Primus 8B run on 8 MI325X (-5.3%);
    // 184 at 10.2% with FlagPerf's 20 PaddleNLP runs on the `unknown` stack (19.8%, all fast);
    // 196 at 10.2% with MegaScale's 12 Megatron-LM baseline runs on A100 (10.1%, all fast); 243
    // at 10.8% with BloombergGPT, the Zero Bubble paper's pipeline baselines and InternLM's 7B
    // tables (below); 267 at 10.3% with the Vocabulary Parallelism paper's baselines (4.9%); 275
    // at 10.2% with IBM and Meta's FSDP table (7.7%); 281 at 10.2% with the Nemotron-4 reports'
    // tables (11.6%); 283 at 10.2% with AMD's two 64-GPU MI325X runs (-4.3%, -4.1%); 300 at 10.2%
    // with NeMo 25.02-25.07's dense rows (below); 310 at 10.1% with Megatron-Bridge's 25.09 table;
    // 314 at 10.2% with the fms-fsdp torch.compile rows (22.2%, every one slow); 345 at 10.6% with
    // Megatron-LM on V100, OLMo-core and Colossal-AI (31 rows at 14.7%); 389 at 11.3% with
    // BigScience's logs and four papers (44 rows at 16.8%); 413 at 11.7% with the Zero Bubble
    // paper's ZB-1p and ZB-2p rows (24 at 17.6%, every one slow as its baselines).
    // 459 at 12.5% with the Zero Bubble paper's appendix tables (19.2% and 17.8%) and Pythia
    // (26.1%): older software and thinner networks than the fitted rows', every group of them
    // slow or fast together. The bound, 12% until then, follows the data to 13%. 478 at 12.2%
    // with Megatron-LM's README tables (19 rows at 5.7%); 504 at 12.6% with the Zero Bubble
    // paper's section 6 tables (26 at 19.6%).
    // 9.6% once the uneven pipeline splits the sources state were written in (2026-12-07; 170
    // rows, every Zero Bubble row among them, so no longer blind: the Zero Bubble groups from
    // 14-20% to 2-5%; the 361 dense rows left as they were 11.3% -> 11.1% with the refit); 9.9%
    // after the refit that `balanced_pipeline_split` brought (the Zero Bubble groups 3-7%).
    assert!(dense_mean <= 0.105, "held-out dense mean absolute error {:.1}% > 10.5%", 100.0 * dense_mean);
    // MoE: 56 rows at 25.5% (the Ascend, MLPerf v6.0, ModelZoo, AutoModel and Ironwood runs); 58 at
    // 25.1% with the Megatron-Core MoE README's Mixtral 8x7B on 64 H100 of MCore v0.8 and v0.9
    // (-10.3%, -16.1% blind), 24.7% with their VP read as the virtual pipeline size (+0.5%, -5.9%);
    // 72 at 22.2% with Megatron-LM's own MoE recipe table (below, 11.6% blind); 76 at 21.6% with
    // NeMo 25.02/25.04's four Mixtral rows (-12% to +18%); 86 at 20.0% with Megatron-Bridge 25.09's
    // ten DeepSeek-V3 and Qwen3 rows (8.0%); 87 at 20.0% with DeepSeek-V2 (-21.3%); 142 at 15.5%
    // with the MoE Parallel Folding and MegaScale-MoE papers' tables (55 rows at 8.4%).
    // 16.9% with the uneven pipeline splits and the refit they bring (2026-12-07): the 117 MoE rows
    // left as they were 14.5% -> 16.0% (MoE Parallel Folding's 50 from 8.7% to 11.9%, every one
    // slower than before), the 26 written in 20.1% -> 20.9% (MLPerf v6.0's DeepSeek-V3 faster);
    // 16.9% with `balanced_pipeline_split`, 16.7% with MLPerf v6.0's DeepSeek-V3 runs given the MTP
    // module their benchmark trains (deepseek-v3-mtp; written in after pricing); 16.2% once the
    // shared experts hide the all-to-all where a stack overlaps them (`shared_expert_overlap`:
    // the ModelZoo's Qwen2-57B-A14B preset, DeepSeek-V2's HAI-LLM, Bridge 25.09's DeepSeek-V3).
    assert!(moe_mean <= 0.165, "held-out MoE mean absolute error {:.1}% > 16.5%", 100.0 * moe_mean);
    // The hybrids (Mamba-2), predicted blind on 2026-12-06 with the blocks written before any row
    // was compared (docs/planner-validation.md, "Nemotron 3 Nano and Super"): Nemotron 3 Nano's 20 Megatron-Bridge rows
    // mean 27.2%, worst 34.1%, and the class 31.2% with Nemotron 3 Super's 30, every Bridge row
    // optimistic. After that blind pass the Mamba-2 scan was priced by its kernels' HBM traffic
    // (mamba_ssm's Triton chain, no constant; written after seeing the rows, so no longer blind):
    // Nano 19.2% (worst 26.0%), Super 28.4%, the class 24.6%; Nemotron 3.5 Lightning's row, added
    // after that and priced before it was compared, +19.2% (the class 24.5% over 52); 17.3% once
    // the softmax and the cuDNN of 2025 were priced, 14.8% with the chip residuals (Nano 11.5%),
    // 15.1% once MoE layers dropped their TP pair and the constants were refitted (Nano 12.3%);
    // 14.9% over 54 with Nemotron 3 Ultra's two runs (-9.7%, -8.3%, priced before compared).
    // These bounds hold that result.
    let (hybrid_mean, _) = summary(&hybrid);
    // 10.5% after the refit that the uneven pipeline splits brought (2026-12-07; no hybrid row
    // changed, the constants did: layer_overhead_us 284 -> 375); 8.9% after the next (2026-12-07,
    // `balanced_pipeline_split`).
    assert!(hybrid_mean <= 0.095, "held-out hybrid mean absolute error {:.1}% > 9.5%", 100.0 * hybrid_mean);
    // Gated DeltaNet hybrids: Megatron-MoE-ModelZoo's Qwen3-Next-80B-A3B on 128 H100, priced
    // before it was compared with the G block as written in 4c5fc36: +25.5% (+25.1% with the
    // recompute module shared_experts, added after), in line with the Mamba-2 class. Held to the
    // same bound.
    let (gdn_mean, _) = summary(&gdn);
    // 8.0% after the refit of 2026-12-07 (17.6% before), 9.3% after the next.
    assert!(gdn_mean <= 0.10, "held-out Gated DeltaNet hybrid mean absolute error {:.1}% > 10%", 100.0 * gdn_mean);
    let nano: Vec<f64> = held
        .iter()
        .filter(|r| r.row.model == "nemotron-3-nano" && r.row.publisher.as_deref() == Some("megatron-bridge"))
        .map(|r| r.error(&k).unwrap())
        .collect();
    let (nano_mean, nano_worst) = summary(&nano);
    assert!(
        nano.len() == 20 && nano_mean <= 0.22,
        "Nemotron 3 Nano: {} rows, mean {:.1}%",
        nano.len(),
        100.0 * nano_mean
    );
    assert!(nano_worst <= 0.28, "Nemotron 3 Nano worst error {:.1}% > 28%", 100.0 * nano_worst);
    // Ascend 910B, a chip priced from its sourced figures alone (no run fitted, no residual): 66
    // MindSpeed-LLM / ModelLink runs read with each layout from its launch script and priced before
    // they were compared. Dense: 29 at 12.6% (signed +2.6%), then 31 more at 10.7%, 60 at 11.6%;
    // MoE, 2024's MindSpeed MoE and a 2026 Qwen3 run: 6 at 62.6%, every one slower than predicted
    // (Mixtral 8x7B +58%, 8x22B +43%, Qwen2-57B-A14B +153%, DeepSeek-V2-Lite +67%, MiniCPM-MoE
    // +29%, Qwen3-30B-A3B +26%); 58.9% once the Mixtral rows split their experts over TP as
    // Megatron-Core 0.6 did (etp 8: +45% and +34%), 59.6% after the refit that dropped MoE
    // layers' TP pair (dense 11.4%). Held to regression bounds just above.
    let errors_of = |keep: &dyn Fn(&anychip_plan::validation::Prepared) -> bool| -> Vec<f64> {
        held.iter().filter(|r| keep(r)).map(|r| r.error(&k).unwrap()).collect()
    };
    let dense_910b = errors_of(&|r| r.row.chip == "910b" && r.kind() != "moe");
    let moe_910b = errors_of(&|r| r.row.chip == "910b" && r.kind() == "moe");
    assert_group("Ascend 910B dense", &dense_910b, 60, 0.125);
    assert_group("Ascend 910B MoE", &moe_910b, 6, 0.60);
    for &(what, group, rows, bound) in HELD_OUT_GROUPS {
        assert_group(what, &errors_of(&|r| in_group(&r.row.group, group)), rows, bound);
    }
}

/// Held-out sources priced before they were compared, each held to a regression bound just
/// above its figure: (name, group (`*` ends a prefix), rows, bound on the mean absolute error).
/// How much the held-out accuracy rests on naming a recipe's exact stack profile: every held-out
/// run priced again on its framework's profile (the top of its stack's `base` chain: `nemo-2025`
/// for every Megatron-Bridge variant, `torchtitan-2024` for torchtitan's compiled and pipelined
/// ones), as a user who names only the framework would, and on the default `unknown`. A run whose
/// layout the other profile cannot run (ZeRO-3 on Megatron-Core, activation offload on
/// `unknown`) keeps its own.
#[test]
fn held_out_runs_on_their_frameworks_profile() {
    let held = prepare_held_out().unwrap();
    let k = calib::shipped();
    let price = |pick: &dyn Fn(&Prepared) -> String| -> (f64, f64, usize) {
        let mut kept = 0;
        let errs: Vec<f64> = held
            .iter()
            .map(|r| {
                let other = stack::find(&pick(r)).unwrap();
                r.on_stack(&other).and_then(|p| p.error(&k)).unwrap_or_else(|_| {
                    kept += 1;
                    r.error(&k).unwrap()
                })
            })
            .collect();
        (summary(&errs).0, errs.iter().sum::<f64>() / errs.len() as f64, kept)
    };
    let (own, own_bias, _) = price(&|r| r.row.stack.clone());
    let (framework, framework_bias, kept_framework) = price(&|r| stack::root(&r.row.stack).unwrap());
    let (unknown, unknown_bias, kept_unknown) = price(&|_| "unknown".to_string());
    println!(
        "held out, {} rows: own profile {:.1}% ({:+.1}% signed), the framework's profile {:.1}% ({:+.1}%; {kept_framework} kept their own), unknown {:.1}% ({:+.1}%; {kept_unknown} kept their own)",
        held.len(),
        100.0 * own,
        100.0 * own_bias,
        100.0 * framework,
        100.0 * framework_bias,
        100.0 * unknown,
        100.0 * unknown_bias
    );
    // Measured 2026-12-07: 11.0%, 12.3%, 17.0%. Naming the framework alone stays within the
    // issue's 15% for a held-out set; the default is the conservative guess it is meant to be,
    // not a profile.
    assert!(framework <= 0.15, "the framework's profile: {:.1}%", 100.0 * framework);
    assert!(own < framework && framework < unknown, "{own} {framework} {unknown}");
}

const HELD_OUT_GROUPS: &[(&str, &str, usize, f64)] = &[
    // FlagPerf's NVIDIA cases (Megatron-LM, FlagScale, DeepSpeed ZeRO-3 on A800, H800 and H100):
    // 24 rows at 10.1%.
    ("FlagPerf", "flagperf", 24, 0.11),
    // FlagPerf's PaddleNLP cases (GPT-3 6.7B/13B, LLaMA 7B/13B on 8 A100), on the `unknown` stack
    // (no PaddlePaddle profile): 20 rows at 19.8%, every one faster than the run (+6% to +49%).
    ("PaddleNLP", "flagperf-paddle", 20, 0.2),
    // MegaScale's Megatron-LM baseline (ByteDance, 175B on 256 to 12,288 Ampere GPUs, 530B on
    // 2,240 to 11,200): 12 rows at 10.1%, every one faster than the run, by more as a fixed batch
    // spreads over more GPUs (-0.1% at 256 to +16.5% at 12,288).
    ("MegaScale", "megascale-2024", 12, 0.115),
    // Megatron-LM's own MoE recipes (dev examples/moe_recipes, mid-2026: DeepSeek-V3, Qwen3-235B-A22B
    // and Qwen3-30B-A3B on H100, B200, B300, GB200 and GB300), mapped from their YAMLs: 14 rows at
    // 11.6% (signed -1.5%; DeepSeek-V3 -14% to -27%, the H100 Qwen3-235B-A22B at TP 2 +23.5%).
    ("Megatron-LM MoE recipes", "megatron-moe-recipes-2026", 14, 0.105),
    // Three dense sources read from their primary texts and the authors' code. The Zero Bubble
    // paper's 1F1B and interleaved 1F1B baselines (pipeline only, 8 to 32 A100, sequence 1,024):
    // 24 rows at 14.0%, every one slower than the run (-6% to -27%). InternLM's 7B tables (8 to
    // 1,024 A100, ZeRO-1 in a node): 21.8% blind, every one fast, with a DGX A100's network; 11.6%
    // with the 4 x 100 Gb/s RoCE a node the doc states, written in after (disclosed in the rows).
    // BloombergGPT (ZeRO-3 with MiCS on 512 A100 40GB): +72.3% blind, +32.8% with the paper's 400
    // Gb/s of EFA a node, written in after.
    ("Zero Bubble", "zero-bubble-2024", 24, 0.07),
    ("InternLM 7B", "internevo-2024", 22, 0.125),
    ("BloombergGPT", "bloomberggpt-2023", 1, 0.335),
    // The Vocabulary Parallelism paper's plain 1F1B baselines (the Zero Bubble group's next paper:
    // 4B to 21B, pipeline only on 8 to 32 A100, vocabularies 32K to 256K on the last stage, a
    // Megatron-Core of 2024): 24 rows at 4.9% (signed -1.0%; +6% at 32K to -3% at 256K on the 4B,
    // +2% to -14% on the 21B).
    ("Vocabulary Parallelism", "vocab-parallel-2025", 24, 0.06),
    // IBM and Meta's FSDP blog table (Llama 2 7B to 70B, ZeRO-3 or one-node HSDP on 128 A100 over
    // 400 Gb/s a node and 96 H100 over 800 Gb/s a node): 8 rows at 7.7% (the 13B's selective
    // checkpointing of every k-th block priced as full: -14.6%, -6.1%).
    ("IBM FSDP", "ibm-fsdp-2024", 8, 0.09),
    // The same cluster's torch.compile numbers two months later (A100 column): 4 rows at 22.2%,
    // every one slower than the run (-17% to -27%): compile's gain (7B 3,700 -> 4,550 tokens/s)
    // is more than `fused_elementwise` prices.
    ("IBM FSDP + compile", "ibm-fsdp-compile-2024", 4, 0.23),
    // The Nemotron-4 15B and 340B reports' batch-ramp tables (768 to 6,144 H100): 6 rows at 11.6%
    // (340B +16% to +17%, 15B -11% to 0%).
    ("Nemotron-4 reports", "nemotron4-reports-2024", 6, 0.13),
    // AMD's performance page (as its Primus projection guide quotes it): Llama 3.1 8B and 70B in
    // FP8 on 64 MI325X: -4.3% and -4.1% when added, -7.3% and -8.0% at 2026-12-07, when two more
    // were priced before they were compared: Llama 3.1 70B in BF16 on 64 MI325X with FSDP and 12
    // of its 80 layers recomputed +8.0%, Mixtral 8x22B in BF16 on 64 MI355X (PP 4, VPP 2, EP 8)
    // +29.5%.
    ("AMD's performance page, 64 GPUs", "amd-perf-page-2025", 4, 0.14),
    // NeMo 2.x performance summaries (25.02 on B200, 25.04 and 25.07 on GB200; the first table of
    // each stored page): 21 rows at 10.4% (signed +5.4%; the 25.07 MXFP8 70B layout +46%).
    ("NeMo 25.02-25.07", "nemo-25.*", 21, 0.12),
    // Megatron-Bridge's 25.09 table (GB200, B200, H100; Llama 3, DeepSeek-V3, Qwen3), mapped by the
    // fitted 25.11 rows' rules: 20 rows at 7.5% (signed -0.2%; MoE 8.0%).
    ("Megatron-Bridge 25.09", "megatron-bridge-25.09", 20, 0.105),
    // Megatron-LM on V100, the planner's first rows on that chip (FP16 priced at the chip's
    // tensor-core peak). The 2019 paper's scaling study and training runs (1.2B to 8.3B on 1 to
    // 512 GPUs, no fused kernels, stack megatron-2019): 11 rows at 29.4%, every one faster than the
    // run (+14% to +39%); the same team's May 2020 blog on the same flags and the September 2020
    // README with its fused kernels (megatron-2021): 4 rows at 3.6% and 4 at 5.0%, every one slower
    // (-0.2% to -11%). What made 2020's code 60% faster per GPU than 2019's is not in the flags.
    ("Megatron-LM 2019 on V100", "v100-megatron-2019-*", 11, 0.3),
    ("Megatron-LM v1.0 blog on V100", "v100-megatron-v1-blog-2020", 4, 0.04),
    ("Megatron-LM 2020 README on V100", "v100-megatron-readme-2020", 4, 0.05),
    // OLMo-core's README table (OLMo 1B, OLMo 2 7B and 13B, a Llama-3-shaped 8B, BF16 and FP8, one
    // node of H100 assumed) and Olmo 3 7B on 512 H100: 8 rows at 5.9% and one at -6.2%.
    ("OLMo-core README", "olmo-core-readme-2024", 8, 0.07),
    ("Olmo 3 7B", "olmo3-blog-2025", 1, 0.065),
    // Colossal-AI's LLaMA benchmarks (ZeRO-2 on 8 H200, TP 2 x PP 4 x ZeRO-1 on 16 B200, Gemini
    // on 32 A800): 3 rows at 15.0%, every one faster than the run (+6.7%, +29.8%, +8.5%).
    ("Colossal-AI", "colossalai-*", 3, 0.16),
    // BigScience's Jean Zay logs (bigscience-workshop/bigscience), the repo's Omni-Path networks
    // written in before pricing: the BLOOM prequel's layout and batch sweeps (181B-195B on 384
    // A100) and BLOOM-176B at four other layouts, 36 rows at 13.2% (signed +9.2%: the prequel
    // fast by more as data parallelism grows over 6.25 GB/s a GPU, +44% to +49% at dp 24 pp 2;
    // the reshaped BLOOM -7% to -19%); on V100 (4-GPU nodes) tr1-13B 49.6% over 3 and tr8-104B
    // +67.1%, every one fast, as the 2019 Megatron-LM runs above. After these rows sent us to
    // DeepSpeed's code, `megatron-deepspeed` stopped overlapping the gradient reduction (its
    // pipeline engine reduces after the last backward): 12.8%, 48.1% and +67.1% (not blind).
    ("BigScience tr11 on A100", "bigscience-tr11-*", 36, 0.165),
    ("BigScience tr1-13B on V100", "bigscience-tr1-13b-v100", 3, 0.505),
    ("BigScience tr8-104B on V100", "bigscience-tr8-104b-v100", 1, 0.7),
    // One run each from four papers: PaLM 540B on 6,144 TPU v4 +1.8%, GLM-130B on 768 A100 40GB
    // +19.0%, GPT-NeoX-20B on 96 A100 40GB +27.9% (its 117 TFLOP/s read second-hand), TinyLlama
    // 1.1B on 16 A100 40GB +2.1%; DeepSeek-V2 on H800 (zero-bubble ZB-H1, 2,048 GPUs assumed)
    // -21.3%.
    ("PaLM 540B", "palm-2022", 1, 0.035),
    ("GLM-130B", "glm-130b-2022", 1, 0.205),
    ("GPT-NeoX-20B", "gpt-neox-20b-2022", 1, 0.295),
    ("TinyLlama", "tinyllama-2023", 1, 0.03),
    ("DeepSeek-V2", "deepseek-v2-2024", 1, 0.22),
    // The Zero Bubble paper's ZB-1p and ZB-2p rows (schedules zb-h1 and zb-h2, priced with the
    // schedules' formulas before they were compared): 24 rows at 17.6%, every one slower than the
    // run, as the same table's 1F1B baselines (14.0%); their speedups over 1F1B below.
    ("Zero Bubble ZB-1p/ZB-2p", "zero-bubble-2024-zb", 24, 0.035),
    // The same paper's appendix tables (Table 8: twice the micro-batch; Table 9: m <= p): 1F1B 19
    // rows at 19.2%, ZB-1p/ZB-2p 19 at 17.8% (after the m-aware bubble below, which Table 9's rows
    // prompted), every one slow as Table 4's. Pythia 70M-12B on 32-256 A100 40GB (GPU hours as
    // step rates, the cluster's network not stated): 8 rows at 26.1%, every one fast (+7% to +52%).
    ("Zero Bubble appendix 1F1B", "zero-bubble-2024-appendix", 19, 0.045),
    ("Zero Bubble appendix ZB", "zero-bubble-2024-appendix-zb", 19, 0.04),
    ("Pythia", "pythia-2023", 8, 0.265),
    // Its section 6 tables (6.2B-28.3B on 16-32 A100 over RoCE): 1F1B 19.0% over 9, ZB-1p and
    // ZB-2p* 19.9% over 17, every one slow as the rest of the paper's rows.
    ("Zero Bubble section 6 1F1B", "zero-bubble-2024-v2", 9, 0.06),
    ("Zero Bubble section 6 ZB", "zero-bubble-2024-v2-zb", 17, 0.04),
    // MoE papers read from full-text copies: NVIDIA's MoE Parallel Folding (Mixtral-8x22B,
    // Qwen2-57B-A14B and an 8-of-64-expert Mixtral on 64-1,024 H100 under Megatron-Core, with and
    // without folding) 7.6% over 11 (Tables 2-3) and 8.9% over 39 (Table 4's scaling; the
    // all-to-all 8-of-64 Mixtral without folding +17% and +35% at 512 and 1,024 GPUs); MegaScale-
    // MoE's Megatron-LM baseline (a 352B MoE on 240-1,440 H800) 6.9% over 5.
    ("MoE Parallel Folding", "moe-parallel-folding-2025", 11, 0.105),
    ("MoE Parallel Folding scaling", "moe-parallel-folding-2025-scaling", 39, 0.105),
    ("MegaScale-MoE's Megatron-LM", "megascale-moe-2025-megatron", 5, 0.025),
    // The Ascend 910C (Atlas A3), priced from its chip file alone: MindSpeed-LLM's A3 table,
    // Qwen3-8B on 8 packages +17.0%, DeepSeek-V3 on 256 -16.5%.
    ("Ascend 910C", "mindspeed-llm-910c-2026-06", 2, 0.185),
    // Megatron-Bridge 26.08's Nemotron 3 Ultra (550B-A55B hybrid) on 256 GB300 and GB200: -9.7%
    // and -8.3%.
    ("Nemotron 3 Ultra", "megatron-bridge-26.08-new", 2, 0.14),
    // Megatron-LM's README tables not in the fit: September 2020's A100 columns (1B-8B on 1-8
    // GPUs; the same with 128-way data parallelism) 3.8% over 4 and 2.9% over 4; January 2021's
    // 1.7B-1T table (the fitted April 2021 configurations measured earlier) 6.3% over 10 (+6% to
    // +12% from 39B up, the slower code of January); Megatron-Core's 177B on 96 H100 +15.5%.
    ("Megatron-LM 2020 README on A100", "a100-megatron-readme-2020-mp", 4, 0.04),
    ("Megatron-LM 2020 README on 128-1,024 A100", "a100-megatron-readme-2020-dp", 4, 0.035),
    ("Megatron-LM January 2021 README", "a100-megatron-readme-2021-01", 10, 0.07),
    ("Megatron-Core 177B on 96 H100", "h100-mcore-readme-2024-strong", 1, 0.175),
];

/// The id of the 1F1B row doing the same work as `id` when `id` runs half the micro-batch (`-bN`)
/// twice as often (`-mM`): the Zero Bubble paper's section 6 ZB-2p* rows.
fn twice_the_micro_batch(id: &str) -> Option<String> {
    let (head, m) = id.rsplit_once("-m")?;
    let (head, b) = head.rsplit_once("-b")?;
    let (b, m): (usize, usize) = (b.parse().ok()?, m.parse().ok()?);
    Some(format!("{head}-b{}-m{}", 2 * b, m / 2))
}

/// The Zero Bubble paper's schedules against its own 1F1B baselines (same models, micro-batch
/// counts and code): the error of the predicted speedup, (1 + e_zb) / (1 + e_1f1b) - 1, whatever
/// the legacy stack's level. Table 4, priced blind with the schedules of 2026-12-06: ZB-1p (zb-h1)
/// 1.1% over 12 (signed +0.1%), ZB-2p (zb-h2) 3.5% over 12, every one under the measured gain
/// (-0.8% to -5.6%: the paper's searched ZB-2p beats the handcrafted ZB-H2's bubble, and its
/// optimizer post-validation drops the step-end synchronisation); appendix F (twice the
/// micro-batch), blind: ZB-1p 1.2% over 10. Appendix H (m <= p) was 13.1% blind, every one
/// over-credited: the steady-state formulas assume the micro-batches to fill every idle slot; with
/// the saving split into the B-only backward chain's (p - 1) W and a filling of m / (p - 1) of
/// the rest (written after those rows, so not blind): 2.8%. Section 6 (arXiv 2401.10241, 16 to 32
/// A100), blind: ZB-1p 1.3% over 9, ZB-2p* at half the micro-batch and twice the count 2.4% over
/// the 6 whose 1F1B twin is in that table. Regression bounds just above.
#[test]
fn zero_bubble_speedups_over_1f1b_as_measured() {
    let held = prepare_held_out().unwrap();
    let k = calib::shipped();
    let error = |id: &str| held.iter().find(|r| r.row.id == id).map(|r| r.error(&k).unwrap());
    let cases = [
        ("zb-zb1p-", "zb-1f1b-", 12, 0.015),
        ("zb-zb2p-", "zb-1f1b-", 12, 0.04),
        ("zbapp-f-zb1p-", "zbapp-f-1f1b-", 10, 0.015),
        ("zbapp-h-zb2p-", "zbapp-h-1f1b-", 9, 0.03),
        ("zbv2-t6-zb1p-", "zbv2-t6-1f1b-", 7, 0.015),
        ("zbv2-t7-zb1p-", "zbv2-t7-1f1b-", 2, 0.015),
        // 3.0% with the papers' one layer fewer on the end stages (2.3% before).
        ("zbv2-t6-zb2p-", "zbv2-t6-1f1b-", 6, 0.035),
    ];
    for (zb, base, rows, bound) in cases {
        // Section 6's ZB-2p* rows run half the micro-batch twice as often as their 1F1B twin.
        let twin = |id: String| if zb == "zbv2-t6-zb2p-" { twice_the_micro_batch(&id) } else { Some(id) };
        let speedups: Vec<f64> = held
            .iter()
            .filter(|r| r.row.id.starts_with(zb))
            .filter_map(|r| {
                let one_f_one_b = error(&twin(r.row.id.replacen(zb, base, 1))?)?;
                Some((1.0 + r.error(&k).unwrap()) / (1.0 + one_f_one_b) - 1.0)
            })
            .collect();
        let (mean, _) = summary(&speedups);
        println!("{zb}: {} speedups over 1F1B, mean error {:.1}%", speedups.len(), 100.0 * mean);
        assert!(speedups.len() == rows && mean <= bound, "{zb}: {} rows, mean {:.1}%", speedups.len(), 100.0 * mean);
    }
}

/// Whether a row of `group` belongs to `pattern`: the same name, or under a prefix ending in `*`.
fn in_group(group: &str, pattern: &str) -> bool {
    pattern.strip_suffix('*').map_or(group == pattern, |prefix| group.starts_with(prefix))
}

/// Asserts that a group of held-out rows has `rows` rows and a mean absolute error within `bound`.
fn assert_group(what: &str, errors: &[f64], rows: usize, bound: f64) {
    let (mean, _) = summary(errors);
    assert!(errors.len() == rows && mean <= bound, "{what}: {} rows, mean {:.1}%", errors.len(), 100.0 * mean);
}

#[test]
fn every_shipped_row_says_where_it_comes_from() {
    // A user's runs file (`anychip plan check`) may leave these out; the shipped rows may not:
    // cross-validation holds rows out by `group`, and `source`, `published` and `assumed` are
    // how a reader checks a row.
    let all = anychip_plan::validation::rows().into_iter().chain(anychip_plan::validation::held_out_rows());
    for r in all {
        let missing: Vec<&str> =
            [("group", &r.group), ("source", &r.source), ("published", &r.published), ("assumed", &r.assumed)]
                .iter()
                .filter(|(_, v)| v.trim().is_empty())
                .map(|(k, _)| *k)
                .collect();
        assert!(missing.is_empty(), "row {} has no {}", r.id, missing.join(", "));
    }
}

#[test]
fn committed_calibration_is_the_calibrate_output() {
    let want = calibration_file().unwrap();
    let have = include_str!("../data/calibration.toml");
    assert!(
        want == have,
        "data/calibration.toml is stale; run `anychip plan calibrate --out crates/plan/data/calibration.toml`\n{want}"
    );
    let r = calib::shipped_report();
    println!("shipped: {r:?}");
}

#[test]
fn memory_matches_korthikanti_figure_1() {
    println!("{:<18} {:>18} {:>18} {:>18}", "row", "states GiB", "act TP GiB", "act SP+sel GiB");
    let mut worst: f64 = 0.0;
    for r in memory_rows() {
        let (s, a, b) = predict_memory(&r).unwrap();
        let pairs = [(s, r.states_gib), (a, r.act_full_gib), (b, r.act_sp_selective_gib)];
        let cells: Vec<String> = pairs.iter().map(|(p, w)| format!("{p:.2}/{w:.2}")).collect();
        println!("{:<18} {:>18} {:>18} {:>18}", r.id, cells[0], cells[1], cells[2]);
        for (p, w) in pairs {
            worst = worst.max((p / w - 1.0).abs());
        }
    }
    println!("worst memory error {:.1}%", 100.0 * worst);
    assert!(worst <= 0.15, "memory off by {:.1}% (> 15%)", 100.0 * worst);
}

/// Published rows whose layout the memory model still rejects, with why (docs/planner.md,
/// "Memory"). The test fails if one of them starts to fit (shrink the list) or another stops.
const KNOWN_MEMORY_GAPS: &[(&str, &str)] = &[
    ("llama3-405b-8192-cp1", "10 GiB over: recompute not published; the model stores 16-stage 1F1B without recompute"),
    ("llama3-405b-16384-cp1", "as above"),
    ("llama3-405b-16384-cp16", "as above"),
    (
        "bridge-h100-gpt-oss-120b-bf16-64",
        "with the recipe's layernorm and moe_act recompute: 4 micro-batches of 16k tokens in flight and 24 GiB of FP32 logits",
    ),
    (
        "bridge-gb200-llama3-405b-fp8-cs-256",
        "6.5 GiB over in FP8 (the MXFP8 rows of the same layout fit): activations of 16-stage interleaved 1F1B; the recipe's memory savings are not published",
    ),
    ("bridge26-gb200-llama3-405b-fp8-256", "as above"),
    ("bridge-26.02.01-gb200-llama3-405b-fp8-256", "as above"),
    ("bridge-26.04-gb200-llama3-405b-fp8-256", "as above"),
    ("bridge-26.04.01-gb200-llama3-405b-fp8-256", "as above"),
    ("bridge-26.06-gb200-llama3-405b-fp8-256", "as above"),
    (
        "bridge-26.02.01-gb300-llama3-70b-mxfp8-64",
        "the table prints micro-batch 2 without interleaving; the recipe at v0.3.1 runs VP 5 at micro-batch 1",
    ),
    ("bridge-26.02.01-gb300-llama3-70b-nvfp4-64", "as above (the NVFP4 recipe at v0.3.1: PP 4, VP 5, micro-batch 1)"),
    (
        "mz-gb200-qwen3-235b-a22b-mxfp8-256",
        "the command offloads the expert_fc1 and moe_act activations to Grace memory; the source notes the layout needs it",
    ),
    (
        "maxtext-tpu-v5p-32b-64",
        "MaxText's 'minimal' remat keeps only the matmul outputs (checkpoint_dots); the model stores Korthikanti's full activation set",
    ),
    ("maxtext-tpu-v5p-64b-64", "as above"),
    ("maxtext-tpu-v5p-128b-128", "as above"),
    ("maxtext-tpu-v5p-128b-256", "as above"),
    ("maxtext-tpu-v5p-256b-512", "as above"),
    (
        "maxtext-tpu-v5e-32b-256",
        "0.5-2.5 GiB over on a 16 GiB chip: the model's 3 GiB reserve is a CUDA context and NCCL buffers a TPU does not have",
    ),
    ("maxtext-tpu-v5e-64b-256", "as above"),
    ("maxtext-tpu-v5e-128b-256", "as above"),
    (
        "deepseek-v3-h800-2048",
        "report section 3.3: with its RMSNorm/MLA up-projection recompute, still FP8-cached activations and BF16 Adam moments",
    ),
    (
        "mlperf41-gpt3-nvidia-h100-256",
        "0.8 GiB over: FP8 parameters (FP8_PARAMS / FP8_PARAM_GATHER in the MLPerf configs) keep the weights in FP8, the model keeps them in BF16",
    ),
    (
        "foundry-a100-mpt-30b-bf16-8192-8-mb1",
        "1.4 GiB (2%) over on A100 80GB, not explained (MPT trains without dropout, so no masks are counted)",
    ),
    (
        "intel-gaudi2-llama31-70b-fp8-64",
        "0.4 GiB (0.5%) over on Gaudi2: the model holds the cached FP8 weight copies (HL_USE_CACHE_FP8_WEIGHT) beside the BF16 weights and a whole FP32 gradient buffer; what the HPU graph compiler frees between them is not published",
    ),
];

/// The id whose memory gap a row shares: a MaxText multi-slice row (`<id>x<slices>`) holds the
/// same states and activations per chip as its one-slice row `<id>` (hybrid sharding keeps one
/// copy per slice), so it shares that row's entry in [`KNOWN_MEMORY_GAPS`].
fn one_slice_row(row: &anychip_plan::validation::Row) -> &str {
    match row.id.rsplit_once('x') {
        Some((base, n)) if row.shard > 0 && n.parse::<usize>().is_ok() => base,
        _ => &row.id,
    }
}

#[test]
fn published_layouts_fit_in_memory() {
    let rows = prepare().unwrap();
    let k = calib::shipped();
    let mut wrong = Vec::new();
    for r in &rows {
        let e = r.estimate(&k).unwrap();
        let gap = KNOWN_MEMORY_GAPS.iter().any(|(id, _)| *id == one_slice_row(&r.row));
        if e.fits() == gap {
            wrong.push(format!(
                "{}: {:.1} of {:.1} GiB ({})",
                r.row.id,
                e.memory.total() / anychip_plan::chips::GIB,
                e.capacity / anychip_plan::chips::GIB,
                if gap {
                    "listed as a known gap but fits now: remove it from the list"
                } else {
                    "ran, but is rejected"
                }
            ));
        }
    }
    assert!(wrong.is_empty(), "published layouts the memory model gets wrong:\n{}", wrong.join("\n"));
}
