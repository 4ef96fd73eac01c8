#!/usr/bin/env bash
# Regenerate every golden into a temporary directory with PyTorch/transformers and diff the
# numbers against the committed ones (needs torch, transformers, safetensors). Exit 1 on drift.
# With --write, regenerate in place instead.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
if [ "${1:-}" = "--write" ]; then
    python3 "$here/make_l3.py" && python3 "$here/make_hf.py" && python3 "$here/make_hf_moe.py"
    exit 0
fi
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
GOLDEN_OUT="$tmp" python3 "$here/make_l3.py" >/dev/null
GOLDEN_OUT="$tmp" python3 "$here/make_hf.py" >/dev/null 2>&1
GOLDEN_OUT="$tmp" python3 "$here/make_hf_moe.py" >/dev/null 2>&1
python3 - "$here/out" "$tmp" <<'PY'
import json, os, sys
import torch
from safetensors.torch import load_file
old, new = sys.argv[1], sys.argv[2]
worst, bad = 0.0, []
for root, _, files in os.walk(new):
    for f in files:
        rel = os.path.relpath(os.path.join(root, f), new)
        a, b = os.path.join(old, rel), os.path.join(new, rel)
        if not os.path.exists(a):
            bad.append(f"{rel}: not committed")
            continue
        if f.endswith(".safetensors"):
            ta, tb = load_file(a), load_file(b)
            for k in tb:
                d = (ta[k].double() - tb[k].double()).abs().max().item() if k in ta else float("inf")
                worst = max(worst, d)
                if d > 1e-6:
                    bad.append(f"{rel}:{k} differs by {d:.2e}")
        elif f == "expected.json":
            ja, jb = json.load(open(a)), json.load(open(b))
            for k in ("loss", "losses", "losses_llama_equivalent"):
                va, vb = ja.get(k), jb.get(k)
                va, vb = (va if isinstance(va, list) else [va]), (vb if isinstance(vb, list) else [vb])
                for x, y in zip(va, vb):
                    if x is not None and abs(x - y) > 1e-6:
                        bad.append(f"{rel}:{k} {x} vs {y}")
print(f"goldens regenerated; max tensor difference {worst:.2e}; {len(bad)} drifted")
for b in bad:
    print("  " + b)
sys.exit(1 if bad else 0)
PY
