"""Evaluation speed of lstmlm against the plain reference loop, same weights, one run.

    python benchmarks/bench_eval.py [--run RUN] [--rnn lstm|gru] [--corpus ptb]
                                    [--split valid] [--max-tokens N] [--repeat K]
                                    [--device cpu|cuda|cuda:N]

Builds a medium model (2x650 tied LSTM, or GRU with `--rnn gru`; seeded random
weights) or takes a trained run folder (`--run`), copies the same weights into
benchmarks/reference.py's `RNNModel` (one 2-layer nn.LSTM / nn.GRU; lstmlm has one
single-layer layer per layer), and scores the same token ids with

  reference  reference.py's own `evaluate` (batch 10, bptt 35, torch.no_grad, fp32 nn.LSTM
             or nn.GRU)
  same       lstmlm's evaluate() with the reference's settings (fp32, batch 10, bptt 35):
             the ppl must agree with the reference's to ~1e-6
  fp32       lstmlm's defaults: fp32 nn.LSTM, batch --batch-size, bptt --bptt
  fp32_manual  the same with `--cell manual` (lstmlm's hand-written layers; for the GRU,
             its C kernels)
  bf16       `lstmlm evaluate RUN --precision bf16`: bf16 autocast, which on CPU runs
             nn.LSTM (oneDNN) and the decoder in bf16; softmax and loss stay fp32
  bf16_manual  `--cell manual --precision bf16`: lstmlm's hand-written LSTM layer
             instead (bf16 matmuls, fp32 state), the same weights

Each one runs in its own process (peak RSS is that process's VmHWM: model, text, torch
and the evaluation's buffers, nothing of this script's; host memory only); with
--repeat K the sequence is run K times back to back and the best tokens/s of each is
kept. With `--device cuda` every variant (the reference included) scores on that device;
each timing ends in a host read of its loss, so the GPU's queue is drained inside it.
Prints one JSON object: tokens/s, seconds, ppl and peak RSS of each, the ratios to
the reference, the ppl differences, and the machine.
"""

from __future__ import annotations

import argparse
import json
import math
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from common import ROOT, machine, matmul_flop_per_token, peak_flops, run_json, share_of_peak

SCRIPT = str(Path(__file__).resolve())
REF_BATCH, REF_BPTT = 10, 35  # reference.py's --eval-batch-size default and medium bptt
MEDIUM = dict(
    emb_size=650, hidden_size=650, num_layers=2, dropout=0.5, tie_weights=True, init_range=0.1
)  # fmt: skip
REF_CELL = "reference.py"  # its own RNNModel: nn.LSTM or nn.GRU
VARIANTS = ("reference", "same", "fp32", "fp32_manual", "bf16", "bf16_manual")


# --- workers: one process per measurement ------------------------------------------------


def worker_reference(
    work: Path, batch_size: int, bptt: int, warmup: bool, device: str = "cpu"
) -> dict[str, Any]:
    """reference.py's RNNModel and evaluate() on the shared ids; imports no lstmlm code."""
    import safetensors.torch
    import torch

    sys.path.insert(0, str(ROOT / "benchmarks"))
    import reference as R

    spec = json.loads((work / "reference.json").read_text())
    model = R.RNNModel(
        spec["rnn_type"],
        spec["ntoken"],
        spec["emsize"],
        spec["nhid"],
        spec["nlayers"],
        spec["dropout"],
        spec["tied"],
    )
    model.load_state_dict(safetensors.torch.load_file(work / "reference.safetensors"))
    model.to(device)
    ids = safetensors.torch.load_file(work / "ids.safetensors")["ids"]
    criterion = torch.nn.CrossEntropyLoss()
    data = R.batchify(ids, batch_size).to(device)  # (L, B)
    if warmup:
        R.evaluate(model, criterion, data[: 2 * bptt + 1], bptt, batch_size)
    cpu0 = time.process_time()
    loss, seconds = R.evaluate(model, criterion, data, bptt, batch_size)
    cpu = time.process_time() - cpu0
    tokens = (data.size(0) - 1) * batch_size
    return _measured(tokens, seconds, cpu, loss, torch.get_num_threads())


