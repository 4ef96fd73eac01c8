//! Bad input gets one clear line naming the problem and the fix, never a panic.

use anychip_plan::cli::{fleet_schedule, run_chips, run_plan, ChipOpts, ChipsArgs, ChipsCommand, FleetArgs, PlanArgs};
use anychip_plan::fleet::Objective;
use std::path::PathBuf;

fn plan(model: &str, chips: &str, opts: ChipOpts) -> anyhow::Result<()> {
    run_plan(&PlanArgs {
        model: model.into(),
        chips: chips.into(),
        tokens: 1e12,
        seq: None,
        global_batch: None,
        json: true,
        top: 1,
        chip_opts: opts,
    })
}

/// The error as the binary prints it: must be one line and mention every `needles`.
fn assert_one_line(r: anyhow::Result<()>, needles: &[&str]) {
    let msg = format!("{:#}", r.expect_err("bad input must be an error"));
    assert!(!msg.contains('\n'), "not one line: {msg}");
    for n in needles {
        assert!(msg.contains(n), "{msg:?} should mention {n:?}");
    }
}

fn tmp(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("anychip-plan-test-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let p = dir.join(name);
    std::fs::write(&p, text).unwrap();
    p
}

#[test]
fn unknown_chip_lists_the_known_ones() {
    assert_one_line(plan("llama3-8b", "b200:8", ChipOpts::default()), &["unknown chip 'b200'", "h100", "--chip-file"]);
}

#[test]
fn unknown_model_lists_presets() {
    assert_one_line(plan("llama9-1t", "h100:8", ChipOpts::default()), &["unknown model 'llama9-1t'", "llama3-8b"]);
}

#[test]
fn zero_count_and_malformed_count() {
    assert_one_line(plan("llama3-8b", "h100:0", ChipOpts::default()), &["count must be positive"]);
    assert_one_line(plan("llama3-8b", "h100", ChipOpts::default()), &["NAME:COUNT"]);
}

#[test]
fn model_that_cannot_fit_says_how_much_it_needs() {
    assert_one_line(plan("llama3-405b", "h100:1", ChipOpts::default()), &["does not fit", "GiB", "more chips"]);
}

#[test]
fn unknown_figure_names_field_and_override() {
    assert_one_line(
        plan("qwen3-8b", "ppu:64", ChipOpts::default()),
        &["bf16_tflops is unknown", "--override ppu.bf16_tflops="],
    );
    // With the figures supplied the same job plans.
    let opts = ChipOpts {
        overrides: ["ppu.bf16_tflops=150", "ppu.mem_bw_tbs=2", "ppu.scaleup_domain=8", "ppu.scaleout_gbs=25"]
            .map(String::from)
            .to_vec(),
        chip_files: vec![],
    };
    plan("qwen3-8b", "ppu:64", opts).unwrap();
}

#[test]
fn bad_override_is_explained() {
    let opts = ChipOpts { overrides: vec!["ppu.tflops=1".into()], chip_files: vec![] };
    assert_one_line(plan("qwen3-8b", "h100:8", opts), &["unknown chip field 'tflops'"]);
    let opts = ChipOpts { overrides: vec!["ppu.bf16_tflops=lots".into()], chip_files: vec![] };
    assert_one_line(plan("qwen3-8b", "h100:8", opts), &["not a number"]);
}

#[test]
fn malformed_toml_names_the_file() {
    let chip =
        tmp("bad-chip.toml", "name = \"x1\"\n[specs]\nbf16_tflops = { value = 1, conf = \"Q\", source = \"s\" }\n");
    let opts = ChipOpts { overrides: vec![], chip_files: vec![chip.clone()] };
    assert_one_line(plan("qwen3-8b", "h100:8", opts), &["bad-chip.toml"]);
    let model = tmp("bad-model.toml", "arch = \"llama\"\nvocab = 1000\nlayers = [\n");
    assert_one_line(plan(model.to_str().unwrap(), "h100:8", ChipOpts::default()), &["bad-model.toml"]);
    let fleet = tmp("bad-fleet.toml", "[[pool]]\nname = \"a\"\nchip = \"h100\"\ncount = \"many\"\n");
    let jobs = tmp("jobs.toml", "[[job]]\nname = \"j\"\nmodel = \"qwen3-0.6b\"\ntokens = 1e9\n");
    let args = FleetArgs {
        fleet,
        jobs,
        objective: Objective::Makespan,
        out: std::env::temp_dir(),
        json: true,
        chip_opts: ChipOpts::default(),
    };
    let r = fleet_schedule(&args).map(|_| ());
    assert_one_line(r, &["bad-fleet.toml"]);
}

#[test]
fn user_chip_file_adds_a_chip_that_plans() {
    let chip = tmp(
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
    plan("llama3-8b", "x1:16", ChipOpts { overrides: vec![], chip_files: vec![chip] }).unwrap();
}

#[test]
fn compare_with_unknown_chip_fails_before_work() {
    let args = ChipsArgs {
        command: Some(ChipsCommand::Compare {
            names: vec!["h100".into(), "nope".into()],
            model: "qwen3-0.6b".into(),
            count: 8,
            tokens: 1e9,
            seq: None,
            global_batch: None,
            out: std::env::temp_dir(),
        }),
        chip_opts: ChipOpts::default(),
    };
    assert_one_line(run_chips(&args), &["unknown chip 'nope'"]);
}
