use super::*;

#[test]
fn a_fused_loss_moves_the_logits_three_times() {
    let k = Constants::prior();
    let m = crate::model::resolve("llama-30m").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let chip = db.find("h20").unwrap();
    let job = Job { arch: &m.arch, seq: 256, global_batch: 32, precision: Precision::Bf16 };
    let l = Layout { mb: 32, ..Layout::data_parallel(1) };
    let r = Rates::of(chip, &k, 1, Precision::Bf16).unwrap();
    let fused = crate::stack::find("nemo-2025").unwrap();
    let unfused = crate::stack::Stack { fused_cross_entropy: false, ..fused.clone() };
    let step = |st: &Stack| estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.total();
    // 32 x 256 tokens x the vocabulary in FP32: 3 passes fused, 3 x 3 x elementwise_passes unfused.
    let logits = 32.0 * 256.0 * m.arch.vocab as f64 * 4.0;
    let want = (9.0 * k.elementwise_passes - 3.0) * logits / r.mem_bw;
    let got = step(&unfused) - step(&fused);
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
}

#[test]
fn schedules_price_their_published_bubbles() {
    // F = B = W = 1 a micro-batch on 8 stages (t_mb 3, forward 1, weight gradients 1):
    // 1F1B (p-1)(F+B+W) = 21; ZB-H1 (p-1)(F+B-W) = 7; ZB-H2 (p-1)(F+B-2W) = 0 (Qi et al.,
    // Table 1); DualPipe (p/2-1)(F&B+B-3W) in chunk times (half a rank's: F&B 1.5, B 1,
    // W 0.5) = 3 (DeepSeek-V3 report, Table 2); interleaving over 2 chunks halves 1F1B's.
    let b = |s: Schedule, v: f64| s.bubble(3.0, 1.0, 1.0, 8.0, v, 64.0);
    assert_eq!(
        [b(Schedule::OneFOneB, 1.0), b(Schedule::OneFOneB, 2.0), b(Schedule::ZbH1, 1.0), b(Schedule::ZbH2, 1.0)],
        [21.0, 10.5, 7.0, 0.0]
    );
    assert!((b(Schedule::DualPipe, 1.0) - 3.0).abs() < 1e-12);
    // With 7 micro-batches or more every idle slot is filled; with 2, the B-only backward
    // chain saves (p-1)W = 7 and the filling 2/7 of the other 7: 21 - 7 - 2 = 12.
    assert_eq!(Schedule::ZbH1.bubble(3.0, 1.0, 1.0, 8.0, 1.0, 7.0), 7.0);
    assert!((Schedule::ZbH1.bubble(3.0, 1.0, 1.0, 8.0, 1.0, 2.0) - 12.0).abs() < 1e-12);
    for s in ["1f1b", "zb-h1", "zb-h2", "dualpipe"] {
        assert_eq!(Schedule::parse(s).unwrap().to_string(), s);
    }
    assert!(Schedule::parse("zb-v").is_err());
}

#[test]
fn zero_bubble_schedules_trade_bubble_for_memory_as_published() {
    // Llama 3 8B on 8 H100 in 8 stages, 64 micro-batches: the weight gradients W come off the
    // bubble twice under ZB-H1 and once more under ZB-H2, so 1F1B - ZB-H1 = 2 (ZB-H1 - ZB-H2);
    // ZB-H1 keeps 1F1B's memory, ZB-H2 holds 2p - 1 micro-batches where 1F1B holds p, and
    // DualPipe p + 1 and its stage's weights and gradients twice.
    let k = Constants::prior();
    let m = crate::model::resolve("llama3-8b").unwrap();
    let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
    let st = crate::stack::find("megatron-core-2024").unwrap();
    let run = |schedule| h100_job(&job, &k, &st, Layout { pp: 8, dp: 1, schedule, ..Layout::data_parallel(1) });
    let [one, h1, h2, dual] = [Schedule::OneFOneB, Schedule::ZbH1, Schedule::ZbH2, Schedule::DualPipe].map(run);
    let (b1, bh1, bh2) = (one.time.bubble, h1.time.bubble, h2.time.bubble);
    assert!(b1 > bh1 && bh1 > bh2 && bh2 > 0.0, "{b1} {bh1} {bh2}");
    assert!(((b1 - bh1) - 2.0 * (bh1 - bh2)).abs() < 1e-9 * b1, "{b1} {bh1} {bh2}");
    assert!(dual.time.bubble < bh1, "{dual:?}");
    let act = one.memory.activations;
    assert_eq!(h1.memory.activations, act);
    assert!((h2.memory.activations / act - 15.0 / 8.0).abs() < 1e-9, "{:?}", h2.memory);
    assert!((dual.memory.activations / act - 9.0 / 8.0).abs() < 1e-9, "{:?}", dual.memory);
    assert_eq!(dual.memory.weights, 2.0 * one.memory.weights);
    assert_eq!(dual.memory.optimizer, one.memory.optimizer);
}

#[test]
fn an_uneven_pipeline_split_prices_the_stage_that_binds() {
    // Llama 3 8B (32 layers; its LM head and loss about three layers' time) over 4 stages of
    // 8 H100.
    // Every per-micro-batch cost is linear in a stage's layers, so: with the last stage at 2
    // layers a middle one of ceil(30 / 3) = 10 binds, with first 9 and last 5 one of 9 (the
    // last stage's 5 and the head come to less), 10 / 9 of it; with first 6 and last 8 the
    // middle stages hold 9, but the last stage's 8 and the head bind, as in the even split.
    let k = Constants::prior();
    let m = crate::model::resolve("llama3-8b").unwrap();
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
    let st = crate::stack::find("megatron-core-2024").unwrap();
    let at = |first, last| {
        let l = Layout { pp: 4, dp: 2, first_layers: first, last_layers: last, ..Layout::data_parallel(8) };
        h100_job(&job, &k, &st, l)
    };
    let compute = |e: &Estimate| e.time.compute;
    let (even, ten, nine, same) = (at(None, None), at(None, Some(2)), at(Some(9), Some(5)), at(Some(6), Some(8)));
    assert!((compute(&ten) / compute(&nine) - 10.0 / 9.0).abs() < 1e-9, "{ten:?} {nine:?}");
    assert!(compute(&nine) < compute(&even), "{even:?}");
    assert_eq!(compute(&same), compute(&even));
    // The first stage's p micro-batches in flight hold the memory: 9 layers' worth against 8.
    let act = |e: &Estimate| e.memory.activations;
    assert!((act(&nine) / act(&even) - 9.0 / 8.0).abs() < 1e-9, "{:?} {:?}", nine.memory, even.memory);
}

#[test]
fn a_megatron_core_stack_balances_the_splits_it_must() {
    // Layers that do not divide over the pp x vp chunks: Megatron-Core's recipes count the
    // embedding and the loss as layers (Llama 3.1 405B's 126 at pp 8, vp 8: 15 on the end
    // stages, 16 between; Qwen3-235B-A22B's 94 at pp 8, vp 4: 11), or give DeepSeek-V3's 61
    // a layout whose last chunk holds one layer (the last rank 64/pp - 3: 1 at pp 16, 13 at
    // pp 4 with vp 4). Layers that divide run the even split, and a stack that does not
    // balance (the default `unknown`) keeps ceil(layers / pp) on every stage.
    let nemo = crate::stack::find("nemo-2025").unwrap();
    let unknown = crate::stack::find("unknown").unwrap();
    let split = |model: &str, pp, v, st: &Stack| {
        let layers = crate::model::resolve(model).unwrap().arch.layers;
        let l = Layout { pp, v, ..Layout::data_parallel(1) }.balanced_on(layers, st);
        (l.first_layers, l.last_layers)
    };
    assert_eq!(split("llama3-405b", 8, 8, &nemo), (Some(15), Some(15)));
    assert_eq!(split("llama3-405b", 16, 4, &nemo), (Some(7), Some(7)));
    assert_eq!(split("qwen3-235b-a22b", 8, 4, &nemo), (Some(11), Some(11)));
    assert_eq!(split("deepseek-v3", 16, 1, &nemo), (None, Some(1)));
    assert_eq!(split("deepseek-v3", 4, 4, &nemo), (None, Some(13)));
    assert_eq!(split("llama3-8b", 4, 1, &nemo), (None, None));
    assert_eq!(split("llama3-70b", 2, 1, &nemo), (None, None));
    assert_eq!(split("llama3-405b", 8, 8, &unknown), (None, None));
    // A layout that names its split keeps it.
    let named = Layout { pp: 8, v: 8, first_layers: Some(14), ..Layout::data_parallel(1) };
    assert_eq!(named.balanced_on(126, &nemo), named);
}

