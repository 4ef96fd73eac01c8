#!/usr/bin/env python3
"""How far one training-loss curve lies from another, step by step.

Each argument is an anychip run directory (its metrics.jsonl) or a JSON-lines file with
{"step", "loss"} records (what `tools/torch_twin/gpt.py train --log-every 1` prints). The first
is the reference; each other is compared with it over the steps both logged:

  REF vs OTHER: N steps; per-step |diff| / ref: mean M%, max X% at step S (after step W); val A vs B
  (and with --smooth K: the same of the two curves' trailing K-step means, as a plot shows them)

Both runs must see the same batches (same seed and data order), so the difference is the
models drifting apart, not sampling noise. The first --skip steps (the warm-up, where the loss
falls by whole nats per step) can be left out of the max; by default every step counts. Exits non-zero
when --within is given and some max exceeds it.
"""
import argparse, json, os, statistics, sys


def load(path):
    """(train loss by step, last validation loss or None) from a run directory or JSONL file."""
    f = os.path.join(path, "metrics.jsonl") if os.path.isdir(path) else path
    losses, val = {}, None
    try:
        lines = open(f).read().splitlines()
    except OSError as e:
        sys.exit(f"loss_curves: cannot read {f}: {e.strerror}; pass a run directory or a JSONL file")
    for line in lines:
        line = line.strip()
        if not line.startswith("{"):
            continue
        r = json.loads(line)
        if "step" in r and "loss" in r:
            losses[int(r["step"])] = float(r["loss"])
        if "val_loss" in r:
            val = float(r["val_loss"])
    if not losses:
        sys.exit(f"loss_curves: {f} has no {{step, loss}} records")
    return losses, val


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("ref")
    p.add_argument("others", nargs="+")
    p.add_argument("--skip", type=int, default=0, help="first steps left out of the max (default 0: all count)")
    p.add_argument("--smooth", type=int, default=0,
                   help="also compare trailing means over this many steps (what a smoothed loss plot shows)")
    p.add_argument("--within", type=float, help="fail when a max per-step difference exceeds this many percent")
    a = p.parse_args()
    ref, rval = load(a.ref)
    worst = 0.0
    for o in a.others:
        cur, val = load(o)
        steps = sorted(set(ref) & set(cur))
        if not steps:
            sys.exit(f"loss_curves: {a.ref} and {o} share no steps")
        rel = {s: abs(cur[s] - ref[s]) / abs(ref[s]) for s in steps}
        late = [s for s in steps if s > a.skip] or steps
        top = max(late, key=rel.get)
        worst = max(worst, rel[top])
        vals = f"; val {rval:.4f} vs {val:.4f}" if rval is not None and val is not None else ""
        print(f"{a.ref} vs {o}: {len(steps)} steps; per-step |diff| / ref: mean "
              f"{statistics.fmean(rel.values()) * 100:.2f}%, max {rel[top] * 100:.2f}% at step {top} "
              f"(after step {a.skip}){vals}")
        if a.smooth > 1:
            # Trailing means over the last --smooth shared steps (fewer at the start).
            ma = lambda d, i: statistics.fmean(d[s] for s in steps[max(0, i - a.smooth + 1):i + 1])
            srel = {s: abs(ma(cur, i) - ma(ref, i)) / abs(ma(ref, i)) for i, s in enumerate(steps)}
            stop = max((s for s in steps if s > a.skip), key=srel.get, default=steps[0])
            print(f"  {a.smooth}-step trailing means: mean {statistics.fmean(srel.values()) * 100:.2f}%, "
                  f"max {srel[stop] * 100:.2f}% at step {stop}")
    if a.within is not None and worst * 100 > a.within:
        sys.exit(f"loss_curves: largest per-step difference {worst * 100:.2f}% exceeds {a.within}%")


if __name__ == "__main__":
    main()
