#!/usr/bin/env bash
# Distributed tests under a real MPI launcher: equivalence of N ranks with one, ZeRO-1 memory,
# resume with another rank count, and a killed or hung rank ending the job in bounded time.
# Needs Open MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev). Run from anywhere.
set -euo pipefail
cd "$(dirname "$0")/../.."

if ! command -v mpirun >/dev/null 2>&1; then
    echo "error: mpirun not found; install Open MPI (apt-get install libopenmpi-dev openmpi-bin libclang-dev)" >&2
    exit 1
fi
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
# ANYCHIP_DIST_PROFILE=test reuses the optimised test profile of `cargo test` (CI does).
PROFILE="${ANYCHIP_DIST_PROFILE:-release}"
cargo build -q --profile "$PROFILE" -p anychip --features mpi
case "$PROFILE" in test | dev) DIR=debug ;; *) DIR="$PROFILE" ;; esac
BIN="$CARGO_TARGET_DIR/$DIR/anychip"

WORK="$(mktemp -d)"
trap 'rm -rf "$WORK"' EXIT
# Hermetic: a fixed generated corpus (not the repository's docs, whose every edit would move
# the runs compared below), tokenised into a private cache.
export ANYCHIP_CACHE="$WORK/cache"
python3 - "$WORK/corpus.txt" <<'PY'
import random, sys
rng = random.Random(20261204)
words = ("the a of and to in is that it for on with as by at from this be are or which each one two "
         "model chip step loss train expert rank layer token batch port data time memory speed plan "
         "router weight gradient sum order near tie split count share pool run check test bound").split()
lines = []
for _ in range(8000):
    sentence = " ".join(rng.choice(words) for _ in range(rng.randint(4, 14)))
    lines.append(sentence.capitalize() + rng.choice([".", ".", ",", ";", "?"]))
open(sys.argv[1], "w").write("\n".join(lines) + "\n")
PY
# --oversubscribe: more ranks than cores is fine for tests; --allow-run-as-root: CI runs as root.
MPIRUN=(mpirun --oversubscribe --allow-run-as-root)
# Containers often forbid the cross-process memory reads Open MPI's shared-memory transport
# uses for large messages; copying through the shared segment works everywhere.
export OMPI_MCA_btl_vader_single_copy_mechanism=none
BASE=(--data "$WORK/corpus.txt" --preset gpt2-tiny --batch 8 --ctx 64 --lr 1e-3 --threads 1 --eval-every 0 --quiet)
COMMON=("${BASE[@]}" --steps 20)

fail() { echo "FAIL: $*" >&2; exit 1; }

echo "== equivalence: 2 and 4 ranks with batch 8/N against 1 rank with batch 8, 20 steps"
"$BIN" train "${COMMON[@]}" --out "$WORK/n1" > "$WORK/n1.txt"
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" --out "$WORK/n2" > "$WORK/n2.txt"
"${MPIRUN[@]}" -np 4 "$BIN" train "${COMMON[@]}" --out "$WORK/n4" > "$WORK/n4.txt"
"${MPIRUN[@]}" -np 4 "$BIN" train "${COMMON[@]}" --zero 1 --out "$WORK/n4z" > "$WORK/n4z.txt"
# Gradient accumulation: only the last micro-batch's backward hands gradients to the exchange.
"$BIN" train "${COMMON[@]}" --accum 2 --out "$WORK/a1" > /dev/null
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" --accum 2 --zero 1 --out "$WORK/a2z" > /dev/null
# Exchange after backward instead of during it: the same sums, so the same bits.
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" --overlap false --out "$WORK/n2s" > /dev/null
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
def losses(run):
    return [json.loads(l)["loss"] for l in open(f"{w}/{run}/metrics.jsonl")]
one = losses("n1")
assert len(one) == 20, one
assert losses("n2s") == losses("n2"), "exchanging during backward changed the numbers"
print("n2 --overlap false: bit-identical to overlapped n2")
d = max(abs(a - b) for a, b in zip(losses("a1"), losses("a2z")))
print(f"a2z (accum 2, ZeRO-1): max |loss - loss(1 rank, accum 2)| = {d:.2e}")
assert len(losses("a2z")) == 20 and d < 2e-3, f"accumulation under data parallelism diverges by {d}"
for run in ["n2", "n4", "n4z"]:
    other = losses(run)
    assert len(other) == 20, (run, other)
    d = max(abs(a - b) for a, b in zip(one, other))
    print(f"{run}: max |loss - loss(1 rank)| over 20 steps = {d:.2e}")
    # f32 sums in another order, amplified a little by Adam over 20 steps; a wrong average
    # (a missing 1/N, a rank's rows counted twice) is off by 1e-1 or more.
    assert d < 2e-3, f"{run} diverges from one rank by {d}"
