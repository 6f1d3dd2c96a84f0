"""`lstmlm` command line: the only place that prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from . import __version__
from .config import DataConfig, ModelConfig, RunConfig, TrainConfig, replace
from .presets import PRESETS, preset_config

SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _scalar_type(tp: Any) -> tuple[Any, bool]:
    """(base type, is_tuple) of a field annotation like `int | None` or `tuple[float, ...]`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True
    return tp, False


def add_config_flags(p: argparse.ArgumentParser) -> None:
    for section, cls in SECTIONS:
        group = p.add_argument_group(f"{section} options")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            tp, is_tuple = _scalar_type(hints[f.name])
            kw: dict[str, Any] = {
                "dest": f"{section}.{f.name}",
                "default": argparse.SUPPRESS,
                "help": f.metadata.get("help", ""),
            }
            if f.default is not None and f.default is not dataclasses.MISSING:
                kw["help"] += f" (default: {f.default})"
            if tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = tp
                if is_tuple:
                    kw["nargs"] = "+"
                if "choices" in f.metadata:
                    kw["choices"] = f.metadata["choices"]
                kw["metavar"] = (
                    f.name.split("_")[-1].upper() if "choices" not in f.metadata else None
                )
            group.add_argument(flag, **kw)


def explicit_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {s: {} for s, _ in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out[section][name] = tuple(value) if isinstance(value, list) else value
    return out


def build_config(args: argparse.Namespace) -> RunConfig:
    base = preset_config(args.preset)
    o = explicit_overrides(args)
    return RunConfig(
        data=replace(base.data, **o["data"]),
        model=replace(base.model, **o["model"]),
        train=replace(base.train, **o["train"]),
        preset=base.preset,
    ).validate()


# --- subcommands -----------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from . import train

    reporter = ProgressReporter(quiet=args.quiet)
    if args.resume:
        o = explicit_overrides(args)
        if o["data"] or o["model"] or args.preset:
            raise ValueError(
                "--resume continues a run with its own config; drop the data/model "
                "flags and --preset"
            )
        result = train.resume_run(args.resume, o["train"], on_event=reporter)
        run_dir = Path(args.resume)
    else:
        if not args.out:
            raise ValueError("give --out RUN_DIR (or --resume RUN_DIR)")
        cfg = build_config(args)
        given_level = "data.level" in vars(args)
        level = cfg.data.level if (given_level or cfg.data.corpus is None) else None
        result = train.start_run(
            cfg, args.out, overwrite=args.overwrite, level=level, on_event=reporter
        )
        run_dir = Path(args.out)
    reporter.close()
    summary = json.loads((run_dir / "summary.json").read_text())
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_result("valid", result.valid.ppl, result.valid.bpc))
        print(format_result("test", result.test.ppl, result.test.bpc))
        print(f"run saved in {run_dir}")
    return 0


def format_result(split: str, ppl: float, bpc: float | None) -> str:
    line = f"{split:5s} ppl {ppl:9.2f}"
    if bpc is not None:
        line += f"   bpc {bpc:.4f}"
    return line


