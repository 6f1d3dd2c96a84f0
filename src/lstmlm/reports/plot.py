"""Training curves of runs: read RUN/metrics.jsonl, draw train/valid ppl (or bpc).

`read_curves` has no plotting in it (the web server draws the same numbers in
the browser); `plot_runs` needs matplotlib and uses its Agg backend, so it
works without a display. Runs drawn together share one axis, so they must all be
word-level or all character-level (char/symbols); bpc is for character levels.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlm.storage import checkpoint as ckpt

CHAR_LEVELS = ("char", "symbols")
METRICS = ("auto", "ppl", "bpc")


@dataclass(frozen=True)
class Point:
    epoch: float  # epochs done, fractional inside an epoch
    minutes: float  # training time so far
    loss: float  # mean NLL, nats per token


@dataclass(frozen=True)
class Curves:
    name: str
    level: str
    train: list[Point] = field(default_factory=list)  # from "progress" records
    valid: list[Point] = field(default_factory=list)  # from "epoch" records
    summary: dict[str, Any] | None = None


def read_curves(run_dir: str | Path, max_points: int | None = None) -> Curves:
    """Train points (every progress report) and valid points (every epoch) of a run.

    `max_points` thins the train points evenly (the last one kept), for a page. A run
    with no progress reports (epochs shorter than `log_every`) gets its train points
    from the epoch records.
    """
    run = Path(run_dir)
    info, _ = ckpt.read_run_files(run)
    train: list[Point] = []
    valid: list[Point] = []
    epoch_train: list[Point] = []
    metrics = run / ckpt.METRICS
    if metrics.is_file():
        with metrics.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except json.JSONDecodeError:
                    continue  # a line torn by a crash mid-write (or damaged bytes)
                if not isinstance(r, dict):
                    continue
                kind = r.get("event")
                try:
                    if kind == "progress":
                        frac = r["done"] / max(r["steps"], 1)
                        train.append(
                            Point(r["epoch"] - 1 + frac, r["elapsed"] / 60, r["train_loss"])
                        )
                    elif kind == "epoch":
                        valid.append(Point(r["epoch"], r["elapsed"] / 60, r["valid_loss"]))
                        epoch_train.append(Point(r["epoch"], r["elapsed"] / 60, r["train_loss"]))
                except (KeyError, TypeError):
                    continue
    if not train:
        train = epoch_train
    if max_points is not None and len(train) > max_points > 1:
        step = (len(train) - 1) / (max_points - 1)
        train = [train[round(i * step)] for i in range(max_points)]
    summary = None
    if (run / ckpt.SUMMARY).is_file():
        try:
            summary = json.loads((run / ckpt.SUMMARY).read_text("utf-8"))
        except (ValueError, UnicodeDecodeError):
            summary = None
    return Curves(run.resolve().name, info.level, train, valid, summary)


def choose_metric(levels: list[str], metric: str = "auto", names: list[str] | None = None) -> str:
    """bpc when every run is character-level (for "auto"), else perplexity.

    Runs share one axis, so they must count their loss per the same unit: a word-level
    run's loss is per word, a char or symbols run's per character, and no metric (bits,
    perplexity or the loss in nats itself) makes a word and a character comparable, so
    mixing word-level with character-level runs is a ValueError. bpc is for character
    levels only. `names` (one per level) name the runs in the messages.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    names = names or [f"a {lv}-level run" for lv in levels]
    words = [n for n, lv in zip(names, levels, strict=True) if lv not in CHAR_LEVELS]
    chars = [(n, lv) for n, lv in zip(names, levels, strict=True) if lv in CHAR_LEVELS]
    if words and chars:
        raise ValueError(
            f"{words[0]} is word-level and {chars[0][0]} is {chars[0][1]}-level: a loss per "
            "word and one per character cannot share an axis; plot them separately"
        )
    if metric == "bpc" and words:
        raise ValueError(
            f"--metric bpc is for char/symbols runs; {words[0]} is word-level (use --metric ppl)"
        )
    if metric == "auto":
        return "bpc" if chars else "ppl"
    return metric


