#!/usr/bin/env bash
# Create .venv (once) and install lstmlm into it. Usage: scripts/setup.sh [EXTRAS]
# EXTRAS is a pip extras list such as "dev" or "dev,web".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
# torch is pinned to 2.13.0 (the CPU wheel); install it first so nothing pulls a CUDA build.
.venv/bin/pip install --quiet --disable-pip-version-check "torch==2.13.0"
if [ -n "$extras" ]; then
  .venv/bin/pip install --quiet --disable-pip-version-check -e ".[$extras]"
else
  .venv/bin/pip install --quiet --disable-pip-version-check -e .
fi
