//! The sim port end to end through the CLI: a step of a model far larger than this machine
//! priced without holding its tensors, and every refusal one line with exit code 2.

use std::process::{Command, Output};

fn anychip(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_anychip")).args(args).output().expect("run anychip")
}

/// Exit code 2 and exactly one stderr line containing every one of `needles`.
fn refused(out: &Output, needles: &[&str]) {
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {err}");
    assert_eq!(err.trim_end().lines().count(), 1, "one line expected: {err}");
    for n in needles {
        assert!(err.contains(n), "{n:?} not in: {err}");
    }
}

#[test]
fn qwen3_8b_step_is_priced_in_under_a_gib_of_rss() {
    let dir = anychip_test_support::scratch("sim");
    let json = dir.join("q8.json");
    // qwen3-8b is a planner preset (Qwen/Qwen3-8B config.json, crates/plan/data/models.toml).
    let out = anychip(&[
        "bench",
        "--port",
        "sim:h20",
        "--preset",
        "qwen3-8b",
        "--batch",
        "8",
        "--ctx",
        "4096",
        "--precision",
        "bf16",
        "--json",
        json.to_str().unwrap(),
    ]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rss = r["peak_rss_mib"].as_f64().unwrap();
    let peak = r["peak_memory_bytes"].as_f64().unwrap();
    // The step's tensors: 8.2B parameters with f32 master weights, gradients and AdamW's two
    // moments alone are 16 bytes each (131 GB); activations of 32k tokens come on top.
    assert!(peak > 131e9, "tracked peak {peak} bytes is below the weights and optimizer state");
    assert!(rss < 1024.0, "pricing the step took {rss} MiB of RSS");
    let step = r["step_ms_median"].as_f64().unwrap();
    assert!(step > 0.0 && r["mfu_of_matrix_peak"].as_f64().unwrap() < 1.0, "{r}");
}

#[test]
fn bad_sim_input_is_one_line_with_exit_code_2() {
    refused(&anychip(&["bench", "--port", "sim:nosuchchip"]), &["unknown chip 'nosuchchip'", "--chip-file"]);
    // The P800's memory bandwidth is not public: the cost model cannot price a byte.
    refused(
        &anychip(&["bench", "--port", "sim:p800", "--preset", "gpt2-tiny"]),
        &["mem_bw_tbs", "--override p800.mem_bw_tbs=VALUE"],
    );
    // ... and with it supplied, the f32 peak is the next missing figure for an f32 step.
    refused(
        &anychip(&["bench", "--port", "sim:p800", "--preset", "gpt2-tiny", "--override", "p800.mem_bw_tbs=2.5"]),
        &["fp32_tflops", "--override p800.fp32_tflops=VALUE"],
    );
    refused(&anychip(&["train", "--port", "sim:h20", "--steps", "1"]), &["shapes only", "--port sim:h20+cpu"]);
}

#[test]
fn debug_mode_runs_the_step_with_values() {
    let out = anychip(&["bench", "--port", "sim:h20+cpu", "--preset", "gpt2-tiny", "--batch", "2", "--ctx", "32"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("values on cpu") && text.contains("predicted step"), "{text}");
}

#[test]
fn the_porting_report_counts_the_moe_composites() {
    let dir = anychip_test_support::scratch("sim-porting");
    let json = dir.join("moe.json");
    // MoE routing reads the router's probabilities, so the cpu computes the values.
    let args = [
        "bench",
        "--port",
        "sim:h20+cpu",
        "--preset",
        "moe-tiny",
        "--batch",
        "2",
        "--ctx",
        "32",
        "--fused",
        "none",
        "--json",
    ];
    let out = anychip(&[&args[..], &[json.to_str().unwrap()]].concat());
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let r: serde_json::Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    let rows = r["porting_report"].as_array().unwrap();
    // Their ops run inside the MoE profiler regions ("moe_router: moe_router", ...).
    for family in ["moe_router", "moe_combine"] {
        let row = rows.iter().find(|x| x["composite"] == family);
        assert!(row.is_some_and(|x| x["decomposed_ms"].as_f64().unwrap() > 0.0), "{family} missing: {rows:?}");
    }
}