def worker_lstmlm(
    work: Path,
    batch_size: int,
    bptt: int,
    precision: str,
    cell: str | None,
    warmup: bool,
    device: str = "cpu",
) -> dict[str, Any]:
    """`lstmlm evaluate`'s code path: load_run, then evaluate() on the shared ids."""
    import safetensors.torch
    import torch

    from lstmlm import storage as checkpoint
    from lstmlm.evaluation.perplexity import evaluate

    model, _, info = checkpoint.load_run(work / "run", device=device, cell=cell)
    ids = safetensors.torch.load_file(work / "ids.safetensors")["ids"]
    if warmup:
        evaluate(model, ids[: 2 * bptt * batch_size + 1], batch_size, bptt, precision)
    t0, cpu0 = time.perf_counter(), time.process_time()
    res = evaluate(model, ids, batch_size, bptt, precision)
    seconds, cpu = time.perf_counter() - t0, time.process_time() - cpu0
    return _measured(res.tokens, seconds, cpu, res.loss, torch.get_num_threads())


def _measured(
    tokens: int, seconds: float, cpu_seconds: float, loss: float, threads: int
) -> dict[str, Any]:
    return {
        "tokens": tokens,
        "seconds": seconds,
        "tokens_per_sec": tokens / seconds,
        "cpu_seconds": cpu_seconds,  # all threads; with one thread, immune to other jobs
        "tokens_per_cpu_sec": tokens / cpu_seconds,
        "loss": loss,
        "ppl": math.exp(loss),
        "threads": threads,
        "peak_rss_mb": peak_rss_mb(),
    }


def peak_rss_mb() -> float:
    """This process's peak RSS since its exec (VmHWM).

    Not getrusage's ru_maxrss: Linux carries that over from the forking parent across
    exec, so every child would report at least the parent's size at the fork.
    """
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # not Linux


# --- the parent: weights, ids, runs, report ---------------------------------------------------


