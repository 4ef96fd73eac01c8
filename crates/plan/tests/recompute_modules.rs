//! Module recompute (Megatron-Core `recompute_modules`): what each module keeps out of memory and
//! what it costs in time, from `--layout ...,modules=...`.

use anychip_plan::calib;
use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::{estimate, Estimate, Job, Precision, Rates};
use anychip_plan::search::parse_layout;
use anychip_plan::stack;

fn run(model_name: &str, layout: &str, count: usize, precision: Precision) -> Estimate {
    let m = model::resolve(model_name).unwrap();
    let chip = ChipDb::builtin().find("gb200").unwrap().clone();
    let k = calib::shipped();
    let l = parse_layout(layout, count).unwrap();
    let job = Job { arch: &m.arch, seq: 4096, global_batch: 1024, precision };
    let rates = Rates::of(&chip, &k, l.chips(), precision).unwrap();
    estimate(&job, &l, &rates, &k, &stack::find("nemo-2025").unwrap(), f64::INFINITY).unwrap()
}

#[test]
fn modules_parse_and_bad_names_are_refused() {
    let l = parse_layout("tp=1,pp=4,mb=1,ep=8,modules=layernorm+moe_act", 64).unwrap();
    assert!(l.modules.layernorm && l.modules.moe_act && !l.modules.mla_up_proj);
    assert!(l.to_string().contains("rc:none+layernorm+moe_act"), "{l}");
    let e = parse_layout("tp=1,modules=layernorm+attn", 8).unwrap_err().to_string();
    assert!(e.contains("layernorm, moe_act, mla_up_proj, mlp, moe, shared_experts or op_sac"), "{e}");
}

#[test]
fn each_module_saves_its_bytes_and_costs_its_rerun() {
    // GPT-OSS-120B, EP8 on 64 chips: 36 layers over pp4, micro-batch 1 of 4096 tokens.
    let base = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8", 64, Precision::Bf16);
    let ln = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8,modules=layernorm", 64, Precision::Bf16);
    let act = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8,modules=moe_act", 64, Precision::Bf16);
    // Micro-batches in flight on the first stage: min(m, p) = 4; 9 layers per stage.
    let (layers, in_flight, tok, h, fe) = (9.0, 4.0, 4096.0, 2880.0, 2880.0);
    let want_ln = layers * in_flight * tok * 2.0 * h * 2.0;
    let want_act = layers * in_flight * tok * 4.0 * fe * 2.0;
    let got_ln = base.memory.activations - ln.memory.activations;
    let got_act = base.memory.activations - act.memory.activations;
    assert!((got_ln / want_ln - 1.0).abs() < 1e-9, "layernorm saves {got_ln}, want {want_ln}");
    assert!((got_act / want_act - 1.0).abs() < 1e-9, "moe_act saves {got_act}, want {want_act}");
    assert!(ln.time.recompute > base.time.recompute && act.time.recompute > base.time.recompute);
    // Latent-attention recompute does nothing to a model without latent attention...
    let mla = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8,modules=mla_up_proj", 64, Precision::Bf16);
    assert_eq!(mla.memory.activations, base.memory.activations);
    // ...and on DeepSeek-V3 drops the per-head queries, keys and values for an up-projection rerun.
    let ds = run("deepseek-v3", "tp=1,pp=16,mb=1,ep=8", 128, Precision::Fp8);
    let ds_mla = run("deepseek-v3", "tp=1,pp=16,mb=1,ep=8,modules=mla_up_proj", 128, Precision::Fp8);
    assert!(ds_mla.memory.activations < ds.memory.activations);
    assert!(ds_mla.time.recompute > ds.time.recompute);
}

