#!/usr/bin/env bash
# One GPU check of lstmlm, in under 10 minutes, into one JSON file.
#
#   bash benchmarks/gpu_check.sh OUT_DIR [DEVICE]        # DEVICE: cuda (default), cuda:N, cpu
#   GPU_CHECK_TINY=1 bash benchmarks/gpu_check.sh /tmp/gpucheck cpu   # prove it on a CPU
#
# Steps, all on DEVICE, one after the other (each one's stdout JSON and stderr are kept in
# OUT_DIR/NAME.json and OUT_DIR/NAME.err):
#   train         benchmarks/bench_train.py --config medium --seconds 60: the reference loop
#                 and lstmlm, same recipe and budget, both on DEVICE
#   awd_epoch     lstmlm train --corpus ptb --preset awd-ptb --epochs 1 --max-minutes 3:
#                 seconds per epoch of training (AWD-LSTM paper: about 65 s on a GP100); if
#                 the budget stops it first, the epoch's tokens at the measured tokens/s
#                 (marked extrapolated)
#   eval_run      lstmlm evaluate OUT_DIR/awd-run --split test --json on the trained run
#   eval_bench    benchmarks/bench_eval.py: medium model, lstmlm against the reference
#   generate      benchmarks/bench_generate.py: one stream, naive loop against lstmlm
#   generate_cli  lstmlm generate OUT_DIR/awd-run: a sample (text, not JSON)
# plus `nvidia-smi` before and after, when it is there. OUT_DIR/gpu_check.json collects it
# all: each step's JSON (null if it printed none), exit status and wall seconds. The
# script exits 0 when every step did, else 1 (the JSON is written either way).
#
# GPU_CHECK_TINY=1: budgets of about 10 s, for proving the script on a CPU: train 10 s
# with the small config (GPU_CHECK_TRAIN_CONFIG overrides it), awd 5 steps validated and
# tested on 200 lines of PTB valid/test, eval 5,000 tokens, 50 generated tokens. GPU_CHECK_DEADLINE (seconds,
# default 570) caps the whole run: each step's timeout is what is left of it, and a step
# that would start with under 15 s left is skipped. PYTHON (default .venv/bin/python, else
# python3) must have a torch that can use DEVICE; src/ is put on PYTHONPATH, so a python
# with torch, safetensors, tqdm and numpy works without installing lstmlm.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ $# -lt 1 ] || [ $# -gt 2 ]; then
  echo "usage: $0 OUT_DIR [DEVICE]" >&2
  exit 2
fi
out=$1
device=${2:-cuda}
tiny=${GPU_CHECK_TINY:-0}
deadline=${GPU_CHECK_DEADLINE:-570}
if [ -n "${PYTHON:-}" ]; then
  py=$PYTHON
elif [ -x .venv/bin/python ]; then
  py=.venv/bin/python
else
  py=python3
fi
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}"
mkdir -p "$out"
out=$(cd "$out" && pwd)
names=(env train awd_epoch eval_run eval_bench generate generate_cli)
for name in "${names[@]}"; do rm -f "$out/$name.json" "$out/$name.err" "$out/$name.meta"; done
rm -f "$out/gpu_check.json" "$out/nvidia_smi_before.txt" "$out/nvidia_smi_after.txt"
rm -rf "$out/awd-run" "$out/tiny-data"  # this script's own folders from an earlier call

data=${LSTMLM_DATA:-../shared/data}
[ -d "$data" ] && data=$(cd "$data" && pwd)
if [ "$tiny" = 1 ]; then
  # On a CPU the full-split evaluations dominate (a medium or AWD model scores PTB at a
  # few thousand tokens/s): the train step uses the small config, and the AWD run
  # trains on PTB's train file (same vocabulary and model) but validates and tests on
  # the first 200 lines of valid and test, copied to OUT_DIR/tiny-data.
  train_config=${GPU_CHECK_TRAIN_CONFIG:-small}
  train_seconds=10
  mkdir -p "$out/tiny-data"
  head -n 200 "$data/ptb/valid.txt" >"$out/tiny-data/valid.txt"
  head -n 200 "$data/ptb/test.txt" >"$out/tiny-data/test.txt"
  awd_data=(--train "$data/ptb/train.txt" --valid "$out/tiny-data/valid.txt"
    --test "$out/tiny-data/test.txt" --level word)
  awd_budget=(--max-steps 5)
  eval_flags=(--max-tokens 5000)
  gen_flags=(--tokens 50 --repeats 2)
else
  train_config=${GPU_CHECK_TRAIN_CONFIG:-medium}
  train_seconds=60
  awd_data=(--corpus ptb)
  awd_budget=(--max-minutes 3)
  eval_flags=()
  gen_flags=(--tokens 200 --repeats 5)
fi

start=$(date +%s)

# step NAME LIMIT_SECONDS CMD...: run CMD with a timeout, stdout to NAME.json, stderr to
# NAME.err, "rc seconds" to NAME.meta; a failure is recorded, not fatal.
step() {
  local name=$1 limit=$2
  shift 2
  local left=$((deadline - ($(date +%s) - start)))
  if [ "$left" -lt 15 ]; then
    echo "skipped: ${left}s left of GPU_CHECK_DEADLINE ${deadline}s" >"$out/$name.err"
    echo "skipped 0" >"$out/$name.meta"
    echo "== $name: skipped (out of time)" >&2
    return
  fi
  [ "$limit" -gt "$left" ] && limit=$left
  echo "== $name (timeout ${limit}s): $*" >&2
  local t0 t1 rc
  t0=$(date +%s.%N)
  timeout --kill-after=10 "$limit" "$@" >"$out/$name.json" 2>"$out/$name.err"
  rc=$?
  t1=$(date +%s.%N)
  echo "$rc $(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.2f", b - a }')" >"$out/$name.meta"
  echo "== $name: exit $rc" >&2
}

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi >"$out/nvidia_smi_before.txt" 2>&1
fi