#[test]
fn shared_experts_hide_the_all_to_all_only_where_the_stack_overlaps_them() {
    // DeepSeek-V3 (one shared expert) at EP 8 on 8 H100: with moe_shared_expert_overlap the
    // dispatch and combine run under the shared expert's GEMMs, so less of them shows, and
    // nothing else moves; Qwen3-30B-A3B has no shared expert to hide under; a flex
    // dispatcher (DeepEP) does not take the overlap.
    let k = Constants::prior();
    let plain = crate::stack::find("nemo-2025").unwrap();
    let shared = crate::stack::find("nemo-2025-shared-overlap").unwrap();
    let flex = crate::stack::find("nemo-2025-flex").unwrap();
    let flex_shared = Stack { shared_expert_overlap: true, ..flex.clone() };
    let step = |model: &str, st: &Stack| {
        let m = crate::model::resolve(model).unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        h100_job(&job, &k, st, Layout { ep: 8, ..Layout::data_parallel(8) }).time
    };
    let (a, b) = (step("deepseek-v3", &plain), step("deepseek-v3", &shared));
    assert!(b.ep_comm < 0.9 * a.ep_comm && b.ep_comm > 0.0, "{} -> {}", a.ep_comm, b.ep_comm);
    assert_eq!((a.compute, a.dp_comm), (b.compute, b.dp_comm));
    let (q, qs) = (step("qwen3-30b-a3b", &plain), step("qwen3-30b-a3b", &shared));
    assert_eq!(q.ep_comm, qs.ep_comm);
    assert_eq!(step("deepseek-v3", &flex).ep_comm, step("deepseek-v3", &flex_shared).ep_comm);
}

#[test]
fn an_uneven_split_that_cannot_place_the_layers_is_one_line() {
    let m = crate::model::resolve("llama3-8b").unwrap();
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
    let bad = |pp, first, last| {
        let l = Layout { pp, dp: 8 / pp, first_layers: first, last_layers: last, ..Layout::data_parallel(8) };
        check_layout(&job, &l).unwrap_err().to_string()
    };
    assert!(bad(1, Some(4), None).contains("give pp=2 or more"));
    assert!(bad(4, Some(0), None).contains("give 1 or more"));
    assert!(bad(4, Some(20), Some(12)).contains("leaving 0 for the other 2 stages"));
    assert!(bad(2, Some(20), Some(10)).contains("first + last = layers"));
    let ok = Layout { pp: 2, dp: 4, first_layers: Some(15), last_layers: Some(17), ..Layout::data_parallel(8) };
    check_layout(&job, &ok).unwrap();
    assert_eq!(ok.to_string(), "tp1 pp2 dp4 mb1 rc:none zero0 first:15 last:17");
}

#[test]
fn under_pipeline_parallelism_the_peak_stage_holds_the_memory() {
    // Llama 3 8B on 8 H100 at 8k tokens, at least p micro-batches a step per replica: the
    // first stage keeps p micro-batches of its 32 / p layers in flight (32 layer-micro-batches
    // at any p), the last stage one and the logits; the chip needs the larger, not both.
    let k = Constants::prior();
    let m = crate::model::resolve("llama3-8b").unwrap();
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: Precision::Bf16 };
    let st = crate::stack::find("megatron-core-2024").unwrap();
    let mem = |pp: usize| h100_job(&job, &k, &st, Layout { pp, dp: 8 / pp, ..Layout::data_parallel(8) }).memory;
    let one = mem(1);
    let (act, logits) = (one.activations, one.logits);
    assert!(logits > 0.0, "{one:?}");
    for pp in [2, 4, 8] {
        let m = mem(pp);
        let (first, last) = (act, act / pp as f64 + logits);
        let want = first.max(last);
        assert!(((m.activations + m.logits) / want - 1.0).abs() < 1e-9, "pp {pp}: {m:?}, want {want}");
        assert_eq!(m.logits > 0.0, last > first, "pp {pp}: the logits count only when the last stage binds");
    }
}

#[test]
fn dropout_masks_are_stored_only_when_the_recipe_trains_with_dropout() {
    // llama-30m, one chip, one micro-batch of 4 x 256 tokens, nothing recomputed: each layer
    // keeps its two 1-byte masks of h per token (2 b s h), and with unfused attention the
    // scores' mask and dropped copy too (3 a s^2 b).
    let k = Constants::prior();
    let m = crate::model::resolve("llama-30m").unwrap();
    let job = Job { arch: &m.arch, seq: 256, global_batch: 4, precision: Precision::Bf16 };
    let l = Layout { mb: 4, ..Layout::data_parallel(1) };
    let stored = |st: &Stack| h100_job(&job, &k, st, l).memory.activations;
    let (a, tok, s) = (&m.arch, 4.0 * 256.0, 256.0);
    for (name, scores) in [("nemo-2025", 0.0), ("megatron-2021", 3.0 * a.heads as f64 * s)] {
        let with = Stack { dropout: true, ..crate::stack::find(name).unwrap() };
        let without = Stack { dropout: false, ..with.clone() };
        let want = a.layers as f64 * tok * (2.0 * a.d_model as f64 + scores);
        let got = stored(&with) - stored(&without);
        assert!((got / want - 1.0).abs() < 1e-9, "{name}: {got} vs {want}");
    }
}

#[test]
fn other_domains_hit_is_the_chance_a_domain_holds_one_of_the_experts() {
    // One expert per token: it is in another of 4 domains with probability 3/4.
    assert!((other_domains_hit(1, 128, 4) - 0.75).abs() < 1e-12);
    assert_eq!(other_domains_hit(8, 128, 1), 0.0);
    // Top-8 of 128 over 2 domains: the other one is missed only if all 8 fall in this one,
    // C(64, 8) / C(128, 8).
    let miss: f64 = (0..8).map(|i| (64.0 - i as f64) / (128.0 - i as f64)).product();
    assert!((other_domains_hit(8, 128, 2) - (1.0 - miss)).abs() < 1e-12);
    // More experts per token than domains: every other domain is hit.
    assert!((other_domains_hit(16, 16, 4) - 3.0).abs() < 1e-12);
}

#[test]
fn a_flex_dispatcher_sends_a_token_across_domains_once_per_domain() {
    let k = Constants::prior();
    let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let chip = db.find("h100").unwrap();
    let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Fp8 };
    let alltoall = crate::stack::find("nemo-2025").unwrap();
    let flex = crate::stack::find("nemo-2025-flex").unwrap();
    let ep_time = |ep: usize, st: &Stack| {
        let l = Layout { ep, zero: 1, ..Layout::data_parallel(16) };
        let r = Rates::of(chip, &k, l.chips(), Precision::Fp8).unwrap();
        estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.ep_comm
    };
    // Inside one 8-GPU domain the dispatchers move the same bytes.
    assert_eq!(ep_time(8, &alltoall), ep_time(8, &flex));
    // Over 2 domains a plain all-to-all sends 8 x 1/2 = 4 copies of a token over the NIC, a
    // flex dispatcher one (the other domain is hit with probability 0.997); NVLink then carries
    // the fan-out, still below the NIC time, so the NIC part sets the ratio: about 4.
    let ratio = ep_time(16, &alltoall) / ep_time(16, &flex);
    assert!((3.5..4.1).contains(&ratio), "all-to-all / flex over 2 domains: {ratio}");
}

#[test]
fn expert_biases_and_clamp_cost_their_unfused_traffic_unless_the_mlp_is_fused() {
    let k = Constants::prior();
    let m = crate::model::resolve("gpt-oss-120b").unwrap();
    let plain = {
        let mut a = m.arch.clone();
        a.moe = a.moe.map(|x| crate::model::Moe { expert_bias: false, clamped_activation: false, ..x });
        a
    };
    let db = crate::chips::ChipDb::builtin();
    let chip = db.find("b200").unwrap();
    let l = Layout { ep: 8, zero: 1, ..Layout::data_parallel(8) };
    let r = Rates::of(chip, &k, l.chips(), Precision::Bf16).unwrap();
    let unfused = crate::stack::find("nemo-2025").unwrap();
    let fused = crate::stack::find("nemo-2026-fused-mlp").unwrap();
    let step_in = |a: &Arch, st: &Stack, precision: Precision| {
        let r = Rates::of(chip, &k, l.chips(), precision).unwrap();
        let job = Job { arch: a, seq: 4096, global_batch: 8, precision };
        estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
    };
    let step = |a: &Arch, st: &Stack| step_in(a, st, Precision::Bf16);
    // One micro-batch of 4096 tokens, top-4, 36 layers: (16 + 20) fe bytes of clamp per
    // routed copy, and of bias (12 + 12) h with BF16 probabilities (plain all-to-all) or
    // (28 + 36) h with FP32 ones (flex dispatcher), at the streaming bandwidth.
    let (h, fe) = (2880.0, 2880.0);
    let copies = 36.0 * 4096.0 * 4.0 / (r.mem_bw * MEM_BW_EFF);
    let got = step(&m.arch, &unfused) - step(&plain, &unfused);
    let want = copies * (36.0 * fe + 24.0 * h);
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    let flex = crate::stack::find("nemo-2025-flex").unwrap();
    let got = step(&m.arch, &flex) - step(&plain, &flex);
    let want = copies * (36.0 * fe + 64.0 * h);
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    // The fused grouped MLP applies bias and clamp inside its kernels, but Transformer Engine
    // fuses it only under an MXFP8 recipe: in BF16 the fused stack pays them like any other
    // flex-dispatcher stack, in FP8 not at all.
    let got = step(&m.arch, &fused) - step(&plain, &fused);
    assert!((got / want - 1.0).abs() < 1e-9, "{got} vs {want}");
    let fp8 = Precision::Fp8;
    assert_eq!(step_in(&m.arch, &fused, fp8), step_in(&plain, &fused, fp8));
}

