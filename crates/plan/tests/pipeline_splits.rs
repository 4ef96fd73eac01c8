//! The search on a stack that balances its pipeline splits (Megatron-Core's recipes) tries the
//! interleaved layouts whose chunks only the balanced split fills (Llama 3.1 405B's 126 layers at
//! pp 16, vp 4: 7 on the end stages, 8 between, as Meta trained it), and a last stage lightened
//! by a layer or two; on a stack that does not, every split is even.

use anychip_plan::chips::ChipDb;
use anychip_plan::model;
use anychip_plan::perf::Precision;
use anychip_plan::search::{search, Plan, Request};
use anychip_plan::stack;

fn plan_on(stack: &str) -> Plan {
    let req = Request {
        model: model::resolve("llama3-405b").unwrap(),
        count: 1024,
        tokens: 1e12,
        seq: 8192,
        global_batch: Some(2048),
        precision: Precision::Bf16,
        stack: stack::find(stack).unwrap(),
        pinned: None,
    };
    search(&req, ChipDb::builtin().find("h100").unwrap()).unwrap()
}

#[test]
fn a_balancing_stack_searches_the_splits_it_can_run() {
    let layers = 126;
    let balanced = plan_on("nemo-2025");
    let layouts: Vec<_> = balanced.ranked.iter().map(|r| r.estimate.layout).collect();
    let interleaved_balanced = layouts.iter().filter(|l| l.v > 1 && layers % (l.pp * l.v) != 0).collect::<Vec<_>>();
    assert!(!interleaved_balanced.is_empty(), "no interleaved layout whose chunks need the balanced split");
    for l in &interleaved_balanced {
        let end = (layers + 2) / l.pp - 1;
        assert_eq!((l.first_layers, l.last_layers), (Some(end), Some(end)), "{l}");
    }
    assert!(
        layouts.iter().any(|l| l.v == 1 && l.first_layers.is_none() && l.last_layers.is_some()),
        "no lightened last stage"
    );
    let even = plan_on("unknown");
    for r in &even.ranked {
        let l = r.estimate.layout;
        assert!(l.first_layers.is_none() && l.last_layers.is_none(), "{l}");
        assert!(l.v == 1 || layers % (l.pp * l.v) == 0, "{l}");
    }
}