PY

echo "== ZeRO-1: AdamW state per rank"
python3 - "$WORK" <<'PY'
import re, sys
w = sys.argv[1]
def mib(run):
    m = re.search(r"AdamW state ([0-9.]+) MiB per rank", open(f"{w}/{run}.txt").read())
    assert m, f"{run} did not report its optimizer state"
    return float(m.group(1))
full, sharded = mib("n4"), mib("n4z")
print(f"4 ranks: replicated {full} MiB per rank, ZeRO-1 {sharded} MiB per rank")
assert abs(sharded - full / 4) <= 0.2, (full, sharded)
PY

echo "== resume with another rank count: 2 ranks (ZeRO-1) to step 10, then 4 ranks to 20"
"${MPIRUN[@]}" -np 2 "$BIN" train "${COMMON[@]}" --zero 1 --ckpt-every 5 --stop-after 10 --out "$WORK/rs" > /dev/null
"${MPIRUN[@]}" -np 4 "$BIN" train --resume "$WORK/rs" --threads 1 --quiet > /dev/null
python3 - "$WORK" <<'PY'
import json, sys
w = sys.argv[1]
one = [json.loads(l)["loss"] for l in open(f"{w}/n1/metrics.jsonl")]
rs = [json.loads(l) for l in open(f"{w}/rs/metrics.jsonl")]
assert [r["step"] for r in rs] == list(range(1, 21)), [r["step"] for r in rs]
d = max(abs(a - r["loss"]) for a, r in zip(one, rs))
print(f"resumed 2 -> 4 ranks: max |loss - loss(1 rank, uninterrupted)| = {d:.2e}")
assert d < 2e-3, d
PY

echo "== expert parallelism (moe-tiny): --ep 2 on 2 ranks, --ep 2 on 4 ranks (2 replicas x 2, ZeRO-1), --ep 4 on 4 ranks, against 1 rank"
# Uncapped: under expert parallelism each rank caps its own tokens (as Megatron-Core's capacity
# factor), so where moe-tiny's cap binds, 2 ranks of 256 tokens reroute other slots than 1 rank of
# 512 would; the equivalence checked here is that of the exchanges.
MOE=(--data "$WORK/corpus.txt" --preset moe-tiny --capacity-factor 0 --batch 8 --ctx 64 --lr 1e-3 --threads 1 --eval-every 0 --eval-batches 4 --quiet)
"$BIN" train "${MOE[@]}" --steps 20 --out "$WORK/m1" > /dev/null
"${MPIRUN[@]}" -np 2 "$BIN" train "${MOE[@]}" --steps 20 --ep 2 --out "$WORK/m2e2" > /dev/null
"${MPIRUN[@]}" -np 4 "$BIN" train "${MOE[@]}" --steps 20 --ep 2 --zero 1 --out "$WORK/m4e2z" > /dev/null
"${MPIRUN[@]}" -np 4 "$BIN" train "${MOE[@]}" --steps 20 --ep 4 --out "$WORK/m4e4" > "$WORK/m4e4.txt"
grep -q "expert parallel: 1 x 4 ranks" "$WORK/m4e4.txt" || fail "--ep 4 did not report its layout: $(cat "$WORK/m4e4.txt")"
echo "   then resume: 2 ranks (--ep 2) to step 10, 4 ranks (--ep 4) to 20"
"${MPIRUN[@]}" -np 2 "$BIN" train "${MOE[@]}" --steps 20 --ep 2 --ckpt-every 5 --stop-after 10 --out "$WORK/mrs" > /dev/null
"${MPIRUN[@]}" -np 4 "$BIN" train --resume "$WORK/mrs" --ep 4 --threads 1 --quiet > /dev/null
python3 - "$WORK" <<'PY'
import json, struct, sys
w = sys.argv[1]
def log(run):
    return [json.loads(l) for l in open(f"{w}/{run}/metrics.jsonl")]
