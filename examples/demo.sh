#!/usr/bin/env bash
# Runs the README demo on a fresh machine with only Python >= 3.11: creates .venv on first use.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-$(command -v python3.13 || command -v python3.12 || command -v python3.11 || command -v python3)}"
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e .
exec .venv/bin/python examples/demo.py
