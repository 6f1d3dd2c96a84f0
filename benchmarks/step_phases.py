"""Where one training step's time goes, phase by phase, without the profiler.

    python benchmarks/step_phases.py [--steps 30] [--precision bf16] [--cell manual]
    python benchmarks/step_phases.py --preset ptb-10min [--steps 100]

Builds lstmlm's Trainer for the medium model (2x650 tied LSTM, PTB, the reference
recipe), or with --preset that preset on PTB as it is, and times the forward, the
backward and the update (clipping, the non-finite check and the optimizer step: one
fused pass for plain SGD, training/optim.py) of each step with time.perf_counter
(torch.profiler inflates the large buffers' fills and casts, see RESULTS round 4), or
with --cpu-time the main thread's CPU time. Prints one JSON object of milliseconds per
step.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path

import torch
from common import SHARED, machine

from lstmlm.config.overrides import build
from lstmlm.data.dataset import load_dataset
from lstmlm.nn.precision import autocast
from lstmlm.nn.rnn import detach_state
from lstmlm.training import guard
from lstmlm.training.allocator import keep_freed_memory
from lstmlm.training.trainer import Trainer


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--preset", help="time this preset's step (PTB) instead of medium's")
    p.add_argument("--precision", help="default: bf16, or the preset's")
    p.add_argument("--cell", help="default: manual, or the preset's")
    p.add_argument("--threads", type=int, default=0, help="torch threads (default: torch's)")
    p.add_argument(
        "--cpu-time",
        action="store_true",
        help="time the main thread's CPU time, not the wall clock: with --threads 1, the "
        "step's work, whatever else the machine runs",
    )
    args = p.parse_args()
    clock = time.thread_time if args.cpu_time else time.perf_counter
    if args.threads:
        torch.set_num_threads(args.threads)
    keep_freed_memory()  # as `lstmlm train` does
    medium = dict(
        emb_size=650, hidden_size=650, num_layers=2, dropout=0.5, tie_weights=True, bptt=35,
        batch_size=20, lr=20.0, clip=0.25, loss_reduction="mean", init_range=0.1,
        optimizer="sgd", precision="bf16", cell="manual",
    )  # fmt: skip
    over = {} if args.preset else medium
    over |= {k: v for k, v in (("precision", args.precision), ("cell", args.cell)) if v}
    cfg = build(args.preset, dict(corpus="ptb", data_dir=str(SHARED), seed=1111, **over))
    tr = Trainer(Path(tempfile.mkdtemp()), cfg, load_dataset(cfg.data))
    ms = {"forward": 0.0, "backward": 0.0, "update": 0.0}
    steps: list[float] = []
    for i in range(args.steps + 5):  # 5 warm-up steps
        x, y = tr.next_window()
        tr.st.offset += x.size(0)
        tr.hidden = detach_state(tr.hidden)
        t0 = clock()
        with autocast(tr.tc.precision, tr.device.type):
            out = tr.net(x, tr.hidden, y)
        tr.hidden = out.state
        t1 = clock()
        tr.opt.zero_grad(set_to_none=True)
        out.loss.backward()
        t2 = clock()
        if hasattr(tr, "update"):  # clip, check, step: the trainer's own
            tr.update(out.loss)
        else:  # the code before Trainer.update (to time it against this one)
            norm = guard.grad_norm(tr.model.parameters(), tr.tc.clip)
            guard.step_is_finite(out.loss, norm)
            tr.opt.step()
        t4 = clock()
        if i >= 5:
            spans = {"forward": (t0, t1), "backward": (t1, t2), "update": (t2, t4)}
            for k, (a, b) in spans.items():
                ms[k] += (b - a) * 1e3 / args.steps
            steps.append((t4 - t0) * 1e3)
    step = sum(ms.values())
    tokens = cfg.train.bptt * cfg.train.batch_size
    print(json.dumps({
        "benchmark": "step_phases", "preset": args.preset or "medium",
        "precision": cfg.train.precision, "cell": cfg.model.cell,
        "clock": "thread_cpu" if args.cpu_time else "wall",
        **machine(), "ms_per_step": {k: round(v, 2) for k, v in ms.items()},
        "step_ms": round(step, 2), "tokens_per_sec": round(tokens / step * 1e3, 1),
        # the median and the fastest step: less moved by other work on a shared machine
        "step_ms_median": round(statistics.median(steps), 2), "step_ms_min": round(min(steps), 2),
    }))  # fmt: skip


if __name__ == "__main__":
    main()
