"""`lstmlm evaluate`: perplexity (bits per character) of a split or a file under a run's
model: plain, with a neural cache, with dynamic evaluation, or token by token.

The methods are `evaluation.methods`; this module reads the flags and prints.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

from lstmlm.cli.flags import add_device_flag, add_which_flag
from lstmlm.cli.progress import NUMBERS_HELP, ProgressReporter, format_result
from lstmlm.config import CELLS, PRECISIONS, FieldError

CACHE_FLAGS = {"window": "--cache-window", "lam": "--cache-lambda", "theta": "--cache-theta"}


def add_parser(sub: Any) -> None:
    e = sub.add_parser(
        "evaluate",
        help="perplexity / bits per char of a trained model",
        description="Score a split of the run's corpus, or a text file, with a trained model: "
        "plain, with a neural cache (--cache, --search) or with dynamic evaluation "
        "(--dynamic).",
        epilog=NUMBERS_HELP,
    )
    e.add_argument("run", help="run folder")
    e.add_argument(
        "--split",
        choices=("valid", "test", "train"),
        default="test",
        help="split of the run's corpus to score (default: %(default)s)",
    )
    e.add_argument("--file", help="evaluate this text file instead of a split")
    add_which_flag(e)
    e.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="parallel columns; each starts from a zero state, so the ppl moves slightly "
        "with it (default: the run's --eval-batch-size, as its summary.json used)",
    )
    e.add_argument(
        "--bptt",
        type=int,
        default=100,
        help="window length; state carries across windows (default: %(default)s)",
    )
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16: bfloat16 autocast (on CPU nn.LSTM and the decoder run in bf16, about 1.8x "
        "faster, ppl within ~0.1%%; softmax and loss stay fp32) (default: the run's --precision)",
    )
    e.add_argument(
        "--cell",
        choices=CELLS,
        default=None,
        help="rebuild the recurrent layers as fused (nn.LSTM/nn.GRU) or manual (lstmlm's "
        "hand-written ones) from the same weights; an LSTM evaluates alike either way (both "
        "use torch's fused kernel without gradients), a GRU faster as manual on CPU (its C "
        "kernels: about 1.25x at 2x650) (default: the run's)",
    )
    add_device_flag(e)
    e.add_argument(
        "--json",
        action="store_true",
        help="print one JSON object (no progress bar): tokens, loss (nats per token), ppl, bpc, "
        "word_ppl, unk_share, and the text's chars and words",
    )
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument(
        "--per-token",
        metavar="OUT.jsonl",
        help='write {"token", "nll"} per scored token, in text order (batch size 1)',
    )
    _add_cache_flags(e)
    _add_dynamic_flags(e)
    e.set_defaults(func=run)


def _add_cache_flags(e: argparse.ArgumentParser) -> None:
    ec = e.add_argument_group("neural cache (Grave et al. 2017)")
    ec.add_argument("--cache", action="store_true", help="mix in a cache of recent hidden states")
    ec.add_argument(
        "--cache-window",
        type=int,
        default=500,
        help="positions remembered (also with --search) (default: %(default)s)",
    )
    ec.add_argument(
        "--cache-lambda",
        type=float,
        default=0.1,
        help="weight of the cache (default: %(default)s)",
    )
    ec.add_argument(
        "--cache-theta",
        type=float,
        default=1.0,
        help="scale of the dot products (default: %(default)s)",
    )
    ec.add_argument(
        "--search",
        action="store_true",
        help="grid-search lambda and theta on the valid split, then evaluate with the best",
    )


def _add_dynamic_flags(e: argparse.ArgumentParser) -> None:
    ed = e.add_argument_group("dynamic evaluation (Krause et al. 2018)")
    ed.add_argument(
        "--dynamic", action="store_true", help="adapt a copy of the weights while scoring"
    )
    ed.add_argument(
        "--dyn-method",
        choices=("sgd", "rms"),
        default="sgd",
        help="update rule: sgd = plain gradient steps; rms = steps scaled by the gradients' "
        "RMS (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-lr",
        type=float,
        default=1e-3,
        help="learning rate of the updates (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-decay",
        type=float,
        default=0.0,
        help="decay toward the trained weights per step (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-bptt", type=int, default=10, help="segment length (tokens) (default: %(default)s)"
    )
    ed.add_argument(
        "--dyn-batch-size", type=int, default=1, help="parallel columns (default: %(default)s)"
    )
    ed.add_argument(
        "--dyn-stats-batches",
        type=int,
        default=100,
        help="rms: training segments for the gradient statistics (0 = running mean "
        "over the evaluated text) (default: %(default)s)",
    )


def run(args: argparse.Namespace) -> int:
    from lstmlm.storage.runs import load_run

    _check_flags(args)
    model, vocab, info = load_run(args.run, args.which, args.device, args.cell)
    batch_size = args.batch_size or info.config.train.eval_batch_size  # as the run did
    precision = args.precision or info.config.train.precision
    text = _Text(args, info, vocab)
    bar = ProgressReporter(quiet=args.quiet or args.json)
    scores = _score(args, model, vocab, text, batch_size, precision, bar)
    bar.close()
    d = scores.to_dict()
    from lstmlm.data.dataset import unk_share

    ids, _, counts = text.ids()
    d["unk_share"] = unk_share(vocab, ids)  # of the scored tokens
    if counts is not None:
        d.update(chars=counts.chars, words=counts.words)  # bpc's and word_ppl's denominators
    if args.json:
        print(json.dumps(d))
        return 0
    if "search" in d:
        print(
            f"cache search on valid: lambda {d['cache_lambda']}, theta {d['cache_theta']} "
            f"(valid ppl {d['search']['best_ppl']:.2f}, plain {d['search']['plain_ppl']:.2f})"
        )
    res, plain = scores.result, scores.plain
    unk = d["unk_share"] if info.level == "word" or d["unk_share"] else None
    line = format_result(scores.split, res.ppl, res.bpc, res.word_ppl, unk)
    if plain is not None:
        line += f"   (plain ppl {plain.ppl:.2f})"
    print(line + f"   ({res.tokens} tokens)")
    return 0


def cache_config(args: argparse.Namespace) -> Any:
    """The --cache-* flags as a checked CacheConfig (an error names the flag)."""
    from lstmlm.evaluation import CacheConfig

    try:
        return CacheConfig(args.cache_window, args.cache_lambda, args.cache_theta).validate()
    except FieldError as e:
        raise ValueError(e.render(CACHE_FLAGS.__getitem__)) from None


def dynamic_config(args: argparse.Namespace) -> Any:
    """The --dyn-* flags as a checked DynamicConfig (an error names the flag)."""
    from lstmlm.evaluation import DynamicConfig

    dcfg = DynamicConfig(
        args.dyn_method, args.dyn_lr, args.dyn_decay, args.dyn_bptt, args.dyn_batch_size,
        stats_batches=args.dyn_stats_batches,
    )  # fmt: skip
    try:
        dcfg.validate()
    except FieldError as e:
        raise ValueError(e.as_flag("dyn-")) from None
    return dcfg


def _check_flags(args: argparse.Namespace) -> None:
    """Every flag's value, before a run is loaded or a text read."""
    cache_config(args)
    dynamic_config(args)
    if args.cache and args.dynamic:
        raise ValueError("--cache and --dynamic do not combine; pick one")
    if args.per_token and (args.cache or args.search or args.dynamic):
        raise ValueError("--per-token works with plain evaluation only")
    for flag, value in (("--batch-size", args.batch_size), ("--bptt", args.bptt)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value}")


