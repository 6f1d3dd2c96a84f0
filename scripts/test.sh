#!/usr/bin/env bash
# Set up (venv + dev extras) and run the lint and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/python -m pytest "$@"
