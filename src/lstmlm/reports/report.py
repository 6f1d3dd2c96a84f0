"""The report of a comparison: results.json, report.md and the validation curves plot.

- results.json: one record per variant (level, params, valid/test bits per character,
  per-word and per-token perplexity, `<unk>` share, tokens/s, minutes, epochs), the
  ranking and the settings they shared,
- report.md: the same as a Markdown table, best first,
- valid_ppl.png: validation bits per character (perplexity when all variants share a
  word or subword level) against epochs and training minutes, training curves faint.

The variants are ranked on validation bits per character of the raw text: the one
number that compares a word, a char and a bpe run on one text (data/stats.py). Within
one level it orders them as the per-token loss does. A variant from an older run
without it (a word-level run) is ranked on perplexity if all share its level, else the
table keeps the order they were given in.
"""

from __future__ import annotations

import dataclasses
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lstmlm.config import RunConfig
from lstmlm.files import atomic_write
from lstmlm.reports.variants import show
from lstmlm.storage.curves import Curves, Point, read_curves

RESULTS, REPORT_MD, PLOT = "results.json", "report.md", "valid_ppl.png"


@dataclass(frozen=True)
class VariantResult:
    name: str
    overrides: dict[str, Any]
    run_dir: str
    params: int
    valid_ppl: float
    test_ppl: float
    valid_bpc: float | None
    test_bpc: float | None
    tokens_per_sec: float
    minutes: float  # training time (evaluation not counted)
    wall_minutes: float | None  # training + evaluation, as this comparison saw it (None: reused)
    epochs: float
    best_epoch: float
    stopped: str
    level: str = ""
    vocab_size: int | None = None
    valid_word_ppl: float | None = None  # per whitespace-separated word of the raw text
    test_word_ppl: float | None = None
    valid_unk_share: float | None = None  # share of <unk> among the split's tokens
    test_unk_share: float | None = None


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    level: str  # the variants' levels, "word, char, bpe" when they differ
    source: str
    variants: list[VariantResult]
    report: Path
    plot: Path | None  # None when matplotlib is missing (or no run has a record)
    results: Path


def write_report(
    out_dir: str | Path,
    base: RunConfig,
    results: list[VariantResult],
    source: str,
    *,
    name: str | None = None,
    description: str = "",
    command: str | None = None,
) -> CompareResult:
    """results.json, report.md and (with matplotlib) valid_ppl.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    level = levels_of(results)
    plot = _plot(out / PLOT, results, name)
    key = rank_key(results)
    record = {
        "comparison": name,
        "description": description,
        "command": command,
        "level": level,
        "source": source,
        "base_config": base.to_dict(),
        "variants": [dataclasses.asdict(r) for r in results],
        "ranked_by": key,  # "valid_bpc", "valid_ppl" or None (the order given)
        "ranking": [r.name for r in ranked(results)],
        "plot": plot.name if plot else None,
    }
    atomic_write(out / RESULTS, json.dumps(record, indent=2, allow_nan=True) + "\n")
    md = format_report(base, results, source, name, description, command, plot)
    atomic_write(out / REPORT_MD, md)
    return CompareResult(out, level, source, results, out / REPORT_MD, plot, out / RESULTS)


def levels_of(results: list[VariantResult]) -> str:
    """The variants' levels, each once, in order: "word", or "word, char, bpe"."""
    return ", ".join(dict.fromkeys(r.level for r in results if r.level))


def rank_key(results: list[VariantResult]) -> str | None:
    """What the variants are ranked on: "valid_bpc" when every one has it, else
    "valid_ppl" when they share a level, else None (see the module doc)."""
    if all(r.valid_bpc is not None for r in results):
        return "valid_bpc"
    if len({r.level for r in results}) == 1:
        return "valid_ppl"
    return None


def ranked(results: list[VariantResult]) -> list[VariantResult]:
    """`results` best first by `rank_key` (NaN last; ties keep their order)."""
    key = rank_key(results)
    if key is None:
        return list(results)

    def value(r: VariantResult) -> float:
        x = getattr(r, key)
        return math.inf if x is None or math.isnan(x) else x

    return sorted(results, key=value)


