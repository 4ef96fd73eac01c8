#!/usr/bin/env bash
# bf16 mixed precision against f32, as loss curves: anychip and the PyTorch twin (autocast) each
# train the default model (Shakespeare bytes, batch 16 x 128, 200 steps, $WARMUP warm-up steps,
# default 50 as in `anychip train`) from the same seed and batches in both precisions, at each
# learning rate given (default: the default 3e-3, and 2e-3) and each seed in $SEEDS (default
# 1337); bench/loss_curves.py then prints how far each bf16 curve lies from its own f32 curve,
# step by step and as 10-step means. About 4 minutes per (rate, seed) on 2 cores.
#   SEEDS="1 2 3" bench/bf16_curves.sh [LR ...]
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/anychip/ci-target}"
cargo build --release -p anychip >&2
bin="$CARGO_TARGET_DIR/release/anychip"
out="bench/out/bf16-curves-$(date +%F)"
mkdir -p "$out"
steps=200
warm=${WARMUP:-50}
lrs=("$@")
[ ${#lrs[@]} -gt 0 ] || lrs=(3e-3 2e-3)
for lr in "${lrs[@]}"; do
    for seed in ${SEEDS:-1337}; do
        run="lr$lr-seed$seed"
        for prec in f32 bf16; do
            rm -rf "$out/anychip-$prec-$run"
            "$bin" train --steps $steps --warmup $warm --lr "$lr" --seed "$seed" --eval-every 0 --quiet \
                --precision $prec --out "$out/anychip-$prec-$run" >&2
            python3 tools/torch_twin/gpt.py train --preset shakespeare-bytes --batch 16 --ctx 128 \
                --steps $steps --lr-warmup $warm --lr "$lr" --seed "$seed" --eval-every 0 --log-every 1 \
                --precision $prec > "$out/torch-$prec-$run.jsonl"
        done
        echo "lr $lr, seed $seed:"
        python3 bench/loss_curves.py --smooth 10 "$out/anychip-f32-$run" "$out/anychip-bf16-$run"
        python3 bench/loss_curves.py --smooth 10 "$out/torch-f32-$run.jsonl" "$out/torch-bf16-$run.jsonl"
    done
done
