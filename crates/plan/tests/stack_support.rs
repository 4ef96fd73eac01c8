//! The search recommends only layouts the stack can run: its ZeRO stages, the stages it allows
//! under pipeline parallelism, interleaving only where it has it.

use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::Precision;
use anychip_plan::search::{search, Request};

fn ranked_layouts(stack: &str, model_name: &str, chips: usize) -> Vec<anychip_plan::perf::Layout> {
    let req = Request {
        model: model::resolve(model_name).unwrap(),
        count: chips,
        tokens: 1e12,
        seq: 4096,
        global_batch: Some(1024),
        precision: Precision::Bf16,
        stack: anychip_plan::stack::find(stack).unwrap(),
        pinned: None,
    };
    let plan = search(&req, ChipDb::builtin().find("h100").unwrap()).unwrap();
    plan.ranked.iter().map(|r| r.estimate.layout).collect()
}

#[test]
fn each_stack_is_searched_only_over_what_it_runs() {
    let megatron = ranked_layouts("megatron-core-2024", "llama3-70b", 256);
    assert!(!megatron.is_empty() && megatron.iter().all(|l| l.zero <= 1), "{megatron:?}");
    let fsdp = ranked_layouts("pytorch-fsdp", "llama3-8b", 64);
    assert!(!fsdp.is_empty() && fsdp.iter().all(|l| l.zero != 1), "{fsdp:?}");
    let deepspeed = ranked_layouts("megatron-deepspeed", "llama3-70b", 256);
    assert!(deepspeed.iter().any(|l| l.pp > 1), "{deepspeed:?}");
    assert!(deepspeed.iter().all(|l| l.v == 1 && (l.pp == 1 || l.zero <= 1)), "{deepspeed:?}");
}