#[test]
fn op_sac_reruns_every_second_matmul_and_the_element_wise_ops() {
    // Llama 3 8B on 8 chips: torchtitan's per-op checkpointing sits between no recompute and a
    // full one in both memory and time.
    let none = run("llama3-8b", "tp=1,pp=1,mb=1", 8, Precision::Bf16);
    let sac = run("llama3-8b", "tp=1,pp=1,mb=1,modules=op_sac", 8, Precision::Bf16);
    let full = run("llama3-8b", "tp=1,pp=1,mb=1,recompute=full", 8, Precision::Bf16);
    assert!(full.memory.activations < sac.memory.activations, "{:?} {:?}", full.memory, sac.memory);
    assert!(sac.memory.activations < none.memory.activations, "{:?} {:?}", sac.memory, none.memory);
    assert_eq!(none.time.recompute, 0.0);
    // It reruns k, o and w3 (36.5% of the linear FLOPs) and the element-wise ops, not the
    // attention core: more than a third of a full recompute's time, well under all of it.
    let ratio = sac.time.recompute / full.time.recompute;
    assert!((0.3..0.7).contains(&ratio), "op_sac reruns {ratio:.2} of a full recompute");
    // Under TP it reruns the all-gathers (half the forward's collectives), a full recompute all.
    let tp_none = run("llama3-8b", "tp=4,pp=1,mb=1,sp=true", 8, Precision::Bf16);
    let tp_sac = run("llama3-8b", "tp=4,pp=1,mb=1,sp=true,modules=op_sac", 8, Precision::Bf16);
    let tp_full = run("llama3-8b", "tp=4,pp=1,mb=1,sp=true,recompute=full", 8, Precision::Bf16);
    assert!(tp_none.time.tp_comm < tp_sac.time.tp_comm && tp_sac.time.tp_comm < tp_full.time.tp_comm);
}

#[test]
fn mlp_drops_the_dense_mlps_insides_for_a_rerun_of_its_forward() {
    // Llama 3 8B on 8 chips, one micro-batch of 4096 tokens, 32 layers: the module keeps the MLP's
    // input only, so the gate and up outputs (2 x 2 f bytes a token) and the activation's output
    // (2 f) leave memory, and backward reruns the MLP's three GEMMs (6 h f FLOPs a token).
    let none = run("llama3-8b", "tp=1,pp=1,mb=1", 8, Precision::Bf16);
    let mlp = run("llama3-8b", "tp=1,pp=1,mb=1,modules=mlp", 8, Precision::Bf16);
    let (layers, tok, h, f) = (32.0, 4096.0, 4096.0, 14336.0);
    let saved = none.memory.activations - mlp.memory.activations;
    let want = layers * tok * 6.0 * f;
    assert!((saved / want - 1.0).abs() < 1e-9, "mlp saves {saved}, want {want}");
    assert_eq!(none.time.recompute, 0.0);
    // The rerun is at least the GEMMs at the peak and at most at a fifth of it, per micro-batch.
    let micro_batches = 1024.0 / 8.0;
    let gemm_flops = micro_batches * layers * tok * 2.0 * 3.0 * h * f;
    let peak = 2.5e15;
    let rerun = mlp.time.recompute;
    assert!(rerun > gemm_flops / peak && rerun < 5.0 * gemm_flops / peak, "rerun {rerun} s");
    // In FP8 the down projection's stored input is its 1-byte cast: the module saves 5 f, not 6 f.
    let none8 = run("llama3-8b", "tp=1,pp=1,mb=1", 8, Precision::Fp8);
    let mlp8 = run("llama3-8b", "tp=1,pp=1,mb=1,modules=mlp", 8, Precision::Fp8);
    let saved8 = none8.memory.activations - mlp8.memory.activations;
    assert!((saved8 / (layers * tok * 5.0 * f) - 1.0).abs() < 1e-9, "fp8: mlp saves {saved8}");
    // Under TP the rerun MLP gathers its input and reduce-scatters its output again.
    let tp_none = run("llama3-8b", "tp=4,pp=1,mb=1,sp=true", 8, Precision::Bf16);
    let tp_mlp = run("llama3-8b", "tp=4,pp=1,mb=1,sp=true,modules=mlp", 8, Precision::Bf16);
    assert!(tp_mlp.time.tp_comm > tp_none.time.tp_comm);
    // A MoE layer is not an MLP: GPT-OSS's 36 MoE layers keep every byte.
    let moe = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8", 64, Precision::Bf16);
    let moe_mlp = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8,modules=mlp", 64, Precision::Bf16);
    assert_eq!(moe.memory.activations, moe_mlp.memory.activations);
    assert_eq!(moe.time.recompute, moe_mlp.time.recompute);
}