class _Text:
    """The text to score (a split of the run's corpus, or --file), and the run's dataset,
    read once and only when a method needs it."""

    def __init__(self, args: argparse.Namespace, info: Any, vocab: Any):
        self.args, self.info, self.vocab = args, info, vocab
        self._dataset: Any = None
        self._file: tuple[Any, str, Any] | None = None  # --file's ids, name and counts

    def dataset(self) -> Any:
        if self._dataset is None:
            from lstmlm.data.dataset import load_dataset
            from lstmlm.storage.runs import text_changed

            info = self.info
            self._dataset = load_dataset(info.config.data, level=info.level, vocab=self.vocab)
            changed = text_changed(info, self._dataset.text_sha256, self._dataset.source)
            if changed:
                print(f"lstmlm: warning: {self.args.run}: {changed}", file=sys.stderr)
        return self._dataset

    def ids(self) -> tuple[Any, str, Any]:
        """(token ids, the name of what they are, the text's counts: a `TextStats`)."""
        if self._file is not None:
            return self._file
        if self.args.file:
            from lstmlm.data.dataset import encode_ids
            from lstmlm.data.readers import read_text
            from lstmlm.data.stats import text_stats

            level = self.info.level
            text = read_text(self.args.file, lowercase=self.info.config.data.lowercase)
            ids = encode_ids(self.vocab, text, level)
            self._file = ids, self.args.file, text_stats(text, level, ids.numel())
            return self._file
        data = self.dataset()
        return getattr(data, self.args.split), self.args.split, data.stats.get(self.args.split)


def _score(
    args: argparse.Namespace,
    model: Any,
    vocab: Any,
    text: _Text,
    batch_size: int,
    precision: str,
    bar: ProgressReporter,
) -> Any:
    from lstmlm.evaluation import methods

    ids, split, counts = text.ids()
    progress = bar.eval_progress
    if args.cache or args.search:
        cfg = cache_config(args)
        search_ids = text.dataset().valid if args.search else None
        return methods.with_cache(
            model, ids, counts, split, None if args.search else cfg, batch_size, args.bptt,
            precision, progress,
            search_ids=search_ids, window=args.cache_window,
        )  # fmt: skip
    if args.dynamic:
        dcfg = dynamic_config(args)
        rms_stats = dcfg.method == "rms" and dcfg.stats_batches > 0
        stats = text.dataset().train if rms_stats else None
        return methods.dynamic(model, ids, counts, split, dcfg, stats, precision, progress)
    if args.per_token:
        return methods.per_token(
            model, ids, vocab, counts, split, args.per_token, args.bptt, precision
        )
    return methods.plain(model, ids, counts, split, batch_size, args.bptt, precision, progress)
