//! Property-based fuzzing of everything that reads bytes from disk or numbers from a file:
//! checkpoint directories (config.json, state.json and both safetensors files), Hugging Face
//! config.json, token shards, and the data loader's saved position. Each reader must return an
//! error or a value, never panic, on any input. Bounded for CI: 256 cases per property by
//! default; `PROPTEST_CASES=100000 cargo test -p anychip-train --test fuzz_loaders` runs longer.

use anychip_data::shard::decode_shard;
use anychip_data::{eval_batches, Loader, LoaderState, TokenizerKind};
use anychip_train::checkpoint;
use proptest::prelude::*;
use std::fs;
use std::path::Path;

fn config() -> ProptestConfig {
    let cases = std::env::var("PROPTEST_CASES").ok().and_then(|v| v.parse().ok()).unwrap_or(256);
    ProptestConfig { cases, ..ProptestConfig::default() }
}

/// A valid checkpoint's four files, built without a model or a port.
fn valid_files() -> Vec<(&'static str, Vec<u8>)> {
    let model = anychip_model_config::ModelConfig::preset("gpt2-tiny").unwrap();
    let cfg = anychip_train::TrainConfig::default_for("gpt2-tiny", model);
    let state = checkpoint::RunState {
        format: checkpoint::FORMAT,
        step: 3,
        loader: serde_json::json!({"seed": 1, "step": 3, "rank": 0, "world": 1, "batch": 4, "ctx": 32, "n_tokens": 1000}),
        tokens: 384,
        val_loss: Some(2.5),
        skipped: 0,
    };
    let data: Vec<u8> = [1.0f32, -2.0, 0.5, 4.0].iter().flat_map(|v| v.to_le_bytes()).collect();
    let view = safetensors::tensor::TensorView::new(safetensors::Dtype::F32, vec![2, 2], &data).unwrap();
    let st = safetensors::serialize(vec![("w".to_string(), view)], None).unwrap();
    vec![
        ("config.json", serde_json::to_vec_pretty(&cfg).unwrap()),
        ("state.json", serde_json::to_vec_pretty(&state).unwrap()),
        ("model.safetensors", st.clone()),
        ("optimizer.safetensors", st),
    ]
}

fn write_dir(dir: &Path, files: &[(&str, Vec<u8>)]) {
    let _ = fs::remove_dir_all(dir);
    fs::create_dir_all(dir).unwrap();
    for (name, bytes) in files {
        fs::write(dir.join(name), bytes).unwrap();
    }
}

/// `bytes` with a few positions overwritten, cut short, or both.
fn mutate(bytes: &[u8], edits: &[(usize, u8)], cut: Option<usize>) -> Vec<u8> {
    let mut b = bytes.to_vec();
    for &(i, v) in edits {
        if !b.is_empty() {
            let n = b.len();
            b[i % n] = v;
        }
    }
    if let Some(c) = cut {
        b.truncate(c % (b.len() + 1));
    }
    b
}

#[test]
fn the_unmutated_checkpoint_is_valid_and_a_non_finite_one_is_not() {
    // The properties below start from a checkpoint that loads, so their mutations matter.
    let dir = tempfile::tempdir().unwrap();
    write_dir(dir.path(), &valid_files());
    checkpoint::validate(dir.path()).unwrap();
    let mut files = valid_files();
    let n = files[2].1.len();
    files[2].1[n - 4..].copy_from_slice(&f32::INFINITY.to_le_bytes());
    write_dir(dir.path(), &files);
    assert!(checkpoint::validate(dir.path()).unwrap_err().to_string().contains("NaN or infinite"));
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn a_mutated_checkpoint_never_panics(
        which in 0usize..4,
        edits in prop::collection::vec((any::<usize>(), any::<u8>()), 0..8),
        cut in prop::option::of(any::<usize>()),
    ) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = valid_files();
        files[which].1 = mutate(&files[which].1, &edits, cut);
        write_dir(dir.path(), &files);
        let _ = checkpoint::open(dir.path());
        let _ = checkpoint::validate(dir.path());
    }

    #[test]
    fn arbitrary_checkpoint_files_never_panic(which in 0usize..4, bytes in prop::collection::vec(any::<u8>(), 0..512)) {
        let dir = tempfile::tempdir().unwrap();
        let mut files = valid_files();
        files[which].1 = bytes;
        write_dir(dir.path(), &files);
        let _ = checkpoint::open(dir.path());
        let _ = checkpoint::validate(dir.path());
    }

    #[test]
    fn arbitrary_hf_configs_never_panic(text in "\\{[ -~]{0,200}\\}", n in any::<i64>(), key in "[a-z_]{1,20}") {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("config.json"), &text).unwrap();
        let _ = anychip_hf::read_config(dir.path());
        // A plausible config with one field set to an arbitrary number.
        let mut v = serde_json::json!({"model_type": "gpt2", "vocab_size": 64, "n_positions": 32, "n_embd": 16,
            "n_layer": 1, "n_head": 2, "architectures": ["GPT2LMHeadModel"]});
        v[key] = n.into();
        fs::write(dir.path().join("config.json"), v.to_string()).unwrap();
        let _ = anychip_hf::read_config(dir.path());
    }

    #[test]
    fn arbitrary_token_shards_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..256), sha in any::<[u8; 32]>()) {
        let _ = decode_shard(&bytes, &sha, TokenizerKind::Bytes);
        let _ = decode_shard(&bytes, &sha, TokenizerKind::Gpt2);
    }

    #[test]
    fn arbitrary_loader_positions_never_panic(
        n_tokens in 0usize..300,
        batch in 0usize..9,
        ctx in 0usize..70,
        seed in any::<u64>(),
        step in any::<u64>(),
        (rank, world) in (0usize..4, 0usize..4),
        saved in (any::<usize>(), any::<usize>(), any::<usize>(), any::<u64>()),
    ) {
        let tokens: Vec<u32> = (0..n_tokens as u32).collect();
        let (saved_batch, saved_ctx, saved_world, saved_n) = saved;
        let state = LoaderState { seed, step, rank, world: saved_world, batch: saved_batch, ctx: saved_ctx, n_tokens: saved_n };
        let _ = Loader::from_state(tokens.clone(), &state);
        if let Ok(mut l) = Loader::new(tokens.clone(), batch, ctx, seed, rank, world) {
            let mine = LoaderState { seed, step, ..l.state() };
            l.restore(&mine).unwrap();
            let b = l.next_batch();
            prop_assert_eq!(b.inputs.len(), batch * ctx);
            prop_assert!(b.inputs.iter().chain(&b.targets).all(|&t| (t as usize) < n_tokens));
            let _ = l.restore(&state);
        }
        if let Ok(it) = eval_batches(&tokens, batch, ctx, 3) {
            for b in it {
                prop_assert!(b.inputs.len() <= batch * ctx);
            }
        }
    }
}
