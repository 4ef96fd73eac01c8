#!/usr/bin/env bash
# The sim port against the real cpu port on this machine, in one run: predicted vs measured step
# time, share of each op kind, and peak memory, for the validation models in f32 and bf16.
#
#   bench/sim_validate.sh [REPEATS]      (default 3; each repeat runs every model once, so the
#                                         models alternate on a shared, noisy machine)
# Env: ANYCHIP (binary, default target/release/anychip), CHIP (chip file, default
# bench/out/cpu-here.toml, measured first with `anychip chips measure` when missing),
# MODELS, PRECISIONS. Writes bench/out/sim/*.json and prints a Markdown table (docs/sim.md).
set -euo pipefail
cd "$(dirname "$0")/.."
REPEATS=${1:-3}
BIN=${ANYCHIP:-target/release/anychip}
OUT=bench/out/sim
CHIP=${CHIP:-bench/out/cpu-here.toml}
MODELS=${MODELS:-"gpt2-tiny gpt2-small-30m gpt2-124m llama-30m"}
PRECISIONS=${PRECISIONS:-"f32 bf16"}
mkdir -p "$OUT"
[ -f "$CHIP" ] || "$BIN" chips measure --out "$CHIP"
for rep in $(seq 1 "$REPEATS"); do
  for m in $MODELS; do
    for p in $PRECISIONS; do
      "$BIN" bench --port cpu --preset "$m" --precision "$p" --steps 5 --warmup 2 --profile \
        --json "$OUT/cpu-$m-$p-$rep.json" > /dev/null
      "$BIN" bench --port "sim:$CHIP" --preset "$m" --precision "$p" --profile \
        --json "$OUT/sim-$m-$p-$rep.json" > /dev/null
    done
  done
done
python3 - "$OUT" "$REPEATS" "$MODELS" "$PRECISIONS" "$CHIP" <<'PY'
import json, statistics, sys
out, reps, models, precs, chip = sys.argv[1], int(sys.argv[2]), sys.argv[3].split(), sys.argv[4].split(), sys.argv[5]
def load(kind, m, p, r): return json.load(open(f"{out}/{kind}-{m}-{p}-{r}.json"))
def shares(prof):
    rows = {r["kind"]: r["ms_per_step"] for r in prof["rows"]}
    tot = sum(rows.values())
    return {k: 100 * v / tot for k, v in rows.items()}
print(f"device: {load('cpu', models[0], precs[0], 1)['device']}; chip file: {chip}; {reps} alternated repeats, medians")
print("| model | prec | batch x ctx | measured ms | predicted ms | error | worst kind share diff (kind) | measured peak RSS MiB | predicted MiB (tensors + host) | error |")
print("|---|---|---|---|---|---|---|---|---|---|")
for m in models:
    for p in precs:
        cpu = [load("cpu", m, p, r) for r in range(1, reps + 1)]
        sim = [load("sim", m, p, r) for r in range(1, reps + 1)]
        meas = statistics.median(c["step_ms_median"] for c in cpu)
        pred = statistics.median(s["step_ms_median"] for s in sim)
        cs = {k: statistics.median(shares(c["profile"]).get(k, 0) for c in cpu) for k in shares(cpu[0]["profile"])}
        ss = shares(sim[0]["profile"])
        kinds = set(cs) | set(ss)
        worst = max(kinds, key=lambda k: abs(cs.get(k, 0) - ss.get(k, 0)))
        diff = abs(cs.get(worst, 0) - ss.get(worst, 0))
        rss = statistics.median(c["peak_rss_mib"] for c in cpu)
        tensors = sim[0]["peak_memory_bytes"] / 2**20
        host = statistics.median(s["peak_rss_mib"] for s in sim)
        b = cpu[0]
        print(f"| {m} | {p} | {b['batch']}x{b['ctx']} | {meas:.1f} | {pred:.1f} | {100*(pred/meas-1):+.1f}% | {diff:.1f} pt ({worst}) | {rss:.0f} | {tensors:.0f} + {host:.0f} = {tensors+host:.0f} | {100*((tensors+host)/rss-1):+.1f}% |")
print()
print("op-kind shares (% of time inside port calls), measured / predicted:")
for m in models:
    for p in precs:
        cpu = [load("cpu", m, p, r) for r in range(1, reps + 1)]
        ss = shares(load("sim", m, p, 1)["profile"])
        cs = {k: statistics.median(shares(c["profile"]).get(k, 0) for c in cpu) for k in set(ss) | set(shares(cpu[0]["profile"]))}
        print(f"- {m} {p}: " + ", ".join(f"{k} {cs.get(k,0):.1f}/{ss.get(k,0):.1f}" for k in sorted(cs, key=lambda k: -cs[k])))
PY