#[test]
fn a_fused_expert_mlp_drops_activation_passes_casts_and_per_expert_launches_in_fp8() {
    let k = Constants::prior();
    let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let chip = db.find("b200").unwrap();
    let l = Layout { ep: 8, zero: 1, ..Layout::data_parallel(8) };
    let unfused = crate::stack::find("nemo-2025-a2a-overlap-flex").unwrap();
    let fused = Stack { fused_expert_mlp: true, ..unfused.clone() };
    let compute = |st: &Stack, precision: Precision| {
        let r = Rates::of(chip, &k, l.chips(), precision).unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 8, precision };
        (estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute, r.mem_bw)
    };
    // One micro-batch of 4096 tokens, top-8, 48 MoE layers: per routed copy the gate/up outputs
    // and the activation's output (6 fe bytes) leave the moe_passes traffic (forward and twice
    // backward), the down projection's input (fe elements) its three FP8 casts of 5 bytes, and
    // the 16 local experts of each layer their own launch and drain.
    let (with, bw) = compute(&fused, Precision::Fp8);
    let (without, _) = compute(&unfused, Precision::Fp8);
    let fe = 768.0;
    let copies = 48.0 * 4096.0 * 8.0;
    let want = copies * (k.moe_passes * 6.0 * fe * 3.0 + 15.0 * fe) / bw + 48.0 * 16.0 * k.expert_overhead_us * 1e-6;
    assert!(((without - with) / want - 1.0).abs() < 1e-9, "{} vs {want}", without - with);
    // Replaying the iteration as one CUDA graph drops the per-layer launches.
    let graph = Stack { full_iteration_cuda_graph: true, ..fused.clone() };
    let saved = with - compute(&graph, Precision::Fp8).0;
    assert!((saved / (48.0 * k.layer_overhead_us * 1e-6) - 1.0).abs() < 1e-9, "{saved}");
    // Transformer Engine fuses the grouped MLP only under an MXFP8 recipe: nothing changes in BF16.
    assert_eq!(compute(&fused, Precision::Bf16).0, compute(&unfused, Precision::Bf16).0);
}

#[test]
fn fp4_gemms_run_at_their_own_efficiency_and_fp8_and_int8_at_fp8s() {
    let m = crate::model::resolve("llama3-70b").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let st = crate::stack::find("nemo-2025").unwrap();
    let l = Layout { tp: 4, ..Layout::data_parallel(1) };
    let compute = |chip: &str, precision: Precision, k: &Constants| {
        let r = Rates::of(db.find(chip).unwrap(), k, 4, precision).unwrap();
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision };
        estimate(&job, &l, &r, k, &st, f64::INFINITY).unwrap().time.compute
    };
    let base = Constants::prior();
    let fp8_slower = Constants { fp8_gemm_eff: base.fp8_gemm_eff / 2.0, ..base.clone() };
    let fp4_slower = Constants { fp4_gemm_eff: base.fp4_gemm_eff / 2.0, ..base.clone() };
    // Each quantized format reads its own efficiency and only its own.
    assert_eq!(compute("gb200", Precision::Fp4, &base), compute("gb200", Precision::Fp4, &fp8_slower));
    assert!(compute("gb200", Precision::Fp4, &fp4_slower) > 1.2 * compute("gb200", Precision::Fp4, &base));
    assert_eq!(compute("gb200", Precision::Fp8, &base), compute("gb200", Precision::Fp8, &fp4_slower));
    assert!(compute("gb200", Precision::Fp8, &fp8_slower) > 1.2 * compute("gb200", Precision::Fp8, &base));
    assert!(compute("tpu-v5e", Precision::Int8, &fp8_slower) > 1.2 * compute("tpu-v5e", Precision::Int8, &base));
}

#[test]
fn fp8_attention_runs_at_the_fp8_gemm_rate_only_in_fp8_training() {
    let k = Constants::prior();
    let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let chip = db.find("gb200").unwrap();
    let l = Layout { recompute: Recompute::Selective, ..Layout::data_parallel(1) };
    let bf16_attn = crate::stack::find("nemo-2026-fused-mlp").unwrap();
    let fp8_attn = crate::stack::find("nemo-2026-fused-mlp-fp8-attn").unwrap();
    let recompute = |st: &Stack, precision: Precision| {
        let r = Rates::of(chip, &k, 1, precision).unwrap();
        let job = Job { arch: &m.arch, seq: 4096, global_batch: 1, precision };
        estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.recompute
    };
    // Selective recompute reruns exactly the attention core's forward: its products run in
    // FP8 at 5000 x fp8_gemm_eff instead of 2500 TFLOP/s on a GB200; its softmax exponentials
    // (one per causal score of each of the 32 heads, 48 layers) stay on the SFUs, under the
    // products in both (cuDNN's asynchronous kernels).
    let exps = 48.0 * 4096.0 * 2048.0 * 32.0 / (chip.get("sfu_exp_tops").unwrap() * 1e12);
    let fp8 = recompute(&fp8_attn, Precision::Fp8);
    assert!(fp8 > exps, "{fp8} {exps}");
    let ratio = recompute(&bf16_attn, Precision::Fp8) / fp8;
    assert!((ratio / (2.0 * k.fp8_gemm_eff) - 1.0).abs() < 1e-9, "{ratio}");
    assert_eq!(recompute(&bf16_attn, Precision::Bf16), recompute(&fp8_attn, Precision::Bf16));
}

#[test]
fn softmax_exponentials_hide_under_asynchronous_attention_and_add_to_synchronous() {
    let k = Constants::prior();
    let m = crate::model::resolve("llama3-8b").unwrap();
    let db = crate::chips::ChipDb::builtin();
    let cudnn = crate::stack::find("nemo-2025").unwrap();
    let fa2 = Stack { sync_mma_attention: true, ..cudnn.clone() };
    let l = Layout::data_parallel(1);
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision: Precision::Bf16 };
    // The step's compute on `chip` under `st`, the chip's SFU rate divided by `slower`
    // (infinity: no exponentials at all).
    let compute = |chip: &str, st: &Stack, slower: f64| {
        let r = Rates::of(db.find(chip).unwrap(), &k, 1, Precision::Bf16).unwrap();
        let r = Rates { exp_rate: r.exp_rate.filter(|_| slower.is_finite()).map(|e| e / slower), ..r };
        estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
    };
    let none = f64::INFINITY;
    // An H100's SFUs keep up with its tensor cores at attn_eff: under cuDNN's asynchronous
    // kernels the exponentials cost nothing more; after FlashAttention-2's products they do,
    // and on an A100, whose tensor cores are all warp-synchronous, after any kernel's.
    assert_eq!(compute("h100", &cudnn, 1.0), compute("h100", &cudnn, none));
    assert!(compute("h100", &fa2, 1.0) > compute("h100", &fa2, none));
    assert!(compute("a100", &cudnn, 1.0) > compute("a100", &cudnn, none));
    // SFUs a hundred times slower set the asynchronous kernel's pace.
    assert!(compute("h100", &cudnn, 100.0) > 1.5 * compute("h100", &cudnn, none));
}

#[test]
fn the_cudnn_of_2025_gains_only_on_its_stacks_and_asynchronous_kernels() {
    let m = crate::model::resolve("llama3-8b").unwrap();
    let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
    let l = Layout::data_parallel(1);
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 1, precision: Precision::Bf16 };
    let compute = |st: &Stack, gain: f64| {
        let k = Constants { attn_gain_2025: gain, ..Constants::prior() };
        let r = Rates::of(&chip, &k, 1, Precision::Bf16).unwrap();
        estimate(&job, &l, &r, &k, st, f64::INFINITY).unwrap().time.compute
    };
    let new = crate::stack::find("nemo-2025").unwrap();
    assert!(new.cudnn_attention_2025);
    let old = crate::stack::find("nemo-2023").unwrap();
    let fa2 = Stack { sync_mma_attention: true, ..new.clone() };
    assert!(compute(&new, 0.5) < compute(&new, 0.0));
    assert_eq!(compute(&old, 0.5), compute(&old, 0.0));
    assert_eq!(compute(&fa2, 0.5), compute(&fa2, 0.0));
}

#[test]
fn a_measured_max_achievable_gemm_rate_caps_the_tensor_clock() {
    let k = Constants::prior();
    let db = crate::chips::ChipDb::builtin();
    let mi325x = db.find("mi325x").unwrap();
    // AMD: 843 TFLOP/s of BF16 GEMM at best, so at gemm_eff the clock is 843 / (1307.4 gemm_eff).
    let want = 843.0 / (1307.4 * k.gemm_eff);
    assert!(want < 1.0 && (power_clock(mi325x, &k) - want).abs() < 1e-12, "{}", power_clock(mi325x, &k));
    assert_eq!(maf_clock(db.find("h100").unwrap(), &k), 1.0);
    // Its large GEMMs then run at that measured rate, not at gemm_eff of the datasheet's peak.
    let r = Rates::of(mi325x, &k, 1, Precision::Bf16).unwrap();
    assert!((r.peak_bf16 * k.gemm_eff / 843e12 - 1.0).abs() < 1e-9, "{}", r.peak_bf16);
}

