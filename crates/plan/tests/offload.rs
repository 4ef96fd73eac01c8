//! Activation offload (`--layout ...,offload=N`, Megatron-Core's `cpu_offloading_num_layers`):
//! what it moves out of the chip's memory and what the copies cost.

use anychip_plan::calib;
use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::{estimate, Estimate, Job, Precision, Rates};
use anychip_plan::search::parse_layout;
use anychip_plan::stack;
use anyhow::Result;

/// Llama 3 70B in FP8, 8k tokens, global batch 256, on `count` of `chip` under `stack`.
fn run_on(stack: &str, chip: &str, layout: &str, count: usize) -> Result<Estimate> {
    let m = model::resolve("llama3-70b").unwrap();
    let chip = ChipDb::builtin().find(chip).unwrap().clone();
    let k = calib::shipped();
    let l = parse_layout(layout, count)?;
    let job = Job { arch: &m.arch, seq: 8192, global_batch: 256, precision: Precision::Fp8 };
    let rates = Rates::of(&chip, &k, l.chips(), Precision::Fp8).unwrap();
    estimate(&job, &l, &rates, &k, &stack::find(stack).unwrap(), f64::INFINITY)
}

/// As [`run_on`] under Megatron-Bridge's stack, which offloads.
fn run(chip: &str, layout: &str, count: usize) -> Result<Estimate> {
    run_on("nemo-2025", chip, layout, count)
}

#[test]
fn offloaded_layers_leave_the_chip_for_two_layers_of_staging() {
    // Llama 3 70B on 64 GB200 with FSDP: 80 layers, one stage, one micro-batch in flight.
    let none = run("gb200", "tp=1,pp=1,mb=2,zero=3", 64).unwrap();
    let half = run("gb200", "tp=1,pp=1,mb=2,zero=3,offload=40", 64).unwrap();
    let all = run("gb200", "tp=1,pp=1,mb=2,zero=3,offload=80", 64).unwrap();
    let per_layer = none.memory.activations / 80.0;
    let want_half = none.memory.activations / 2.0 + 2.0 * per_layer;
    assert!((half.memory.activations / want_half - 1.0).abs() < 1e-9, "{:?}", half.memory);
    assert!((all.memory.activations / (2.0 * per_layer) - 1.0).abs() < 1e-9, "{:?}", all.memory);
    assert!((half.memory.offloaded / (none.memory.activations / 2.0) - 1.0).abs() < 1e-9);
    assert_eq!(none.memory.offloaded, 0.0);
    assert_eq!(none.time.offload, 0.0);
    // The copies, out in forward and back in backward over the copy engines, hide under the
    // compute: at GB200's 225 GB/s a direction even all 80 layers' copies fit under it; over an
    // H100's 64 GB/s of PCIe half of them do, all of them outlast it by the difference.
    assert_eq!(half.time.offload, 0.0);
    assert_eq!(all.time.offload, 0.0);
    let h100_half = run("h100", "tp=1,pp=1,mb=2,zero=3,offload=40", 64).unwrap();
    assert_eq!(h100_half.time.offload, 0.0);
    let h100 = run("h100", "tp=1,pp=1,mb=2,zero=3,offload=80", 64).unwrap();
    let micro_batches = 256.0 / (64.0 * 2.0);
    let k = calib::shipped();
    let copies = 2.0 * h100.memory.offloaded / (64e9 * k.scaleout_eff);
    // Every time of the estimate carries the H100's residual; the copies' physics does not.
    let f = k.chip_factor("h100");
    let busy = (h100.time.compute + h100.time.recompute) / f / micro_batches;
    let want = f * micro_batches * (copies - busy);
    assert!(want > 0.0 && (h100.time.offload / want - 1.0).abs() < 1e-9, "{:?}, want {want}", h100.time);
    assert_eq!(h100.memory.activations, all.memory.activations);
}

#[test]
fn offload_needs_a_host_link_and_at_most_a_stage_of_layers() {
    let e = run("tpu-v7", "tp=1,pp=1,mb=1,zero=3,offload=8", 64).unwrap_err().to_string();
    assert!(e.contains("--override tpu-v7.host_link_gbs=GB/S"), "{e}");
    let e = run("gb200", "tp=1,pp=4,mb=1,zero=1,offload=21", 64).unwrap_err().to_string();
    assert!(e.contains("offload=21 is more than a stage's 20 layers"), "{e}");
    assert!(run("gb200", "tp=1,pp=4,mb=1,zero=1,offload=20", 64).is_ok());
}

#[test]
fn offload_needs_a_stack_that_offloads() {
    let e = run_on("pytorch-fsdp", "gb200", "tp=1,pp=1,mb=2,zero=3,offload=40", 64).unwrap_err().to_string();
    assert!(e.contains("does not offload activations") && e.contains("activation_offload = true"), "{e}");
}

#[test]
fn offloaded_activations_must_fit_the_hosts_share_too() {
    // GB200: 240 GB of Grace memory per GPU, 80% of it for offload (192 GB, 178.8 GiB). Llama 3 70B
    // at two 8k sequences a micro-batch stores 290 GiB across its 80 layers: all of them offloaded
    // do not fit the host, half of them do.
    let all = run("gb200", "tp=1,pp=1,mb=2,zero=3,offload=80", 64).unwrap();
    let half = run("gb200", "tp=1,pp=1,mb=2,zero=3,offload=40", 64).unwrap();
    assert_eq!(all.host_capacity, Some(0.8 * 240e9));
    assert!(all.memory.offloaded > 0.8 * 240e9 && !all.fits(), "{:?}", all.memory);
    assert!(half.memory.offloaded < 0.8 * 240e9, "{:?}", half.memory);
    // A chip that does not state its host memory is not checked there.
    let tpu = ChipDb::builtin().find("tpu-v6e").unwrap().get("host_memory_gb");
    assert_eq!(tpu, None);
}
