#!/usr/bin/env bash
# The Quick start demo: set up, train a 2x400 LSTM on Penn Treebank for a few minutes with
# the ptb-10min recipe (the most PTB per CPU-minute found: tied, a sampled softmax in
# training, bf16, the lr annealed over the budget; progress bar), print valid/test
# perplexity, and sample.
# MINUTES (default 3) sets the training budget; RUN (default runs/quickstart) the run folder.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
minutes="${MINUTES:-3}"
run="${RUN:-runs/quickstart}"
# Penn Treebank from the data search path, or downloaded into ./data (sha256-checked) when absent.
.venv/bin/lstmlm download ptb --if-missing --data-dir data
.venv/bin/lstmlm train --corpus ptb --preset ptb-10min --max-minutes "$minutes" --out "$run" --overwrite
echo
echo "sample:"
.venv/bin/lstmlm generate "$run" --prompt "the company said" --max-new-tokens 40 \
  --temperature 0.8 --top-k 40 --seed 1
