//! Without `--global-batch`, every layout the search ranks runs about the default batch
//! (4M tokens), never a multiple of it because its data-parallel degree times its micro-batch is
//! large: a layout must not win by training with twice the batch of the others.

use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::Precision;
use anychip_plan::search::{search, Request, DEFAULT_BATCH_TOKENS};
use anychip_plan::stack;

fn request(model: &str, count: usize, seq: usize) -> Request {
    Request {
        model: model::resolve(model).unwrap(),
        count,
        tokens: 1e12,
        seq,
        global_batch: None,
        precision: Precision::Fp8,
        stack: stack::find("nemo-2025").unwrap(),
        pinned: None,
    }
}

#[test]
fn ranked_layouts_share_the_default_batch() {
    let db = ChipDb::builtin();
    let plan = search(&request("deepseek-v3", 256, 4096), db.find("b200").unwrap()).unwrap();
    let target = DEFAULT_BATCH_TOKENS / 4096;
    for r in &plan.ranked {
        let (b, l) = (r.estimate.global_batch, r.estimate.layout);
        assert!(b <= target && b % (l.dp * l.mb) == 0, "{l}: global batch {b} against {target}");
    }
}

#[test]
fn too_many_chips_for_the_default_batch_still_plan_at_their_smallest_batch() {
    // 8,192 chips for a 4-layer, 4-head model at 16,384 tokens (no context parallelism below
    // 32k): at most 4 x 4 model-parallel ways leave 512 data-parallel ranks, over the 256
    // sequences of the default batch.
    let db = ChipDb::builtin();
    let plan = search(&request("shakespeare-bytes", 8192, 16384), db.find("h100").unwrap()).unwrap();
    let best = &plan.ranked[0].estimate;
    assert!(best.global_batch > DEFAULT_BATCH_TOKENS / 16384, "{}", best.global_batch);
    assert_eq!(best.global_batch, best.layout.dp * best.layout.mb);
}
