"""Training-step throughput: fused nn.LSTM vs the hand-written ManualLSTM.

Model: embedding(V, E) -> 2 single-layer LSTMs E -> E -> tied decoder (V), per-token
mean cross-entropy, one fwd + bwd + SGD step per BPTT window (T x B tokens). Each
variant runs for ``--seconds`` after a warm-up, back to back in one process, split into
``--rounds`` turns so that load from other processes hits every variant alike.
Prints one JSON object.

    python benchmarks/bench_cells.py --seconds 20
"""

from __future__ import annotations

import argparse
import json
import os
import time
from collections.abc import Callable

import torch
from common import cpu_model
from torch import Tensor, nn
from torch.nn import functional as F

from lstmlm.nn.manual import ManualLSTM


class TinyLM(nn.Module):
    """Embedding -> stacked single-layer recurrent modules -> tied decoder."""

    def __init__(self, vocab: int, size: int, layers: int, make_rnn: Callable[[], nn.Module]):
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        self.rnns = nn.ModuleList(make_rnn() for _ in range(layers))
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.embed.weight

    def forward(self, tokens: Tensor) -> Tensor:
        x = self.embed(tokens)  # (T, B, E)
        for rnn in self.rnns:
            x, _ = rnn(x)  # (T, B, E)
        return self.decoder(x)  # (T, B, V)


def make_step(model: TinyLM, tokens: Tensor, targets: Tensor) -> Callable[[], None]:
    """One training step: forward, per-token mean cross-entropy, backward, SGD update."""
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    vocab = model.decoder.out_features

    def step() -> None:
        opt.zero_grad(set_to_none=True)
        logits = model(tokens)  # (T, B, V)
        loss = F.cross_entropy(logits.view(-1, vocab), targets.view(-1))
        loss.backward()
        opt.step()

    return step


def run_for(step: Callable[[], None], seconds: float) -> tuple[int, float]:
    """Run ``step`` until ``seconds`` have passed; return (steps, elapsed seconds)."""
    steps = 0
    start = time.perf_counter()
    while True:
        step()
        steps += 1
        elapsed = time.perf_counter() - start
        if elapsed >= seconds:
            return steps, elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="per variant, all rounds")
    parser.add_argument(
        "--rounds",
        type=int,
        default=2,
        help="variants take turns this many times (each runs seconds/rounds per turn), "
        "so that load from other processes hits all of them alike",
    )
    parser.add_argument("--warmup", type=int, default=3, help="steps per variant before timing")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default)")
    parser.add_argument(
        "--variants",
        default="fused_nn_lstm,manual_function_fp32,manual_function_bf16",
        help="comma-separated subset of: fused_nn_lstm, manual_function_fp32, "
        "manual_function_bf16, manual_loop_fp32",
    )
    parser.add_argument("--vocab", type=int, default=10_000)
    parser.add_argument("--size", type=int, default=650)
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--bptt", type=int, default=35)
    parser.add_argument("--batch", type=int, default=20)
    args = parser.parse_args()

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    size = args.size
    variants: dict[str, Callable[[], nn.Module]] = {
        "fused_nn_lstm": lambda: nn.LSTM(size, size),
        "manual_function_fp32": lambda: ManualLSTM(size, size, impl="function"),
        "manual_function_bf16": lambda: ManualLSTM(size, size, impl="function", precision="bf16"),
        "manual_loop_fp32": lambda: ManualLSTM(size, size, impl="loop"),
    }
    gen = torch.Generator().manual_seed(0)
    tokens = torch.randint(args.vocab, (args.bptt, args.batch), generator=gen)
    targets = torch.randint(args.vocab, (args.bptt, args.batch), generator=gen)

    chosen = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [v for v in chosen if v not in variants]
    if unknown or "fused_nn_lstm" not in chosen:
        parser.error(f"unknown variants {unknown}; fused_nn_lstm is required as the baseline")
    if args.rounds < 1 or args.seconds <= 0:
        parser.error("--rounds must be >= 1 and --seconds > 0")

    load_before = os.getloadavg()[0]
    steps_fns = {}
    for name in chosen:
        torch.manual_seed(0)
        model = TinyLM(args.vocab, size, args.layers, variants[name])
        steps_fns[name] = make_step(model, tokens, targets)
        for _ in range(args.warmup):
            steps_fns[name]()
    totals = {name: [0, 0.0] for name in chosen}
    per_round: dict[str, list[float]] = {name: [] for name in chosen}
    window = tokens.numel()
    for _ in range(args.rounds):
        for name in chosen:
            steps, elapsed = run_for(steps_fns[name], args.seconds / args.rounds)
            totals[name][0] += steps
            totals[name][1] += elapsed
            per_round[name].append(round(steps * window / elapsed, 1))
    results = {
        name: {
            "tokens_per_s": round(steps * window / elapsed, 1),
            "ms_per_step": round(1000 * elapsed / steps, 1),
            "steps": steps,
            "tokens_per_s_by_round": per_round[name],
        }
        for name, (steps, elapsed) in totals.items()
    }

    fused = results["fused_nn_lstm"]["tokens_per_s"]
    report = {
        "benchmark": "train_step_tokens_per_s",
        "model": {
            "vocab": args.vocab,
            "size": size,
            "layers": args.layers,
            "tied": True,
            "bptt": args.bptt,
            "batch": args.batch,
        },
        "seconds_per_variant": args.seconds,
        "rounds": args.rounds,
        "results": results,
        "ratio_vs_fused": {
            name: round(r["tokens_per_s"] / fused, 3)
            for name, r in results.items()
            if name != "fused_nn_lstm"
        },
        "cpu": cpu_model(),
        "torch": torch.__version__,
        "threads": torch.get_num_threads(),
        # Other processes on the machine skew every figure; these say how busy it was.
        "loadavg_1m_before_after": [round(load_before, 2), round(os.getloadavg()[0], 2)],
    }
    print(json.dumps(report))


if __name__ == "__main__":
    main()