#[test]
fn a_chip_rated_at_fewer_watts_per_tflop_runs_its_tensor_work_slower() {
    let k = Constants { power_w_per_tflop: 0.56, ..Constants::prior() };
    let db = crate::chips::ChipDb::builtin();
    let (gb200, gb300, h100) = (db.find("gb200").unwrap(), db.find("gb300").unwrap(), db.find("h100").unwrap());
    // Both list 2,500 dense BF16 TFLOP/s; GB200 within 1,200 W, GB300 within 1,400 W
    // (0.56 W per TFLOP/s, the limit here), H100 at 700 W for 989 TFLOP/s.
    let clock = power_clock(gb200, &k);
    assert!((clock - (1200.0 / 2500.0 / 0.56f64).cbrt()).abs() < 1e-12, "{clock}");
    assert!((power_clock(gb300, &k) - 1.0).abs() < 1e-12);
    assert_eq!(power_clock(h100, &k), 1.0);
    let mut unknown = gb200.clone();
    unknown.specs.remove("tdp_w");
    assert_eq!(power_clock(&unknown, &k), 1.0);
    // Tensor work (BF16, FP8, softmax exponentials) runs at the sustained clock; the nominal
    // peak stays what MFU is reported against, and memory bandwidth is not scaled.
    let r = Rates::of(gb200, &k, 1, Precision::Fp8).unwrap();
    assert_eq!(r.nominal_bf16, 2500e12);
    assert!((r.peak_bf16 / (2500e12 * clock) - 1.0).abs() < 1e-12);
    assert!((r.peak_8bit.unwrap() / (5000e12 * clock) - 1.0).abs() < 1e-12);
    assert!((r.exp_rate.unwrap() / (gb200.get("sfu_exp_tops").unwrap() * 1e12 * clock) - 1.0).abs() < 1e-12);
    assert_eq!(r.mem_bw, gb200.get("mem_bw_tbs").unwrap() * 1e12);
}

#[test]
fn data_parallel_buckets_grow_with_the_group_as_megatron_core_sizes_them() {
    // 8B parameters: 200 buckets of 40M over 32 ranks, 32 of 256M over 256; a small model one.
    assert_eq!(dp_buckets(8e9, 32.0), 200.0);
    assert_eq!(dp_buckets(8e9, 256.0), 32.0);
    assert_eq!(dp_buckets(1e6, 8.0), 1.0);
}

#[test]
fn prefetched_zero3_traffic_pays_the_contention_of_any_overlapped_collective() {
    // The overlapped part of a collective costs (1 - hidden) of itself, the rest in full.
    let hidden = |h: f64| Constants { overlap_hidden: h, ..Constants::prior() };
    assert_eq!(exposed(1.0, 2.0, true, &hidden(1.0)), 0.0);
    assert_eq!(exposed(3.0, 2.0, true, &hidden(1.0)), 1.0);
    assert_eq!(exposed(1.0, 2.0, true, &hidden(0.5)), 0.5);
    assert_eq!(exposed(1.0, 2.0, false, &hidden(1.0)), 1.0);
    // Llama 3 8B, ZeRO-3 over one 8-GPU NVLink node at micro-batch 4: every gather and
    // scatter fits in the compute it is prefetched under, so the step pays
    // (1 - overlap_hidden) of what the same traffic costs run serially, as ZeRO-1's buckets do.
    let k = Constants::prior();
    let fsdp = crate::stack::find("pytorch-fsdp").unwrap();
    let serial = Stack { overlap_dp: false, ..fsdp.clone() };
    let l = Layout { zero: 3, mb: 4, ..Layout::data_parallel(8) };
    let (overlapped, alone) = (fsdp_dp_time("llama3-8b", 4096, l, &fsdp), fsdp_dp_time("llama3-8b", 4096, l, &serial));
    assert!(alone > 0.0);
    assert!((overlapped / alone - (1.0 - k.overlap_hidden)).abs() < 1e-9, "{overlapped} against {alone}");
}

/// Exposed data-parallel seconds of a BF16 step of `model` on H100s under `stack`, global
/// batch 64, prior constants.
fn fsdp_dp_time(model: &str, seq: usize, l: Layout, stack: &Stack) -> f64 {
    h100_step(model, seq, &Constants::prior(), stack, l, Precision::Bf16, 64).time.dp_comm
}

/// One step of Llama 3 8B on 64 H100s (seq 4096, global batch 64) under `stack`, prior constants.
fn llama8b_on_64(stack: &str, l: Layout) -> Estimate {
    llama8b_h100(&Constants::prior(), &crate::stack::find(stack).unwrap(), l, Precision::Bf16, 64)
}

/// One step of Llama 3 8B at 4,096 tokens on `l.chips()` H100s.
fn llama8b_h100(k: &Constants, st: &Stack, l: Layout, precision: Precision, global_batch: usize) -> Estimate {
    h100_step("llama3-8b", 4096, k, st, l, precision, global_batch)
}

/// One step of `model` at `seq` tokens on `l.chips()` H100s.
fn h100_step(
    model: &str,
    seq: usize,
    k: &Constants,
    st: &Stack,
    l: Layout,
    precision: Precision,
    global_batch: usize,
) -> Estimate {
    let m = crate::model::resolve(model).unwrap();
    let job = Job { arch: &m.arch, seq, global_batch, precision };
    h100_job(&job, k, st, l)
}

/// `job` on `l.chips()` H100s.
fn h100_job(job: &Job, k: &Constants, st: &Stack, l: Layout) -> Estimate {
    let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
    let r = Rates::of(&chip, k, l.chips(), job.precision).unwrap();
    estimate(job, &l, &r, k, st, f64::INFINITY).unwrap()
}

