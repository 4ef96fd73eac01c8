#!/usr/bin/env bash
# Training throughput from Python (anychip.train) against the CLI (anychip train) on the same
# job, alternated REPEATS times; prints each run's tokens/s and the medians.
#   bench/python_vs_cli.sh CLI_BINARY PYTHON [REPEATS=5] [STEPS=60]
# PYTHON must have the package installed (pip install ./python). The job: the default preset
# on the default corpus, no validation or checkpoints before the last step.
set -euo pipefail
cli="$1"; py="$2"; repeats="${3:-5}"; steps="${4:-60}"
work="$(mktemp -d)"; trap 'rm -rf "$work"' EXIT
flags=(--steps "$steps" --eval-every 0 --eval-batches 1 --ckpt-every 0 --quiet)
for i in $(seq "$repeats"); do
    c=$("$cli" train "${flags[@]}" --out "$work/cli$i" | sed -E 's/.* ([0-9]+) tok\/s.*/\1/')
    p=$("$py" -c "import anychip,sys; r=anychip.train(steps=$steps, eval_every=0, eval_batches=1, ckpt_every=0, quiet=True, out=sys.argv[1]); print(round(r.summary['tokens_per_s']))" "$work/py$i")
    echo "repeat $i: cli $c tok/s, python $p tok/s"
    echo "$c $p" >> "$work/pairs"
done
python3 - "$work/pairs" <<'PY'
import statistics, sys
pairs = [tuple(map(float, l.split())) for l in open(sys.argv[1])]
c, p = statistics.median(x for x, _ in pairs), statistics.median(y for _, y in pairs)
print(f"median: cli {c:.0f} tok/s, python {p:.0f} tok/s, python/cli {p / c:.3f}")
PY
