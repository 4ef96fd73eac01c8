# Sourced by scripts that need a Python virtual environment (python/run-tests.sh,
# tools/golden/check-export.sh): `ensure_venv DIR` creates DIR unless it holds one already.
ensure_venv() {
    local venv="$1"
    if [ ! -x "$venv/bin/python" ]; then
        python3 -m venv "$venv" 2>/dev/null || {
            # Debian's python3 lacks ensurepip until python3-venv is installed.
            (apt-get update -qq && apt-get install -y -qq python3-venv) >/dev/null
            python3 -m venv "$venv"
        }
    fi
}