"$py" - "$device" >"$out/env.json" 2>"$out/env.err" <<'EOF'
import json, sys
import torch
dev = torch.device(sys.argv[1])
info = {"python": sys.executable, "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "cuda_available": torch.cuda.is_available(), "device": str(dev)}
if dev.type == "cuda" and torch.cuda.is_available():
    info["device_name"] = torch.cuda.get_device_name(dev)
    info["device_capability"] = list(torch.cuda.get_device_capability(dev))
    info["bf16_supported"] = torch.cuda.is_bf16_supported()
print(json.dumps(info))
if dev.type == "cuda" and not torch.cuda.is_available():
    sys.exit(f"{sys.argv[1]} asked for, but this torch ({torch.__version__}) sees no CUDA device")
EOF
env_rc=$?
echo "$env_rc 0" >"$out/env.meta"

if [ "$env_rc" -eq 0 ]; then
  step train 240 "$py" benchmarks/bench_train.py --config "$train_config" \
    --seconds "$train_seconds" --device "$device"
  step awd_epoch 300 "$py" -m lstmlm train "${awd_data[@]}" --preset awd-ptb --epochs 1 \
    "${awd_budget[@]}" --device "$device" --out "$out/awd-run" --overwrite --json --quiet
  if [ -f "$out/awd-run/best.safetensors" ]; then
    step eval_run 90 "$py" -m lstmlm evaluate "$out/awd-run" --split test --json \
      --device "$device"
  fi
  step eval_bench 150 "$py" benchmarks/bench_eval.py --device "$device" "${eval_flags[@]}"
  step generate 60 "$py" benchmarks/bench_generate.py --device "$device" "${gen_flags[@]}"
  if [ -f "$out/awd-run/best.safetensors" ]; then
    step generate_cli 60 "$py" -m lstmlm generate "$out/awd-run" --device "$device" \
      --prompt "the company said" --max-new-tokens 30 --seed 1
  fi
fi

if command -v nvidia-smi >/dev/null 2>&1; then
  nvidia-smi >"$out/nvidia_smi_after.txt" 2>&1
fi

"$py" - "$out" "$device" "$tiny" "$(($(date +%s) - start))" "$train_config" <<'EOF'
import json, sys
from pathlib import Path

out, device, tiny, total = Path(sys.argv[1]), sys.argv[2], sys.argv[3] == "1", int(sys.argv[4])


def read(path):
    return path.read_text(errors="replace") if path.exists() else None


def last_json(text):
    for line in reversed((text or "").strip().splitlines()):
        try:
            return json.loads(line)
        except ValueError:
            continue
    return None


report = {"check": "gpu_check", "device": device, "tiny": tiny, "wall_seconds": total}
report["train_config"] = sys.argv[5]
report["env"] = last_json(read(out / "env.json"))
steps = {}
for name in ("env", "train", "awd_epoch", "eval_run", "eval_bench", "generate", "generate_cli"):
    meta = read(out / f"{name}.meta")
    if meta is None:
        steps[name] = {"status": "not run"}
        continue
    rc, seconds = meta.split()
    entry = {"exit": rc if rc == "skipped" else int(rc), "wall_seconds": float(seconds or 0)}
    stdout = read(out / f"{name}.json")
    if name == "generate_cli":
        entry["text"] = stdout
    elif name != "env":
        entry["result"] = last_json(stdout)
    if entry["exit"] != 0:
        entry["stderr_tail"] = (read(out / f"{name}.err") or "")[-2000:]
        if entry["exit"] in (124, 137):
            entry["timed_out"] = True
    steps[name] = entry
report["steps"] = steps
awd = steps.get("awd_epoch", {}).get("result")
if awd and awd.get("epochs"):
    # A whole epoch: its training seconds (evaluation excluded). A part (the time or step
    # budget stopped it): the epoch's tokens (train_tokens of the run's start event) at
    # the measured tokens/s.
    start_event = last_json((read(out / "awd-run" / "metrics.jsonl") or "").split("\n", 1)[0])
    if awd["epochs"] >= 1:
        per_epoch = awd["seconds"] / awd["epochs"]
    elif start_event and start_event.get("train_tokens") and awd.get("tokens_per_sec"):
        per_epoch = start_event["train_tokens"] / awd["tokens_per_sec"]
    else:
        per_epoch = awd["seconds"] / awd["epochs"]
    report["awd_ptb_seconds_per_epoch"] = round(per_epoch, 1)
    report["awd_ptb_epoch_extrapolated"] = awd["epochs"] < 1
    report["awd_ptb_paper_seconds_per_epoch"] = "about 65 s on a GP100 (Merity et al. 2017)"
report["nvidia_smi"] = read(out / "nvidia_smi_before.txt")
report["nvidia_smi_after"] = read(out / "nvidia_smi_after.txt")
report["ok"] = all(s.get("exit") == 0 for s in steps.values())
(out / "gpu_check.json").write_text(json.dumps(report, indent=1) + "\n")
print(f"wrote {out / 'gpu_check.json'} (all steps ok: {report['ok']})")
sys.exit(0 if report["ok"] else 1)
EOF
