"""The trainer's events as the numbers a logging sink records, and the tee to several sinks.

Every sink (TensorBoard, Weights & Biases, MLflow: tb.py, sinks.py) takes the same
`on_event(kind, data)` calls the progress bar takes; `scalars(kind, d)` is the one
mapping of an event to named numbers (`train/loss`, `valid/ppl`, ...), and `params(d)`
flattens the "start" event's run config into `section.field` hyper-parameters.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any, Protocol

FINAL_KEYS = (
    "valid_ppl", "test_ppl", "valid_bpc", "test_bpc", "valid_word_ppl", "test_word_ppl",
)  # fmt: skip


class EventSink(Protocol):
    def __call__(self, kind: str, d: dict[str, Any]) -> None: ...


def scalars(kind: str, d: dict[str, Any]) -> tuple[int, dict[str, float]]:
    """(step, {name: finite value}) of a trainer event; no names for other events."""
    if kind == "progress":
        named = {
            "train/loss": d.get("train_loss"),
            "train/ppl": d.get("train_ppl"),
            "train/bpc": d.get("train_bpc"),
            "train/lr": d.get("lr"),
            "train/grad_norm": d.get("grad_norm"),
            "train/tokens_per_sec": d.get("tokens_per_sec"),
        }
    elif kind == "epoch":
        named = {
            "epoch/train_loss": d.get("train_loss"),
            "valid/loss": d.get("valid_loss"),
            "valid/ppl": d.get("valid_ppl"),
            "valid/bpc": d.get("valid_bpc"),
            "valid/word_ppl": d.get("valid_word_ppl"),
            "epoch/lr": d.get("lr"),
            "epoch/epoch": d.get("epoch"),
            "epoch/minutes": d["elapsed"] / 60 if "elapsed" in d else None,
        }
    elif kind == "final":
        named = {f"final/{k}": d.get(k) for k in FINAL_KEYS}
        return int(d.get("steps", 0)), _finite(named)
    else:
        return 0, {}
    return int(d.get("step", 0)), _finite(named)


def _finite(named: dict[str, Any]) -> dict[str, float]:
    return {
        k: float(v)
        for k, v in named.items()
        if isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v)
    }


def params(d: dict[str, Any]) -> dict[str, Any]:
    """The "start" event's run config as flat hyper-parameters: {"model.hidden_size": 200}."""
    flat: dict[str, Any] = {}
    for section, fields in d.get("config", {}).items():
        if isinstance(fields, dict):
            for name, value in fields.items():
                flat[f"{section}.{name}"] = value
        else:
            flat[section] = fields
    for key in ("level", "vocab_size", "params", "train_tokens"):
        if key in d:
            flat[f"data.{key}"] = d[key]
    return flat


class Tee:
    """Forward each event to several sinks; `close()` closes those that have it."""

    def __init__(self, *sinks: EventSink | Callable[[str, dict[str, Any]], None]):
        self.sinks = sinks

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        for s in self.sinks:
            s(kind, d)

    def close(self) -> None:
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close()


def tee(*sinks: EventSink | Callable[[str, dict[str, Any]], None]) -> Tee:
    return Tee(*sinks)
