#!/usr/bin/env bash
# Build and install the Python package (python/) into a virtual environment and run its tests.
# CI runs this after the Rust tests (.ci/run); locally: `python/run-tests.sh`.
#   ANYCHIP_PY_VENV  the environment (default: $HOME/.cache/anychip/py-venv; created if missing)
#   ANYCHIP_CLI      the `anychip` binary the parity tests compare with (default: found in
#                    $CARGO_TARGET_DIR, where `cargo test --workspace` leaves it)
set -euo pipefail
cd "$(dirname "$0")"
venv="${ANYCHIP_PY_VENV:-$HOME/.cache/anychip/py-venv}"
source ../tools/venv.sh
ensure_venv "$venv"
# The README's install command (maturin comes from PyPI through pip's build isolation), plus
# the test extras (pytest, pandas). The notebook test runs only where its extras are
# installed (pip install ".[notebook]"): nbclient could not start a kernel on the shared CI VM.
"$venv/bin/python" -m pip install -q --upgrade pip
"$venv/bin/python" -m pip install -q ".[test]"
# Run from the tests folder so `import anychip` is the installed package, not ./anychip.
cd tests
exec "$venv/bin/python" -m pytest -q -p no:cacheprovider "$@"