def transform(loss: float, metric: str) -> float:
    """NLL in nats -> perplexity or bits per token."""
    if metric == "bpc":
        return loss / math.log(2)
    return math.exp(loss) if loss < 700 else math.inf


def plot_runs(
    runs: list[str | Path],
    out: str | Path,
    metric: str = "auto",
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """Draw train (line) and valid (markers) curves of `runs` against epochs and minutes.

    ValueError when a run has no training records yet, when word-level and character-level
    runs are mixed, or for bpc on a word-level run (see `choose_metric`).
    """
    if not runs:
        raise ValueError("give at least one run folder")
    curves = [read_curves(r) for r in runs]
    metric = check_curves(curves, metric, [str(r) for r in runs])
    return _draw(curves, out, metric, title, dpi)


def plot_curves(
    curves: list[Curves],
    out: str | Path,
    metric: str = "auto",
    title: str | None = None,
    dpi: int = 110,
) -> Path:
    """`plot_runs` on curves already read (and perhaps renamed or extended by the caller)."""
    if not curves:
        raise ValueError("give at least one curve")
    return _draw(curves, out, check_curves(curves, metric), title, dpi)


def check_curves(curves: list[Curves], metric: str, names: list[str] | None = None) -> str:
    """The metric to draw `curves` in (see `choose_metric`); ValueError for a curve with
    no points. `names` (default: the curves' own) name the runs in the messages."""
    names = names or [c.name for c in curves]
    for c, name in zip(curves, names, strict=True):
        if not c.train and not c.valid:
            raise ValueError(f"{name} has no training records yet")
    return choose_metric([c.level for c in curves], metric, names)


def _draw(curves: list[Curves], out: str | Path, metric: str, title: str | None, dpi: int) -> Path:
    """The figure of `curves` in `metric` ("ppl" or "bpc"), written to `out`."""
    try:
        import matplotlib
    except ImportError:
        raise ValueError("plotting needs matplotlib: pip install matplotlib") from None
    matplotlib.use("Agg")
    from matplotlib.figure import Figure
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    fig = Figure(figsize=(10, 4), dpi=dpi, layout="constrained")
    ax_epoch, ax_min = fig.subplots(1, 2, sharey=True)
    ylabel = "bits per character" if metric == "bpc" else "perplexity"
    for i, c in enumerate(curves):
        color = f"C{i % 10}"
        for ax, x in ((ax_epoch, "epoch"), (ax_min, "minutes")):
            if c.train:
                ax.plot(
                    [getattr(p, x) for p in c.train],
                    [transform(p.loss, metric) for p in c.train],
                    color=color,
                    alpha=0.45,
                    linewidth=1,
                    label=f"{c.name} train",
                )
            if c.valid:
                ax.plot(
                    [getattr(p, x) for p in c.valid],
                    [transform(p.loss, metric) for p in c.valid],
                    color=color,
                    marker="o",
                    markersize=4,
                    linewidth=1.8,
                    label=f"{c.name} valid",
                )
    for ax, xlabel in ((ax_epoch, "epoch"), (ax_min, "training minutes")):
        ax.set_xlabel(xlabel)
        ax.grid(True, alpha=0.3, which="both")
        if metric == "ppl":
            ax.set_yscale("log")
            ax.yaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
            ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
            ax.yaxis.set_minor_formatter(NullFormatter())
    ax_epoch.set_ylabel(ylabel)
    ax_min.legend(fontsize=8, loc="upper right")  # every curve has points (check_curves)
    fig.suptitle(title or f"{ylabel}: " + ", ".join(c.name for c in curves))
    out = Path(out)
    try:
        fig.savefig(out)
    except OSError as e:
        raise ValueError(f"{out}: cannot write the figure ({e.strerror or e})") from None
    return out
