"""Training curves of a run as numbers: read RUN/metrics.jsonl into points.

No plotting here: `reports.plot` draws these points with matplotlib, and the web page
draws the same numbers in the browser (`/v1/models/{id}/curves`). `choose_metric` says
which unit runs can share an axis in: perplexity (per token: runs of one level), or bits
per character of the raw text (any levels).

Each point carries the bits per character its record gives (`train_bpc`, `valid_bpc`:
every level since lstmlm recorded them on the raw text, data/stats.py). An older run
recorded them at the char and symbols levels only, as bits per token, which there is
one token per character: the same number; an older char run's record without one is
read as loss / ln 2, an older word or subword run's points have none.
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
    bpc: float | None = None  # bits per character of the raw text; None: not recorded


@dataclass(frozen=True)
class Curves:
    name: str
    level: str
    train: list[Point] = field(default_factory=list)  # from "progress" records
    valid: list[Point] = field(default_factory=list)  # from "epoch" records
    summary: dict[str, Any] | None = None

    @property
    def has_bpc(self) -> bool:
        """Every point has its bits per character (see the module doc)."""
        return all(p.bpc is not None for p in (*self.train, *self.valid))


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
                        last = _point(r, "train", _num(r["epoch"]) - 1 + frac, info.level)
                        seen += 1
                        if (seen - 1) % stride == 0:
                            train.append(last)
                        if max_points is not None and len(train) > 4 * max(max_points, 2):
                            train, stride = train[::2], stride * 2
                    elif kind == "epoch":
                        valid.append(_point(r, "valid", _num(r["epoch"]), info.level))
                        epoch_train.append(_point(r, "train", _num(r["epoch"]), info.level))
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


def _point(r: dict[str, Any], split: str, epoch: float, level: str) -> Point:
    """The point of record `r`'s `split` ("train", "valid") loss and bits per character."""
    loss = _num(r[f"{split}_loss"])
    bpc = r.get(f"{split}_bpc")
    if bpc is not None:
        bpc = _num(bpc)
    elif level in CHAR_LEVELS:  # an older char run's record: one token per character
        bpc = loss / math.log(2)
    return Point(epoch, _num(r["elapsed"]) / 60, loss, bpc)


def choose_metric(
    levels: list[str],
    metric: str = "auto",
    names: list[str] | None = None,
    with_bpc: list[bool] | None = None,
) -> str:
    """The unit runs of `levels` share an axis in: "ppl" or "bpc".

    Perplexity is per token, and a token is a word, a character or a piece: it compares
    runs of one level only. Bits per character of the raw text compare any levels, for
    runs that recorded them (`with_bpc`, one per level; default: the character levels,
    whose per-token numbers are per character). "auto" is bpc for character levels or
    mixed levels, else ppl. A ValueError says why a choice cannot be drawn; `names` (one
    per level) name the runs in the messages.
    """
    if metric not in METRICS:
        raise ValueError(f"unknown metric {metric!r}; use one of {', '.join(METRICS)}")
    if not levels:
        return "ppl" if metric == "auto" else metric
    names = names or [f"a {lv}-level run" for lv in levels]
    if with_bpc is None:
        with_bpc = [lv in CHAR_LEVELS for lv in levels]
    runs = list(zip(names, levels, with_bpc, strict=True))
    mixed = next(((n, lv) for n, lv, _ in runs if lv != levels[0]), None)
    without = next(((n, lv) for n, lv, has in runs if not has), None)
    if metric == "auto":
        metric = "bpc" if mixed is not None or levels[0] in CHAR_LEVELS else "ppl"
    if metric == "ppl" and mixed is not None:
        raise ValueError(
            f"{names[0]} is {levels[0]}-level and {mixed[0]} is {mixed[1]}-level: a "
            "perplexity per token of one and of the other cannot share an axis; draw bits "
            "per character (--metric bpc) or plot them separately"
        )
    if metric == "bpc" and without is not None:
        why = (
            f"{without[0]} has no bits per character in its records (a {without[1]}-level "
            "run trained before lstmlm recorded them at every level)"
        )
        if mixed is not None:
            raise ValueError(
                f"{names[0]} is {levels[0]}-level and {mixed[0]} is {mixed[1]}-level, and "
                f"{why}: they cannot share an axis; plot them separately"
            )
        raise ValueError(f"{why}; use --metric ppl")
    return metric


def value(point: Point, metric: str) -> float:
    """A point in `metric`: its perplexity per token, or its bits per character."""
    if metric == "bpc":
        return point.bpc if point.bpc is not None else math.nan
    return math.exp(point.loss) if point.loss < 700 else math.inf