def reference_weights(model: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """lstmlm's weights under reference.py's RNNModel names, and its constructor arguments."""
    cfg = model.cfg
    sizes = set(cfg.layer_sizes)
    decoder = getattr(model, "decoder", None)
    if (
        cfg.rnn not in ("lstm", "gru")
        or len(sizes) != 1
        or cfg.fc_layers
        or getattr(model, "proj", None) is not None
        or not hasattr(decoder, "weight")
    ):
        raise ValueError(
            "the reference model is a plain LSTM or GRU with equal layer sizes and a full softmax "
            "decoder (no projection, FC layers or adaptive softmax); this run is not one"
        )
    sd = {
        "encoder.weight": model.embedding.weight,
        "decoder.weight": decoder.weight,
        "decoder.bias": decoder.bias,
    }
    for i, layer in enumerate(model.rnn.layers):  # rnn.layers.{i}.X_l0 -> rnn.X_l{i}
        for name in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            sd[f"rnn.{name}_l{i}"] = getattr(layer, f"{name}_l0")
    tensors = {k: v.detach().clone().contiguous() for k, v in sd.items()}  # untie for saving
    spec = dict(
        rnn_type=cfg.rnn.upper(),
        ntoken=model.vocab_size,
        emsize=cfg.emb_size,
        nhid=cfg.layer_sizes[0],
        nlayers=len(cfg.layer_sizes),
        dropout=cfg.dropout,
        tied=cfg.tie_weights,
    )
    return tensors, spec


def prepare(args: argparse.Namespace, work: Path) -> dict[str, Any]:
    """Write work/run (an lstmlm run folder), work/reference.* and work/ids.safetensors."""
    import safetensors.torch
    import torch

    from lstmlm import storage as checkpoint
    from lstmlm.config import DataConfig, ModelConfig, RunConfig
    from lstmlm.data.dataset import load_dataset
    from lstmlm.nn.model import LanguageModel

    run = work / "run"
    if args.run is not None:
        model, vocab, info = checkpoint.load_run(args.run)
        run.symlink_to(Path(args.run).resolve(), target_is_directory=True)
        data_cfg, level, weights = info.config.data, info.level, str(args.run)
    else:
        data_cfg = DataConfig(corpus=args.corpus)
        ds = load_dataset(data_cfg)
        vocab, level = ds.vocab, ds.level
        cfg = RunConfig(data=data_cfg, model=ModelConfig(rnn=args.rnn, **MEDIUM))
        torch.manual_seed(args.seed)
        model = LanguageModel(cfg.model, len(vocab)).eval()
        run.mkdir()
        checkpoint.write_run_files(run, cfg, vocab, level, ds.source)
        tensors = checkpoint.model_tensors(model, "model.")
        checkpoint.save_tensors(run / checkpoint.BEST, tensors, {})
        weights = f"random (seed {args.seed})"
    ds = load_dataset(data_cfg, level=level, vocab=vocab)
    ids = getattr(ds, args.split)
    if args.max_tokens is not None:
        ids = ids[: args.max_tokens]
    safetensors.torch.save_file(
        {"ids": ids.long().contiguous()}, work / "ids.safetensors"
    )  # the map is uint16/32
    tensors, spec = reference_weights(model)
    safetensors.torch.save_file(tensors, work / "reference.safetensors")
    (work / "reference.json").write_text(json.dumps(spec))
    return {
        "weights": weights,
        "model": {**spec, "cell": model.cfg.cell, "params": model.num_parameters()},
        "text_tokens": ids.numel(),
    }


def add_share_of_peak(results: dict[str, Any], names: list[str], peak: dict[str, Any]) -> None:
    """The peak-FLOP limit (this CPU's measured bf16 peak, AMX included) and each
    variant's share of it, from the model's matmul FLOP per evaluated token."""
    spec = results["model"]
    gates = 4 if spec["rnn_type"] == "LSTM" else 3
    flop = matmul_flop_per_token(
        spec["nhid"], spec["emsize"], spec["ntoken"], spec["nlayers"], train=False, gates=gates
    )
    results["eval_mflop_per_token"] = round(flop / 1e6, 2)
    results["peak"] = peak
    for name in names:
        results[name]["share_of_peak"] = share_of_peak(results[name]["tokens_per_sec"], flop, peak)


def settings(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    ours = dict(batch_size=args.batch_size, bptt=args.bptt)
    return {
        "reference": dict(batch_size=REF_BATCH, bptt=REF_BPTT, precision="fp32", cell=REF_CELL),
        "same": dict(batch_size=REF_BATCH, bptt=REF_BPTT, precision="fp32", cell="fused"),
        "fp32": dict(**ours, precision="fp32", cell="fused"),
        "fp32_manual": dict(**ours, precision="fp32", cell="manual"),
        "bf16": dict(batch_size=args.batch_size, bptt=args.bptt, precision="bf16", cell="fused"),
        "bf16_manual": dict(
            batch_size=args.batch_size, bptt=args.bptt, precision="bf16", cell="manual"
        ),
    }


def worker_cmd(name: str, s: dict[str, Any], work: Path, args: argparse.Namespace) -> list[str]:
    cmd = [sys.executable, SCRIPT, "--worker", name, "--work", str(work)]
    cmd += ["--batch-size", str(s["batch_size"]), "--bptt", str(s["bptt"])]
    cmd += ["--precision", s["precision"]]
    if s["cell"] != REF_CELL:
        cmd += ["--cell", s["cell"]]
    if not args.warmup:
        cmd.append("--no-warmup")
    if args.device != "cpu":
        cmd += ["--device", args.device]
    return cmd


def main() -> None:
    from lstmlm.config import TrainConfig

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--run", help="trained run folder (default: a seeded random medium model)")
    p.add_argument("--rnn", choices=("lstm", "gru"), default="lstm", help="the random model's")
    p.add_argument("--corpus", default="ptb", help="named corpus for the random model")
    p.add_argument("--split", choices=("valid", "test", "train"), default="valid")
    p.add_argument("--max-tokens", type=int, help="score only the first N tokens of the split")
    p.add_argument(
        "--batch-size",
        type=int,
        default=TrainConfig().eval_batch_size,
        help="lstmlm's batch for the fp32 and bf16 variants (default: lstmlm's default)",
    )
    p.add_argument("--bptt", type=int, default=100, help="lstmlm's window (default: lstmlm's)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--repeat", type=int, default=1, help="run the sequence K times, keep the best")
    p.add_argument("--seed", type=int, default=1111)
    p.add_argument("--no-warmup", dest="warmup", action="store_false")
    p.add_argument("--device", default="cpu", help="torch device of every variant (default: cpu)")
    # worker mode (internal)
    p.add_argument("--worker", choices=VARIANTS, help=argparse.SUPPRESS)
    p.add_argument("--work", type=Path, help=argparse.SUPPRESS)
    p.add_argument("--precision", default="fp32", help=argparse.SUPPRESS)
    p.add_argument("--cell", default=None, help=argparse.SUPPRESS)
    args = p.parse_args()

    if args.worker == "reference":
        ref = worker_reference(args.work, args.batch_size, args.bptt, args.warmup, args.device)
        print(json.dumps(ref))
        return
    if args.worker is not None:
        out = worker_lstmlm(
            args.work,
            args.batch_size,
            args.bptt,
            args.precision,
            args.cell,
            args.warmup,
            args.device,
        )
        print(json.dumps(out))
        return

    names = [v for v in args.variants.split(",") if v]
    bad = sorted(set(names) - set(VARIANTS))
    if bad or args.repeat < 1 or args.batch_size < 1 or args.bptt < 1:
        raise SystemExit(f"bad arguments: variants {bad}, repeat/batch-size/bptt must be >= 1")
    setting = settings(args)
    results: dict[str, Any] = {
        "benchmark": "eval",
        "split": args.split,
        "device": args.device,
        **machine(),
    }
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        results.update(prepare(args, work))
        runs: dict[str, list[dict[str, Any]]] = {n: [] for n in names}
        for _ in range(args.repeat):
            for name in names:
                out, _ = run_json(worker_cmd(name, setting[name], work, args))
                runs[name].append(out)
    for name in names:
        best = max(runs[name], key=lambda r: r["tokens_per_sec"])
        results[name] = {
            **setting[name],
            **{k: best[k] for k in ("tokens", "seconds", "tokens_per_sec", "ppl", "threads")},
            "tokens_per_cpu_sec": max(r["tokens_per_cpu_sec"] for r in runs[name]),
            "peak_rss_mb": max(r["peak_rss_mb"] for r in runs[name]),
            "all_tokens_per_sec": [round(r["tokens_per_sec"], 1) for r in runs[name]],
        }
    if "reference" in results:
        ref = results["reference"]
        for name in (n for n in names if n != "reference"):
            for key in ("tokens_per_sec", "tokens_per_cpu_sec"):
                results[f"ratio_{key}_{name}"] = round(results[name][key] / ref[key], 3)
            results[f"ppl_rel_diff_{name}"] = results[name]["ppl"] / ref["ppl"] - 1
    add_share_of_peak(results, names, peak_flops() if args.device == "cpu" else {})
    for name in ("fp32_manual", "bf16", "bf16_manual"):
        if "fp32" in results and name in results:
            rel = results[name]["ppl"] / results["fp32"]["ppl"] - 1
            results[f"ppl_rel_diff_{name}_vs_fp32"] = rel
    print(json.dumps(results))


if __name__ == "__main__":
    main()
