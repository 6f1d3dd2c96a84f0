"""TensorBoard logging of trainer events (optional: needs the `tensorboard` package).

    sink = TensorBoardSink("runs/ptb/tensorboard")
    train.start_run(cfg, out, on_event=tee(reporter, sink))

Scalars are written against the optimizer step, so a resumed run continues its
curves. The writer is opened at the first event, so a run that fails before it
starts leaves no folder behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

FINAL_KEYS = ("valid_ppl", "test_ppl", "valid_bpc", "test_bpc")


class EventSink(Protocol):
    def __call__(self, kind: str, d: dict[str, Any]) -> None: ...


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "--tensorboard needs the tensorboard package: pip install tensorboard"
        ) from None
    return SummaryWriter


class TensorBoardSink:
    """Trainer events -> TensorBoard scalars (train/valid loss, ppl, bpc, lr, speed)."""

    def __init__(self, log_dir: str | Path, flush_secs: int = 30):
        self.writer_class = _summary_writer_class()  # fail now, not after an epoch
        self.log_dir = Path(log_dir)
        self.flush_secs = flush_secs
        self.writer: Any = None

    def _w(self) -> Any:
        if self.writer is None:
            self.writer = self.writer_class(log_dir=str(self.log_dir), flush_secs=self.flush_secs)
        return self.writer

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "start":
            w = self._w()
            w.add_text("config", "```\n" + json.dumps(d.get("config", {}), indent=2) + "\n```")
            w.add_text(
                "data",
                f"{d.get('source', '')}: {d.get('train_tokens', 0):,} tokens, "
                f"vocab {d.get('vocab_size', 0):,}, {d.get('params', 0):,} params",
            )
        elif kind == "progress":
            self._scalars(
                d["step"],
                {
                    "train/loss": d.get("train_loss"),
                    "train/ppl": d.get("train_ppl"),
                    "train/lr": d.get("lr"),
                    "train/tokens_per_sec": d.get("tokens_per_sec"),
                },
            )
        elif kind == "epoch":
            self._scalars(
                d["step"],
                {
                    "epoch/train_loss": d.get("train_loss"),
                    "valid/loss": d.get("valid_loss"),
                    "valid/ppl": d.get("valid_ppl"),
                    "valid/bpc": d.get("valid_bpc"),
                    "epoch/epoch": d.get("epoch"),
                    "epoch/minutes": d["elapsed"] / 60 if "elapsed" in d else None,
                },
            )
            self._w().flush()
        elif kind == "sample":
            self._w().add_text(
                f"sample/temperature_{d.get('temperature')}", d.get("text", ""), d.get("epoch", 0)
            )
        elif kind == "final":
            step = d.get("steps", 0)
            self._scalars(
                step,
                {
                    f"final/{k}": d.get(k)
                    for k in ("valid_ppl", "test_ppl", "valid_bpc", "test_bpc")
                },
            )
            self._w().flush()

    def _scalars(self, step: int, values: dict[str, float | int | None]) -> None:
        w = self._w()
        for tag, v in values.items():
            if isinstance(v, int | float) and v == v and abs(v) != float("inf"):
                w.add_scalar(tag, v, step)

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


class Tee:
    """Forward each event to several sinks; `close()` closes those that have it."""

    def __init__(self, *sinks: EventSink):
        self.sinks = sinks

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        for s in self.sinks:
            s(kind, d)

    def close(self) -> None:
        for s in self.sinks:
            close = getattr(s, "close", None)
            if close is not None:
                close()


def tee(*sinks: EventSink) -> Tee:
    return Tee(*sinks)
