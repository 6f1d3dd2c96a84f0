"""Bounds and value checks every config runs: integers that fit in 64 bits, sizes below a
`max` given in a field's metadata, the names of the logging sinks (`report_to`), and the
small checks each section's `validate` calls (a choice, a positive count, a probability,
adaptive-softmax cutoffs, a device name), each a FieldError naming the field.

A field declares its bound where it is defined (`_f(200, "embedding size", max=MAX_SIZE)`
in schema.py), and `check_bounds` runs first in each section's `validate`, so every path
that builds a config (flags, presets, config files, compare variants) refuses a value no
run can use before any work, with the field's name.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

from lstmlm.config.errors import FieldError

MAX_SIZE = 1 << 24  # sizes, lengths and batch sizes: far above any that fits in memory
MAX_LAYERS = 1000
MAX_ROUNDS = 64  # Mogrifier rounds (the paper uses 4 to 6)
INT64 = 1 << 63  # every integer field fits in 64 bits (torch's and numpy's integers)
REPORT_TO = ("tensorboard", "wandb", "mlflow")


def check_bounds(cfg: Any) -> None:
    """FieldError for an integer field (or element of a tuple field) beyond 64 bits or
    outside its `min` / `max` metadata: caught with the config, before any work."""
    for f in dataclasses.fields(cfg):
        value = getattr(cfg, f.name)
        for v in value if isinstance(value, tuple) else (value,):
            if isinstance(v, bool) or not isinstance(v, int):
                continue
            if not -INT64 <= v < INT64:
                raise FieldError(f.name, f"must fit in 64 bits, got {v}")
            if "max" in f.metadata and v > f.metadata["max"]:
                raise FieldError(f.name, f"must be at most {f.metadata['max']}, got {v}")
            if "min" in f.metadata and v < f.metadata["min"]:
                raise FieldError(f.name, f"must be at least {f.metadata['min']}, got {v}")


def report_names(report_to: str) -> tuple[str, ...]:
    """The logging sinks `report_to` names ("tensorboard,wandb"; "none" or "" = none)."""
    names = tuple(dict.fromkeys(n.strip() for n in str(report_to).split(",")))
    names = tuple(n for n in names if n not in ("", "none"))
    for n in names:
        if n not in REPORT_TO:
            raise FieldError("report_to", f"must be one of {', '.join(REPORT_TO)}, got {n!r}")
    return names


def validate_cutoffs(cutoffs: tuple[int, ...]) -> None:
    """Adaptive softmax cutoffs: one or more positive, strictly increasing integers."""
    shown = " ".join(str(c) for c in cutoffs)
    if len(cutoffs) == 0 or any(not isinstance(c, int) or c <= 0 for c in cutoffs):
        raise FieldError("cutoffs", f"must be one or more positive integers, got {shown!r}")
    if any(b <= a for a, b in zip(cutoffs, cutoffs[1:], strict=False)):
        raise FieldError("cutoffs", f"must be strictly increasing, got {shown}")


DEVICE_RE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


def check_device_name(name: object) -> None:
    """FieldError unless `name` is auto, cpu, cuda or cuda:N."""
    if not DEVICE_RE.match(str(name)):
        raise FieldError("device", f"must be auto, cpu, cuda or cuda:N, got {name!r}")


def check_choice(name: str, value: object, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise FieldError(name, f"must be one of {', '.join(choices)}, got {value!r}")


def check_positive(name: str, value: int) -> None:
    if not (isinstance(value, int) and value > 0):
        raise FieldError(name, f"must be a positive integer, got {value}")


def check_nonnegative(name: str, value: int) -> None:
    if not (isinstance(value, int) and value >= 0):
        raise FieldError(name, f"must be >= 0, got {value}")


def check_probability(name: str, value: float) -> None:
    if not (0.0 <= value < 1.0):
        raise FieldError(name, f"must be in [0, 1), got {value}")
