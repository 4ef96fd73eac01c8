#!/usr/bin/env python3
"""Block throughput of Google's TPU GPT-3 175B MLPerf logs (v3.1, v4.0, v4.1).

Google's logs (MaxText, PAX) have no eval_start/eval_stop: block_stop, eval_accuracy and the next
block_start share one timestamp, so each block holds eval_interval training steps AND one full
evaluation. The first block also holds the compilation (and, in MaxText, one extra training step:
the loop runs from start_step to start_step + eval_interval inclusive); v3.1/v4.0 log no block_start
for it. Reported: tokens/s/chip over all blocks that have a block_start ("all") and over the blocks
after the first ("steady"), median of the result files.
Usage: python3 tools/mlperf/tpu_blocks.py v4.1=PATH v4.0=PATH v3.1=PATH (clones of
mlcommons/training_results_v4.1, _v4.0, _v3.1). The held-out TPU check of docs/planner.md
(2026-12-05) was read from it.
"""
import json, statistics, sys

from throughput import git, mllog  # the same directory: one git reader and one MLLOG line parser

SYSTEMS = [
    ("v4.1", "cloud-tpu-trillium-512-maxtext"), ("v4.1", "cloud-tpu-trillium-1024-maxtext"),
    ("v4.1", "cloud-tpu-trillium-2048-maxtext"), ("v4.1", "cloud-tpu-trillium-3072-maxtext"),
    ("v4.1", "cloud-tpu-v5p-4096-maxtext"), ("v4.1", "cloud-tpu-v5p-8192-maxtext"),
    ("v4.1", "cloud-tpu-v5p-12288-maxtext"),
    ("v4.0", "cloud-tpu-v5p-1024-maxtext"), ("v4.0", "cloud-tpu-v5p-2048-maxtext"),
    ("v4.0", "cloud-tpu-v5p-3072-maxtext"), ("v4.0", "cloud-tpu-v5p-12288-maxtext"),
    ("v3.1", "cloud-tpu-v5e-4096-PAX"),
]

def events(text):
    out, seen = [], set()
    for j in mllog(text):
        m = j.get("metadata", {})
        sig = (j["key"], m.get("first_epoch_num", m.get("epoch_num")), j.get("value") if not isinstance(j.get("value"), dict) else None)
        if sig in seen:
            continue
        seen.add(sig)
        out.append((j["time_ms"], j["key"], m, j.get("value")))
    out.sort(key=lambda e: e[0])
    return out

def blocks(ev):
    """[(tokens, seconds)] of each block with a block_start and a matching block_stop, in order."""
    res = []
    starts = {e[2]["first_epoch_num"]: e for e in ev if e[1] == "block_start"}
    stops = {e[2]["first_epoch_num"]: e for e in ev if e[1] == "block_stop"}
    for k in sorted(starts):
        if k in stops:
            res.append((k, starts[k][2]["epoch_count"], (stops[k][0] - starts[k][0]) / 1000.0))
    return res

def main():
    mirrors = dict(a.split("=", 1) for a in sys.argv[1:])
    for rnd, name in SYSTEMS:
        if rnd not in mirrors:
            continue
        repo = mirrors[rnd]
        sj = json.loads(git(repo, "show", f"HEAD:Google/systems/{name}.json"))
        chips = int(sj["number_of_nodes"]) * int(sj["accelerators_per_node"])
        files = [f for f in git(repo, "ls-tree", "-r", "--name-only", "HEAD", f"Google/results/{name}/gpt3/").split()
                 if f.rsplit("/", 1)[-1].startswith("result_")]
        alls, steadys, info = [], [], []
        for f in sorted(files):
            ev = events(git(repo, "show", f"HEAD:{f}"))
            hp = {e[1]: e[3] for e in ev if e[1] in ("global_batch_size", "init_checkpoint_step", "eval_samples")}
            b = blocks(ev)
            first_k = min(e[2]["first_epoch_num"] for e in ev if e[1] == "block_stop")
            st = [x for x in b if x[0] != first_k]
            a = sum(x[1] for x in b) / sum(x[2] for x in b) / chips
            s = sum(x[1] for x in st) / sum(x[2] for x in st) / chips
            alls.append(a); steadys.append(s)
            secs = sorted(x[2] for x in st)
            info.append((hp.get("global_batch_size"), hp.get("init_checkpoint_step"), len(b), len(st),
                         round(statistics.median(secs), 2), b[0][2] if b and b[0][0] == first_k else None))
        print(f"{rnd} {name:34s} chips {chips:5d} [{sj['accelerator_model_name']}] GBS/ckpt/blocks/steady/median-block-s/first-block-s {info}")
        print(f"      all    {', '.join(f'{x:.1f}' for x in alls)} -> median {statistics.median(alls):.1f}")
        print(f"      steady {', '.join(f'{x:.1f}' for x in steadys)} -> median {statistics.median(steadys):.1f}  ({min(steadys):.1f}-{max(steadys):.1f})")

if __name__ == "__main__":
    main()
