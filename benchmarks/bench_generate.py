"""Generation speed: lstmlm's sampler vs the naive per-token loop, in one run.

Model: the `medium` size (embedding 650, 2 x 650 LSTM, tied decoder, vocab 10k) with
random weights (speed does not depend on the values). One stream (batch 1), a prompt of
`--prompt-len` tokens fed in one forward, then `--tokens` new tokens sampled at
temperature 1 (full vocabulary). Reported per path: tokens/s over the new tokens (median
of `--repeats` runs) and the first-token latency in ms (prompt forward + first draw).

The onnxruntime row (when onnxruntime is installed) exports the same model with
`lstmlm.export` and samples greedily (argmax; the others sample at temperature 1, which
costs about the same per token), feeding the state back one token at a time.

The naive loop is what most scripts do: `torch.no_grad()`, one `nn.LSTM` step per token,
the full softmax, `torch.multinomial`. With `--device cuda` both models sit on the GPU
(every new token is read back to the host as it is drawn, so the clock includes it).
Prints one JSON object.

    python benchmarks/bench_generate.py --tokens 200 --repeats 5 [--device cuda]
"""

from __future__ import annotations

import argparse
import functools
import json
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from common import machine
from torch import nn

from lstmlm.config import ModelConfig
from lstmlm.generation import SampleConfig, sample_ids
from lstmlm.nn.model import LanguageModel


class NaiveLM(nn.Module):
    def __init__(self, vocab: int, size: int, layers: int):
        super().__init__()
        self.embed = nn.Embedding(vocab, size)
        self.rnn = nn.LSTM(size, size, layers)
        self.decoder = nn.Linear(size, vocab)
        self.decoder.weight = self.embed.weight


def naive_generate(model: NaiveLM, prompt: list[int], n: int, seed: int) -> tuple[list[int], float]:
    """(new ids, seconds to the first new token)."""
    torch.manual_seed(seed)
    t0 = time.perf_counter()
    out: list[int] = []
    first = 0.0
    with torch.no_grad():
        x = torch.tensor(prompt, device=model.embed.weight.device).unsqueeze(1)  # (T, 1)
        h, hidden = model.rnn(model.embed(x))
        logits = model.decoder(h[-1])  # (1, V)
        for i in range(n):
            probs = torch.softmax(logits, dim=-1)
            tok = torch.multinomial(probs, 1)  # (1, 1)
            out.append(int(tok))
            if i == 0:
                first = time.perf_counter() - t0
            h, hidden = model.rnn(model.embed(tok), hidden)
            logits = model.decoder(h[-1])
    return out, first


def lstmlm_generate(
    model: LanguageModel, prompt: list[int], n: int, seed: int, precision: str = "fp32"
) -> tuple[list[int], float]:
    t0 = time.perf_counter()
    out: list[int] = []
    first = 0.0
    cfg = SampleConfig(n, seed=seed, precision=precision)
    for i, tok in enumerate(sample_ids(model, prompt, cfg)):
        out.append(int(tok[0]))
        if i == 0:
            first = time.perf_counter() - t0
    return out, first


class OnnxLM:
    """An exported model in an onnxruntime session, with its state's input names."""

    def __init__(self, model: LanguageModel, threads: int | None):
        import onnxruntime as ort

        from lstmlm.export import export_model, state_names

        with tempfile.TemporaryDirectory() as d:
            path = export_model(model, Path(d) / "model.onnx", "onnx")
            options = ort.SessionOptions()
            if threads:
                options.intra_op_num_threads = threads
            self.session = ort.InferenceSession(str(path), options, ["CPUExecutionProvider"])
        self.names = state_names(model)
        self.state = [t.numpy() for layer in model.init_state(1) for t in layer]  # zeros

    def __call__(self, ids: np.ndarray, state: list[np.ndarray]) -> list[np.ndarray]:
        return self.session.run(None, {"ids": ids, **dict(zip(self.names, state, strict=True))})


def onnx_generate(model: OnnxLM, prompt: list[int], n: int, seed: int) -> tuple[list[int], float]:
    """Greedy: the prompt in one run, then one token per run with the state fed back."""
    t0 = time.perf_counter()
    out: list[int] = []
    first = 0.0
    logits, *state = model(np.array(prompt, dtype=np.int64)[:, None], model.state)  # (T, 1, V)
    for i in range(n):
        tok = int(logits[-1, 0].argmax())
        out.append(tok)
        if i == 0:
            first = time.perf_counter() - t0
        logits, *state = model(np.array([[tok]], dtype=np.int64), state)  # (1, 1, V)
    return out, first


def measure(paths: dict[str, tuple], prompt: list[int], n: int, repeats: int) -> dict:
    """Each path `name: (fn, model)` once per repeat, in turn, so that the machine's
    drifting load falls on all of them alike; medians over the repeats."""
    runs: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in paths}
    for fn, model in paths.values():
        fn(model, prompt, 10, 0)  # warm-up
    for r in range(repeats):
        for name, (fn, model) in paths.items():
            t0 = time.perf_counter()
            ids, first = fn(model, prompt, n, r)
            dt = time.perf_counter() - t0
            assert len(ids) == n
            runs[name][0].append(n / dt)
            runs[name][1].append(first * 1000)
    return {
        name: {
            "tokens_per_sec": round(statistics.median(rates), 1),
            "tokens_per_sec_runs": [round(x, 1) for x in rates],
            "first_token_ms": round(statistics.median(firsts), 2),
        }
        for name, (rates, firsts) in runs.items()
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--tokens", type=int, default=200)
    ap.add_argument("--prompt-len", type=int, default=20)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--vocab", type=int, default=10_000)
    ap.add_argument("--size", type=int, default=650)
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--device", default="cpu", help="torch device of both models (default: cpu)")
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    cfg = ModelConfig(
        emb_size=args.size, hidden_size=args.size, num_layers=args.layers, tie_weights=True
    )
    lm = LanguageModel(cfg, args.vocab).eval().to(args.device)
    naive = NaiveLM(args.vocab, args.size, args.layers).eval().to(args.device)
    prompt = torch.randint(2, args.vocab, (args.prompt_len,)).tolist()
    bf16 = functools.partial(lstmlm_generate, precision="bf16")
    paths = {
        "naive": (naive_generate, naive),
        "lstmlm": (lstmlm_generate, lm),
        "lstmlm_bf16": (bf16, lm),
    }
    try:
        paths["onnxruntime"] = (onnx_generate, OnnxLM(lm, args.threads))
    except ImportError:  # the export extra is not installed: no such row
        pass
    res = measure(paths, prompt, args.tokens, args.repeats)  # one process, paths in turn
    naive_rate = res["naive"]["tokens_per_sec"]
    print(
        json.dumps(
            {
                "benchmark": "generate",
                "model": f"{args.layers}x{args.size} LSTM, tied, vocab {args.vocab}, random",
                "batch": 1,
                "new_tokens": args.tokens,
                "prompt_tokens": args.prompt_len,
                "device": args.device,
                **machine(),
                **res,
                "speedup": round(res["lstmlm"]["tokens_per_sec"] / naive_rate, 3),
                "speedup_bf16": round(res["lstmlm_bf16"]["tokens_per_sec"] / naive_rate, 3),
            }
        )
    )


if __name__ == "__main__":
    main()
