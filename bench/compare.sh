#!/usr/bin/env bash
# anychip vs the PyTorch twin, side by side on this machine (see bench/compare.py --help).
# Builds the release binary first so the numbers are never from a stale build.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$HOME/.cache/anychip/ci-target}"
case " $* " in
*" -h "* | *" --help "*) ;;
*) cargo build --release -p anychip >&2 ;;
esac
exec python3 bench/compare.py --anychip "$CARGO_TARGET_DIR/release/anychip" "$@"
