//! What a stack's kernels cost: FlashAttention-2-class attention on chips with asynchronous
//! tensor cores, and the loss's logits with and without a fused cross-entropy.

use anychip_plan::calib;
use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::{estimate, Estimate, Job, Precision, Rates};
use anychip_plan::search::parse_layout;
use anychip_plan::stack::{self, Stack};

fn run(chip: &str, st: &Stack) -> Estimate {
    let m = model::resolve("llama3-8b").unwrap();
    let chip = ChipDb::builtin().find(chip).unwrap().clone();
    let k = calib::shipped();
    let l = parse_layout("tp=1,pp=1,mb=1,zero=3", 8).unwrap();
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 8, precision: Precision::Bf16 };
    let rates = Rates::of(&chip, &k, l.chips(), Precision::Bf16).unwrap();
    estimate(&job, &l, &rates, &k, st, f64::INFINITY).unwrap()
}

#[test]
fn sync_mma_attention_is_slower_only_where_the_chip_has_faster_kernels() {
    let fa2 = stack::find("torchtitan-2024").unwrap();
    assert!(fa2.sync_mma_attention);
    let fa3 = Stack { sync_mma_attention: false, ..fa2.clone() };
    // H100: FlashAttention-2 reaches 0.56 of FlashAttention-3, so the step grows by the
    // attention's time x (1 / 0.56 - 1); an A100 has no faster kernel to lose.
    let (h_fa2, h_fa3) = (run("h100", &fa2).time.compute, run("h100", &fa3).time.compute);
    assert!(h_fa2 > 1.05 * h_fa3, "H100: {h_fa2} vs {h_fa3}");
    let (a_fa2, a_fa3) = (run("a100", &fa2).time.compute, run("a100", &fa3).time.compute);
    assert_eq!(a_fa2, a_fa3);
}

#[test]
fn a_fused_cross_entropy_keeps_half_the_logit_bytes() {
    let unfused = stack::find("torchtitan-2024").unwrap();
    assert!(!unfused.fused_cross_entropy);
    let fused = Stack { fused_cross_entropy: true, ..unfused.clone() };
    let (u, f) = (run("h100", &unfused).memory.logits, run("h100", &fused).memory.logits);
    // 8,192 tokens x 128,256 logits: 8 bytes each unfused, 4 fused.
    let logits = 8192.0 * 128256.0;
    assert!((u / (8.0 * logits) - 1.0).abs() < 1e-9, "unfused {u}");
    assert!((f / (4.0 * logits) - 1.0).abs() < 1e-9, "fused {f}");
}