/// `arch` priced on H100s at `l` under nemo-2025 (BF16, 4,096 tokens, 64 sequences).
fn h100_arch_step(arch: &Arch, l: Layout) -> Estimate {
    let job = Job { arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
    h100_job(&job, &crate::calib::shipped(), &crate::stack::find("nemo-2025").unwrap(), l)
}

/// A hybrid model with `pattern`, Llama 3 8B's widths and small Mamba-2 mixers.
fn hybrid_8b(pattern: &str) -> Arch {
    hybrid_8b_file(pattern).to_arch().unwrap()
}

/// [`hybrid_8b`]'s model file.
fn hybrid_8b_file(pattern: &str) -> crate::model::ModelFile {
    crate::model::ModelFile {
        name: "h".into(),
        arch: "hybrid".into(),
        vocab: 128256,
        layers: pattern.len(),
        heads: 32,
        kv_heads: Some(8),
        d_model: 4096,
        d_ff: Some(14336),
        pattern: Some(pattern.into()),
        mamba_heads: Some(64),
        mamba_head_dim: Some(64),
        mamba_state: Some(128),
        mamba_groups: Some(8),
        ..Default::default()
    }
}

#[test]
fn a_hybrid_of_attention_and_mlp_blocks_prices_as_the_transformer() {
    // 32 layers of attention then MLP, written as a 64-layer hybrid pattern, are Llama 3 8B:
    // the same step to the rounding, the same memory, for a plain and a TP/SP layout with
    // selective recompute modules.
    let llama = crate::model::resolve("llama3-8b").unwrap().arch;
    let hybrid = hybrid_8b(&"*-".repeat(32));
    let sel =
        Layout { tp: 2, sp: true, modules: Modules::parse(["layernorm", "mlp"]).unwrap(), ..Layout::data_parallel(4) };
    for l in [Layout::data_parallel(8), sel] {
        let (a, b) = (h100_arch_step(&llama, l), h100_arch_step(&hybrid, l));
        assert!((a.time.total() / b.time.total() - 1.0).abs() < 1e-9, "{l}: {:?} vs {:?}", a.time, b.time);
        assert!((a.memory.total() / b.memory.total() - 1.0).abs() < 1e-9, "{l}");
    }
    assert_eq!(llama.total_params(), hybrid.total_params());
}

#[test]
fn a_mamba_layer_costs_its_projections_scan_and_stored_stream() {
    // Replacing attention blocks by Mamba-2 mixers changes the step by the difference of the
    // blocks: more projection weights (4096 x (2 x 4096 + 2 x 8 x 128 + 64 + 4096)) than
    // attention's (4096 x 6144), no attention core.
    let attn = h100_arch_step(&hybrid_8b(&"*-".repeat(32)), Layout::data_parallel(8));
    let mamba = h100_arch_step(&hybrid_8b(&"M-".repeat(32)), Layout::data_parallel(8));
    let hy = hybrid_8b("M-").hybrid.unwrap();
    assert_eq!(hy.in_proj_width(), 2 * 4096 + 2 * 8 * 128 + 64);
    // Per token: 8 groups x 2 x 128 x 128 + 64 heads x (2 x 128 x 64 + 4 x 128 x 64).
    assert_eq!(hy.scan_flops_per_token(), 8.0 * 2.0 * 128.0 * 128.0 + 64.0 * (2.0 * 128.0 * 64.0 + 4.0 * 128.0 * 64.0));
    assert!(mamba.time.compute != attn.time.compute);
    assert!(mamba.memory.activations > attn.memory.activations, "the mixer stores its projection's output");
    // Context parallelism over Mamba-2 layers is refused, not priced as attention.
    let job = Job { arch: &hybrid_8b("M-"), seq: 4096, global_batch: 8, precision: Precision::Bf16 };
    let e = check_layout(&job, &Layout { cp: 2, ..Layout::data_parallel(4) }).unwrap_err().to_string();
    assert!(e.contains("Mamba-2"), "{e}");
}

#[test]
fn a_mamba_scan_is_bound_by_the_hbm_traffic_of_its_kernels() {
    // 64 heads of 64, state 128, 8 groups, chunk 128: D = 4096, S = Q = 1024, R = 1. Forward
    // 14 D + 12 R D + 16 S + 8 Q bytes a token, backward 44 D + 34 R D + 56 S + 24 Q.
    let arch = hybrid_8b("M-");
    let hy = arch.hybrid.unwrap();
    let (d, s) = (4096.0, 1024.0);
    assert_eq!(hy.scan_bytes_per_token(), (26.0 * d + 24.0 * s, 78.0 * d + 80.0 * s));
    // On an H100 the ~4 MFLOP a token of the scan take a few nanoseconds at the attention
    // rate; its ~0.5 MB a token take ~190 ns at the measured bandwidth: the traffic prices it.
    let (m, stream) = on_h100(&arch, |cx| (cx.mamba_block(), cx.tok / (cx.r.mem_bw * MEM_BW_EFF)));
    let (fwd, bwd) = hy.scan_bytes_per_token();
    assert!((m.fwd - m.linear_fwd - fwd * stream).abs() < 1e-12, "{} vs {}", m.fwd - m.linear_fwd, fwd * stream);
    assert!((m.bwd - 2.0 * m.linear_fwd - bwd * stream).abs() < 1e-12);
}

/// `f` of the context pricing `arch` on 8 H100s, data parallel, 4,096 tokens a micro-batch,
/// BF16 under nemo-2025 and the shipped constants.
fn on_h100<T>(arch: &Arch, f: impl FnOnce(&Ctx) -> T) -> T {
    on_h100_at(arch, 4096, Layout::data_parallel(8), f)
}

/// [`on_h100`] at `seq` tokens a micro-batch (one sequence) on layout `l`.
fn on_h100_at<T>(arch: &Arch, seq: usize, l: Layout, f: impl FnOnce(&Ctx) -> T) -> T {
    let (k, st) = (crate::calib::shipped(), crate::stack::find("nemo-2025").unwrap());
    let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
    let r = Rates::of(&chip, &k, l.chips(), Precision::Bf16).unwrap();
    let (s, tok) = (seq as f64, seq as f64);
    f(&Ctx { a: arch, l, r: &r, k: &k, stack: &st, precision: Precision::Bf16, s, tok })
}

/// A published config.json fixture (crates/plan/tests/hf_configs) as an architecture.
fn fixture_arch(dir: &str) -> Arch {
    let path = format!("{}/tests/hf_configs/{dir}", env!("CARGO_MANIFEST_DIR"));
    crate::model::resolve(&path).unwrap().arch
}

#[test]
fn sparse_attention_caps_the_core_at_index_topk_keys_and_its_indexer_scores_every_key() {
    // DeepSeek-V3.2 is DeepSeek-V3 with DeepSeek Sparse Attention: each query's core attends
    // its 2,048 best keys, and the indexer scores every causal key with 64 heads of 128.
    let (v3, v32) = (fixture_arch("DeepSeek-V3"), fixture_arch("DeepSeek-V3.2"));
    let dp = Layout::data_parallel(8);
    let at = |arch: &Arch, seq| on_h100_at(arch, seq, dp, |cx| (cx.attention(arch.window.is_some()), cx.indexer()));
    // 4,096 tokens: a query's mean causal span, 2,048 keys, is index_topk, so V3.2's core
    // costs V3's, and the indexer comes on top (16,640 FLOPs a pair against the core's
    // 81,920: about a fifth).
    let ((dense_4k, _, _), _) = at(&v3, 4096);
    let ((sparse_4k, sparse_4k_bwd, _), (idx_4k, idx_4k_bwd)) = at(&v32, 4096);
    assert!(((sparse_4k - idx_4k) / dense_4k - 1.0).abs() < 1e-12, "{sparse_4k} - {idx_4k} vs {dense_4k}");
    assert!(idx_4k > 0.1 * dense_4k && idx_4k < 0.5 * dense_4k, "indexer {idx_4k} vs core {dense_4k}");
    assert_eq!(idx_4k_bwd, 2.0 * idx_4k);
    assert!(sparse_4k_bwd > idx_4k_bwd);
    // 131,072 tokens, 32x the queries: the core still attends 2,048 keys a query (32x its
    // time), the indexer scores 32x the keys for each of them (1,024x), and dense attention
    // grows 1,024x too.
    let ((dense_128k, _, _), _) = at(&v3, 131_072);
    let ((sparse_128k, _, _), (idx_128k, _)) = at(&v32, 131_072);
    let core = |total: f64, idx: f64| total - idx;
    let capped = core(sparse_128k, idx_128k) / core(sparse_4k, idx_4k);
    assert!((capped / 32.0 - 1.0).abs() < 1e-9, "core grew {capped}x");
    assert!((idx_128k / idx_4k / 1024.0 - 1.0).abs() < 1e-9, "indexer grew {}x", idx_128k / idx_4k);
    assert!((dense_128k / dense_4k / 1024.0 - 1.0).abs() < 1e-9);
    // (0.31 of it with the constants of 2026-12-07: the indexer's and the core's rates are fitted.)
    assert!(sparse_128k < 0.35 * dense_128k, "{sparse_128k} vs {dense_128k}");
    // Tensor parallelism splits the core's heads, not the indexer (duplicated on every rank).
    let tp = Layout { tp: 8, ..Layout::data_parallel(1) };
    let (idx_tp, core_tp) = on_h100_at(&v32, 4096, tp, |cx| (cx.indexer().0, cx.attention(true).0 - cx.indexer().0));
    assert!((idx_tp / idx_4k - 1.0).abs() < 1e-12, "{idx_tp} vs {idx_4k}");
    assert!((core_tp * 8.0 / (sparse_4k - idx_4k) - 1.0).abs() < 1e-12);
    // The MFU numerator: 61 indexers' weights (4x: their input is detached, so no input
    // gradient), the core's span capped at 2,048 and 3x the indexer's forward FLOPs (16,640
    // a pair, s / 2 keys a query).
    let s = 131_072;
    let (qkv, pair, weights) = ((v3.qk_dim + v3.v_dim) as f64, 2.0 * 64.0 * 129.0, 13_959_168.0);
    let want = 4.0 * 61.0 * weights + 6.0 * 61.0 * (2048.0 - 65_536.0) * qkv + 3.0 * 61.0 * 65_536.0 * pair;
    let got = v32.model_flops_per_token(s) - v3.model_flops_per_token(s);
    assert!((got / want - 1.0).abs() < 1e-9, "{got:.6e} vs {want:.6e}");
    // A step holds all of it: at 4,096 tokens V3.2 is slower than V3 (the indexer), at
    // 32,768 faster (the cap), and it stores the indexer's activations. (Without TP, as
    // DeepSeek trains: at tp=8 each rank's whole indexer outweighs its eighth of the core.)
    let step = |arch: &Arch, seq| {
        let job = Job { arch, seq, global_batch: 64, precision: Precision::Bf16 };
        let l = Layout { pp: 8, ep: 8, ..Layout::data_parallel(8) };
        h100_job(&job, &crate::calib::shipped(), &crate::stack::find("nemo-2025").unwrap(), l)
    };
    let (a, b) = (step(&v3, 4096), step(&v32, 4096));
    assert!(b.time.total() > a.time.total() && b.memory.activations > a.memory.activations);
    assert!(step(&v32, 32_768).time.total() < step(&v3, 32_768).time.total());
}

/// Llama 3 8B's widths with Gated DeltaNet mixers of Qwen3-Next's heads (16 key, 32 value,
/// 128 wide) in `pattern`.
fn gdn_8b(pattern: &str) -> Arch {
    crate::model::ModelFile {
        gdn_key_heads: Some(16),
        gdn_value_heads: Some(32),
        gdn_key_head_dim: Some(128),
        gdn_value_head_dim: Some(128),
        mamba_heads: None,
        mamba_head_dim: None,
        mamba_state: None,
        mamba_groups: None,
        ..hybrid_8b_file(pattern)
    }
    .to_arch()
    .unwrap()
}

#[test]
fn a_gated_deltanet_mixer_is_bound_by_the_hbm_traffic_of_its_kernels() {
    // Per token: Kk = 16 x 128, K = V = 32 x 128, S = V x 128 / 64, A = 32 x 64.
    let arch = gdn_8b("G-");
    let hy = arch.hybrid.unwrap();
    let (kk, k, st, a) = (2048.0, 4096.0, 8192.0, 2048.0);
    let want =
        (16.0 * k + 22.0 * k + 4.0 * st + 2.0 * a + 20.0 * kk, 46.0 * k + 46.0 * k + 8.0 * st + 4.0 * a + 28.0 * kk);
    assert_eq!(hy.gdn_bytes_per_token(), want);
    assert_eq!(hy.gdn_flops_per_token(), 32.0 * (6.0 * 64.0 * 128.0 + 4.0 * 64.0 * 128.0 + 6.0 * 128.0 * 128.0));
    assert_eq!(hy.gdn_params(4096), 4096.0 * (2.0 * 2048.0 + 2.0 * 4096.0 + 64.0 + 4096.0));
    // On an H100 its ~5.8 MFLOP a token take ~17 ns at the attention rate, its ~0.5 MB ~190 ns
    // at the measured bandwidth: the traffic prices both passes.
    let (g, stream) = on_h100(&arch, |cx| (cx.gdn_block(), cx.tok / (cx.r.mem_bw * MEM_BW_EFF)));
    assert!((g.fwd - g.linear_fwd - want.0 * stream).abs() < 1e-12, "{} vs {}", g.fwd - g.linear_fwd, want.0 * stream);
    assert!((g.bwd - 2.0 * g.linear_fwd - want.1 * stream).abs() < 1e-12);
    // The step holds the mixers: a G- model is slower than the same model with them dropped.
    let with = h100_arch_step(&gdn_8b(&"G-*-".repeat(8)), Layout::data_parallel(8));
    let without = h100_arch_step(&gdn_8b(&"-*-".repeat(8)), Layout::data_parallel(8));
    assert!(with.time.total() > without.time.total());
    // Context parallelism over them is refused; TP must split the key heads.
    let job = Job { arch: &arch, seq: 4096, global_batch: 8, precision: Precision::Bf16 };
    let e = check_layout(&job, &Layout { cp: 2, ..Layout::data_parallel(4) }).unwrap_err().to_string();
    assert!(e.contains("Gated DeltaNet"), "{e}");
    let e = check_layout(&job, &Layout { tp: 32, ..Layout::data_parallel(1) }).unwrap_err().to_string();
    assert!(e.contains("key heads") || e.contains("heads"), "{e}");
}

#[test]
fn a_kimi_delta_attention_mixer_is_a_gated_deltanet_with_low_rank_gates() {
    // Kimi Linear's KDA widths (32 heads of 128 for queries, keys and values, gate rank 128)
    // on the 8B hybrid's 4,096-wide stream, against a Gated DeltaNet of the same heads.
    let mixer = |rank: Option<usize>| {
        crate::model::ModelFile {
            gdn_key_heads: Some(32),
            gdn_value_heads: Some(32),
            gdn_key_head_dim: Some(128),
            gdn_value_head_dim: Some(128),
            kda_gate_rank: rank,
            mamba_heads: None,
            mamba_head_dim: None,
            mamba_state: None,
            mamba_groups: None,
            ..hybrid_8b_file("G-")
        }
        .to_arch()
        .unwrap()
    };
    let (kda, gdn) = (mixer(Some(128)), mixer(None));
    let (k, g) = (kda.hybrid.unwrap(), gdn.hybrid.unwrap());
    // KDA: q, k, v, beta and the two gates' rank-128 inputs from the stream, the gates taken
    // up to 4,096 each (the output gate, one decay a key channel), the output projection.
    let h = 4096.0;
    assert_eq!(k.gdn_in_proj_width(), 3 * 4096 + 32 + 2 * 128);
    assert_eq!(k.gdn_params(4096), h * (12_576.0 + 4096.0) + 128.0 * 8192.0);
    assert_eq!(g.gdn_params(4096), h * (16_448.0 + 4096.0));
    let (kb, gb) = (on_h100(&kda, |cx| cx.gdn_block()), on_h100(&gdn, |cx| cx.gdn_block()));
    // The same chunked delta rule at the same widths: the kernels cost the same.
    // (Equal to rounding: each side is a sum less its GEMMs, so the last bits may differ.)
    let same = |a: f64, b: f64| assert!((a / b - 1.0).abs() < 1e-12, "{a} {b}");
    same(kb.fwd - kb.linear_fwd, gb.fwd - gb.linear_fwd);
    same(kb.bwd - 2.0 * kb.linear_fwd, gb.bwd - 2.0 * gb.linear_fwd);
    // Fewer projection weights, fewer GEMM seconds.
    assert!(kb.linear_fwd < gb.linear_fwd && kb.linear_fwd > 0.7 * gb.linear_fwd);
    // Stored a token: the input projection's and the gates' up projections' outputs (BF16:
    // 2 x (12,576 + 8,192) against 2 x 16,448) and the decay in FP32 a key channel
    // (4 x 4,096) rather than a head (4 x 32).
    let extra = 2.0 * (12_576.0 + 8_192.0 - 16_448.0) + 4.0 * (4_096.0 - 32.0);
    assert_eq!(kb.act_bytes - gb.act_bytes, 4096.0 * extra);
    // The rank describes G layers only.
    let e = crate::model::ModelFile { kda_gate_rank: Some(128), ..hybrid_8b_file("M*-M") }.to_arch().unwrap_err();
    assert!(e.to_string().contains("kda_gate_rank"), "{e}");
}

/// Qwen3-30B-A3B as a model file, with `latent` and `mtp` multi-token prediction depths.
fn qwen3_moe(latent: Option<usize>, mtp: Option<usize>) -> Arch {
    crate::model::ModelFile {
        name: "q".into(),
        arch: "moe".into(),
        vocab: 151936,
        layers: 48,
        heads: 32,
        kv_heads: Some(4),
        head_dim: Some(128),
        d_model: 2048,
        experts: Some(128),
        experts_per_token: Some(8),
        expert_d_ff: Some(768),
        moe_latent: latent,
        mtp_layers: mtp,
        ..Default::default()
    }
    .to_arch()
    .unwrap()
}

#[test]
fn a_latent_moe_routes_and_computes_its_tokens_at_the_latent_width() {
    // Experts on a 512-wide projection of the 2,048-wide stream: a quarter of the all-to-all
    // bytes, fewer expert weights, two projections more.
    let l = Layout { ep: 8, ..Layout::data_parallel(8) };
    let (full, latent) = (qwen3_moe(None, None), qwen3_moe(Some(512), None));
    let (a, b) = (h100_arch_step(&full, l), h100_arch_step(&latent, l));
    // A quarter of the bytes; the per-hop latency does not shrink with them.
    let ratio = b.time.ep_comm / a.time.ep_comm;
    assert!(ratio > 0.25 && ratio < 0.3, "{} vs {}", b.time.ep_comm, a.time.ep_comm);
    let m = latent.moe.unwrap();
    let per_layer = 2048.0 * 128.0 + 3.0 * 512.0 * 768.0 * 128.0 + 2.0 * 2048.0 * 512.0;
    assert_eq!(latent.moe_mlp_params(), per_layer);
    assert_eq!(m.expert_io(2048), 512.0);
    assert!(b.memory.weights < a.memory.weights);
}

#[test]
fn expert_tensor_parallelism_splits_the_experts_and_gathers_their_tokens() {
    // A Qwen3-30B-A3B-shaped model on 8 H100s at tp 2, ep 4: experts whole (etp 1) or split
    // over the TP pair (etp 2).
    let arch = qwen3_moe(None, None);
    let base = Layout { tp: 2, ep: 4, sp: true, ..Layout::data_parallel(4) };
    let (whole, split) = (h100_arch_step(&arch, base), h100_arch_step(&arch, Layout { etp: 2, ..base }));
    // Each chip holds half of each of its 32 local experts: half their BF16 weights. (The
    // distributed optimizer's shard is the same: an expert's data-parallel group halves.)
    let local_experts = 48.0 * 32.0 * 3.0 * 2048.0 * 768.0;
    let saved = whole.memory.weights - split.memory.weights;
    assert!((saved / (2.0 * local_experts / 2.0) - 1.0).abs() < 1e-9, "{saved:.4e}");
    assert!((split.memory.optimizer / whole.memory.optimizer - 1.0).abs() < 1e-9);
    // The gathers and scatters of the routed copies come on top of the all-to-all.
    assert!(split.time.ep_comm > whole.time.ep_comm, "{} vs {}", split.time.ep_comm, whole.time.ep_comm);
    // The same FLOPs in taller, narrower GEMMs.
    let ratio = split.time.compute / whole.time.compute;
    assert!(ratio > 0.9 && ratio < 1.1, "{ratio}");
    // Megatron-Core's expert groups: ep x etp must divide tp x cp x dp, etp the experts' width.
    let job = Job { arch: &arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
    assert!(check_layout(&job, &Layout { ep: 8, etp: 2, ..base }).is_err());
    assert!(check_layout(&job, &Layout { tp: 8, etp: 8, ep: 1, ..Layout::data_parallel(1) }).is_ok());
    let dense = crate::model::resolve("llama3-8b").unwrap().arch;
    let dense_job = Job { arch: &dense, ..job };
    assert!(check_layout(&dense_job, &Layout { etp: 2, ..Layout { tp: 2, ..Layout::data_parallel(4) } }).is_err());
}

#[test]
fn routed_experts_pay_no_tp_pair_of_their_own_and_shared_experts_do() {
    // At tp 2 without TP overlap, a layer of attention and routed experts exchanges the
    // attention block's pair only; shared experts (a dense MLP split over TP) add a second,
    // as large (both move the layer's b s h activations).
    let st = crate::stack::find("megatron-core-2024-no-overlap").unwrap();
    let l = Layout { tp: 2, ep: 4, sp: true, ..Layout::data_parallel(4) };
    let tp_comm = |arch: &Arch| {
        let job = Job { arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
        h100_job(&job, &crate::calib::shipped(), &st, l).time.tp_comm
    };
    let routed = qwen3_moe(None, None);
    let mut shared = routed.clone();
    let m = shared.moe.as_mut().unwrap();
    (m.shared, m.shared_d_ff) = (1, 768);
    let ratio = tp_comm(&shared) / tp_comm(&routed);
    assert!((ratio - 2.0).abs() < 1e-9, "{ratio}");
}

#[test]
fn each_multi_token_prediction_depth_adds_a_layer_a_projection_and_an_lm_head() {
    let l = Layout { ep: 8, ..Layout::data_parallel(8) };
    let (plain, mtp) = (h100_arch_step(&qwen3_moe(None, None), l), h100_arch_step(&qwen3_moe(None, Some(1)), l));
    assert_eq!(mtp.memory.logits, 2.0 * plain.memory.logits);
    // More than the extra LM head and loss alone, less than a second model.
    let extra = mtp.time.compute / plain.time.compute - 1.0;
    assert!(extra > 0.05 && extra < 0.3, "{extra}");
    let arch = qwen3_moe(None, Some(1));
    let module = arch.attn_params + arch.moe_mlp_params() + 2.0 * 2048.0 * 2048.0;
    assert_eq!(arch.total_params() - qwen3_moe(None, None).total_params(), module);
}

#[test]
fn layers_a_quantized_recipe_keeps_in_bf16_compute_at_the_bf16_rate() {
    // Llama 3 8B's 32 layers in FP8 with none, half and all of them kept in BF16: all kept is
    // the BF16 step's compute (no casts, BF16 GEMMs), half lies between.
    let k = crate::calib::shipped();
    let st = crate::stack::find("nemo-2025").unwrap();
    let step = |precision, bf16_layers| {
        let l = Layout { bf16_layers, ..Layout::data_parallel(8) };
        llama8b_h100(&k, &st, l, precision, 64).time.compute
    };
    let (fp8, half, all, bf16) =
        (step(Precision::Fp8, 0), step(Precision::Fp8, 16), step(Precision::Fp8, 32), step(Precision::Bf16, 0));
    assert!(fp8 < half && half < all, "{fp8} {half} {all}");
    assert!((all / bf16 - 1.0).abs() < 1e-12, "{all} vs {bf16}");
    assert_eq!(step(Precision::Bf16, 16), bf16, "ignored in BF16");
}

#[test]
fn hybrid_sharding_keeps_one_copy_per_shard_group() {
    let full = llama8b_on_64("pytorch-fsdp", Layout { zero: 3, ..Layout::data_parallel(64) }).memory;
    let hybrid = llama8b_on_64("pytorch-fsdp", Layout { zero: 3, shard: 8, ..Layout::data_parallel(64) }).memory;
    for (what, f, h) in [
        ("weights", full.weights, hybrid.weights),
        ("gradients", full.gradients, hybrid.gradients),
        ("optimizer", full.optimizer, hybrid.optimizer),
    ] {
        assert!((h / f - 8.0).abs() < 1e-9, "{what}: {h} against {f}");
    }
}

#[test]
fn experts_whose_parallel_group_outgrows_the_copy_are_not_sharded_further() {
    // Qwen3-30B-A3B on 64 H100s, ZeRO-3 in groups of 8 replicas (one node) with ep = 16: an
    // expert-parallel group spans two copies, so each chip keeps its 1/16 of the experts
    // whole, while the rest of the model is sharded over the node's 8 chips.
    let k = Constants::prior();
    let m = crate::model::resolve("qwen3-30b-a3b").unwrap();
    let chip = crate::chips::ChipDb::builtin().find("h100").unwrap().clone();
    let l = Layout { ep: 16, zero: 3, shard: 8, ..Layout::data_parallel(64) };
    let r = Rates::of(&chip, &k, 64, Precision::Bf16).unwrap();
    let st = crate::stack::find("nemo-2025").unwrap();
    let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
    let opt = estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().memory.optimizer;
    let moe = m.arch.moe.unwrap();
    let experts = (m.arch.moe_layers() * moe.experts * 3 * m.arch.d_model * moe.expert_d_ff) as f64;
    let want = 12.0 * ((m.arch.total_params() - experts) / 8.0 + experts / 16.0);
    assert!((opt / want - 1.0).abs() < 0.02, "optimizer {opt:.3e} B against {want:.3e}");
}

#[test]
fn fp8_activations_are_smaller_only_where_the_stack_keeps_quantized_inputs() {
    // Transformer Engine (nemo-2025) keeps each linear input's FP8 copy; torchtitan's torchao
    // Float8 keeps the BF16 one, so its FP8 step stores what its BF16 step stores.
    let k = Constants::prior();
    let l = Layout { mb: 2, ..Layout::data_parallel(8) };
    let act =
        |stack: &str, p: Precision| llama8b_h100(&k, &crate::stack::find(stack).unwrap(), l, p, 16).memory.activations;
    let (fp8, bf16) = (act("nemo-2025", Precision::Fp8), act("nemo-2025", Precision::Bf16));
    assert!(fp8 < 0.9 * bf16, "{fp8} vs {bf16}");
    assert_eq!(act("torchtitan-2024-compile", Precision::Fp8), act("torchtitan-2024-compile", Precision::Bf16));
}

#[test]
fn zero_2_reduce_scatters_every_micro_batch_and_zero_1_once_a_step() {
    // ZeRO-2 keeps only its gradient shard, so each micro-batch's gradients are reduce-scattered;
    // ZeRO-1 sums them locally and reduce-scatters once. Without DP overlap the difference is
    // (micro-batches - 1) reduce-scatters: none at one micro-batch, three times two's at four.
    let st = crate::stack::find("unknown").unwrap();
    let k = Constants::prior();
    let dp = |zero: u8, batch: usize| {
        let l = Layout { zero, ..Layout::data_parallel(64) };
        llama8b_h100(&k, &st, l, Precision::Bf16, batch).time.dp_comm
    };
    assert_eq!(dp(2, 64), dp(1, 64));
    let (extra_2, extra_4) = (dp(2, 128) - dp(1, 128), dp(2, 256) - dp(1, 256));
    assert!(extra_2 > 0.0, "{extra_2}");
    assert!((extra_4 / extra_2 - 3.0).abs() < 1e-9, "{extra_4} vs {extra_2}");
}

#[test]
fn optimizer_states_take_the_stacks_bytes_a_parameter() {
    // BF16 Adam moments and no master copy (4 bytes a parameter) hold a third of the default
    // FP32 master and moments (12), and the AdamW step streams 2 x 4 + 6 bytes instead of 30.
    let m = crate::model::resolve("llama3-8b").unwrap();
    let job = Job { arch: &m.arch, seq: 4096, global_batch: 64, precision: Precision::Bf16 };
    let k = crate::calib::shipped();
    let fp32 = crate::stack::find("nemo-2025").unwrap();
    let bf16 = Stack { optimizer_state_bytes: 4.0, ..fp32.clone() };
    let l = Layout { zero: 1, ..Layout::data_parallel(8) };
    let (a, b) = (h100_job(&job, &k, &fp32, l), h100_job(&job, &k, &bf16, l));
    assert!((b.memory.optimizer / a.memory.optimizer - 4.0 / 12.0).abs() < 1e-9);
    assert!(b.time.optimizer < a.time.optimizer, "{} against {}", b.time.optimizer, a.time.optimizer);
}

#[test]
fn a_copy_per_replica_all_reduces_like_plain_data_parallelism() {
    // ZeRO-1 over groups of one replica keeps a whole copy on every rank: what is left is the
    // copies' all-reduce of the gradients, plain data parallelism's (no overlap in this stack;
    // the collectives' latency terms differ by a few buckets).
    let plain = llama8b_on_64("megatron-2021", Layout::data_parallel(64)).time.dp_comm;
    let copies = llama8b_on_64("megatron-2021", Layout { zero: 1, shard: 1, ..Layout::data_parallel(64) });
    let dp = copies.time.dp_comm;
    assert!(plain > 0.1 && (dp / plain - 1.0).abs() < 0.05, "plain {plain} against one copy per replica {dp}");
}

/// Data-parallel seconds of MaxText's 16B model (seq 2048, 6 sequences a chip, one
/// micro-batch) on `chips` TPU v5e under ZeRO-3 over `shard` replicas (0: all) with a stack
/// that overlaps none of it, prior constants.
fn v5e_dp_time(chips: usize, shard: usize) -> f64 {
    let k = Constants::prior();
    let m = crate::model::resolve("maxtext-16b").unwrap();
    let chip = crate::chips::ChipDb::builtin().find("tpu-v5e").unwrap().clone();
    let l = Layout { zero: 3, mb: 6, shard, ..Layout::data_parallel(chips) };
    let r = Rates::of(&chip, &k, chips, Precision::Bf16).unwrap();
    // Megatron-LM of 2021 overlaps nothing; given ZeRO-3 here to price its collectives.
    let st = Stack { zero_stages: vec![3], ..crate::stack::find("megatron-2021").unwrap() };
    let job = Job { arch: &m.arch, seq: 2048, global_batch: 6 * chips, precision: Precision::Bf16 };
    estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().time.dp_comm
}

#[test]
fn hybrid_sharding_across_slices_adds_the_gradient_shards_all_reduce() {
    // Two 256-chip v5e slices joined by the data-center network (25 Gb/s a chip), a stack
    // without overlap: sharded inside each slice, a step costs one slice's gathers and
    // scatters plus the all-reduce of each chip's gradient shard with its twin in the other
    // slice: 2 x (2-1)/2 x 16e9 parameters x 2 bytes / 256 chips = 125 MB over the chip's own
    // DCN share (3.125 GB/s at scaleout_eff).
    let (hybrid, one_slice) = (v5e_dp_time(512, 256), v5e_dp_time(256, 0));
    let params = crate::model::resolve("maxtext-16b").unwrap().arch.total_params();
    let want = params * 2.0 / 256.0 / (3.125e9 * Constants::prior().scaleout_eff);
    let got = hybrid - one_slice;
    assert!((got / want - 1.0).abs() < 0.15, "all-reduce {got} s against {want} s");
}

#[test]
fn int8_runs_at_the_chips_int8_rate_and_needs_one() {
    let k = Constants::prior();
    let db = crate::chips::ChipDb::builtin();
    let v6e = db.find("tpu-v6e").unwrap();
    let r = Rates::of(v6e, &k, 1, Precision::Int8).unwrap();
    assert_eq!(r.peak_8bit, Some(v6e.get("int8_tops").unwrap() * 1e12));
    // A step with INT8 matmuls is faster than BF16 on a chip with twice the INT8 rate (not
    // twice: attention, the LM head and element-wise work stay BF16, and the casts cost).
    let m = crate::model::resolve("llama3-8b").unwrap();
    let step = |p: Precision| {
        let job = Job { arch: &m.arch, seq: 2048, global_batch: 64, precision: p };
        let r = Rates::of(v6e, &k, 8, p).unwrap();
        let st = crate::stack::find("maxtext-2023").unwrap();
        let l = Layout { zero: 3, mb: 8, ..Layout::data_parallel(8) };
        estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap().time.compute
    };
    let (int8, bf16) = (step(Precision::Int8), step(Precision::Bf16));
    assert!(int8 < 0.95 * bf16, "int8 {int8} s against bf16 {bf16} s");
    let gb200 = db.find("gb200").unwrap();
    let e = Rates::of(gb200, &k, 1, Precision::Int8).unwrap_err().to_string();
    assert!(e.contains("int8_tops") && !e.contains('\n'), "{e}");
}

#[test]
fn nvfp4_runs_at_the_chips_fp4_rate_with_smaller_operands() {
    let k = Constants::prior();
    let db = crate::chips::ChipDb::builtin();
    let gb300 = db.find("gb300").unwrap();
    let clock = power_clock(gb300, &k);
    let r = Rates::of(gb300, &k, 1, Precision::Fp4).unwrap();
    assert!((r.peak_8bit.unwrap() / (gb300.get("fp4_tflops").unwrap() * 1e12 * clock) - 1.0).abs() < 1e-12);
    let m = crate::model::resolve("llama3-70b").unwrap();
    let est = |p: Precision| {
        let job = Job { arch: &m.arch, seq: 8192, global_batch: 64, precision: p };
        let r = Rates::of(gb300, &k, 64, p).unwrap();
        let st = crate::stack::find("nemo-2025").unwrap();
        let l = Layout { tp: 4, pp: 4, mb: 1, v: 5, zero: 1, sp: true, ..Layout::data_parallel(4) };
        estimate(&job, &l, &r, &k, &st, f64::INFINITY).unwrap()
    };
    let (fp4, fp8) = (est(Precision::Fp4), est(Precision::Fp8));
    assert!(fp4.time.compute < 0.9 * fp8.time.compute, "{} against {}", fp4.time.compute, fp8.time.compute);
    assert!(fp4.memory.activations < fp8.memory.activations);
    let h100 = db.find("h100").unwrap();
    let e = Rates::of(h100, &k, 1, Precision::Fp4).unwrap_err().to_string();
    assert!(e.contains("fp4_tflops") && !e.contains('\n'), "{e}");
}

#[test]
fn fp8_parameter_gathers_halve_the_all_gather_in_fp8_only() {
    // Llama 3 8B on 64 H100 at ZeRO-1, collectives not overlapped: a stack that gathers FP8
    // parameters pays less data-parallel time in FP8 training (its all-gather moves half the
    // bytes; the reduce-scatter and the latencies stay) and the same in BF16.
    let base = Stack { overlap_dp: false, ..crate::stack::find("nemo-2025").unwrap() };
    let (on, off) = (Stack { fp8_param_gather: true, ..base.clone() }, Stack { fp8_param_gather: false, ..base });
    let l = Layout { zero: 1, ..Layout::data_parallel(64) };
    let dp = |st: &Stack, precision: Precision| llama8b_h100(&Constants::prior(), st, l, precision, 64).time.dp_comm;
    assert_eq!(dp(&on, Precision::Bf16), dp(&off, Precision::Bf16));
    let (fp8_on, fp8_off) = (dp(&on, Precision::Fp8), dp(&off, Precision::Fp8));
    assert!(fp8_on < 0.9 * fp8_off, "{fp8_on} against {fp8_off}");
}

#[test]
fn every_distributed_step_pays_the_fixed_step_overhead_once() {
    // The same job under two step overheads differs by exactly their difference, in the
    // optimizer term, whatever the number of micro-batches.
    let nemo = crate::stack::find("nemo-2025").unwrap();
    for mb in [1, 8] {
        let at = |ms: f64| {
            let k = Constants { step_overhead_ms: ms, ..Constants::prior() };
            llama8b_h100(&k, &nemo, Layout { mb, ..Layout::data_parallel(8) }, Precision::Bf16, 64).time
        };
        let (lo, hi) = (at(0.0), at(30.0));
        assert!((hi.optimizer - lo.optimizer - 0.030).abs() < 1e-12, "mb {mb}: {} vs {}", hi.optimizer, lo.optimizer);
        assert!((hi.total() - lo.total() - 0.030).abs() < 1e-12, "mb {mb}");
    }
    // One chip waits for no other rank: it pays none.
    let one = |ms: f64| {
        let k = Constants { step_overhead_ms: ms, ..Constants::prior() };
        llama8b_h100(&k, &nemo, Layout { mb: 1, ..Layout::data_parallel(1) }, Precision::Bf16, 1).time.total()
    };
    assert_eq!(one(0.0), one(30.0));
}

#[test]
fn the_backward_window_includes_the_recomputed_forward() {
    // Llama 3 70B, ZeRO-3 over 64 GPUs at 512 tokens a micro-batch, where the gathers
    // outlast the compute: recomputing the forward in backward lengthens the window they
    // hide under.
    let fsdp = crate::stack::find("pytorch-fsdp").unwrap();
    let dp = |recompute: Recompute| {
        fsdp_dp_time("llama3-70b", 512, Layout { zero: 3, mb: 1, recompute, ..Layout::data_parallel(64) }, &fsdp)
    };
    let (none, full) = (dp(Recompute::None), dp(Recompute::Full));
    assert!(none > 0.0 && full < none, "none {none} full {full}");
}

#[test]
fn a_thin_gemm_is_held_to_the_memory_floor() {
    let k = Constants::prior();
    let (peak, bw) = (989e12, 3.35e12);
    // One token through a 4096 x 4096 weight: 2 x 4096^2 FLOPs, 2 x (4096 + 4096^2 + 4096) bytes.
    let (m, n, kk) = (1.0, 4096.0, 4096.0);
    let t = gemm_time(&k, peak, peak, bw, 2.0 * m * n * kk, m, n, kk, 2.0);
    let floor = 2.0 * (m * kk + kk * n + m * n) / (bw * MEM_BW_EFF);
    assert!((t / floor - 1.0).abs() < 1e-12, "{t} vs floor {floor}");
    // A large square GEMM is compute-bound: the floor does not apply.
    let big = 8192.0;
    let flops = 2.0 * big * big * big;
    let t = gemm_time(&k, peak, peak, bw, flops, big, big, big, 2.0);
    assert!((t - flops / (peak * gemm_efficiency(&k, peak, bw, (big, big, big), 2.0))).abs() < 1e-15);
}