#[test]
fn shared_experts_drops_the_shared_experts_insides_for_a_rerun_of_their_forward() {
    // DeepSeek-V3 on 128 chips, pp16, micro-batch 1 of 4096 tokens: one shared expert of 2048 in
    // 58 of its 61 layers (the planner spreads the 3 dense ones evenly: 58/61 of a layer is MoE);
    // the heaviest stage holds 4 layers with 16 micro-batches in flight. The module keeps the
    // shared expert's input only: its gate and up outputs (2 x 2 fs bytes a token) and its
    // activation's output (2 fs, BF16) leave memory.
    let base = run("deepseek-v3", "tp=1,pp=16,mb=1,ep=8", 128, Precision::Bf16);
    let sh = run("deepseek-v3", "tp=1,pp=16,mb=1,ep=8,modules=shared_experts", 128, Precision::Bf16);
    let saved = base.memory.activations - sh.memory.activations;
    let want = 4.0 * 16.0 * 58.0 / 61.0 * 4096.0 * (4.0 + 2.0) * 2048.0;
    assert!((saved / want - 1.0).abs() < 1e-9, "shared_experts saves {saved} B, want {want}");
    // Its rerun is the shared expert's forward: 6 h fs FLOPs a token per MoE layer, at least as
    // long as those FLOPs at the chip's BF16 peak.
    let rerun = sh.time.recompute - base.time.recompute;
    assert!(rerun > 0.0, "no rerun");
    // A model without shared experts is untouched.
    let oss = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8", 64, Precision::Bf16);
    let oss_sh = run("gpt-oss-120b", "tp=1,pp=4,mb=1,ep=8,modules=shared_experts", 64, Precision::Bf16);
    assert_eq!(oss.memory.activations, oss_sh.memory.activations);
    assert_eq!(oss.time.recompute, oss_sh.time.recompute);
    assert!(sh.layout.to_string().contains("shared_experts"), "{}", sh.layout);
}

#[test]
fn moe_drops_the_whole_moe_layer_for_a_rerun_of_its_forward_all_to_all_included() {
    // DeepSeek-V3 on 128 chips, EP 8 over one NVLink domain each: `moe` keeps only the MoE layer's
    // input, so it frees more than its activation and shared expert together, and reruns more:
    // the experts' and shared expert's GEMMs and the forward dispatch and combine.
    let layout = |m: &str| format!("tp=1,pp=16,mb=1,ep=8{m}");
    let base = run("deepseek-v3", &layout(""), 128, Precision::Fp8);
    let parts = run("deepseek-v3", &layout(",modules=moe_act+shared_experts"), 128, Precision::Fp8);
    let whole = run("deepseek-v3", &layout(",modules=moe"), 128, Precision::Fp8);
    assert!(whole.memory.activations < parts.memory.activations && parts.memory.activations < base.memory.activations);
    assert!(whole.time.recompute > parts.time.recompute, "{:?} {:?}", whole.time, parts.time);
    // The forward all-to-all pair reruns: half of the layout's EP time at least.
    assert!(whole.time.recompute - parts.time.recompute > 0.5 * base.time.ep_comm, "{:?}", whole.time);
    // Adding moe_act or shared_experts to moe changes nothing (they are inside it).
    let both = run("deepseek-v3", &layout(",modules=moe+moe_act+shared_experts"), 128, Precision::Fp8);
    assert_eq!(both.memory.activations, whole.memory.activations);
    assert_eq!(both.time.recompute, whole.time.recompute);
    // A dense model is untouched.
    let dense = run("llama3-8b", "tp=1,pp=1,mb=1", 8, Precision::Bf16);
    let dense_moe = run("llama3-8b", "tp=1,pp=1,mb=1,modules=moe", 8, Precision::Bf16);
    assert_eq!(dense.memory.activations, dense_moe.memory.activations);
    assert_eq!(dense.time.recompute, dense_moe.time.recompute);
}
