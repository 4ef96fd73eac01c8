#!/usr/bin/env python3
"""Training throughput of MLPerf Training result logs (MLLOG), per accelerator.

Method (the one the mlperf31/40/51 rows of crates/plan/data/published_runs.toml use):
  throughput = samples trained inside all block_start..block_stop intervals / those intervals' seconds
               x sequence length / accelerators
  median over the result_*.txt files of a system.

How the logs count:
  * GPT-3 175B (v4.1): block_start carries first_epoch_num and epoch_count, both in TOKENS
    (the per-step 'tracked_stats' steps advance by global_batch x 2048), so tokens = epoch_count.
  * Llama 3.1 405B (v5.0): block_start and block_stop both carry samples_count = the count at the
    block's START (block_stop does not give the end count), so the samples of a block are the next
    eval_start's (or run_stop's) samples_count minus the block_start's.
  * Llama 3.1 405B and 8B (v5.1, NVIDIA's NeMo 25.09 MLPerf code and its copies): block_start and block_stop
    both carry samples_count = the block's OWN size (the same number for every block after the first) and
    the step, so blocks are told apart by step and a block's samples are its steps x global batch.
  * Google MaxText (v4.1) logs no eval_start/eval_stop: block_stop, eval_accuracy and the next
    block_start share one timestamp, so the evaluation lies INSIDE its blocks (flagged below).

Accelerators = number_of_nodes x accelerators_per_node of the system JSON.

Usage: python3 tools/mlperf/throughput.py v5.0=PATH v4.1=PATH
  where each PATH is a clone (or bare mirror) of github.com/mlcommons/training_results_v5.0 / _v4.1;
  prints the table for every system below of the rounds given. The v4.1 and v5.0 rows of
  crates/plan/data/published_runs.toml were read from it (training_results_v5.0 at 0fdc28f,
  v4.1 at b87b9e3), and the NVFP4 v5.1 rows (training_results_v5.1 at 441d65f).
"""
import json
import statistics
import subprocess
import sys

# round -> local clone of its results repository, from the command line
MIRRORS = {}

