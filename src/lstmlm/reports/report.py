"""The report of a comparison: results.json, report.md and the validation curves plot.

- results.json: one record per variant (params, valid/test ppl or bpc, tokens/s,
  minutes, epochs) and the settings they shared,
- report.md: the same as a Markdown table,
- valid_ppl.png: validation perplexity (bits per char at character level) against
  epochs and training minutes, training curves faint behind.
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


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    level: str
    source: str
    variants: list[VariantResult]
    report: Path
    plot: Path | None  # None when matplotlib is missing (or no run has a record)
    results: Path


def write_report(
    out_dir: str | Path,
    base: RunConfig,
    results: list[VariantResult],
    level: str,
    source: str,
    *,
    name: str | None = None,
    description: str = "",
    command: str | None = None,
) -> CompareResult:
    """results.json, report.md and (with matplotlib) valid_ppl.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = _plot(out / PLOT, results, name)
    record = {
        "comparison": name,
        "description": description,
        "command": command,
        "level": level,
        "source": source,
        "base_config": base.to_dict(),
        "variants": [dataclasses.asdict(r) for r in results],
        "plot": plot.name if plot else None,
    }
    atomic_write(out / RESULTS, json.dumps(record, indent=2, allow_nan=True) + "\n")
    md = format_report(base, results, level, source, name, description, command, plot)
    atomic_write(out / REPORT_MD, md)
    return CompareResult(out, level, source, results, out / REPORT_MD, plot, out / RESULTS)


def format_table(results: list[VariantResult], level: str) -> str:
    """The Markdown table of the report."""
    char = level in ("char", "symbols")
    metric = ("valid bpc", "test bpc") if char else ("valid ppl", "test ppl")
    head = ["variant", "changes", "params", *metric, "tokens/s", "train min", "wall min", "epochs"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 7) + "|"]
    for r in results:
        v, t = (r.valid_bpc, r.test_bpc) if char else (r.valid_ppl, r.test_ppl)
        cells = [
            r.name,
            ", ".join(f"{k}={show(x)}" for k, x in r.overrides.items()) or "-",
            f"{r.params:,}",
            _num(v, 4 if char else 2),
            _num(t, 4 if char else 2),
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
    level: str,
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
    lines = [f"# Comparison{': ' + name if name else ''}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"- corpus: {source} ({level} level)",
        f"- shared: {shared_settings(base, {k for r in results for k in r.overrides})}",
        f"- budget per variant: {', '.join(budget)} (then the best checkpoint is evaluated)",
        f"- seed {t.seed} for every variant; precision {t.precision}; cell {m.cell}",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", format_table(results, level)]
    lines += [
        "Perplexities are of the best checkpoint (lowest validation loss, checked at epoch ends "
        "and when the budget ran out). tokens/s and train min count training steps only; wall "
        "min adds evaluation. Timings depend on the machine and its load.",
        "",
    ]
    if plot is not None:
        lines += [f"![validation curves]({plot.name})", ""]
    return "\n".join(lines)


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
    from lstmlm.reports.plot import plot_curves  # matplotlib: only when drawing

    # A run stopped before any record has no curve; its row in the table still counts.
    curves = [c for c in map(variant_curves, results) if c.train or c.valid]
    if not curves:
        return None
    label = "bits per char" if curves[0].level in ("char", "symbols") else "perplexity"
    head = f"{title}: " if title else ""
    return plot_curves(
        curves, path, title=f"{head}validation {label} (markers), training (faint lines)"
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
        valid.append(Point(r.epochs, r.minutes, math.log(r.valid_ppl)))
    return dataclasses.replace(c, name=r.name, valid=valid)


def _num(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
