//! The loader: seeded, resumable bit for bit, and shardable across ranks without changing the data.

use std::collections::BTreeSet;
use std::sync::Arc;

use anychip_data::{eval_batches, Batch, Loader, LoaderState};

fn stream(n: u32) -> Arc<[u32]> {
    // Distinct (65521 is prime), non-monotone ids, so a wrong offset or shift is visible.
    assert!(n < 65_521);
    (0..n).map(|i| i * 7919 % 65_521).collect()
}

fn rows(b: &Batch) -> Vec<(Vec<i32>, Vec<i32>)> {
    (0..b.batch)
        .map(|r| (b.inputs[r * b.ctx..(r + 1) * b.ctx].to_vec(), b.targets[r * b.ctx..(r + 1) * b.ctx].to_vec()))
        .collect()
}

#[test]
fn batches_are_windows_with_targets_shifted_by_one() {
    let tokens = stream(5000);
    let mut l = Loader::new(tokens.clone(), 4, 16, 7, 0, 1).unwrap();
    for _ in 0..20 {
        let b = l.next_batch();
        assert_eq!((b.batch, b.ctx, b.inputs.len(), b.targets.len()), (4, 16, 64, 64));
        for (inp, tgt) in rows(&b) {
            let start = tokens.iter().position(|&t| t as i32 == inp[0]).unwrap();
            let window: Vec<i32> = tokens[start..start + 17].iter().map(|&t| t as i32).collect();
            assert_eq!(inp, window[..16]);
            assert_eq!(tgt, window[1..]);
        }
    }
}

#[test]
fn same_seed_same_batches_other_seed_other_batches() {
    let tokens = stream(10_000);
    let draw = |seed| {
        let mut l = Loader::new(tokens.clone(), 8, 32, seed, 0, 1).unwrap();
        (0..10).map(|_| l.next_batch()).collect::<Vec<_>>()
    };
    assert_eq!(draw(1), draw(1));
    assert_ne!(draw(1), draw(2));
    let a = draw(1);
    assert_ne!(a[0], a[1], "consecutive steps differ");
}

#[test]
fn windows_cover_the_whole_stream_including_both_ends() {
    // 40 tokens, ctx 8: 32 possible starts 0..=31; 2000 draws should hit the first and the last.
    let tokens: Arc<[u32]> = (0..40).collect();
    let l = Loader::new(tokens, 1, 8, 3, 0, 1).unwrap();
    let starts: BTreeSet<usize> = (0..2000).map(|s| l.window_start(s, 0)).collect();
    assert_eq!(starts.first(), Some(&0));
    assert_eq!(starts.last(), Some(&31));
    assert_eq!(starts.len(), 32);
}

#[test]
fn restored_state_resumes_bit_exactly() {
    let tokens = stream(8000);
    let mut straight = Loader::new(tokens.clone(), 4, 24, 42, 0, 1).unwrap();
    let all: Vec<Batch> = (0..12).map(|_| straight.next_batch()).collect();

    let mut first = Loader::new(tokens.clone(), 4, 24, 42, 0, 1).unwrap();
    for _ in 0..5 {
        first.next_batch();
    }
    // The state travels through a checkpoint as JSON.
    let saved = serde_json::to_string(&first.state()).unwrap();
    let state: LoaderState = serde_json::from_str(&saved).unwrap();
    assert_eq!(state.step, 5);

    let mut resumed = Loader::from_state(tokens.clone(), &state).unwrap();
    let rest: Vec<Batch> = (5..12).map(|_| resumed.next_batch()).collect();
    assert_eq!(rest, all[5..]);

    // restore() on a loader built with a different seed adopts the saved seed and position.
    let mut other = Loader::new(tokens.clone(), 4, 24, 999, 0, 1).unwrap();
    other.restore(&state).unwrap();
    assert_eq!(other.next_batch(), all[5]);
}

#[test]
fn restore_rejects_a_different_corpus_ctx_or_global_batch() {
    let tokens = stream(3000);
    let state = Loader::new(tokens.clone(), 4, 16, 1, 0, 1).unwrap().state();
    let cases = [
        (Loader::new(stream(3001), 4, 16, 1, 0, 1).unwrap(), "--data"),
        (Loader::new(tokens.clone(), 4, 32, 1, 0, 1).unwrap(), "--ctx 16"),
        (Loader::new(tokens.clone(), 8, 16, 1, 0, 1).unwrap(), "--batch"),
    ];
    for (mut l, fix) in cases {
        let msg = l.restore(&state).unwrap_err().to_string();
        assert!(msg.contains(fix), "{msg}");
    }
    // Same global batch on a different number of ranks is a valid resume.
    let mut two = Loader::new(tokens.clone(), 2, 16, 5, 1, 2).unwrap();
    two.restore(&state).unwrap();
}

