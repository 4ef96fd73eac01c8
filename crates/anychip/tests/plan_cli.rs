//! The planner commands (`plan`, `chips`, `fleet`) as a user runs them: bad input is one clear
//! line on stderr, exit code 2, no panic; good input plans.

use anychip_test_support::cli::assert_clean_failure;
use anychip_test_support::scratch;
use std::fs;
use std::path::{Path, PathBuf};
use std::process::Output;

fn run(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_anychip")).args(args).output().unwrap()
}

/// `text` written to `dir/name`.
fn tmp(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    fs::write(&p, text).unwrap();
    p
}

/// Exit 2, exactly one stderr line starting with "error:" and naming every needle, no panic.
fn assert_one_line(o: &Output, needles: &[&str]) {
    assert_clean_failure(o, "error: ");
    for n in needles {
        assert_clean_failure(o, n);
    }
}

fn assert_ok(o: &Output) -> String {
    assert!(o.status.success(), "failed: {}", String::from_utf8_lossy(&o.stderr));
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn plan(model: &str, chips: &str, extra: &[&str]) -> Output {
    let mut a = vec!["plan", "--model", model, "--chips", chips, "--tokens", "1e12", "--json", "--top", "1"];
    a.extend_from_slice(extra);
    run(&a)
}

/// `anychip plan check --json` on the runs file `text`, written as `dir/runs.toml`.
fn check_runs(dir: &Path, text: &str) -> Output {
    let f = tmp(dir, "runs.toml", text);
    run(&["plan", "check", "--runs", f.to_str().unwrap(), "--json"])
}

/// `anychip fleet` on the given files, JSON out, charts into a scratch directory.
fn fleet_json(fleet: &std::path::Path, jobs: &std::path::Path) -> Output {
    let out = scratch("plan-cli-charts");
    let (f, j, o) = (fleet.to_str().unwrap(), jobs.to_str().unwrap(), out.to_str().unwrap());
    run(&["fleet", "--fleet", f, "--jobs", j, "--json", "--out", o])
}

#[test]
fn unknown_chip_lists_the_known_ones() {
    assert_one_line(&plan("llama3-8b", "nochip:8", &[]), &["unknown chip 'nochip'", "h100", "--chip-file"]);
}

#[test]
fn unknown_model_lists_presets() {
    assert_one_line(&plan("llama9-1t", "h100:8", &[]), &["unknown model 'llama9-1t'", "llama3-8b"]);
}

#[test]
fn zero_count_and_malformed_count() {
    assert_one_line(&plan("llama3-8b", "h100:0", &[]), &["count must be positive"]);
    assert_one_line(&plan("llama3-8b", "h100", &[]), &["NAME:COUNT"]);
}

#[test]
fn counts_beyond_any_cluster_or_batch_are_refused() {
    // Sizes whose products would overflow, or a batch the job ends before.
    assert_one_line(&plan("llama3-8b", "h100:18446744073709551615", &[]), &["at most 10000000"]);
    assert_one_line(
        &plan("llama3-8b", "h100:8", &["--layout", "tp=4294967296,pp=4294967296"]),
        &["tp=4294967296 is more than the 8 chips"],
    );
    assert_one_line(
        &plan("llama3-8b", "h100:8", &["--global-batch", "18446744073709551615"]),
        &["tokens a step, more than the 1.000e12 tokens to train"],
    );
}

#[test]
fn model_that_cannot_fit_says_how_much_it_needs() {
    assert_one_line(&plan("llama3-405b", "h100:1", &[]), &["does not fit", "GiB", "more chips"]);
}

#[test]
fn unknown_figure_names_field_and_override() {
    assert_one_line(&plan("qwen3-8b", "ppu:64", &[]), &["bf16_tflops is unknown", "--override ppu.bf16_tflops="]);
    let o = ["ppu.bf16_tflops=150", "ppu.mem_bw_tbs=2", "ppu.scaleup_domain=8", "ppu.scaleout_gbs=25"];
    let mut extra = vec![];
    for x in &o {
        extra.extend_from_slice(&["--override", x]);
    }
    assert_ok(&plan("qwen3-8b", "ppu:64", &extra));
}

#[test]
fn bad_override_is_explained() {
    assert_one_line(&plan("qwen3-8b", "h100:8", &["--override", "ppu.tflops=1"]), &["unknown chip field 'tflops'"]);
    assert_one_line(&plan("qwen3-8b", "h100:8", &["--override", "ppu.bf16_tflops=lots"]), &["not a number"]);
    // A zero power read as no limit and no energy; a fractional domain was truncated.
    assert_one_line(&plan("qwen3-8b", "h100:64", &["--override", "h100.tdp_w=0"]), &["tdp_w must be above zero"]);
    let half = plan("qwen3-8b", "h100:64", &["--override", "h100.scaleup_domain=2.5"]);
    assert_one_line(&half, &["scaleup_domain must be a whole number of chips, at least 1, got 2.5"]);
}

#[test]
fn malformed_toml_names_the_file() {
    let d = scratch("plan-cli");
    let chip =
        tmp(&d, "bad-chip.toml", "name = \"x1\"\n[specs]\nbf16_tflops = { value = 1, conf = \"Q\", source = \"s\" }\n");
    assert_one_line(&plan("qwen3-8b", "h100:8", &["--chip-file", chip.to_str().unwrap()]), &["bad-chip.toml"]);
    let model = tmp(&d, "bad-model.toml", "arch = \"llama\"\nvocab = 1000\nlayers = [\n");
    assert_one_line(&plan(model.to_str().unwrap(), "h100:8", &[]), &["bad-model.toml"]);
    let fleet = tmp(&d, "bad-fleet.toml", "[[pool]]\nname = \"a\"\nchip = \"h100\"\ncount = \"many\"\n");
    let jobs = tmp(&d, "jobs.toml", "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e9\n");
    assert_one_line(&fleet_json(&fleet, &jobs), &["bad-fleet.toml"]);
}

#[test]
fn user_chip_file_adds_a_chip_that_plans() {
    let d = scratch("plan-cli");
    let chip = tmp(
        &d,
        "x1.toml",
        r#"name = "x1"
family = "acme"
[specs]
bf16_tflops = { value = 400, conf = "L", source = "my measurement" }
memory_gb = { value = 64, conf = "L", source = "spec sheet" }
mem_bw_tbs = { value = 2, conf = "L", source = "spec sheet" }
scaleup_gbs = { value = 400, conf = "L", source = "spec sheet" }
scaleup_domain = { value = 8, conf = "L", source = "spec sheet" }
scaleout_gbs = { value = 25, conf = "L", source = "spec sheet" }
"#,
    );
    assert_ok(&plan("llama3-8b", "x1:16", &["--chip-file", chip.to_str().unwrap()]));
}

#[test]
fn compare_with_unknown_chip_fails_before_work() {
    let out = scratch("plan-cli-compare");
    let o = run(&[
        "chips",
        "compare",
        "h100",
        "nope",
        "--model",
        "qwen3-0.6b",
        "--count",
        "8",
        "--out",
        out.to_str().unwrap(),
    ]);
    assert_one_line(&o, &["unknown chip 'nope'"]);
}

#[test]
fn chips_list_and_show() {
    let list = assert_ok(&run(&["chips"]));
    assert!(list.contains("h100") && list.contains("a100"), "{list}");
    let show = assert_ok(&run(&["chips", "show", "h100"]));
    assert!(show.contains("bf16_tflops") && show.contains("datasheet"), "{show}");
}

#[test]
fn unknown_stack_lists_the_known_ones() {
    assert_one_line(
        &plan("llama3-8b", "h100:8", &["--stack", "megatron-9000"]),
        &["unknown stack 'megatron-9000'", "nemo-2025"],
    );
    // A framework named without its version gets its profiles (edit distance offered none).
    assert_one_line(
        &plan("llama3-8b", "h100:8", &["--stack", "maxtext"]),
        &["unknown stack 'maxtext' (did you mean one of 'maxtext-2023', 'maxtext-2025'?)"],
    );
}

#[test]
fn impossible_layout_says_why() {
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=3,pp=1"]);
    assert_one_line(&o, &["--layout", "does not divide the 64 chips"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,pp=4,vp=16"]);
    assert_one_line(&o, &["vp=16"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,ep=8"]);
    assert_one_line(&o, &["ep=8", "mixture-of-experts"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=2,etp=2"]);
    assert_one_line(&o, &["etp=2", "mixture-of-experts"]);
    // Qwen3-30B-A3B's experts are 768 wide: five ranks cannot split them.
    let o = plan("qwen3-30b-a3b", "h100:64", &["--layout", "tp=2,ep=8,etp=5"]);
    assert_one_line(&o, &["768", "etp=5"]);
    let o = plan("qwen3-30b-a3b", "h100:64", &["--layout", "tp=2,ep=16,etp=8"]);
    assert_one_line(&o, &["ep x etp = 128", "tp x cp x dp = 64"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,colour=blue"]);
    assert_one_line(&o, &["unknown key 'colour'"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,schedule=zb-h1"]);
    assert_one_line(&o, &["schedule=zb-h1", "pp > 1"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,pp=4,schedule=zb-v"]);
    assert_one_line(&o, &["schedule must be 1f1b, zb-h1, zb-h2 or dualpipe", "zb-v"]);
    let o = plan("llama3-8b", "h100:48", &["--layout", "tp=8,pp=3,schedule=dualpipe"]);
    assert_one_line(&o, &["dualpipe", "pp must be even"]);
    let o = plan("llama3-405b", "h100:8", &["--layout", "tp=8,zero=0"]);
    assert_one_line(&o, &["does not fit", "GiB"]);
    // ... and the layout is still priced on stdout: its step and memory, and why it does not fit.
    let p: serde_json::Value = serde_json::from_slice(&o.stdout).expect("the pinned layout's plan on stdout");
    assert_eq!(p["ranked"][0]["estimate"]["layout"]["tp"], 8, "{p}");
    assert!(p["ranked"][0]["step_s"].as_f64().unwrap() > 0.0, "{p}");
    assert!(p["over_memory"].as_str().unwrap().starts_with("needs "), "{p}");
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,pp=4,first=20,last=12"]);
    assert_one_line(&o, &["first/last stages hold 32 of the model's 32 layers", "other 2 stages"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,first=7"]);
    assert_one_line(&o, &["first= and last=", "pp=2 or more"]);
    // A zero micro-batch used to divide by zero in the batch arithmetic (a panic, exit 101).
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,mb=0"]);
    assert_one_line(&o, &["--layout", "mb=0", "at least 1"]);
    // A key given twice, under one spelling or two, was taken at its last value without a word.
    let o = plan("llama3-8b", "h100:64", &["--layout", "tp=8,tp=4"]);
    assert_one_line(&o, &["--layout", "tp is given twice"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "pp=2,vp=2,v=4"]);
    assert_one_line(&o, &["--layout", "vp is given twice"]);
    let o = plan("llama3-8b", "h100:64", &["--layout", "pp=2,vp=2,VPP=4"]);
    assert_one_line(&o, &["--layout", "vp is given twice"]);
}

#[test]
fn layout_keys_take_any_case_and_megatrons_names() {
    // As Megatron's and NeMo's flags and tables spell them: TP, PP, VPP, MBS.
    let layout = |spec: &str| {
        let v: serde_json::Value =
            serde_json::from_str(&assert_ok(&plan("llama3-70b", "h100:64", &["--layout", spec]))).unwrap();
        v["ranked"][0]["estimate"]["layout"].clone()
    };
    assert_eq!(layout("TP=8,PP=2,VPP=2,MBS=1"), layout("tp=8,pp=2,vp=2,mb=1"));
    assert_eq!(layout("TP=8,PP=2,VPP=2,MBS=1")["v"], 2);
}

#[test]
fn a_layout_the_stack_cannot_run_is_refused() {
    // Megatron-Core of 2024 has the distributed optimizer (ZeRO-1) and no FSDP.
    let o = plan("llama3-8b", "h100:64", &["--stack", "megatron-core-2024", "--layout", "tp=8,zero=2"]);
    assert_one_line(&o, &["stack megatron-core-2024 has no ZeRO stage 2", "zero=0 or 1"]);
    // PyTorch FSDP has no optimizer-only stage.
    let o = plan("llama3-8b", "h100:64", &["--stack", "pytorch-fsdp", "--layout", "tp=1,zero=1"]);
    assert_one_line(&o, &["stack pytorch-fsdp has no ZeRO stage 1", "zero=0 or 2 or 3"]);
    // DeepSpeed's pipeline engine: ZeRO-1 at most, one chunk a stage.
    let o = plan("llama3-8b", "h100:64", &["--stack", "megatron-deepspeed", "--layout", "tp=8,pp=4,zero=2"]);
    assert_one_line(&o, &["ZeRO stage 2 only without pipeline stages", "zero=1 with pp > 1"]);
    let o = plan("llama3-8b", "h100:64", &["--stack", "megatron-deepspeed", "--layout", "tp=8,pp=4,vp=2,zero=1"]);
    assert_one_line(&o, &["megatron-deepspeed runs one pipeline chunk a stage", "vp=1"]);
    assert_ok(&plan("llama3-8b", "h100:64", &["--stack", "megatron-deepspeed", "--layout", "tp=8,pp=4,zero=1"]));
    // PyTorch FSDP shards data parallelism only: a layer split is refused, and a model that
    // fits only split says which stacks split layers.
    let o = plan("llama3-8b", "h100:64", &["--stack", "pytorch-fsdp", "--layout", "tp=2,zero=3"]);
    assert_one_line(&o, &["stack pytorch-fsdp has no tensor parallelism (tp=2)", "tp=1"]);
    let o = plan("llama3-405b", "h100:64", &["--stack", "pytorch-fsdp"]);
    assert_one_line(
        &o,
        &["does not fit", "stack pytorch-fsdp has no tensor or pipeline parallelism", "torchtitan-2024"],
    );
    // BigScience's Megatron-DeepSpeed checkpoints whole layers and has no sequence parallelism:
    // selective recompute is refused, and a pinned layout there runs without sequence
    // parallelism unless it asks for it, which is refused too.
    let o = plan("llama3-8b", "h100:64", &["--stack", "megatron-deepspeed", "--layout", "tp=8,recompute=selective"]);
    assert_one_line(&o, &["megatron-deepspeed recomputes none or full only", "recompute=none or recompute=full"]);
    let o = plan("llama3-8b", "h100:64", &["--stack", "megatron-deepspeed", "--layout", "tp=8,sp=1"]);
    assert_one_line(&o, &["megatron-deepspeed has no sequence parallelism", "sp=0"]);
    let v: serde_json::Value = serde_json::from_str(&assert_ok(&plan(
        "llama3-8b",
        "h100:64",
        &["--stack", "megatron-deepspeed", "--layout", "tp=8"],
    )))
    .unwrap();
    assert_eq!(v["ranked"][0]["estimate"]["layout"]["sp"], false, "{v}");
    // And the search recommends neither.
    let args = ["plan", "--model", "llama3-70b", "--chips", "a100:64", "--tokens", "1e12", "--stack"];
    let json = assert_ok(&run(&[&args[..], &["megatron-deepspeed", "--json", "--top", "1000"]].concat()));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let ranked = v["ranked"].as_array().unwrap();
    assert!(!ranked.is_empty(), "{v}");
    for r in ranked {
        let l = &r["estimate"]["layout"];
        assert!(l["recompute"] != "selective" && l["sp"] == false, "{l}");
    }
}

#[test]
fn an_uneven_pipeline_split_is_pinned_and_reported() {
    // Llama 3 8B at pp 4 with 7 layers on the first and last stages (the two between hold 9):
    // the layout is evaluated as pinned and JSON carries the split.
    let o = plan("llama3-8b", "h100:32", &["--layout", "tp=8,pp=4,first=7,last=7,recompute=full"]);
    let v: serde_json::Value = serde_json::from_str(&assert_ok(&o)).unwrap();
    let layout = &v["ranked"][0]["estimate"]["layout"];
    assert_eq!((layout["first_layers"].as_u64(), layout["last_layers"].as_u64()), (Some(7), Some(7)));
}

#[test]
fn a_pinned_layout_runs_the_stacks_pipeline_schedule_unless_it_names_one() {
    // hai-llm-2024 (DeepSeek-V3's HAI-LLM) runs DualPipe: a pinned pipeline gets it, as the
    // search's layouts and the published rows do, and schedule= overrides it (JSON carries it).
    let schedule = |layout: &str| -> serde_json::Value {
        let o = plan("llama3-8b", "h800:64", &["--stack", "hai-llm-2024", "--layout", layout]);
        let v: serde_json::Value = serde_json::from_str(&assert_ok(&o)).unwrap();
        v["ranked"][0]["estimate"]["layout"]["schedule"].clone()
    };
    assert_eq!(schedule("tp=1,pp=4"), "dualpipe");
    assert_eq!(schedule("tp=1,pp=4,schedule=1f1b"), "1f1b");
    assert_eq!(schedule("tp=1,pp=4,schedule=zb-h1"), "zb-h1");
    assert_eq!(schedule("tp=8,pp=1"), "1f1b");
}

#[test]
fn moe_fields_on_a_dense_arch_are_refused() {
    let d = scratch("plan-cli");
    let m = tmp(
        &d,
        "dense-with-experts.toml",
        "arch = \"llama\"\nvocab = 32000\nlayers = 8\nheads = 8\nd_model = 1024\nd_ff = 4096\nexperts = 8\n",
    );
    assert_one_line(&plan(m.to_str().unwrap(), "h100:8", &[]), &["is dense", "arch = \"moe\""]);
}

#[test]
fn chip_file_missing_a_figure_names_it() {
    let d = scratch("plan-cli");
    let chip = tmp(&d,
        "x2.toml",
        "name = \"x2\"\n[specs]\nmemory_gb = { value = 64, conf = \"L\", source = \"s\" }\nmem_bw_tbs = { value = 2, conf = \"L\", source = \"s\" }\nscaleup_gbs = { value = 400, conf = \"L\", source = \"s\" }\nscaleup_domain = { value = 8, conf = \"L\", source = \"s\" }\n",
    );
    assert_one_line(
        &plan("llama3-8b", "x2:8", &["--chip-file", chip.to_str().unwrap()]),
        &["bf16_tflops", "--override x2.bf16_tflops="],
    );
    let o = plan("llama3-8b", "a100:8", &["--precision", "fp8"]);
    assert_one_line(&o, &["fp8_tflops", "--precision bf16"]);
}

#[test]
fn pinned_layout_is_explained_and_names_the_stack() {
    let o = run(&[
        "plan",
        "--model",
        "llama3-70b",
        "--chips",
        "h100:64",
        "--tokens",
        "1e12",
        "--stack",
        "megatron-core-2024",
        "--layout",
        "tp=4,pp=8,vp=5,mb=1,zero=1,recompute=none",
        "--precision",
        "fp8",
    ]);
    let out = assert_ok(&o);
    assert!(out.contains("stack: megatron-core-2024") && out.contains("precision: fp8"), "{out}");
    assert!(out.contains("tp4 pp8 dp2 v5 mb1 rc:none zero1"), "{out}");
    for part in ["compute", "recompute", "exposed TP", "bubble", "exposed DP", "optimizer", "weights", "activations"] {
        assert!(out.contains(part), "{part} missing: {out}");
    }
    let j = assert_ok(&plan("qwen3-30b-a3b", "h100:16", &["--stack", "nemo-2025"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    let best = &v["ranked"][0]["estimate"];
    for part in ["compute", "recompute", "tp_comm", "cp_comm", "ep_comm", "bubble", "dp_comm", "optimizer"] {
        assert!(best["time"][part].is_number(), "time.{part} missing: {best}");
    }
    assert!(best["memory"]["gathered"].is_number() && best["memory"]["optimizer"].is_number(), "{best}");
    assert_eq!(v["stack"], "nemo-2025");
    // A pinned expert tensor-parallel degree is evaluated and reported as given.
    let j = assert_ok(&plan("qwen3-30b-a3b", "h100:16", &["--layout", "tp=2,ep=4,etp=2,mb=1"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["ranked"][0]["estimate"]["layout"]["etp"], 2, "{v}");
}

#[test]
fn zero_global_batch_and_non_finite_tokens_are_refused() {
    // Before: 0 tokens/s and "inf" days; `--tokens inf` printed JSON null.
    assert_one_line(&plan("qwen3-8b", "h100:8", &["--global-batch", "0"]), &["--global-batch", "at least 1"]);
    for t in ["inf", "NaN", "0"] {
        let o = run(&["plan", "--model", "qwen3-8b", "--chips", "h100:8", "--tokens", t, "--json"]);
        assert_one_line(&o, &["--tokens", "positive finite", "e.g. 2e12"]);
    }
}

#[test]
fn zero_chip_rate_is_refused_instead_of_nan_mfu() {
    let d = scratch("plan-cli");
    // Before: MFU NaN% and infinite step times.
    let o = plan("qwen3-8b", "h100:8", &["--override", "h100.bf16_tflops=0"]);
    assert_one_line(&o, &["bf16_tflops must be above zero", "--override h100.bf16_tflops=VALUE"]);
    let chip = tmp(&d,
        "x0.toml",
        "name = \"x0\"\n[specs]\nbf16_tflops = { value = 0, conf = \"L\", source = \"s\" }\nmemory_gb = { value = 64, conf = \"L\", source = \"s\" }\nmem_bw_tbs = { value = 2, conf = \"L\", source = \"s\" }\nscaleup_gbs = { value = 400, conf = \"L\", source = \"s\" }\nscaleup_domain = { value = 8, conf = \"L\", source = \"s\" }\n",
    );
    let o = plan("qwen3-8b", "x0:8", &["--chip-file", chip.to_str().unwrap()]);
    assert_one_line(&o, &["chip x0: bf16_tflops must be above zero", "chip file"]);
}

#[test]
fn fleet_job_with_zero_global_batch_is_refused_not_a_hang() {
    let d = scratch("plan-cli");
    // Before: an "inf" table, then 100% CPU forever.
    let fleet = tmp(&d, "fleet-ok.toml", "[[pool]]\nname = \"a\"\nchip = \"h100\"\ncount = 16\n");
    for (name, text, want) in [
        (
            "jobs-gb0.toml",
            "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e9\nglobal_batch = 0\n",
            "job j: global_batch must be at least 1",
        ),
        ("jobs-inf.toml", "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = inf\n", "job j: tokens must be"),
        (
            "jobs-big.toml",
            "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e6\nglobal_batch = 512\nseq = 2048\n",
            "job j: global_batch 512 sequences of 2048 tokens is 1.049e6 tokens a step, more than the 1.000e6 tokens to train",
        ),
        (
            "jobs-deadline.toml",
            "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e9\ndeadline_days = -1\n",
            "job j: deadline_days must be a positive number of days",
        ),
    ] {
        assert_one_line(&fleet_json(&fleet, &tmp(&d, name, text)), &[want]);
    }
}

/// Two pools or two jobs of one name, and two pools of one chip kind with different assumptions
/// (which the fleet plans as one kind, so the second's figures were dropped without a word), are
/// refused with the names.
#[test]
fn fleet_names_are_unique_and_pools_of_a_kind_agree() {
    let d = scratch("plan-cli");
    let job = "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e9\n";
    let jobs = tmp(&d, "jobs-one.toml", job);
    let pool = |name: &str, extra: &str| format!("[[pool]]\nname = \"{name}\"\nchip = \"h100\"\ncount = 8\n{extra}");
    let fleet = tmp(&d, "fleet-twice.toml", &(pool("a", "") + &pool("a", "")));
    assert_one_line(&fleet_json(&fleet, &jobs), &["two pools are named 'a'"]);
    let fleet = tmp(&d, "fleet-differ.toml", &(pool("a", "") + &pool("b", "[pool.overrides]\nscaleout_gbs = 25\n")));
    assert_one_line(&fleet_json(&fleet, &jobs), &["pools 'a' and 'b' are both h100 but assume different figures"]);
    // Under another spelling of the same chip too.
    let aliased = pool("b", "[pool.overrides]\nscaleout_gbs = 25\n").replace("\"h100\"", "\"H100-SXM\"");
    let fleet = tmp(&d, "fleet-alias.toml", &(pool("a", "") + &aliased));
    assert_one_line(&fleet_json(&fleet, &jobs), &["pools 'a' and 'b' are both h100 but assume different figures"]);
    let fleet = tmp(&d, "fleet-agree.toml", &(pool("a", "price_per_hour = 2\n") + &pool("b", "price_per_hour = 2\n")));
    assert_ok(&fleet_json(&fleet, &jobs));
    let jobs = tmp(&d, "jobs-twice.toml", &format!("{job}{job}"));
    assert_one_line(&fleet_json(&fleet, &jobs), &["job 2 and an earlier job are both named 'j'"]);
}

#[test]
fn a_hugging_face_config_plans_like_its_preset() {
    let d = scratch("plan-cli");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plan/tests/hf_configs/Qwen3-30B-A3B");
    let from_config = assert_ok(&plan(dir.to_str().unwrap(), "h100:16", &[]));
    let from_preset = assert_ok(&plan("qwen3-30b-a3b", "h100:16", &[]));
    let tokens_per_s = |s: &str| {
        let v: serde_json::Value = serde_json::from_str(s).unwrap();
        v["ranked"][0]["estimate"]["tokens_per_s"].as_f64().unwrap_or_else(|| panic!("no tokens_per_s in {s}"))
    };
    assert_eq!(tokens_per_s(&from_config), tokens_per_s(&from_preset));
    assert!(from_config.contains("Qwen3-30B-A3B"), "{from_config}");
    let bad = tmp(&d, "config.json", r#"{"model_type": "t5", "d_model": 512}"#);
    assert_one_line(&plan(bad.to_str().unwrap(), "h100:8", &[]), &["model_type 't5'", "TOML model file"]);
}

/// A config of a family the planner does not know by name plans like the family whose field
/// names it uses, and the plan says what was assumed: a header line, `model_note` in JSON.
#[test]
fn an_unknown_model_type_plans_by_standard_names_and_says_so() {
    let d = scratch("plan-cli-new-family");
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plan/tests/hf_configs/Qwen3-30B-A3B");
    let text = fs::read_to_string(dir.join("config.json")).unwrap().replace("\"qwen3_moe\"", "\"new_family\"");
    assert!(text.contains("new_family"));
    let config = tmp(&d, "config.json", &text);
    let json = assert_ok(&plan(config.to_str().unwrap(), "h100:16", &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let note = v["model_note"].as_str().unwrap_or_else(|| panic!("no model_note in {json}"));
    assert!(note.contains("model_type 'new_family'") && note.contains("Qwen-MoE's field names"), "{note}");
    let preset: serde_json::Value = serde_json::from_str(&assert_ok(&plan("qwen3-30b-a3b", "h100:16", &[]))).unwrap();
    assert_eq!(preset["model_note"], serde_json::Value::Null);
    assert_eq!(v["ranked"][0]["estimate"]["tokens_per_s"], preset["ranked"][0]["estimate"]["tokens_per_s"]);
    let table =
        assert_ok(&run(&["plan", "--model", config.to_str().unwrap(), "--chips", "h100:16", "--tokens", "1e12"]));
    assert!(table.lines().any(|l| l.starts_with("model: model_type 'new_family'")), "{table}");
}

#[test]
fn a_stack_file_plans_and_names_itself() {
    let d = scratch("plan-cli");
    let s = tmp(&d, "our-launcher.toml", "base = \"megatron-core-2024\"\noverlap_tp = false\n");
    let o = run(&[
        "plan",
        "--model",
        "llama3-8b",
        "--chips",
        "h100:16",
        "--tokens",
        "1e12",
        "--stack",
        s.to_str().unwrap(),
    ]);
    assert!(assert_ok(&o).contains("stack: our-launcher"));
    let bad = tmp(&d, "typo-stack.toml", "base = \"megatron-core-2024\"\noverlap_tpp = false\n");
    assert_one_line(
        &plan("llama3-8b", "h100:16", &["--stack", bad.to_str().unwrap()]),
        &["typo-stack.toml", "overlap_tpp"],
    );
    let none = tmp(&d, "no-zero.toml", "base = \"megatron-core-2024\"\nzero_stages = []\n");
    assert_one_line(
        &plan("llama3-8b", "h100:16", &["--stack", none.to_str().unwrap()]),
        &["no-zero.toml", "zero_stages"],
    );
    for (name, text, want) in [
        ("no-recompute.toml", "recompute_modes = []\n", "recompute_modes must list"),
        ("bad-recompute.toml", "recompute_modes = [\"partial\"]\n", "partial"),
    ] {
        let f = tmp(&d, name, &format!("base = \"megatron-core-2024\"\n{text}"));
        assert_one_line(&plan("llama3-8b", "h100:16", &["--stack", f.to_str().unwrap()]), &[name, want]);
    }
    // A stack file that names ZeRO-2 lets a pinned layout use it.
    let fsdp = tmp(&d, "with-fsdp.toml", "base = \"megatron-core-2024\"\nzero_stages = [0, 1, 2, 3]\n");
    assert_ok(&plan("llama3-8b", "h100:16", &["--stack", fsdp.to_str().unwrap(), "--layout", "tp=1,zero=2"]));
}

#[test]
fn a_flashattention2_stack_says_what_it_costs_on_hopper_and_not_on_a100() {
    let text = |chips: &str, stack: &str| {
        assert_ok(&run(&["plan", "--model", "llama3-8b", "--chips", chips, "--tokens", "1e12", "--stack", stack]))
    };
    let note = "attention FlashAttention-2 class, 56% of the chip's fused-attention rate";
    let h100 = text("h100:8", "torchtitan-2024");
    assert!(h100.contains(note), "{h100}");
    let a100 = text("a100:8", "torchtitan-2024");
    assert!(!a100.contains("FlashAttention-2 class"), "{a100}");
    let nemo = text("h100:8", "nemo-2025");
    assert!(!nemo.contains("FlashAttention-2 class"), "{nemo}");
    let j = assert_ok(&plan("llama3-8b", "h100:8", &["--stack", "torchtitan-2024"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert!((v["attention_kernel"].as_f64().unwrap() - 0.56).abs() < 1e-9, "{j}");
}

#[test]
fn a_chip_held_below_its_rated_clock_by_its_measured_gemm_rate_says_so() {
    let text = |chips: &str| assert_ok(&run(&["plan", "--model", "llama3-8b", "--chips", chips, "--tokens", "1e12"]));
    // AMD's 843 TFLOP/s of 1,307 rated, at the shipped gemm_eff: about 0.78 of the rated clock.
    let k = anychip_plan::calib::shipped();
    let db = anychip_plan::chips::ChipDb::builtin();
    let clock = anychip_plan::perf::maf_clock(db.find("mi325x").unwrap(), &k);
    assert!((0.7..0.85).contains(&clock), "{clock}");
    let mi325x = text("mi325x:8");
    let note = format!("tensor clock {:.0}% of rated (its measured max-achievable GEMM rate", 100.0 * clock);
    assert!(mi325x.contains(&note), "{mi325x}");
    let h100 = text("h100:8");
    assert!(!h100.contains("tensor clock"), "{h100}");
}

#[test]
fn a_stack_with_the_cudnn_of_2025_says_how_much_faster_its_attention_is_priced() {
    let k = anychip_plan::calib::shipped();
    let text = |stack: &str| {
        assert_ok(&run(&["plan", "--model", "llama3-8b", "--chips", "h100:8", "--tokens", "1e12", "--stack", stack]))
    };
    let note = format!("attention cuDNN of 2025, {:.2}x the 2023-2024 kernels' rate", 1.0 + k.attn_gain_2025);
    let nemo = text("nemo-2025");
    assert!(k.attn_gain_2025 > 0.0 && nemo.contains(&note), "{nemo}");
    let old = text("nemo-2023");
    assert!(!old.contains("cuDNN of 2025"), "{old}");
    let j = assert_ok(&plan("llama3-8b", "h100:8", &["--stack", "nemo-2025"]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert!((v["attention_speedup"].as_f64().unwrap() - (1.0 + k.attn_gain_2025)).abs() < 1e-9, "{j}");
}

#[test]
fn a_chip_with_published_runs_carries_and_names_its_residual() {
    let k = anychip_plan::calib::shipped();
    let gb200 = k.chip_residual.get("gb200").expect("gb200 has published runs").clone();
    assert!(gb200.factor != 1.0 && gb200.runs > 0, "{gb200:?}");
    let text = assert_ok(&run(&["plan", "--model", "llama3-8b", "--chips", "gb200:8", "--tokens", "1e12"]));
    let note = format!("{} runs: the chip runs", gb200.runs);
    assert!(text.contains(&note) && text.contains(&format!("every time here is x{:.3}", gb200.factor)), "{text}");
    let j = assert_ok(&plan("llama3-8b", "gb200:8", &[]));
    let v: serde_json::Value = serde_json::from_str(&j).unwrap();
    assert_eq!(v["chip_residual"]["runs"].as_u64(), Some(gb200.runs as u64), "{j}");
    // Its times are the physics' times the factor: the same plan with the residual removed.
    let mut bare = k.clone();
    bare.chip_residual.clear();
    let db = anychip_plan::chips::ChipDb::builtin();
    let chip = db.find("gb200").unwrap();
    let step = |k: &anychip_plan::calib::Constants| {
        let rates = anychip_plan::perf::Rates::of(chip, k, 8, anychip_plan::perf::Precision::Bf16).unwrap();
        let m = anychip_plan::model::resolve("llama3-8b").unwrap();
        let job = anychip_plan::perf::Job {
            arch: &m.arch,
            seq: 4096,
            global_batch: 64,
            precision: anychip_plan::perf::Precision::Bf16,
        };
        let l = anychip_plan::search::parse_layout("tp=1,pp=1,mb=1,zero=1", 8).unwrap();
        let stack = anychip_plan::stack::find("unknown").unwrap();
        anychip_plan::perf::estimate(&job, &l, &rates, k, &stack, f64::INFINITY).unwrap().time.total()
    };
    assert!((step(&k) / step(&bare) / gb200.factor - 1.0).abs() < 1e-12);
    // A chip without runs is priced from its datasheet alone and says so.
    let h20 = assert_ok(&run(&["plan", "--model", "llama3-8b", "--chips", "h20:8", "--tokens", "1e12"]));
    assert!(
        h20.contains("NO published run of this chip is in the calibration") && !h20.contains("the chip runs"),
        "{h20}"
    );
}

/// Every plan names its error bar: on a calibrated family the cross-validated error of its own
/// runs, on a family whose only runs are the held-out file's their blind error, on a family
/// without published runs the error with a whole family held out.
#[test]
fn plan_states_its_accuracy() {
    // The `accuracy:` line of `plan` run with these arguments.
    let accuracy = |args: &[&str]| {
        let o = run(&[&["plan"], args].concat());
        assert_ok(&o).lines().find(|l| l.starts_with("accuracy:")).unwrap_or_default().to_string()
    };
    let text =
        |model: &str, chips: &str| accuracy(&["--model", model, "--chips", chips, "--tokens", "1e12", "--top", "1"]);
    let h100 = text("llama3-8b", "h100:64");
    assert!(h100.contains("dense runs on nvidia chips, each predicted with its source held out"), "{h100}");
    let ascend = text("llama3-8b", "910b:64");
    assert!(ascend.contains("dense runs on ascend chips, never fitted (the held-out file)"), "{ascend}");
    let cambricon = accuracy(&[
        "--model",
        "llama3-8b",
        "--chips",
        "mlu370:8",
        "--tokens",
        "1e12",
        "--top",
        "1",
        "--override",
        "mlu370.scaleup_domain=8",
    ]);
    assert!(cambricon.contains("fewer than 5 published dense runs on a chip of the cambricon family"), "{cambricon}");
    assert!(cambricon.contains("tpu") && cambricon.contains("gaudi"), "every held-out family is listed: {cambricon}");
    let v = plan("qwen3-30b-a3b", "tpu-v5p:64", &[]);
    let json: serde_json::Value = serde_json::from_str(&assert_ok(&v)).unwrap();
    let classes = json["accuracy"].as_array().unwrap();
    // The default stack (`unknown`) has no flex dispatcher: MoE runs with an all-to-all one.
    assert_eq!(json["kind"], "moe");
    assert_eq!(json["accuracy_class"], "moe-all-to-all");
    assert!(classes.iter().all(|c| c["kind"] == "moe-all-to-all" && c["family"] == "tpu"), "{classes:?}");
    assert!(classes.iter().any(|c| c["held_out"] == "blind"), "the held-out TPU MoE runs: {classes:?}");
    // On NVIDIA chips the two dispatchers' runs are two classes, each with its own error bar.
    let dispatch = |stack: &str| {
        accuracy(&["--model", "qwen3-30b-a3b", "--chips", "h100:64", "--tokens", "1e12", "--stack", stack])
    };
    let (a2a, flex) = (dispatch("nemo-2025"), dispatch("nemo-2025-flex"));
    assert!(a2a.contains("MoE runs with an all-to-all token dispatcher on nvidia chips"), "{a2a}");
    assert!(flex.contains("MoE runs on nvidia chips") && !flex.contains("all-to-all"), "{flex}");
    // A long job reads the long runs' figure: for MoE, the held-out long-context rows.
    let long = accuracy(&[
        "--model",
        "qwen3-235b-a22b",
        "--chips",
        "h100:256",
        "--tokens",
        "1e9",
        "--seq",
        "131072",
        "--global-batch",
        "256",
        "--stack",
        "nemo-2025-flex",
        "--layout",
        "tp=4,pp=8,vp=4,cp=8,ep=8,mb=1,modules=layernorm+moe",
    ]);
    assert!(long.contains("MoE runs at 16k tokens or more on nvidia chips, never fitted"), "{long}");
    // `chips compare` gives each row its error bar: one figure, or a range for an unseen family.
    let out = scratch("plan-cli-compare-error");
    let o = run(&[
        "chips",
        "compare",
        "h100",
        "910b",
        "mlu370",
        "--model",
        "llama3-8b",
        "--count",
        "8",
        "--override",
        "mlu370.scaleup_domain=8",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = assert_ok(&o);
    let row = |chip: &str| text.lines().find(|l| l.starts_with(chip)).unwrap_or_default().to_string();
    let (h100, ascend, cambricon) = (row("h100 "), row("910b "), row("mlu370 "));
    // The error column: the last field, or the one before a chip without fitted runs' `*`.
    let error = |r: &str| r.split_whitespace().rfind(|f| f.starts_with('±')).unwrap_or_default().to_string();
    assert!(!error(&h100).is_empty() && !error(&h100).contains('-') && !h100.ends_with(" *"), "{h100}");
    // The 910B has no fitted run (*) but blind ones: one figure. The MLU370 has none: a range.
    assert!(!error(&ascend).is_empty() && !error(&ascend).contains('-') && ascend.ends_with(" *"), "{ascend}");
    assert!(error(&cambricon).contains('-') && cambricon.ends_with(" *"), "{cambricon}");
    // So does every share of a fleet placement.
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    let sched: serde_json::Value =
        serde_json::from_str(&assert_ok(&fleet_json(&ex.join("fleet.toml"), &ex.join("jobs.toml")))).unwrap();
    let shares: Vec<&serde_json::Value> =
        sched["assignments"].as_array().unwrap().iter().flat_map(|a| a["shares"].as_array().unwrap()).collect();
    assert!(!shares.is_empty() && shares.iter().all(|s| s["error"].as_str().unwrap().starts_with('±')), "{shares:?}");
}

/// A plan on the default stack also quotes the runs of frameworks without a profile priced on it
/// (FlagPerf's PaddleNLP runs) and what the held-out file's runs of its class are off by when
/// priced on it instead of their framework's profile; a plan that names its stack does not.
#[test]
fn the_default_stack_quotes_the_unprofiled_runs() {
    let args = ["plan", "--model", "llama3-8b", "--chips", "h100:64", "--tokens", "1e12", "--top", "1"];
    let line = |extra: &[&str]| {
        let text = assert_ok(&run(&[&args[..], extra].concat()));
        text.lines().find(|l| l.starts_with("on the default stack")).map(str::to_string)
    };
    let default = line(&[]).expect("a plan on the default stack quotes its runs");
    assert!(default.contains("dense runs of frameworks without a profile, priced on it, on nvidia chips"), "{default}");
    assert!(default.contains("fast on average"), "{default}");
    assert_eq!(line(&["--stack", "megatron-core-2024"]), None);
    let json: serde_json::Value = serde_json::from_str(&assert_ok(&plan("llama3-8b", "h100:64", &[]))).unwrap();
    let classes = json["default_stack_accuracy"].as_array().unwrap();
    let kinds: Vec<&str> = classes.iter().map(|c| c["kind"].as_str().unwrap_or_default()).collect();
    assert_eq!(kinds, ["dense-unprofiled", "dense-on-default"], "{classes:?}");
    assert!(default.contains("dense runs of the held-out file priced on it instead of their framework's profile"));
    // A MoE job on it: its runs slower than their own profiles price them (no flex dispatcher, no
    // overlap), which the line says.
    let moe =
        assert_ok(&run(&["plan", "--model", "qwen3-30b-a3b", "--chips", "h100:64", "--tokens", "1e12", "--top", "1"]));
    let moe = moe.lines().find(|l| l.starts_with("on the default stack")).unwrap_or_default();
    assert!(
        moe.contains("MoE runs with an all-to-all token dispatcher of the held-out file")
            && moe.contains("slow on average"),
        "{moe}"
    );
}

#[test]
fn a_model_with_published_runs_quotes_the_error_on_its_own_runs() {
    let text =
        assert_ok(&run(&["plan", "--model", "gpt-oss-120b", "--chips", "h100:64", "--tokens", "1e12", "--top", "1"]));
    let line = text
        .lines()
        .find(|l| l.starts_with("on gpt-oss-120b itself, on any chip: "))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("published runs, each predicted with its source held out: mean error"), "{line}");
    let json: serde_json::Value = serde_json::from_str(&assert_ok(&plan("gpt-oss-120b", "h100:64", &[]))).unwrap();
    let own = json["model_accuracy"].as_array().unwrap();
    assert!(!own.is_empty() && own.iter().all(|a| a["model"] == "gpt-oss-120b"), "{own:?}");
    // A model no published run used: no such line, an empty list.
    let text = assert_ok(&run(&["plan", "--model", "qwen3-8b", "--chips", "h100:8", "--tokens", "1e12", "--top", "1"]));
    assert!(!text.contains("itself, on any chip"), "{text}");
    let json: serde_json::Value = serde_json::from_str(&assert_ok(&plan("qwen3-8b", "h100:8", &[]))).unwrap();
    assert_eq!(json["model_accuracy"].as_array().map(|a| a.len()), Some(0));
}

/// A reader that goes away (`anychip plan ... | head`) ends the command quietly, as SIGPIPE
/// ends any other tool, instead of a panic and its backtrace on stderr.
#[cfg(unix)]
#[test]
fn a_closed_pipe_ends_the_command_without_a_panic() {
    use std::os::unix::process::ExitStatusExt;
    use std::process::{Command, Stdio};
    let mut child = Command::new(env!("CARGO_BIN_EXE_anychip"))
        .args(["plan", "--model", "llama3-8b", "--chips", "h100:8", "--tokens", "1e12", "--top", "50"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    // Close the read end before the plan is printed.
    drop(child.stdout.take());
    let out = child.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!stderr.contains("panicked"), "{stderr}");
    // Ended by SIGPIPE, the disposition main.rs restores.
    assert_eq!(out.status.signal(), Some(libc::SIGPIPE), "{:?}", out.status);
}

#[test]
fn a_plan_across_nodes_names_the_network_it_assumed_and_how_to_change_it() {
    // The chip file's scale-out link is one reference system's (a DGX H100's 400 Gb/s a GPU); a
    // cluster with a thinner one must be able to see and replace it.
    let table = |chips: &str, extra: &[&str]| {
        let mut a = vec!["plan", "--model", "llama3-8b", "--chips", chips, "--tokens", "1e12", "--top", "1"];
        a.extend_from_slice(extra);
        assert_ok(&run(&a))
    };
    let across = table("h100:64", &[]);
    let line =
        across.lines().find(|l| l.starts_with("network: ")).unwrap_or_else(|| panic!("no network line:\n{across}"));
    assert!(
        line.contains("50 GB/s a chip between 8-chip domains") && line.contains("--override h100.scaleout_gbs="),
        "{line}"
    );
    let thin = table("h100:64", &["--override", "h100.scaleout_gbs=6.25"]);
    assert!(thin.contains("network: 6.25 GB/s a chip"), "{thin}");
    assert!(!table("h100:8", &[]).contains("network: "), "one node crosses no network");
    let json: serde_json::Value =
        serde_json::from_str(&assert_ok(&plan("llama3-8b", "h100:64", &["--override", "h100.scaleout_gbs=6.25"])))
            .unwrap();
    assert_eq!(json["network"]["scaleout_gbs"], 6.25, "{}", json["network"]);
    assert_eq!(json["network"]["scaleup_domain"], 8.0, "{}", json["network"]);
}

/// Under FP8 the MFU column stays against the BF16 peak and can pass 100% (Llama 3 70B on H20s,
/// whose FP8 rate is twice its BF16 rate): the plan says so and gives the share of the FP8 peak;
/// a BF16 plan has no such line.
#[test]
fn an_fp8_plan_says_what_its_mfu_is_against() {
    let args = ["plan", "--model", "llama3-70b", "--chips", "h20:64", "--tokens", "1e12", "--top", "1"];
    let fp8 = assert_ok(&run(&[&args[..], &["--precision", "fp8"]].concat()));
    let line = fp8.lines().find(|l| l.starts_with("MFU is against the BF16 peak")).unwrap_or_default();
    assert!(line.contains("(148 TFLOP/s), also for fp8 runs; against the fp8 peak (296 TFLOP/s)"), "{fp8}");
    // The row's MFU (against 148) is twice the share of the FP8 peak (against 296).
    let row = fp8.lines().find(|l| l.starts_with("1 ")).unwrap_or_default();
    let pct = |s: &str| s.trim_end_matches('%').parse::<f64>().unwrap_or(f64::NAN);
    let mfu = row.split_whitespace().find(|f| f.ends_with('%')).map(pct).unwrap_or(f64::NAN);
    let share = line.rsplit(' ').next().map(pct).unwrap_or(f64::NAN);
    assert!((mfu - 2.0 * share).abs() < 0.15, "{row} / {line}");
    let bf16 = assert_ok(&run(&args));
    assert!(!bf16.contains("MFU is against"), "{bf16}");
}

/// `chips compare --precision fp8` prices every chip in FP8 and refuses, on its own row, a chip
/// without an FP8 rate.
#[test]
fn chips_compare_takes_a_precision() {
    let out = scratch("plan-cli-compare-fp8");
    let compare = |precision: &str| {
        let o = run(&[
            "chips",
            "compare",
            "h100",
            "v100",
            "--model",
            "llama3-8b",
            "--count",
            "8",
            "--precision",
            precision,
            "--out",
            out.to_str().unwrap(),
        ]);
        assert_ok(&o)
    };
    let (fp8, bf16) = (compare("fp8"), compare("bf16"));
    assert!(fp8.lines().next().unwrap_or_default().ends_with("precision fp8"), "{fp8}");
    assert!(fp8.contains("v100     refused: chip v100: no fp8_tflops"), "{fp8}");
    let rate = |text: &str| -> f64 {
        let row = text.lines().find(|l| l.starts_with("h100 ")).unwrap_or_default();
        let fields: Vec<&str> = row.split_whitespace().collect();
        let mfu = fields.iter().position(|f| f.ends_with('%')).unwrap_or(0);
        fields.get(mfu.wrapping_sub(1)).and_then(|f| f.parse().ok()).unwrap_or(f64::NAN)
    };
    assert!(rate(&fp8) > 1.2 * rate(&bf16), "{fp8}\n{bf16}");
}

/// A best layout that leaves less than a tenth of usable memory free is flagged, with the fastest
/// layout that leaves that much (the model prices a step's peak, not an allocator's reserve);
/// one with room to spare is not.
#[test]
fn a_best_layout_near_the_memory_limit_is_flagged_with_a_roomier_one() {
    let text = |model: &str, chips: &str, extra: &[&str]| {
        let args = ["plan", "--model", model, "--chips", chips, "--tokens", "1e12", "--top", "1"];
        assert_ok(&run(&[&args[..], extra].concat()))
    };
    let tight = text("llama3-70b", "h20:64", &["--precision", "fp8"]);
    let line = tight.lines().find(|l| l.starts_with("memory: the best layout leaves")).unwrap_or_default();
    assert!(line.contains("(1%) of usable memory free") && line.contains("; the fastest leaving 10%: tp"), "{tight}");
    // The roomier layout is a ranked one that leaves a tenth free.
    let args = ["plan", "--model", "llama3-70b", "--chips", "h20:64", "--tokens", "1e12", "--precision", "fp8"];
    let json = assert_ok(&run(&[&args[..], &["--json", "--top", "100000"]].concat()));
    let json: serde_json::Value = serde_json::from_str(&json).unwrap();
    let rate = line.split(" at ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse::<f64>().ok());
    let ranked = json["ranked"].as_array().unwrap();
    let roomy = ranked.iter().find(|r| {
        let e = &r["estimate"];
        let used: f64 = ["weights", "gradients", "optimizer", "gathered", "activations", "logits", "reserve"]
            .iter()
            .map(|k| e["memory"][k].as_f64().unwrap_or(0.0))
            .sum();
        used <= 0.9 * e["capacity"].as_f64().unwrap_or(0.0)
    });
    let roomy = roomy.and_then(|r| r["estimate"]["tokens_per_s"].as_f64()).map(f64::round);
    assert!(roomy.is_some() && roomy == rate, "{roomy:?} {line}");
    let roomy_text = text("llama3-8b", "h100:64", &[]);
    assert!(!roomy_text.contains("memory: the best layout leaves"), "{roomy_text}");
}

/// A user's runs file of two measured runs (one MoE with a partial recompute).
const RUNS: &str = r#"
[[row]]
id = "ours-llama3-70b"
chip = "h100"
model = "llama3-70b"
stack = "nemo-2025"
precision = "bf16"
seq = 8192
tp = 4
pp = 4
dp = 4
global_batch = 128
mb = 1
recompute = "none"
zero = 1
sp = true
tokens_per_gpu_s = 1450

[[row]]
id = "ours-mixtral"
chip = "mi355x"
model = "mixtral-8x22b"
stack = "rocm-megatron-2025"
precision = "bf16"
seq = 8192
tp = 1
pp = 4
dp = 16
ep = 8
v = 2
global_batch = 512
mb = 1
recompute = "full"
recompute_layers = 1
zero = 1
sp = false
tokens_per_gpu_s = 3475
"#;

#[test]
fn plan_check_prices_a_users_runs_on_their_layouts() {
    let dir = scratch("plan-check");
    let f = tmp(&dir, "runs.toml", RUNS);
    let out = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let runs = v["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 2);
    // Each row's error is its predicted over its published throughput, from the same estimate
    // `plan --layout` gives for that job.
    for r in runs {
        let (p, q) =
            (r["published_tokens_per_chip_s"].as_f64().unwrap(), r["predicted_tokens_per_chip_s"].as_f64().unwrap());
        assert!((q / p - 1.0 - r["error"].as_f64().unwrap()).abs() < 1e-9, "{r}");
        assert_eq!(r["fitted"], false);
    }
    assert_eq!(runs[1]["estimate"]["layout"]["recompute_layers"], 1);
    let pinned = assert_ok(&plan(
        "llama3-70b",
        "h100:64",
        &["--seq", "8192", "--global-batch", "128", "--stack", "nemo-2025", "--layout", "tp=4,pp=4,mb=1,zero=1"],
    ));
    let pinned: serde_json::Value = serde_json::from_str(&pinned).unwrap();
    let tps = pinned["ranked"][0]["estimate"]["tokens_per_s"].as_f64().unwrap() / 64.0;
    assert!((runs[0]["predicted_tokens_per_chip_s"].as_f64().unwrap() / tps - 1.0).abs() < 1e-9);
    let mean = v["summary"]["mean_abs_error"].as_f64().unwrap();
    let want = runs.iter().map(|r| r["error"].as_f64().unwrap().abs()).sum::<f64>() / 2.0;
    assert!((mean - want).abs() < 1e-12);
    assert_eq!(v["by_kind"].as_array().unwrap().len(), 2);
    assert_eq!(v["by_chip"][1][0], "mi355x");
    assert_eq!(v["by_chip"][1][1]["mean_abs_error"].as_f64().unwrap(), runs[1]["error"].as_f64().unwrap().abs());
    // By stack: each framework the runs used, with its own runs' errors.
    let stacks = v["by_stack"].as_array().unwrap();
    assert_eq!(stacks.len(), 2, "{stacks:?}");
    for s in stacks {
        let of: Vec<&serde_json::Value> = runs.iter().filter(|r| r["stack"] == s[0]).collect();
        assert_eq!(s[1]["rows"].as_u64().unwrap() as usize, of.len());
        assert_eq!(s[1]["worst_abs_error"].as_f64().unwrap(), of[0]["error"].as_f64().unwrap().abs());
    }
    // The table says the same.
    let text = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap()]));
    assert!(text.contains("all: 2 rows, mean error") && text.contains("rc:full:1"), "{text}");
    for s in stacks {
        assert!(text.contains(&format!("stack {}: 1 row, mean error", s[0].as_str().unwrap())), "{text}");
    }
}

#[test]
fn plan_check_of_the_held_out_file_is_the_validation_tests_figure() {
    // The shipped held-out file through the command: every row, the figure tests/validation.rs
    // bounds (11.0% over 705 at 2026-12-07), none marked fitted.
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../plan/data/held_out_runs.toml");
    let out = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let rows = anychip_plan::validation::prepare_held_out().unwrap();
    let k = anychip_plan::calib::shipped();
    let errs: Vec<f64> = rows.iter().map(|r| r.error(&k).unwrap()).collect();
    let (mean, _) = anychip_plan::validation::summary(&errs);
    assert_eq!(v["summary"]["rows"].as_u64().unwrap() as usize, rows.len());
    assert!((v["summary"]["mean_abs_error"].as_f64().unwrap() - mean).abs() < 1e-12);
    assert!(v["runs"].as_array().unwrap().iter().all(|r| r["fitted"] == false));
    // The runs the memory model prices over usable memory are counted (every one of them ran).
    let over = v["runs"].as_array().unwrap().iter().filter(|r| r["fits"] == false).count();
    assert!(over > 0 && v["summary"]["over_memory"].as_u64().unwrap() as usize == over, "{over}");
    let text = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap()]));
    assert!(text.contains(&format!("; {over} priced over usable memory")), "{text}");
}

#[test]
fn plan_check_refuses_bad_runs_files_in_one_line() {
    let dir = scratch("plan-check-bad");
    let check = |name: &str, text: &str| {
        let f = tmp(&dir, name, text);
        run(&["plan", "check", "--runs", f.to_str().unwrap()])
    };
    assert_one_line(
        &run(&["plan", "check", "--runs", "/nonexistent/runs.toml"]),
        &["cannot read runs file", "[[row]]"],
    );
    assert_one_line(&check("empty.toml", ""), &["has no [[row]] tables"]);
    assert_one_line(
        &check("missing.toml", "[[row]]\nid = \"a\"\nchip = \"h100\"\n"),
        &["missing field", "each [[row]] needs"],
    );
    assert_one_line(&check("typo.toml", &RUNS.replacen("tp = 4", "tpp = 4", 1)), &["unknown field `tpp`"]);
    assert_one_line(
        &check("chip.toml", &RUNS.replacen("\"h100\"", "\"h1000\"", 1)),
        &["row ours-llama3-70b", "unknown chip 'h1000'"],
    );
    assert_one_line(
        &check("batch.toml", &RUNS.replacen("global_batch = 128", "global_batch = 130", 1)),
        &["row ours-llama3-70b", "not a multiple"],
    );
    assert_one_line(&check("dup.toml", &RUNS.replacen("ours-mixtral", "ours-llama3-70b", 1)), &["appears twice"]);
    assert_one_line(
        &check("neg.toml", &RUNS.replacen("= 1450", "= -5", 1)),
        &["row ours-llama3-70b", "positive number"],
    );
    assert_one_line(
        &check("none.toml", &RUNS.replacen("tokens_per_gpu_s = 1450", "", 1)),
        &["no published throughput", "tokens_per_gpu_s"],
    );
    assert_one_line(
        &check("partial.toml", &RUNS.replacen("stack = \"rocm-megatron-2025\"", "stack = \"megatron-2021\"", 1)),
        &["row ours-mixtral", "recomputes every layer or none"],
    );
}

#[test]
fn the_example_runs_file_checks() {
    let f = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/runs/runs.toml");
    let text = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap()]));
    assert!(text.contains("all: 2 rows"), "{text}");
}

#[test]
fn measured_runs_set_a_chips_residual_as_published_runs_do() {
    // Three jobs on H20s, a chip without published runs in the calibration, each "measured" 20%
    // slower than the model prices it on its layout.
    let jobs = [
        ("h20-8b-8", "llama3-8b", 8, 4096, 64, 1, 1),
        ("h20-8b-16", "llama3-8b", 16, 8192, 64, 2, 1),
        ("h20-70b-64", "llama3-70b", 64, 4096, 128, 4, 2),
    ];
    let mut rows = String::new();
    for (id, model, n, seq, gb, tp, pp) in jobs {
        let layout = format!("tp={tp},pp={pp},mb=1,zero=1");
        let (chips, seq_s, gb_s) = (format!("h20:{n}"), seq.to_string(), gb.to_string());
        let out = assert_ok(&plan(
            model,
            &chips,
            &["--seq", &seq_s, "--global-batch", &gb_s, "--stack", "nemo-2025", "--layout", &layout],
        ));
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        let per_chip = v["ranked"][0]["estimate"]["tokens_per_s"].as_f64().unwrap() / n as f64;
        rows += &format!(
            "[[row]]\nid = \"{id}\"\nchip = \"h20\"\nmodel = \"{model}\"\nstack = \"nemo-2025\"\nprecision = \"bf16\"\nseq = {seq}\ntp = {tp}\npp = {pp}\ndp = {}\nglobal_batch = {gb}\nmb = 1\nrecompute = \"none\"\nzero = 1\nsp = {}\ntokens_per_gpu_s = {}\n\n",
            n / (tp * pp),
            tp > 1,
            per_chip / 1.2
        );
    }
    let dir = scratch("plan-measured");
    let f = tmp(&dir, "h20.toml", &rows);
    let file = f.to_str().unwrap();
    let check: serde_json::Value =
        serde_json::from_str(&assert_ok(&run(&["plan", "check", "--runs", file, "--json"]))).unwrap();
    for r in check["runs"].as_array().unwrap() {
        assert!((r["error"].as_f64().unwrap() - 0.2).abs() < 1e-9, "{r}");
    }
    // The residual rule of the published runs: exp(sum ln(1 + error) / (runs + 10)), three
    // significant digits; leave one out, each run gets the other two's.
    let rule = |errs: &[f64]| {
        let idx: Vec<usize> = (0..errs.len()).collect();
        let chips = vec!["h20".to_string(); errs.len()];
        anychip_plan::calib::chip_residuals(errs, &idx, &chips)["h20"].factor
    };
    let (three, two) = (rule(&[0.2; 3]), rule(&[0.2; 2]));
    assert_eq!((three, two), (1.04, 1.03));
    let loo = check["measured_leave_one_out"]["mean_abs_error"].as_f64().unwrap();
    assert!((loo - (1.2 / two - 1.0)).abs() < 1e-9, "{loo}");
    // A plan on H20s with --measured: every time x1.04, the header says whose runs.
    let job = |extra: &[&str]| {
        let out = assert_ok(&plan("qwen3-8b", "h20:256", &[&["--stack", "nemo-2025"], extra].concat()));
        serde_json::from_str::<serde_json::Value>(&out).unwrap()
    };
    let (shipped, measured) = (job(&[]), job(&["--measured", file]));
    assert!(shipped["chip_residual"].is_null());
    assert_eq!(measured["chip_residual"]["factor"].as_f64().unwrap(), three);
    assert_eq!(measured["chip_residual"]["measured"].as_str().unwrap(), file);
    let tps = |p: &serde_json::Value| p["ranked"][0]["estimate"]["tokens_per_s"].as_f64().unwrap();
    assert!((tps(&shipped) / tps(&measured) - three).abs() < 1e-9);
    let text =
        assert_ok(&run(&["plan", "--model", "qwen3-8b", "--chips", "h20:256", "--tokens", "1e12", "--measured", file]));
    assert!(text.contains("your measured runs set its residual (3 of your measured runs in"), "{text}");
    // chips compare marks the row it priced with them; fleet places with them too.
    let charts = scratch("plan-measured-charts");
    let compare = |extra: &[&str]| {
        let base = ["chips", "compare", "h20", "h100", "--model", "qwen3-8b", "--count", "64"];
        assert_ok(&run(&[&base[..], &["--out", charts.to_str().unwrap()], extra].concat()))
    };
    let (plain, marked) = (compare(&[]), compare(&["--measured", file]));
    let row = |text: &str, chip: &str| text.lines().find(|l| l.starts_with(chip)).unwrap().to_string();
    assert!(row(&plain, "h20 ").ends_with(" *") && row(&marked, "h20 ").ends_with(" m"), "{marked}");
    assert_eq!(row(&plain, "h100 "), row(&marked, "h100 "));
    let ex = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/fleet");
    let (fl, jb) = (ex.join("fleet.toml"), ex.join("jobs.toml"));
    let placed = assert_ok(&run(&[
        "fleet",
        "--fleet",
        fl.to_str().unwrap(),
        "--jobs",
        jb.to_str().unwrap(),
        "--out",
        charts.to_str().unwrap(),
        "--measured",
        file,
    ]));
    assert!(
        placed.contains(&format!("residuals from your measured runs: h20 x1.040 from 3 runs in {file}")),
        "{placed}"
    );
    // Other chips keep theirs; a bad runs file is one line.
    let h100 = assert_ok(&plan("qwen3-8b", "h100:256", &["--measured", file]));
    assert!(serde_json::from_str::<serde_json::Value>(&h100).unwrap()["chip_residual"]["measured"].is_null());
    assert_one_line(&plan("qwen3-8b", "h20:256", &["--measured", "/nonexistent.toml"]), &["cannot read runs file"]);
}

#[test]
fn plan_check_finds_model_and_stack_files_beside_the_runs_file() {
    // A runs file naming a model file and a stack file by their names in its own folder, checked
    // from another working directory (the test's is the crate's).
    let dir = scratch("plan-check-beside");
    tmp(&dir, "my-8b.toml", "name = \"my-8b\"\narch = \"llama\"\nvocab = 128256\nlayers = 32\nheads = 32\nkv_heads = 8\nd_model = 4096\nd_ff = 14336\n");
    tmp(&dir, "my-stack.toml", "base = \"nemo-2025\"\nname = \"my-stack\"\noverlap_tp = false\n");
    let runs = RUNS.replacen("model = \"llama3-70b\"", "model = \"my-8b.toml\"", 1).replacen(
        "stack = \"nemo-2025\"",
        "stack = \"my-stack.toml\"",
        1,
    );
    let f = tmp(&dir, "runs.toml", &runs);
    let out = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap(), "--json"]));
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["runs"][0]["model"], "my-8b.toml");
    // The same job through plan, the files named by their full paths: the same prediction.
    let (m, s) = (dir.join("my-8b.toml"), dir.join("my-stack.toml"));
    let pinned = assert_ok(&plan(
        m.to_str().unwrap(),
        "h100:64",
        &[
            "--seq",
            "8192",
            "--global-batch",
            "128",
            "--stack",
            s.to_str().unwrap(),
            "--layout",
            "tp=4,pp=4,mb=1,zero=1",
        ],
    ));
    let pinned: serde_json::Value = serde_json::from_str(&pinned).unwrap();
    let per_chip = pinned["ranked"][0]["estimate"]["tokens_per_s"].as_f64().unwrap() / 64.0;
    assert!((v["runs"][0]["predicted_tokens_per_chip_s"].as_f64().unwrap() / per_chip - 1.0).abs() < 1e-9);
}

#[test]
fn plan_check_says_what_it_assumed_reading_a_config_of_an_unknown_family() {
    // The first run's Llama 3 70B named as a directory whose config.json is Llama 3 8B's under a
    // model_type the planner does not know: priced by standard names, and the report says so.
    let dir = scratch("plan-check-new-family");
    let fixture =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plan/tests/hf_configs/Meta-Llama-3-8B/config.json");
    let config = fs::read_to_string(fixture).unwrap().replace("\"llama\"", "\"new_family\"");
    assert!(config.contains("new_family"));
    fs::create_dir_all(dir.join("new-8b")).unwrap();
    tmp(&dir.join("new-8b"), "config.json", &config);
    let f = tmp(&dir, "runs.toml", &RUNS.replacen("model = \"llama3-70b\"", "model = \"new-8b\"", 1));
    let v: serde_json::Value =
        serde_json::from_str(&assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap(), "--json"]))).unwrap();
    let notes = v["model_notes"].as_array().unwrap();
    assert_eq!(notes.len(), 1, "one note, for the one config read by standard names: {notes:?}");
    assert_eq!(notes[0][0], "new-8b");
    assert!(notes[0][1].as_str().unwrap().contains("model_type 'new_family'"), "{notes:?}");
    let text = assert_ok(&run(&["plan", "check", "--runs", f.to_str().unwrap()]));
    assert!(text.lines().any(|l| l.starts_with("model new-8b: model_type 'new_family'")), "{text}");
}

#[test]
fn a_runs_file_row_may_give_its_chips_instead_of_dp() {
    // Published tables give the chips and TP/PP/CP; dp is what is left. The first run gives
    // gpus = 64 for tp 4 x pp 4 x dp 4.
    let dir = scratch("plan-check-gpus");
    let check = |runs: &str| check_runs(&dir, runs);
    let predicted = |o: &Output| {
        let v: serde_json::Value = serde_json::from_str(&assert_ok(o)).unwrap();
        v["runs"][0]["predicted_tokens_per_chip_s"].as_f64().unwrap()
    };
    let with_dp = predicted(&check(RUNS));
    assert_eq!(predicted(&check(&RUNS.replacen("dp = 4\n", "gpus = 64\n", 1))), with_dp);
    assert_eq!(predicted(&check(&RUNS.replacen("dp = 4\n", "dp = 4\ngpus = 64\n", 1))), with_dp);
    assert_one_line(
        &check(&RUNS.replacen("dp = 4\n", "gpus = 60\n", 1)),
        &["row ours-llama3-70b", "gpus 60", "tp x pp x cp = 16"],
    );
    assert_one_line(
        &check(&RUNS.replacen("dp = 4\n", "dp = 4\ngpus = 32\n", 1)),
        &["row ours-llama3-70b", "dp 4 x tp x pp x cp (16) is not its gpus 32"],
    );
    assert_one_line(&check(&RUNS.replacen("dp = 4\n", "", 1)), &["row ours-llama3-70b", "neither dp", "nor gpus"]);
}

#[test]
fn fleet_says_what_it_assumed_reading_a_config_of_an_unknown_family() {
    let d = scratch("plan-cli-fleet-new-family");
    let fixture = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../plan/tests/hf_configs/Qwen3-0.6B/config.json");
    let config = fs::read_to_string(fixture).unwrap().replace("\"qwen3\"", "\"new_family\"");
    assert!(config.contains("new_family"));
    fs::create_dir_all(d.join("new-0.6b")).unwrap();
    tmp(&d.join("new-0.6b"), "config.json", &config);
    let model = d.join("new-0.6b");
    let fleet = tmp(&d, "fleet.toml", "[[pool]]\nname = \"a\"\nchip = \"h100\"\ncount = 16\n");
    let jobs = format!(
        "[[job]]\nname = \"new\"\nmodel = \"{}\"\ntokens = 1e10\n\n[[job]]\nname = \"known\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e10\n",
        model.display()
    );
    let jobs = tmp(&d, "jobs.toml", &jobs);
    let v: serde_json::Value = serde_json::from_str(&assert_ok(&fleet_json(&fleet, &jobs))).unwrap();
    let note = |job: &str| {
        let a = v["assignments"].as_array().unwrap().iter().find(|a| a["job"] == job).unwrap();
        a["model_note"].as_str().map(str::to_string)
    };
    assert!(note("new").unwrap().contains("model_type 'new_family'"));
    assert_eq!(note("known"), None);
    let out = scratch("plan-cli-fleet-new-family-charts");
    let (f, j, o) = (fleet.to_str().unwrap(), jobs.to_str().unwrap(), out.to_str().unwrap());
    let text = assert_ok(&run(&["fleet", "--fleet", f, "--jobs", j, "--out", o]));
    assert!(text.lines().any(|l| l.starts_with("job new: model_type 'new_family'")), "{text}");
    assert!(!text.lines().any(|l| l.starts_with("job known:")), "{text}");
}

#[test]
fn a_runs_file_row_may_give_tflops_in_a_named_flop_count() {
    let dir = scratch("plan-check-tflops");
    let check = |runs: &str| check_runs(&dir, runs);
    let tflops = RUNS.replacen("tokens_per_gpu_s = 1450", "published_tflops = 400\nflops = \"megatron\"", 1);
    let v: serde_json::Value = serde_json::from_str(&assert_ok(&check(&tflops))).unwrap();
    let measured = v["runs"][0]["published_tokens_per_chip_s"].as_f64().unwrap();
    // Megatron-LM's count a token of Llama 3 70B at 8,192: 12 l h^2 [(1 + g/a + s/h) + f/h +
    // V/(2 l h)], l 80, h 8192, g/a 8/64, s/h 1, f 1.5 x 28672 (SwiGLU), V 128256.
    let (l, h) = (80.0, 8192.0);
    let per_token = 12.0 * l * h * h * ((1.0 + 0.125 + 1.0) + 1.5 * 28672.0 / h + 128256.0 / (2.0 * l * h));
    assert!((measured / (400e12 / per_token) - 1.0).abs() < 1e-9, "{measured} against {}", 400e12 / per_token);
    let bad = tflops.replace("flops = \"megatron\"", "flops = \"bogus\"");
    assert_one_line(&check(&bad), &["unknown FLOP convention 'bogus'", "megatron, nemo"]);
}

#[test]
fn plan_names_the_faster_layouts_nearest_to_fitting() {
    // Llama 3 70B on 64 H100: the fastest misfits need many times the card (one without any
    // model parallelism, over 1 TiB); what a user can act on is a faster layout a few GiB over.
    let text = assert_ok(&run(&["plan", "--model", "llama3-70b", "--chips", "h100:64", "--tokens", "1e12"]));
    let list = text.split("faster layouts that do not fit, nearest to fitting first:\n").nth(1).expect(&text);
    let lines: Vec<&str> = list.lines().take_while(|l| l.starts_with("  ")).collect();
    assert!(!lines.is_empty() && lines.len() <= 3, "{text}");
    let mut last = 0.0;
    for l in lines {
        let gain: f64 = l.split("(+").nth(1).and_then(|s| s.split('%').next()).and_then(|s| s.parse().ok()).expect(l);
        let needs: f64 =
            l.split("needs ").nth(1).and_then(|s| s.split(' ').next()).and_then(|s| s.parse().ok()).expect(l);
        assert!(gain > 0.0 && needs > 79.1 && needs < 1.25 * 79.1 && needs >= last, "{l}");
        last = needs;
    }
    let json = assert_ok(&plan("llama3-70b", "h100:64", &[]));
    let v: serde_json::Value = serde_json::from_str(&json).unwrap();
    let near = v["near_misses"].as_array().unwrap();
    assert!(!near.is_empty() && near.iter().all(|r| r["memory_gib"].as_f64().unwrap() > 79.1), "{json}");
}

#[test]
fn compare_under_a_deadline_names_the_fewest_chips_of_each_kind() {
    // "How many H100s, H20s or P800s train Llama 3 8B on 1T tokens within 20 days?": each kind
    // its count, whose plan (`plan` at that count) meets the deadline; a kind missing a figure
    // says which.
    let out = scratch("plan-cli-compare-days");
    let o = run(&[
        "chips",
        "compare",
        "h100",
        "h20",
        "p800",
        "--model",
        "llama3-8b",
        "--tokens",
        "1e12",
        "--days",
        "20",
        "--stack",
        "nemo-2025",
        "--out",
        out.to_str().unwrap(),
    ]);
    let text = assert_ok(&o);
    let counts: Vec<(String, usize, f64)> = text
        .lines()
        .filter(|l| l.starts_with("h100 ") || l.starts_with("h20 "))
        .map(|l| {
            let f: Vec<&str> = l.split_whitespace().collect();
            let days = f.iter().position(|x| x.ends_with('%')).map(|i| f[i + 1].parse().unwrap()).expect(l);
            (f[0].to_string(), f[1].parse().expect(l), days)
        })
        .collect();
    assert_eq!(counts.len(), 2, "{text}");
    for (chip, n, days) in &counts {
        assert!(*days <= 20.0 && n % 8 == 0, "{chip}: {n} chips, {days} days");
        let p = plan("llama3-8b", &format!("{chip}:{n}"), &["--stack", "nemo-2025"]);
        let v: serde_json::Value = serde_json::from_str(&assert_ok(&p)).unwrap();
        assert!(v["ranked"][0]["days"].as_f64().unwrap() <= 20.0, "{chip}:{n}");
    }
    assert!(counts[0].1 < counts[1].1, "an H100 is faster than an H20: {counts:?}");
    assert!(text.contains("p800     refused: chip p800: mem_bw_tbs is unknown"), "{text}");
    // --count and --days together, or neither: one clap line, exit 2.
    for args in [&["--count", "8", "--days", "20"][..], &[][..]] {
        let mut a = vec!["chips", "compare", "h100", "--model", "llama3-8b"];
        a.extend_from_slice(args);
        let o = run(&a);
        assert_eq!(o.status.code(), Some(2), "{}", String::from_utf8_lossy(&o.stderr));
        assert!(
            String::from_utf8_lossy(&o.stderr).contains("--days")
                || String::from_utf8_lossy(&o.stderr).contains("--count")
        );
    }
    assert_one_line(
        &run(&["chips", "compare", "h100", "--model", "llama3-8b", "--days", "0", "--out", out.to_str().unwrap()]),
        &["--days must be a positive number of days"],
    );
}

#[test]
fn fleet_reports_each_deadline_and_what_a_missed_one_needs() {
    // 16 H100s: Qwen3 0.6B on 2e11 tokens is due in a day (it cannot be), the other has a month.
    let d = scratch("plan-cli-deadline");
    let fleet = tmp(&d, "fleet.toml", "[[pool]]\nname = \"a\"\nchip = \"h100\"\ncount = 16\n");
    let jobs = tmp(
        &d,
        "jobs.toml",
        "[[job]]\nname = \"late\"\nmodel = \"qwen3-0.6b\"\ntokens = 2e11\ndeadline_days = 1\n\n\
         [[job]]\nname = \"easy\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e10\ndeadline_days = 30\n",
    );
    let v: serde_json::Value = serde_json::from_str(&assert_ok(&fleet_json(&fleet, &jobs))).unwrap();
    let a = |name: &str| v["assignments"].as_array().unwrap().iter().find(|a| a["job"] == name).unwrap().clone();
    assert_eq!(a("easy")["meets_deadline"], true);
    assert_eq!(a("late")["meets_deadline"], false);
    let need = a("late")["chips_for_deadline"][0][1].as_u64().unwrap();
    assert!(need > 16, "{need}");
    let out = d.join("charts");
    let text = assert_ok(&run(&[
        "fleet",
        "--fleet",
        fleet.to_str().unwrap(),
        "--jobs",
        jobs.to_str().unwrap(),
        "--out",
        out.to_str().unwrap(),
    ]));
    assert!(text.contains("deadlines: 1 of 2 met; late by 1.0 d: MISSED"), "{text}");
    assert!(text.contains(&format!("{need} x h100 would end it in time from day 0")), "{text}");
}

#[test]
fn plan_points_at_a_large_pipeline_bubble_and_its_cure() {
    // DeepSeek-V3 on 2,560 B200 at the default batch (about 1,024 sequences): the best layout
    // has 51 micro-batches a step for 32 stages; 64 H100 for Llama 3 70B have no such note.
    let args = ["--tokens", "1e12", "--stack", "nemo-2025", "--precision", "fp8", "--top", "1"];
    let mut a = vec!["plan", "--model", "deepseek-v3", "--chips", "b200:2560"];
    a.extend_from_slice(&args);
    let text = assert_ok(&run(&a));
    let line = text.lines().find(|l| l.starts_with("pipeline bubble: ")).expect(&text);
    let pct: f64 = line["pipeline bubble: ".len()..].split('%').next().unwrap().parse().unwrap();
    assert!(
        pct > 25.0 && line.contains("micro-batches a step for 32 stages") && line.contains("--global-batch"),
        "{line}"
    );
    let mut b = vec!["plan", "--model", "llama3-70b", "--chips", "h100:64"];
    b.extend_from_slice(&args);
    assert!(!assert_ok(&run(&b)).contains("pipeline bubble:"));
}
