//! Mixture-of-experts models as a user runs them: eval and fixed-batch training of the Qwen3-MoE
//! and ERNIE 4.5 MoE goldens against transformers, export and reload, a `moe-tiny` run logging its
//! router statistics, and bad MoE input ending in one line and exit code 2.

use anychip_test_support::{scratch, token_cache};
use std::path::{Path, PathBuf};
use std::process::Command;

fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

fn golden(arch: &str) -> PathBuf {
    manifest_dir().join("../../tools/golden/out").join(format!("hf-{arch}"))
}

/// (exit code, stdout, stderr)
fn run(args: &[&str]) -> (i32, String, String) {
    let o =
        Command::new(env!("CARGO_BIN_EXE_anychip")).env("ANYCHIP_CACHE", token_cache()).args(args).output().unwrap();
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into(),
        String::from_utf8_lossy(&o.stderr).into(),
    )
}

fn loss_of(line: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(line.trim()).unwrap()["loss"].as_f64().unwrap()
}

fn s(p: &Path) -> &str {
    p.to_str().unwrap()
}

fn eval_train_export(arch: &str) {
    let g = golden(arch);
    let b = g.join("batch.safetensors");
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("expected.json")).unwrap()).unwrap();
    let (code, out, err) = run(&["eval", "--model", s(&g), "--batch", s(&b)]);
    assert_eq!(code, 0, "{err}");
    assert!((loss_of(&out) - want["loss"].as_f64().unwrap()).abs() < 1e-4, "{arch}: {out}");
    let dir = scratch(&format!("{arch}-trained"));
    let trained = dir.join("out");
    let args = ["--steps", "5", "--lr", "1e-3", "--weight-decay", "0.01", "--beta2", "0.95", "--constant-lr"];
    let (code, out, err) =
        run(&[&["train", "--model", s(&g), "--batch", s(&b), "--out", s(&trained)], &args[..]].concat());
    assert_eq!(code, 0, "{err}");
    let got: Vec<f64> = out.lines().map(loss_of).collect();
    assert_eq!(got.len(), 5);
    for (g, w) in got.iter().zip(want["losses"].as_array().unwrap()) {
        assert!((g - w.as_f64().unwrap()).abs() < 1e-3, "{arch}: {got:?} vs {}", want["losses"]);
    }
    // The export of the trained model loads back (as transformers' class) and evaluates.
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(trained.join("config.json")).unwrap()).unwrap();
    let orig: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("config.json")).unwrap()).unwrap();
    assert_eq!(cfg["architectures"], orig["architectures"]);
    let (code, out, err) = run(&["eval", "--model", s(&trained), "--batch", s(&b)]);
    assert_eq!(code, 0, "{err}");
    assert!(loss_of(&out) < want["loss"].as_f64().unwrap(), "{arch}: training lowered the loss: {out}");
}

#[test]
fn qwen3_moe_eval_train_and_export_match_transformers() {
    eval_train_export("qwen3_moe");
}

#[test]
fn ernie4_5_moe_eval_train_and_export_match_transformers() {
    eval_train_export("ernie4_5_moe");
}

#[test]
fn moe_tiny_trains_and_logs_router_statistics() {
    let d = scratch("tiny");
    let data = d.join("corpus.txt");
    std::fs::write(&data, "To be, or not to be, that is the question.\n".repeat(300)).unwrap();
    let out = d.join("run");
    let (code, _, err) = run(&[
        "train",
        "--preset",
        "moe-tiny",
        "--data",
        s(&data),
        "--out",
        s(&out),
        "--steps",
        "3",
        "--batch",
        "2",
        "--ctx",
        "32",
        "--threads",
        "1",
        "--quiet",
    ]);
    assert_eq!(code, 0, "{err}");
    let log = std::fs::read_to_string(out.join("metrics.jsonl")).unwrap();
    let last: serde_json::Value = serde_json::from_str(log.lines().last().unwrap()).unwrap();
    let moe = &last["moe"];
    let per_expert: Vec<u64> =
        moe["tokens_per_expert"].as_array().unwrap().iter().map(|v| v.as_u64().unwrap()).collect();
    // 3 MoE layers (layer 0 is dense) x 64 tokens x top-2.
    assert_eq!((per_expert.len(), per_expert.iter().sum::<u64>()), (8, 3 * 64 * 2), "{moe}");
    assert!(moe["aux_loss"].as_f64().unwrap() >= 1.99, "aux is at least top_k: {moe}");
    assert!(moe["max_load_ratio"].as_f64().unwrap() >= 1.0, "{moe}");
    let per_layer: Vec<f64> =
        moe["load_ratio_per_layer"].as_array().unwrap().iter().map(|v| v.as_f64().unwrap()).collect();
    assert_eq!(per_layer.len(), 3, "one ratio per MoE layer: {moe}");
    assert!(per_layer.iter().all(|&r| r >= 1.0), "{moe}");
    // Each layer routes the same 128 slots, so the busiest expert of the pooled counts can hold
    // at most the mean of the layers' busiest shares: max_e sum_l c_le <= sum_l max_e c_le.
    let pooled = *per_expert.iter().max().unwrap() as f64 * 8.0 / per_expert.iter().sum::<u64>() as f64;
    assert!(pooled <= per_layer.iter().sum::<f64>() / 3.0 + 1e-6, "pooled {pooled} vs {per_layer:?}");
    assert_eq!(per_layer.iter().copied().fold(0.0, f64::max), moe["max_load_ratio"].as_f64().unwrap(), "{moe}");
    // moe-tiny caps each expert at 2x the mean share of a layer's 128 slots (32 of them): the
    // realised loads stay under it whatever the router prefers, and what moved is counted.
    let first: serde_json::Value = serde_json::from_str(log.lines().next().unwrap()).unwrap();
    for m in [&first["moe"], moe] {
        assert!(m["max_load_ratio"].as_f64().unwrap() <= 2.0 + 1e-6, "{m}");
        let (router, moved) = (m["router_max_load_ratio"].as_f64().unwrap(), m["rerouted"].as_u64().unwrap());
        assert_eq!(router > 2.0, moved > 0, "slots move exactly when the router's picks exceed the cap: {m}");
    }
    // A resumed run may change the capacity (routing shapes no weight): here to uncapped.
    let (code, stdout, err) = run(&["train", "--resume", s(&out), "--steps", "4", "--capacity-factor", "0"]);
    assert_eq!(code, 0, "{err}");
    assert!(format!("{stdout}{err}").contains("capacity factor 2 -> uncapped"), "{stdout}{err}");
}