def cmd_evaluate(args: argparse.Namespace) -> int:
    from . import checkpoint, evaluate
    from .readers import read_text
    from .tokenize import tokenize

    model, vocab, info = checkpoint.load_run(args.run, args.which)
    if args.file:
        tokens = tokenize(read_text(args.file, lowercase=info.config.data.lowercase), info.level)
        ids = vocab.encode(tokens)
        split = args.file
    else:
        from .dataset import load_dataset

        data = load_dataset(info.config.data, level=info.level, vocab=vocab)
        ids = getattr(data, args.split).tolist()
        split = args.split
    import torch

    bar = ProgressReporter(quiet=args.quiet or args.json)
    res = evaluate.evaluate(
        model,
        torch.tensor(ids, dtype=torch.long),
        info.level,
        args.batch_size,
        args.bptt,
        args.precision,
        progress=bar.eval_progress,
    )
    bar.close()
    d = {"split": split, **res.to_dict()}
    if args.json:
        print(json.dumps(d))
    else:
        print(format_result(split, res.ppl, res.bpc) + f"   ({res.tokens} tokens)")
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from . import checkpoint
    from .generate import SampleConfig, encode_prompt, generate

    scfg = SampleConfig(
        args.max_new_tokens, args.temperature, args.top_k, args.seed, args.num_samples
    )
    scfg.validate()
    if len(args.prompt) > 10_000:
        raise ValueError("--prompt is longer than 10,000 characters")
    model, vocab, info = checkpoint.load_run(args.run, args.which)
    _, unknown = encode_prompt(args.prompt, vocab, info.level)
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:10])
        print(
            f"lstmlm: warning: {len(unknown)} prompt token(s) not in the vocabulary, "
            f"read as <unk>: {shown}",
            file=sys.stderr,
        )
    texts = generate(model, vocab, info.level, args.prompt, scfg)
    sep = (
        " "
        if info.level == "word" and args.prompt and not args.prompt.endswith(("\n", " "))
        else ""
    )
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + (sep if text and not text.startswith("\n") else "") + text)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name, p in PRESETS.items():
        print(f"{name:14s} {p.description}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from .corpora import download_corpus

    bar = ProgressReporter(quiet=args.quiet)
    paths = download_corpus(args.corpus, args.data_dir, progress=bar.bytes_progress)
    bar.close()
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


# --- progress ----------------------------------------------------------------------


class ProgressReporter:
    """Turns trainer events into a tqdm bar on stderr and one line per epoch."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: Any = None

    def _new_bar(self, **kw: Any) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(file=sys.stderr, dynamic_ncols=True, disable=self.quiet, **kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "start" and not self.quiet:
            print(
                f"training on {d['source']}: {d['train_tokens']:,} tokens, vocab "
                f"{d['vocab_size']:,}, {d['params']:,} parameters",
                file=sys.stderr,
            )
        elif kind == "epoch_start":
            self._new_bar(
                total=d["steps"], initial=d["done"], desc=f"epoch {d['epoch']}", unit="step"
            )
        elif kind == "progress" and self.bar is not None:
            self.bar.n = d["done"]
            self.bar.set_postfix(
                loss=f"{d['train_loss']:.3f}",
                ppl=f"{d['train_ppl']:.1f}",
                lr=f"{d['lr']:.3g}",
                tok_s=f"{d['tokens_per_sec']:,.0f}",
                refresh=False,
            )
            self.bar.refresh()
        elif kind == "epoch":
            self.close()
            if not self.quiet:
                extra = f" bpc {d['valid_bpc']:.4f}" if d.get("valid_bpc") is not None else ""
                print(
                    f"epoch {d['epoch']:3d} | train ppl {d['train_ppl']:8.2f} | valid ppl "
                    f"{d['valid_ppl']:8.2f}{extra} | lr {d['lr']:.4g} | "
                    f"{d['tokens_per_sec']:,.0f} tok/s | {d['elapsed'] / 60:.1f} min",
                    file=sys.stderr,
                )
        elif kind == "sample" and not self.quiet:
            print(f"--- sample, temperature {d['temperature']} ---\n{d['text']}", file=sys.stderr)
        elif kind == "final_eval":
            self.close()
            if not self.quiet:
                print("evaluating the best model on valid and test ...", file=sys.stderr)
        elif kind == "resume" and not self.quiet:
            print(f"resuming at epoch {d['epoch']}, step {d['step']}", file=sys.stderr)

    def eval_progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self._new_bar(total=total, desc="evaluating", unit="tok/B", leave=False)
        self.bar.n = done
        self.bar.refresh()

    def bytes_progress(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None or (total and self.bar.total != total):
            self._new_bar(total=total, desc="downloading", unit="B", unit_scale=True)
        self.bar.n = done
        self.bar.refresh()


# --- parser --------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    p = Parser(prog="lstmlm", description="Train, evaluate and sample LSTM/GRU language models.")
    p.add_argument("--version", action="version", version=f"lstmlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a language model. Flags override the preset's values.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    t.add_argument("--preset", help="named recipe (see `lstmlm presets`)")
    t.add_argument("--out", help="run folder to create")
    t.add_argument(
        "--resume", metavar="RUN", help="continue the run in this folder exactly where it stopped"
    )
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--json", action="store_true", help="print a final JSON summary line")
    t.add_argument("--quiet", action="store_true", help="no progress bar")
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="perplexity / bits per char of a trained model")
    e.add_argument("run", help="run folder")
    e.add_argument("--split", choices=("valid", "test", "train"), default="test")
    e.add_argument("--file", help="evaluate this text file instead of a split")
    e.add_argument(
        "--which", choices=("best", "last"), default="best", help="which checkpoint (default: best)"
    )
    e.add_argument("--batch-size", type=int, default=10)
    e.add_argument("--bptt", type=int, default=100)
    e.add_argument("--precision", choices=("fp32", "bf16"), default="fp32")
    e.add_argument("--json", action="store_true", help="print one JSON object")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser("generate", help="sample text from a trained model")
    g.add_argument("run", help="run folder")
    g.add_argument("--prompt", default="", help="text to continue (words or characters)")
    g.add_argument("--max-new-tokens", type=int, default=50)
    g.add_argument("--temperature", type=float, default=1.0, help="0 = greedy (argmax)")
    g.add_argument("--top-k", type=int, default=0, help="sample from the k most likely (0 = all)")
    g.add_argument("--seed", type=int, default=None, help="same seed, same text")
    g.add_argument("--num-samples", type=int, default=1)
    g.add_argument("--which", choices=("best", "last"), default="best")
    g.set_defaults(func=cmd_generate)

    pr = sub.add_parser("presets", help="list the named recipes")
    pr.set_defaults(func=cmd_presets)

    d = sub.add_parser("download", help="download a named corpus, checking its sha256")
    d.add_argument("corpus", help="ptb, ptb-char, wikitext-2 or tinyshakespeare")
    d.add_argument("--data-dir", default="data", help="where to put it (default: ./data)")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=cmd_download)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except ValueError as e:
        print(f"lstmlm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"lstmlm: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("lstmlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
