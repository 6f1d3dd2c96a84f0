#!/usr/bin/env bash
# Set up (venv + dev extras) and run the lint, the type check (mypy), the docs build and
# the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh dev
.venv/bin/ruff check src tests benchmarks
.venv/bin/mypy  # src/lstmlm, configured in pyproject.toml [tool.mypy]
# The docs site: every page builds, every link resolves, the CLI reference is made from
# the parsers (mkdocs.yml, scripts/mkdocs_hooks.py).
NO_MKDOCS_2_WARNING=1 .venv/bin/mkdocs build --strict --quiet --site-dir "$(mktemp -d)"
.venv/bin/python -m pytest "$@"