one = log("m1")
assert len(one) == 20, one
for run in ["m2e2", "m4e2z", "m4e4", "mrs"]:
    other = log(run)
    assert [r["step"] for r in other] == list(range(1, 21)), (run, [r["step"] for r in other])
    d = max(abs(a["loss"] - b["loss"]) for a, b in zip(one, other))
    a, b = one[0]["moe"]["tokens_per_expert"], other[0]["moe"]["tokens_per_expert"]
    moved = sum(abs(x - y) for x, y in zip(a, b))
    last = (sum(one[-1]["moe"]["tokens_per_expert"]), sum(other[-1]["moe"]["tokens_per_expert"]))
    print(f"{run}: max |loss - loss(1 rank)| over 20 steps = {d:.2e}; step 1 routed {moved} of {sum(a)} slots differently")
    # As data parallelism: f32 sums in another order. (A wrong scale of the expert gradients
    # barely moves AdamW; crates/dist/tests/expert_parallel.rs checks the gradients themselves.)
    assert d < 2e-3, f"{run} diverges from one rank by {d}"
    # The router statistics are the global batch's (counts pooled over the ranks), not rank 0's
    # share: the same total at every step, and at step 1 (the same weights on both sides) the
    # same split up to a few near-tie choices. Later steps are not compared split by split:
    # the sums' other order flips near ties that then grow (on a corpus of the repository's docs
    # of 2026-12-04: 0 slots of 3,072 moved at steps 1-5, 2 at step 10, 98 at step 15).
    assert sum(a) == sum(b) and last[0] == last[1] and moved <= sum(a) // 100, (run, a, b, last)
def header(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        h = json.loads(f.read(n))
    h.pop("__metadata__", None)
    return {k: (v["dtype"], v["shape"]) for k, v in h.items()}
# An expert-parallel checkpoint is a one-rank checkpoint: the same tensors, every expert in it.
for f in ["model.safetensors", "optimizer.safetensors"]:
    a = header(f"{w}/m1/checkpoint/{f}")
    for run in ["m2e2", "m4e2z", "m4e4", "mrs"]:
        b = header(f"{w}/{run}/checkpoint/{f}")
        assert a == b, (run, f, sorted(set(a) ^ set(b))[:6])
print(f"checkpoints of the --ep runs hold the one-rank tensors ({len(a)} in optimizer.safetensors)")
PY

# Pid of rank $2 among the children of mpirun $1.
rank_pid() {
    for c in $(pgrep -P "$1"); do
        if tr '\0' '\n' < "/proc/$c/environ" 2>/dev/null | grep -qx "OMPI_COMM_WORLD_RANK=$2"; then echo "$c"; fi
    done
}

# Start a long 2-rank run (with the arguments after $2), send $1 to rank 1 once a checkpoint
# exists, time the job's end.
fault() {
    local sig=$1 want=$2
    shift 2
    local args=("$@")
    [ ${#args[@]} -gt 0 ] || args=("${BASE[@]}")
    local out
    out="$WORK/fault-$sig-$(echo "${args[*]}" | md5sum | cut -c1-6)"
    "${MPIRUN[@]}" -np 2 "$BIN" train "${args[@]}" --steps 100000 --ckpt-every 5 --comm-timeout 10 \
        --out "$out" > "$out.log" 2>&1 &
    local mp=$!
    for _ in $(seq 600); do [ -f "$out/checkpoint/state.json" ] && break; sleep 0.1; done
    [ -f "$out/checkpoint/state.json" ] || fail "no checkpoint appeared before the fault"
    local victim
    victim=$(rank_pid "$mp" 1)
    [ -n "$victim" ] || fail "cannot find rank 1 of mpirun $mp"
    local t0=$SECONDS
    kill "-$sig" "$victim"
    local waited=0
    while kill -0 "$mp" 2>/dev/null; do
        sleep 1
        waited=$((waited + 1))
        if [ $waited -gt 90 ]; then kill -9 "$mp"; fail "job still running 90 s after SIG$sig to rank 1"; fi
    done
    wait "$mp" && fail "job exited 0 after SIG$sig to rank 1"
    echo "SIG$sig to rank 1: job ended after $((SECONDS - t0)) s"
    grep -E "rank 1" "$out.log" | head -2
    grep -qE "$want" "$out.log" || fail "after SIG$sig the log does not say '$want': $(cat "$out.log")"
    [ $((SECONDS - t0)) -le 60 ] || fail "the job took more than 60 s to end"
    # The last checkpoint is complete: it resumes (on 1 rank) and trains one more step.
    local step
    step=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['step'])" "$out/checkpoint/state.json")
    "$BIN" train --resume "$out" --threads 1 --steps $((step + 1)) --quiet > /dev/null \
        || fail "the checkpoint left by the SIG$sig fault does not resume"
}

echo "== faults"
fault KILL "process rank 1 .* exited on signal 9"
# A rank stopped before the collective is named by its progress count ("never reached it"), one
# stopped inside the transfer by the liveness probe ("stopped answering").
fault STOP "did not complete within 10 s: (rank 1 never reached it|every rank reached it, but rank 1 stopped answering)"
# Under expert parallelism the ranks also meet in every MoE layer's all-to-all.
fault KILL "process rank 1 .* exited on signal 9" "${MOE[@]}" --ep 2

echo "distributed tests: all passed"
