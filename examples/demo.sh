#!/usr/bin/env bash
# Runs the README demo on a fresh machine with only Python >= 3.11: creates .venv on first use.
# With --serve the local endpoint stays up at the end: open the URL it prints to see the events.
set -euo pipefail
cd "$(dirname "$0")/.."
PY="${PYTHON:-}"
if [ -z "$PY" ]; then
  for candidate in python3.13 python3.12 python3.11 python3; do
    # Run it, not just find it: a pyenv shim exists even where its version is not selected.
    if "$candidate" -c 'import sys; sys.exit(sys.version_info < (3, 11))' >/dev/null 2>&1; then
      PY="$candidate"
      break
    fi
  done
fi
if [ -z "$PY" ]; then
  echo "phactor needs Python >= 3.11" >&2
  exit 1
fi
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
  .venv/bin/python -m pip install -q --upgrade pip
fi
.venv/bin/python -m pip install -q -e .
exec .venv/bin/python examples/demo.py "$@"