# (round, submitter, system, benchmark)
SYSTEMS = [
    ("v5.0", "IBM+CoreWeave+NVIDIA", "carina_ngpu512_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "IBM+CoreWeave+NVIDIA", "carina_ngpu1024_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "IBM+CoreWeave+NVIDIA", "carina_ngpu1536_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "IBM+CoreWeave+NVIDIA", "carina_ngpu2048_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "IBM+CoreWeave+NVIDIA", "carina_ngpu2496_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "eos-dfw_n64_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "eos-dfw_n256_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "eos-dfw_n304_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "eos-dfw_n320_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "eos-dfw_n1024_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "tyche_ngpu256_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "NVIDIA", "tyche_ngpu512_ngc25.04_nemo", "llama31_405b"),
    ("v5.0", "Nebius", "nebius_soperator_8xH200_n64_ngc25.01_nemo", "llama31_405b"),
    ("v5.0", "Nebius", "nebius_soperator_8xH200_n128_ngc25.01_nemo", "llama31_405b"),
    ("v4.1", "Google", "cloud-tpu-trillium-512-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-trillium-1024-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-trillium-2048-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-trillium-3072-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-v5p-4096-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-v5p-8192-maxtext", "gpt3"),
    ("v4.1", "Google", "cloud-tpu-v5p-12288-maxtext", "gpt3"),
    ("v4.1", "NVIDIA", "b200_n8_preview_nemo", "gpt3"),
    ("v4.1", "NVIDIA", "eos_n32_ngc24.09_nemo", "gpt3"),
    ("v4.1", "NVIDIA", "eos_n64_ngc24.09_nemo", "gpt3"),
    ("v4.1", "NVIDIA", "eos-dfw_n1452_ngc24.04_nemo", "gpt3"),
    ("v4.1", "Oracle", "1536xBM.GPU.H100.8", "gpt3"),
    ("v4.1", "Oracle", "3072xBM.GPU.H100.8", "gpt3"),
    # v5.1: the NVFP4 rows of crates/plan/data/published_runs.toml and the other NVIDIA-GPU systems checked for FP4
    ("v5.1", "NVIDIA", "tyche_ngpu512_ngc25.09_nemo", "llama31_405b"),
    ("v5.1", "NVIDIA", "theia_ngpu512_ngc25.09_nemo", "llama31_405b"),
    ("v5.1", "NVIDIA", "hsg_ngpu2560_ngc25.09_nemo", "llama31_405b"),
    ("v5.1", "NVIDIA", "hsg_ngpu5120_ngc25.09_nemo", "llama31_405b"),
    ("v5.1", "NVIDIA", "tyche_ngpu8_ngc25.09_nemo", "llama31_8b"),
    ("v5.1", "NVIDIA", "theia_ngpu8_ngc25.09_nemo", "llama31_8b"),
    ("v5.1", "Nebius", "nebius_b200_n1", "llama31_8b"),
    ("v5.1", "Nebius", "nebius_b200_n2", "llama31_8b"),
    ("v5.1", "Nebius", "nebius_b200_n4", "llama31_8b"),
    ("v5.1", "Nebius", "nebius_b300_n1", "llama31_8b"),
    ("v5.1", "Dell", "1xXE9680Lx8B200-SXM-180GB", "llama31_8b"),
    ("v5.1", "Dell", "1xXE9780x8B300-SXM-270GB", "llama31_8b"),
    ("v5.1", "Dell", "2xXE9680Lx8B200-SXM-180GB", "llama31_8b"),
    ("v5.1", "Dell", "2xXE9685Lx8B200-SXM-180GB", "llama31_8b"),
    ("v5.1", "Lenovo", "SR680aV3-8xB200_SXM_180GB", "llama31_8b"),
    ("v5.1", "Lenovo", "SR680aV4-8xB300_SXM", "llama31_8b"),
    ("v5.1", "Lenovo", "SR780aV3-8xB200_SXM_180GB", "llama31_8b"),
    ("v5.1", "Oracle", "1xBM.GPU.B200.8", "llama31_8b"),
    ("v5.1", "Oracle", "8xBM.GPU.B200.8", "llama31_8b"),
    ("v5.1", "Supermicro", "AS-4126GS-NBR-LCC", "llama31_8b"),
    ("v5.1", "Supermicro", "AS-8126GS-NB3RT", "llama31_8b"),
    ("v5.1", "Supermicro", "SYS-422GS-NBRT-LCC", "llama31_8b"),
    ("v5.1", "Verda", "b200_8x8_ngc25.09", "llama31_8b"),
    # the FP8 v5.1 rows already in the data set, as a check that this copy reproduces them
    ("v5.1", "NVIDIA", "tyche_ngpu72_ngc25.09_nemo", "llama31_8b"),
    ("v5.1", "University-of-Florida", "hpg.dgxb200x8.n1", "llama31_8b"),
    ("v5.1", "Nebius", "nebius_h200_n64", "llama31_405b"),
]

COUNTS_IN_TOKENS = {"gpt3": True, "llama31_405b": False, "llama31_8b": False}


def git(repo, *args):
    return subprocess.run(["git", "-C", repo, *args], check=True, capture_output=True, text=True).stdout


def mllog(text):
    for line in text.splitlines():
        i = line.find(":::MLLOG ")
        if i < 0:
            continue
        try:
            yield json.loads(line[i + len(":::MLLOG "):])
        except json.JSONDecodeError:
            continue


def count_of(meta):
    for k in ("samples_count", "first_epoch_num", "epoch_num"):
        if k in meta:
            return meta[k]
    return None


def parse(text, seq, tokens):
    """Returns (samples trained in blocks, seconds in blocks, logged hyper-parameters, eval_inside_blocks, n_blocks).
    samples = tokens / seq where the log counts tokens."""
    ev = []
    seen = set()
    hp = {}
    steps = []  # (time_ms, cumulative count after the step) of the per-step training records
    for j in mllog(text):
        k, m = j["key"], j.get("metadata", {})
        if k in ("global_batch_size", "gradient_accumulation_steps", "max_sequence_length", "submission_platform") and k not in hp:
            hp[k] = j.get("value")
        if k == "tracked_stats" and isinstance(j.get("value"), dict) and any(x.startswith("train_step_tim") for x in j["value"]):
            steps.append((j["time_ms"], m.get("step")))
            continue
        if k not in ("block_start", "block_stop", "eval_start", "eval_stop", "eval_accuracy", "run_stop"):
            continue
        c = count_of(m)
        sig = (k, c, m.get("step"))  # v5.1: step too (its block_start/block_stop repeat one per-block samples_count)
        if sig in seen:  # the same event logged by several ranks
            continue
        seen.add(sig)
        ev.append((j["time_ms"], k, c, m))
    ev.sort(key=lambda e: e[0])
    has_eval_interval = any(e[1] == "eval_start" for e in ev)
    units = secs = 0.0
    nblocks = 0
    fallback = False
    starts = [i for i, e in enumerate(ev) if e[1] == "block_start"]
    for n_i, i in enumerate(starts):
        t, _, c, m = ev[i]
        nxt_start = starts[n_i + 1] if n_i + 1 < len(starts) else len(ev)
        # the block's end: its block_stop or the eval_start, whichever comes first, before the next block_start
        end = next((e for e in ev[i + 1:nxt_start] if e[1] in ("block_stop", "eval_start")), None)
        if end is not None and "step" in m and "step" in end[3] and hp.get("global_batch_size"):
            # v5.1 (NVIDIA's NeMo 25.09 MLPerf code): block_start and block_stop both carry the block's own
            # sample count (not a running count) and the step; samples = steps in the block x global batch
            n = (end[3]["step"] - m["step"]) * hp["global_batch_size"]
            t_end = end[0]
        elif end is not None and not (end[1] == "block_stop" and end[2] is not None and end[2] > c):
            if "epoch_count" in m:
                n = m["epoch_count"]
            else:
                after = next((e for e in ev[i + 1:] if e[1] in ("eval_start", "eval_accuracy", "run_stop") and e[2] is not None and e[2] > c), None)
                if after is None:
                    continue
                n = after[2] - c
            t_end = end[0]
        else:
            # no block_stop / eval_start of its own (NVIDIA tyche logs: one block_stop at the very end, no
            # eval_start): the block's training ends with its last per-step record before the evaluation
            t_next = ev[nxt_start][0] if nxt_start < len(ev) else float("inf")
            inblock = [s for s in steps if t < s[0] <= t_next and s[1] is not None and s[1] > c]
            if not inblock:
                continue
            t_end, last = inblock[-1]
            n = last - c
            fallback = True
        units += n / seq if tokens else n
        secs += (t_end - t) / 1000.0
        nblocks += 1
    return units, secs, hp, (not has_eval_interval and not fallback), nblocks


def system(rnd, sub, sysname, bench):
    repo = MIRRORS[rnd]
    sj = json.loads(git(repo, "show", f"HEAD:{sub}/systems/{sysname}.json"))
    acc = int(sj["number_of_nodes"]) * int(sj["accelerators_per_node"])
    files = [f for f in git(repo, "ls-tree", "-r", "--name-only", "HEAD", f"{sub}/results/{sysname}/{bench}/").split()
             if f.rsplit("/", 1)[-1].startswith("result_")]
    per = []
    hps = []
    inside = False
    for f in sorted(files):
        text = git(repo, "show", f"HEAD:{f}")
        seq = 2048 if bench == "gpt3" else 8192
        units, secs, hp, ev_in, nb = parse(text, seq, COUNTS_IN_TOKENS[bench])
        seq = hp.get("max_sequence_length", seq)
        per.append(units / secs * seq / acc)
        hps.append((hp, nb))
        inside |= ev_in
    return acc, sj.get("accelerator_model_name"), per, hps, inside


def main():
    for arg in sys.argv[1:]:
        rnd, _, path = arg.partition("=")
        if not path:
            sys.exit(f"expected ROUND=PATH (e.g. v5.0=../training_results_v5.0), got '{arg}'")
        MIRRORS[rnd] = path
    if not MIRRORS:
        sys.exit(__doc__)
    print(f"{'system':52s} {'acc':>6s} {'runs':>4s}  {'GBS':>5s} {'blocks':>10s}  per-run tokens/s/accelerator  -> median  (range)")
    for rnd, sub, sysname, bench in (s for s in SYSTEMS if s[0] in MIRRORS):
        acc, model, per, hps, inside = system(rnd, sub, sysname, bench)
        gbs = sorted({h.get("global_batch_size") for h, _ in hps}, key=str)
        nb = ",".join(str(n) for _, n in hps)
        med = statistics.median(per)
        flag = "  [eval inside blocks]" if inside else ""
        print(f"{rnd} {sub}/{sysname:40s}"[:52].ljust(52) + f" {acc:6d} {len(per):4d}  {'/'.join(map(str, gbs)):>5s} {nb:>10s}  "
              + ", ".join(f"{x:.1f}" for x in per) + f"  -> {med:.1f}  ({min(per):.1f}-{max(per):.1f}){flag}  [{model}; platform {hps[0][0].get('submission_platform')}]")


if __name__ == "__main__":
    sys.exit(main())
