#!/usr/bin/env bash
# Write constraints.txt: the exact version of every package in .venv (set up with
# `bash scripts/setup.sh dev` and any optional extras you want pinned too), which
# scripts/setup.sh and CI install with. pyproject.toml keeps version *ranges*, so a user
# who already has torch is not made to reinstall it; this file is what was tested.
set -euo pipefail
cd "$(dirname "$0")/.."
{
  echo "# The versions lstmlm is tested with (scripts/lock.sh writes this file from .venv)."
  echo "# pip install -c constraints.txt -e '.[dev]' installs exactly these."
  .venv/bin/pip freeze --exclude-editable --disable-pip-version-check | grep -v '^lstmlm' \
    | sed 's/^torch==\([0-9.]*\)+cpu$/torch==\1/'
} > constraints.txt
echo "wrote constraints.txt ($(grep -vc '^#' constraints.txt) packages)"
