#!/usr/bin/env bash
# Exports load in transformers with the same loss (docs/hf.md, docs/moe.md): install PyTorch and
# transformers into a virtual environment and run check_export.py, which trains each golden model
# (dense and MoE) one step with `anychip`, exports it, reloads it in transformers and compares the
# two losses (fails above 1e-5). CI runs this after the Rust tests (.ci/run).
#   ANYCHIP_HF_VENV  the environment (default: $HOME/.cache/anychip/hf-venv; created if missing;
#                    PyTorch from PyPI brings its CUDA libraries, about 4.5 GB, once)
#   ANYCHIP          the `anychip` binary (default: $CARGO_TARGET_DIR/debug/anychip)
set -euo pipefail
cd "$(dirname "$0")/../.."
venv="${ANYCHIP_HF_VENV:-$HOME/.cache/anychip/hf-venv}"
source tools/venv.sh
ensure_venv "$venv"
# The versions the goldens were checked with; a newer transformers is checked by hand first.
"$venv/bin/python" -m pip install -q torch==2.15.0 transformers==5.25.0 safetensors==0.8.0
export ANYCHIP="${ANYCHIP:-${CARGO_TARGET_DIR:-target}/debug/anychip}"
if [ ! -x "$ANYCHIP" ]; then
    echo "error: no anychip binary at $ANYCHIP; build it (cargo build) or set ANYCHIP" >&2
    exit 1
fi
exec "$venv/bin/python" tools/golden/check_export.py
