//! Careless input, from issue 20: each case is refused at the door with one line naming the
//! flag and its range, exit code 2, before anything is allocated or written.

mod common;
use common::*;

#[test]
fn out_of_range_training_flags_are_refused_by_name() {
    let d = scratch("inputs");
    let data = corpus(&d);
    let cases: &[(&[&str], &str)] = &[
        (&["--stop-after", "0"], "--stop-after must be at least 1"),
        (&["--beta1", "2"], "--beta1 must be in [0, 1)"),
        (&["--eps=-1"], "--eps must be a positive number"),
        (&["--grad-clip=-1"], "--grad-clip must be 0"),
        (&["--weight-decay", "nan"], "--weight-decay must be 0 or a positive number"),
        (&["--on-nan", "ignore"], "--on-nan"),
    ];
    for (n, want) in [("0", "--threads must be at least 1"), ("10000000", "--threads 10000000 is more than")] {
        let out = d.join(format!("threads{n}"));
        let o = run(&["train", "--data", data.to_str().unwrap(), "--out", out.to_str().unwrap(), "--threads", n]);
        assert_clean_failure(&o, want);
    }
    let o = train(&data, &d.join("steps0"), "0", &[]);
    assert_clean_failure(&o, "--steps must be at least 1");
    for (i, (flags, want)) in cases.iter().enumerate() {
        let out = d.join(format!("run{i}"));
        let o = train(&data, &out, "5", flags);
        if *want == "--on-nan" {
            // clap's own message (exit 2) for a value outside the choices.
            assert_eq!(o.status.code(), Some(2), "{}", stderr(&o));
            assert!(stderr(&o).contains("stop or skip"), "{}", stderr(&o));
            continue;
        }
        assert_clean_failure(&o, want);
        assert!(!out.join("checkpoint").exists() && !out.join("metrics.jsonl").exists(), "{flags:?} wrote files");
    }
}

#[test]
fn a_batch_too_large_for_memory_is_refused_with_the_numbers() {
    let d = scratch("memory");
    let data = corpus(&d);
    let out = d.join("run");
    let (data, out) = (data.to_str().unwrap(), out.to_str().unwrap());
    let o =
        run(&["train", "--data", data, "--out", out, "--preset", "gpt2-tiny", "--batch", "1000000", "--threads", "1"]);
    assert_clean_failure(&o, "--batch 1000000 needs at least");
    assert!(stderr(&o).contains("available; use --batch"), "{}", stderr(&o));
    let o = run(&["bench", "--preset", "gpt2-tiny", "--batch", "1000000", "--threads", "1", "--steps", "1"]);
    assert_clean_failure(&o, "--batch 1000000 needs at least");
}

#[test]
fn eval_refuses_an_empty_batch() {
    let d = scratch("eval-empty");
    let data = corpus(&d);
    let run_dir = d.join("run");
    assert!(train(&data, &run_dir, "1", &[]).status.success());
    let batch = d.join("empty.safetensors");
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::I64, vec![0, 33], &[]).unwrap();
    std::fs::write(&batch, safetensors::serialize(vec![("tokens".to_string(), view)], None).unwrap()).unwrap();
    let o =
        run(&["eval", "--model", run_dir.to_str().unwrap(), "--batch-file", batch.to_str().unwrap(), "--threads", "1"]);
    assert_clean_failure(&o, "B >= 1");
}