def format_table(results: list[VariantResult]) -> str:
    """The Markdown table of the report, best first (`ranked`): bits per character and
    per-word perplexity of the raw text, perplexity per token, the <unk> share."""
    head = ["rank", "variant", "level", "changes", "params", "valid bpc", "test bpc"]
    head += ["valid ppl", "test ppl", "test word ppl", "test <unk>", "tokens/s"]
    head += ["train min", "wall min", "epochs"]
    rows = [
        "| " + " | ".join(head) + " |",
        "|" + "|".join(["---:"] + ["---"] * 3 + ["---:"] * 11) + "|",
    ]
    for i, r in enumerate(ranked(results), 1):
        cells = [
            str(i) if rank_key(results) else "-",
            r.name,
            r.level or "-",
            ", ".join(f"{k}={show(x)}" for k, x in r.overrides.items()) or "-",
            f"{r.params:,}",
            _num(r.valid_bpc, 4),
            _num(r.test_bpc, 4),
            _num(r.valid_ppl, 2),
            _num(r.test_ppl, 2),
            _num(r.test_word_ppl, 2),
            f"{r.test_unk_share:.2%}" if r.test_unk_share is not None else "-",
            f"{r.tokens_per_sec:,.0f}",
            f"{r.minutes:.1f}",
            f"{r.wall_minutes:.1f}" if r.wall_minutes is not None else "-",
            f"{r.epochs:.2f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def format_report(
    base: RunConfig,
    results: list[VariantResult],
    source: str,
    name: str | None,
    description: str,
    command: str | None,
    plot: Path | None,
) -> str:
    m, t = base.model, base.train
    budget = [f"at most {t.epochs} epochs"]
    if t.max_minutes is not None:
        budget.append(f"{t.max_minutes:g} training minutes")
    if t.max_steps is not None:
        budget.append(f"{t.max_steps} steps")
    levels = levels_of(results)
    lines = [f"# Comparison{': ' + name if name else ''}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"- corpus: {source} ({levels} level{'s' if ',' in levels else ''})",
        f"- shared: {shared_settings(base, {k for r in results for k in r.overrides})}",
        f"- budget per variant: {', '.join(budget)} (then the best checkpoint is evaluated)",
        f"- seed {t.seed} for every variant; precision {t.precision}; cell {m.cell}",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", format_table(results)]
    lines += [RANKING_NOTE[rank_key(results)], "", NUMBERS_NOTE, ""]
    if plot is not None:
        lines += [f"![validation curves]({plot.name})", ""]
    return "\n".join(lines)


RANKING_NOTE = {
    "valid_bpc": "Ranked by validation bits per character (lowest first).",
    "valid_ppl": "Ranked by validation perplexity (lowest first): a variant has no bits per "
    "character (an older run), and all share one level.",
    None: "Not ranked: a variant has no bits per character (an older run) and the levels "
    "differ, so no number compares them all.",
}
NUMBERS_NOTE = (
    "bpc is bits per character of the raw text (total NLL / (characters x ln 2)), word ppl "
    "the perplexity per whitespace-separated word (exp(total NLL / words)), with total NLL "
    "= mean NLL per scored token x the split's tokens: both compare levels. ppl is per "
    "token of the variant's level (a word, a character, a piece) and compares variants of "
    "one level and vocabulary only. <unk> is the share of unknown tokens in test: at the "
    "word level their spelling is not scored, so a high share flatters bpc. All are of the "
    "best checkpoint (lowest validation loss, checked at epoch ends and when the budget "
    "ran out). tokens/s and train min count training steps only; wall min adds "
    "evaluation. Timings depend on the machine and its load."
)


def shared_settings(cfg: RunConfig, varied: set[str] | frozenset[str] = frozenset()) -> str:
    """One line with the base settings that matter, leaving out the `varied` fields."""
    m, t = cfg.model, cfg.train
    parts = [] if "rnn" in varied else [m.rnn]
    if not varied & {"hidden_size", "num_layers", "hidden_sizes"}:
        parts.append("hidden " + "/".join(str(h) for h in m.layer_sizes))
    values = {**dataclasses.asdict(m), **dataclasses.asdict(t)}
    shown: tuple[str, ...] = ("emb_size", "dropout", "dropout_e", "dropout_i", "dropout_h")
    shown += ("dropout_o", "wdrop")
    shown += ("fc_layers", "tie_weights", "optimizer", "lr", "clip", "bptt", "batch_size")
    for key in (*shown, "lr_schedule", "alpha", "beta", "weight_decay"):
        value = values[key]
        if key in varied or (key not in ("emb_size", "dropout", "lr", "bptt") and not value):
            continue  # what the variants change, and regularizers that are off
        parts.append(key if value is True else f"{key} {show(value)}")
    return ", ".join(parts)


def _plot(path: Path, results: list[VariantResult], title: str | None) -> Path | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from lstmlm.reports.plot import check_curves, plot_curves  # matplotlib: when drawing

    # A run stopped before any record has no curve; its row in the table still counts.
    curves = [c for c in map(variant_curves, results) if c.train or c.valid]
    if not curves:
        return None
    try:
        metric = check_curves(curves, "auto")
    except ValueError:  # older runs of other levels without bpc: no shared axis
        return None
    label = "bits per char" if metric == "bpc" else "perplexity"
    head = f"{title}: " if title else ""
    return plot_curves(
        curves, path, metric, title=f"{head}validation {label} (markers), training (faint lines)"
    )


def variant_curves(r: VariantResult) -> Curves:
    """A run's curves named after its variant, with the end-of-budget validation added.

    A run stopped by time or steps is validated once more when it stops; metrics.jsonl
    has no record of that check, but when it produced the best checkpoint the
    summary's validation loss is its result.
    """
    c = read_curves(r.run_dir)
    valid = list(c.valid)
    end_best = abs(r.best_epoch - r.epochs) < 1e-3
    if end_best and not any(abs(p.epoch - r.best_epoch) < 1e-3 for p in valid):
        valid.append(Point(r.epochs, r.minutes, math.log(r.valid_ppl), r.valid_bpc))
    return dataclasses.replace(c, name=r.name, valid=valid)


def _num(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