#[test]
fn ranks_split_the_global_batch_without_changing_it() {
    let tokens = stream(20_000);
    let (b, world) = (6, 3);
    let mut single = Loader::new(tokens.clone(), b, 20, 11, 0, 1).unwrap();
    let mut ranks: Vec<Loader> =
        (0..world).map(|r| Loader::new(tokens.clone(), b / world, 20, 11, r, world).unwrap()).collect();
    for _ in 0..15 {
        let whole = rows(&single.next_batch());
        let parts: Vec<_> = ranks.iter_mut().map(|l| rows(&l.next_batch())).collect();
        // Interleaving rank rows (row i of rank r is global row i*world + r) rebuilds the batch in order.
        let interleaved: Vec<_> = (0..b).map(|g| parts[g % world][g / world].clone()).collect();
        assert_eq!(interleaved, whole);
        // Hence the ranks draw disjoint rows whose union is the single-rank batch.
        let union: BTreeSet<_> = parts.iter().flatten().cloned().collect();
        assert_eq!(union, whole.iter().cloned().collect::<BTreeSet<_>>());
    }
    let mut two = [0, 1].map(|r| Loader::new(tokens.clone(), b / 2, 20, 11, r, 2).unwrap());
    let mut one = Loader::new(tokens.clone(), b, 20, 11, 0, 1).unwrap();
    let halves = two.each_mut().map(|l| rows(&l.next_batch()));
    let mut both: Vec<_> = halves.concat();
    let mut whole = rows(&one.next_batch());
    both.sort();
    whole.sort();
    assert_eq!(both, whole, "2 ranks of B/2 see the rows 1 rank of B sees");
}

#[test]
fn too_little_data_or_bad_shape_is_one_clear_error() {
    let msg = Loader::new(stream(64), 2, 64, 0, 0, 1).unwrap_err().to_string();
    assert!(msg.contains("64 tokens") && msg.contains("--ctx+1 = 65") && msg.contains("smaller --ctx"), "{msg}");
    assert!(Loader::new(stream(65), 2, 64, 0, 0, 1).is_ok(), "ctx+1 tokens is exactly enough");
    assert!(Loader::new(stream(100), 0, 8, 0, 0, 1).unwrap_err().to_string().contains("--batch"));
    assert!(Loader::new(stream(100), 2, 0, 0, 0, 1).unwrap_err().to_string().contains("--ctx"));
    assert!(Loader::new(stream(100), 2, 8, 0, 2, 2).unwrap_err().to_string().contains("rank 2"));
    assert!(Loader::new(Vec::<u32>::new(), 1, 1, 0, 0, 1).is_err());
}

#[test]
fn eval_batches_are_fixed_non_overlapping_windows() {
    let tokens = stream(1000);
    let ctx = 30;
    let batches: Vec<Batch> = eval_batches(&tokens, 4, ctx, usize::MAX).unwrap().collect();
    // (1000 - 1) / 30 = 33 windows: 8 full batches of 4 and one of 1.
    assert_eq!(batches.len(), 9);
    assert_eq!(batches.iter().map(|b| b.batch).collect::<Vec<_>>(), [4, 4, 4, 4, 4, 4, 4, 4, 1]);
    let all: Vec<_> = batches.iter().flat_map(rows).collect();
    for (k, (inp, tgt)) in all.iter().enumerate() {
        let expect: Vec<i32> = tokens[k * ctx..k * ctx + ctx + 1].iter().map(|&t| t as i32).collect();
        assert_eq!(inp[..], expect[..ctx]);
        assert_eq!(tgt[..], expect[1..]);
    }
    let again: Vec<Batch> = eval_batches(&tokens, 4, ctx, usize::MAX).unwrap().collect();
    assert_eq!(again, batches);

    let capped = eval_batches(&tokens, 4, ctx, 3).unwrap();
    assert_eq!(capped.len(), 3);
    assert_eq!(capped.collect::<Vec<_>>(), batches[..3]);

    let msg = eval_batches(&tokens[..10], 4, ctx, 5).unwrap_err().to_string();
    assert!(msg.contains("validation") && msg.contains("10 tokens") && msg.contains("= 31"), "{msg}");
}
