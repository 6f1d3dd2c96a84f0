#!/usr/bin/env bash
# Create .venv (once) and install lstmlm into it, with the tested versions of every
# package (constraints.txt). Usage: scripts/setup.sh [EXTRAS]
# EXTRAS is a pip extras list such as "dev" or "dev,web".
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
pip=(.venv/bin/pip install --quiet --disable-pip-version-check -c constraints.txt)
# torch first, pinned by constraints.txt to the tested version (the CPU wheel here), so that
# nothing else pulls a multi-GB CUDA build.
"${pip[@]}" torch
if [ -n "$extras" ]; then
  "${pip[@]}" -e ".[$extras]"
else
  "${pip[@]}" -e .
fi
