//! Property: over many random jobs (model, chip, count, stack, precision, sequence), no layout the
//! planner recommends needs more memory than the chip can use or is one its stack cannot run, and
//! its ZeRO-3 memory holds the gathered weights its time assumes.

use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::Precision;
use anychip_plan::search::{search, Request};
use anychip_plan::stack;

/// A small deterministic generator (SplitMix64), so a failure reproduces.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn pick<'a, T>(&mut self, xs: &'a [T]) -> &'a T {
        &xs[(self.next() % xs.len() as u64) as usize]
    }
}

#[test]
fn recommended_layouts_fit_in_memory() {
    let db = ChipDb::builtin();
    let models = [
        "llama3-8b",
        "llama3-70b",
        "qwen3-32b",
        "gpt3-175b",
        "qwen3-30b-a3b",
        "gpt-oss-120b",
        "llama2-13b",
        "nemotron-3-nano",
        "qwen3-next-80b-a3b",
    ];
    let chips = ["h100", "a100", "h20", "b200", "mi300x", "gaudi2", "gb200"];
    let stacks = [
        "unknown",
        "megatron-core-2024",
        "nemo-2025",
        "deepspeed-zero3",
        "pytorch-fsdp",
        "llama3-2024",
        "megatron-deepspeed",
        "torchtitan-2024",
    ];
    let counts = [8, 16, 32, 64, 128, 256];
    let seqs = [2048, 4096, 8192];
    let mut rng = Rng(18);
    let (mut planned, mut refused, mut partial, mut near_misses) = (0, 0, 0, 0);
    for _ in 0..40 {
        let m = model::resolve(rng.pick::<&str>(&models)).unwrap();
        let chip = db.find(rng.pick::<&str>(&chips)).unwrap();
        let st = stack::find(rng.pick::<&str>(&stacks)).unwrap();
        let precision = if chip.get("fp8_tflops").is_some() && rng.next().is_multiple_of(2) {
            Precision::Fp8
        } else {
            Precision::Bf16
        };
        let req = Request {
            model: m,
            count: *rng.pick(&counts[..]),
            tokens: 1e12,
            seq: *rng.pick(&seqs[..]),
            global_batch: None,
            precision,
            stack: st,
            pinned: None,
        };
        let plan = match search(&req, chip) {
            Ok(p) => p,
            Err(e) => {
                // Refusing is allowed only for a job that does not fit at all.
                assert!(e.to_string().contains("does not fit"), "{e}");
                refused += 1;
                continue;
            }
        };
        planned += 1;
        partial += plan.ranked.iter().filter(|r| r.estimate.layout.recompute_layers > 0).count();
        for r in &plan.ranked {
            let e = &r.estimate;
            assert!(
                e.memory.total() <= e.capacity,
                "{} on {} x {}: {} needs {:.1} GiB of {:.1}",
                plan.model,
                plan.count,
                plan.chip,
                e.layout,
                e.memory.total() / (1u64 << 30) as f64,
                e.capacity / (1u64 << 30) as f64
            );
            assert_eq!(e.layout.zero == 3, e.memory.gathered > 0.0, "{}: gathered weights vs zero stage", e.layout);
            assert_eq!(e.layout.offload, 0, "{}: the search never offloads", e.layout);
            assert!(req.stack.check_runs(&e.layout).is_ok(), "{}: {} cannot run it", e.layout, plan.stack);
        }
        // The near misses `plan` prints: faster than the best, over the chip, least memory first.
        let best = &plan.ranked[0].estimate;
        let gib = best.capacity / (1u64 << 30) as f64;
        assert!(plan.near_misses.len() <= 3);
        for (i, r) in plan.near_misses.iter().enumerate() {
            assert!(r.tokens_per_s > best.tokens_per_s && r.memory_gib > gib, "{}: not a faster misfit", r.layout);
            assert!(i == 0 || plan.near_misses[i - 1].memory_gib <= r.memory_gib, "near misses out of order");
        }
        near_misses += plan.near_misses.len();
    }
    println!("{planned} jobs planned, {refused} refused, {partial} ranked layouts recompute some layers, {near_misses} near misses");
    assert!(near_misses > 0, "no job had a faster layout that does not fit");
    assert!(planned >= 25, "too few jobs planned ({planned}) for the property to mean much");
    // The layouts the search adds at the memory edge (the fewest recomputed layers that fit)
    // are among those checked.
    assert!(partial > 0, "no partial recompute among the ranked layouts");
}

#[test]
fn every_preset_plans_to_finite_numbers() {
    // Each preset's best layouts on 64 H100 (or its one-line refusal): a step, throughput and
    // memory that are finite and positive. A block of zero width priced as a GEMM once made a
    // hybrid's whole step NaN.
    let chip = ChipDb::builtin().find("h100").unwrap().clone();
    for name in model::preset_names() {
        let m = model::resolve(&name).unwrap();
        let seq = model::default_seq(&m);
        let req = Request {
            model: m,
            count: 64,
            tokens: 1e12,
            seq,
            global_batch: None,
            precision: Precision::Bf16,
            stack: stack::find("nemo-2025").unwrap(),
            pinned: None,
        };
        let plan = match search(&req, &chip) {
            Ok(p) => p,
            Err(e) => {
                assert!(e.to_string().contains("does not fit") || e.to_string().contains("layout"), "{name}: {e}");
                continue;
            }
        };
        for r in &plan.ranked {
            let e = &r.estimate;
            let values = [e.time.total(), e.tokens_per_s, e.mfu, e.memory.total()];
            assert!(values.iter().all(|v| v.is_finite() && *v > 0.0), "{name} {}: {values:?}", e.layout);
        }
    }
}
