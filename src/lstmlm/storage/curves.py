"""Training curves of a run as numbers: read RUN/metrics.jsonl into points.

No plotting here: `reports.plot` draws these points with matplotlib, and the web page
draws the same numbers in the browser (`/v1/models/{id}/curves`). `choose_metric` says
which unit runs can share an axis in: perplexity, or bits per character for character
levels (char/symbols).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlm.storage.layout import METRICS as METRICS_FILE
from lstmlm.storage.layout import SUMMARY
from lstmlm.storage.runs import read_run_files

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

    `max_points` thins the train points evenly (the last one kept), for a page; while
    the file is read, at most 4 x max_points of them are held (every other one is
    dropped and the stride doubled when they pass that), so memory does not grow with
    the file. A run with no progress reports (epochs shorter than `log_every`) gets its
    train points from the epoch records.
    """
    run = Path(run_dir)
    info, _ = read_run_files(run)
    train: list[Point] = []
    valid: list[Point] = []
    epoch_train: list[Point] = []
    stride, seen, last = 1, 0, None  # keep progress point i when i % stride == 0
    metrics = run / METRICS_FILE
    if metrics.is_file():
        with metrics.open(encoding="utf-8", errors="replace") as f:
            for line in f:
                try:
                    r = json.loads(line)
                except (ValueError, RecursionError):  # nested 200,000 deep is no record
                    continue  # a line torn by a crash mid-write (or damaged bytes)
                if not isinstance(r, dict):
                    continue
                kind = r.get("event")
                try:
                    if kind == "progress":
                        frac = _num(r["done"]) / max(_num(r["steps"]), 1)
                        last = _point(r, "train_loss", _num(r["epoch"]) - 1 + frac)
                        seen += 1
                        if (seen - 1) % stride == 0:
                            train.append(last)
                        if max_points is not None and len(train) > 4 * max(max_points, 2):
                            train, stride = train[::2], stride * 2
                    elif kind == "epoch":
                        valid.append(_point(r, "valid_loss", _num(r["epoch"])))
                        epoch_train.append(_point(r, "train_loss", _num(r["epoch"])))
                except (KeyError, TypeError, ValueError, OverflowError):
                    continue  # a record with a field missing or of the wrong type
    if last is not None and (not train or train[-1] is not last):
        train.append(last)  # the newest point, whatever the stride
    if not train:
        train = epoch_train
    if max_points is not None and len(train) > max_points > 1:
        step = (len(train) - 1) / (max_points - 1)
        train = [train[round(i * step)] for i in range(max_points)]
    summary = None
    if (run / SUMMARY).is_file():
        try:
            summary = json.loads((run / SUMMARY).read_text("utf-8"))
        except (ValueError, UnicodeDecodeError, RecursionError):
            summary = None
        if not isinstance(summary, dict):
            summary = None
    return Curves(run.resolve().name, info.level, train, valid, summary)


def _num(value: Any) -> float:
    """A record's number; TypeError for anything else (a string, a list, true)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TypeError(f"not a number: {value!r:.40}")
    return float(value)


def _point(r: dict[str, Any], loss: str, epoch: float) -> Point:
    return Point(epoch, _num(r["elapsed"]) / 60, _num(r[loss]))


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
