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
from typing import Any

from lstmlm.training.events import Tee, scalars, tee

__all__ = ["TensorBoardSink", "Tee", "tee"]


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise ValueError(
            "TensorBoard logging needs the tensorboard package: pip install tensorboard"
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
        elif kind in ("progress", "epoch", "final"):
            step, values = scalars(kind, d)
            w = self._w()
            for tag, v in values.items():
                w.add_scalar(tag, v, step)
            if kind != "progress":
                w.flush()
        elif kind == "sample":
            self._w().add_text(
                f"sample/temperature_{d.get('temperature')}", d.get("text", ""), d.get("epoch", 0)
            )

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
