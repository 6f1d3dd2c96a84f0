"""Bounds every config checks: integers that fit in 64 bits, sizes below a `max` given in
a field's metadata, the names of the logging sinks (`report_to`).

A field declares its bound where it is defined (`_f(200, "embedding size", max=MAX_SIZE)`
in schema.py), and `check_bounds` runs first in each section's `validate`, so every path
that builds a config (flags, presets, config files, compare variants) refuses a value no
run can use before any work, with the field's name.
"""

from __future__ import annotations

import dataclasses
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
