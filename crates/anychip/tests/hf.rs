//! The Hugging Face commands as a user runs them: eval, fixed-batch train, export, --init.

use anychip_test_support::{scratch, token_cache};
use std::path::PathBuf;
use std::process::Command;

/// This crate's directory, read when the test runs: cargo sets it then too, and a build cache
/// shared between checkouts can hand over a test binary compiled in another one.
fn manifest_dir() -> PathBuf {
    std::env::var_os("CARGO_MANIFEST_DIR").map_or_else(|| env!("CARGO_MANIFEST_DIR").into(), Into::into)
}

fn bin() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_anychip"));
    c.env("ANYCHIP_CACHE", token_cache());
    c
}

fn golden(arch: &str) -> PathBuf {
    manifest_dir().join("../../tools/golden/out").join(format!("hf-{arch}"))
}

fn run(args: &[&str]) -> (bool, String, String) {
    let o = bin().args(args).output().unwrap();
    (o.status.success(), String::from_utf8_lossy(&o.stdout).into(), String::from_utf8_lossy(&o.stderr).into())
}

fn loss_of(stdout: &str) -> f64 {
    serde_json::from_str::<serde_json::Value>(stdout.trim()).unwrap()["loss"].as_f64().unwrap()
}

#[test]
fn eval_and_fixed_batch_training_match_transformers() {
    let g = golden("qwen3");
    let (m, b) = (g.to_str().unwrap().to_string(), g.join("batch.safetensors").to_str().unwrap().to_string());
    let want: serde_json::Value = serde_json::from_slice(&std::fs::read(g.join("expected.json")).unwrap()).unwrap();
    let (ok, out, err) = run(&["eval", "--model", &m, "--batch-file", &b]);
    assert!(ok, "{err}");
    assert!((loss_of(&out) - want["loss"].as_f64().unwrap()).abs() < 1e-4, "{out}");
    let (ok, out, err) = run(&[
        "train",
        "--model",
        &m,
        "--batch-file",
        &b,
        "--steps",
        "5",
        "--lr",
        "1e-3",
        "--weight-decay",
        "0.01",
        "--beta1",
        "0.9",
        "--beta2",
        "0.95",
        "--eps",
        "1e-8",
        "--constant-lr",
    ]);
    assert!(ok, "{err}");
    let got: Vec<f64> = out.lines().map(loss_of).collect();
    for (g, w) in got.iter().zip(want["losses"].as_array().unwrap()) {
        assert!((g - w.as_f64().unwrap()).abs() < 1e-3, "{got:?}");
    }
    assert_eq!(got.len(), 5);
    // `--batch FILE`, the spelling before --batch-file existed, still trains on the file.
    let (ok, out, err) = run(&["train", "--model", &m, "--batch", &b, "--steps", "1", "--lr", "1e-3"]);
    assert!(ok && err.contains("--batch-file"), "{err}");
    assert_eq!(out.lines().map(loss_of).collect::<Vec<_>>(), got[..1], "{out}");
}

#[test]
fn a_trained_run_exports_to_gpt2_and_init_fine_tunes_from_it() {
    let d = scratch("export");
    let data = d.join("c.txt");
    std::fs::write(&data, "To be, or not to be, that is the question.\n".repeat(100)).unwrap();
    let run_dir = d.join("run");
    let (ok, _, err) = run(&[
        "train",
        "--preset",
        "gpt2-tiny",
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "2",
        "--ctx",
        "16",
        "--threads",
        "1",
        "--quiet",
        "--out",
        run_dir.to_str().unwrap(),
    ]);
    assert!(ok, "{err}");
    let hf = d.join("hf");
    let (ok, out, err) = run(&["export", "--ckpt", run_dir.to_str().unwrap(), "--hf", hf.to_str().unwrap()]);
    assert!(ok && out.contains("GPT2LMHeadModel"), "{out}{err}");
    // Exporting again must not overwrite.
    let (ok, _, err) = run(&["export", "--ckpt", run_dir.to_str().unwrap(), "--hf", hf.to_str().unwrap()]);
    assert!(!ok && err.starts_with("error: ") && err.contains("already holds"), "{err}");
    // The same loss from the anychip checkpoint and from its HF export.
    let batch = d.join("batch.safetensors");
    let toks: Vec<u8> = (0..2 * 17).flat_map(|i| ((i * 5 % 256) as i64).to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::tensor::Dtype::I64, vec![2, 17], &toks).unwrap();
    std::fs::write(&batch, safetensors::serialize(vec![("tokens".to_string(), view)], None).unwrap()).unwrap();
    let (_, a, _) = run(&["eval", "--model", run_dir.to_str().unwrap(), "--batch", batch.to_str().unwrap()]);
    let (_, b, _) = run(&["eval", "--model", hf.to_str().unwrap(), "--batch", batch.to_str().unwrap()]);
    assert_eq!(loss_of(&a), loss_of(&b));
    // --init starts a normal training run from the HF weights.
    let (ok, out, err) = run(&[
        "train",
        "--init",
        hf.to_str().unwrap(),
        "--data",
        data.to_str().unwrap(),
        "--steps",
        "2",
        "--batch",
        "2",
        "--ctx",
        "16",
        "--threads",
        "1",
        "--quiet",
        "--out",
        d.join("ft").to_str().unwrap(),
    ]);
    assert!(ok && out.contains("done:"), "{out}{err}");
}

#[test]
fn bad_parity_input_is_one_clear_line() {
    let g = golden("llama");
    let (ok, _, err) = run(&["eval", "--model", g.to_str().unwrap(), "--batch", "/nonexistent.safetensors"]);
    assert!(!ok && err.lines().count() == 1 && err.contains("nonexistent"), "{err}");
    let (ok, _, err) = run(&["train", "--batch", "tokens.safetensors"]);
    assert!(!ok && err.contains("--model"), "{err}");
    let (ok, _, err) = run(&["eval", "--model", "/tmp", "--batch", "/tmp/x"]);
    assert!(!ok && err.lines().count() == 1, "{err}");
}