#[test]
fn bad_moe_input_is_one_clear_line_and_exit_2() {
    let g = golden("qwen3_moe");
    let b = g.join("batch.safetensors");
    let bad = scratch("bad");
    for f in ["model.safetensors", "batch.safetensors"] {
        std::fs::copy(g.join(f), bad.join(f)).unwrap();
    }
    let cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("config.json")).unwrap()).unwrap();
    let with = |k: &str, v: serde_json::Value| {
        let mut c = cfg.clone();
        c[k] = v;
        c.as_object_mut().unwrap().remove(if k == "num_experts" { "num_local_experts" } else { "" });
        std::fs::write(bad.join("config.json"), serde_json::to_vec(&c).unwrap()).unwrap();
        run(&["eval", "--model", s(&bad), "--batch", s(&b)])
    };
    // The checkpoint holds 4 experts per layer.
    for n in [3, 8] {
        let (code, _, err) = with("num_experts", n.into());
        assert!(code == 2 && err.lines().count() == 1, "{err}");
        assert!(err.contains(&format!("has 4 experts but config.json says {n}")), "{err}");
    }
    let (code, _, err) = with("num_experts_per_tok", 5.into());
    assert!(
        code == 2 && err.lines().count() == 1 && err.contains("top_k (5)") && err.contains("expert count (4)"),
        "{err}"
    );
    let tiny = ["train", "--preset", "moe-tiny", "--steps", "1", "--capacity-factor"];
    let (code, _, err) = run(&[&tiny[..], &["0.5"]].concat());
    assert!(code == 2 && err.lines().count() == 1 && err.contains("capacity_factor (0.5) must be at least 1"), "{err}");
    let (code, _, err) = run(&["train", "--preset", "shakespeare-bytes", "--steps", "1", "--capacity-factor", "1.5"]);
    assert!(code == 2 && err.lines().count() == 1 && err.contains("has no experts"), "{err}");
    let dir = scratch("refused");
    let out = dir.join("run");
    let (code, _, err) =
        run(&["train", "--preset", "moe-tiny", "--data", "/nonexistent.txt", "--steps", "1", "--out", s(&out)]);
    assert!(code == 2 && err.lines().count() == 1, "{err}");
    assert!(!out.exists(), "a refused run left {}", out.display());
}

/// `anychip train ARGS` with the cache in a scratch directory, as a process output.
fn train_output(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_anychip"))
        .env("ANYCHIP_CACHE", token_cache())
        .arg("train")
        .args(args)
        .output()
        .unwrap()
}

#[test]
fn bad_expert_parallel_input_is_one_clear_line_and_exit_2() {
    use anychip_test_support::cli::assert_clean_failure;
    let d = scratch("ep");
    let data = d.join("corpus.txt");
    std::fs::write(&data, "To be, or not to be, that is the question.\n".repeat(300)).unwrap();
    let base = ["--data", s(&data), "--steps", "1", "--batch", "2", "--ctx", "16", "--threads", "1", "--quiet"];
    let with = |extra: &[&str]| train_output(&[&base[..], extra].concat());
    // moe-tiny has 8 experts: 3 does not divide them.
    assert_clean_failure(&with(&["--preset", "moe-tiny", "--ep", "3"]), "8 experts do not split evenly over --ep 3");
    // A dense model has no experts to spread.
    assert_clean_failure(&with(&["--preset", "shakespeare-bytes", "--ep", "2"]), "this model is dense");
    // Launched alone: 1 rank is no multiple of 2 (and so is 6 of 4, as an MPI launcher says).
    assert_clean_failure(&with(&["--preset", "moe-tiny", "--ep", "2"]), "--ep 2 does not divide the 1 ranks");
    let six = Command::new(env!("CARGO_BIN_EXE_anychip"))
        .env("ANYCHIP_CACHE", token_cache())
        .env("OMPI_COMM_WORLD_SIZE", "6")
        .args([&["train"][..], &base[..], &["--preset", "moe-tiny", "--ep", "4"]].concat())
        .output()
        .unwrap();
    assert_clean_failure(&six, "--ep 4 does not divide the 6 ranks");
    // A top-k above the expert count is refused before any rank joins the job.
    let g = golden("qwen3_moe");
    let bad = scratch("ep-topk");
    std::fs::copy(g.join("model.safetensors"), bad.join("model.safetensors")).unwrap();
    let mut cfg: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("config.json")).unwrap()).unwrap();
    cfg["num_experts_per_tok"] = 5.into();
    std::fs::write(bad.join("config.json"), serde_json::to_vec(&cfg).unwrap()).unwrap();
    assert_clean_failure(&with(&["--init", s(&bad), "--ep", "2"]), "top_k (5)");
}
