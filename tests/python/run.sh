#!/usr/bin/env bash
# Runs the Python client tests (tests/python) against target/debug/rtllm: creates the venv
# target/pyenv-tests once, installs `openai` and `pytest` into it when missing (needs network
# the first time), then runs pytest.
set -euo pipefail
cd "$(dirname "$0")/../.."

venv=target/pyenv-tests
if [ ! -x "$venv/bin/python" ]; then
    python3 -m venv "$venv" || { echo "error: cannot create the Python venv $venv (is python3-venv installed?)" >&2; exit 1; }
fi
if ! "$venv/bin/python" -c "import openai, pytest" >/dev/null 2>&1; then
    if ! "$venv/bin/pip" install -q --disable-pip-version-check openai pytest; then
        echo "error: installing openai and pytest into $venv failed (no network to PyPI?)" >&2
        exit 1
    fi
fi
exec "$venv/bin/python" -m pytest -q tests/python "$@"
