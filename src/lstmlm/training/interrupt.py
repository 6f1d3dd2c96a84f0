"""Ctrl-C during training: stop at the next step, save, then leave.

The first SIGINT only asks the training loop to stop: it finishes the step it is in,
writes RUN/last.safetensors and raises `TrainingInterrupted`, so nothing since the last
checkpoint is lost and `lstmlm train --resume RUN` continues from that very step. A second
SIGINT interrupts at once, as Python does by default.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request after saving its checkpoint."""

    def __init__(self, run_dir: Path, step: int):
        super().__init__(f"interrupted at step {step}; saved {run_dir}")
        self.run_dir = run_dir
        self.step = step


@contextmanager
def stop_on_sigint(on_request: Callable[[], None] = lambda: None) -> Iterator[Callable[[], bool]]:
    """Within the block, the first SIGINT sets a flag (read by the yielded function) and
    calls `on_request`; a second one raises KeyboardInterrupt.

    Only where Python's own handler is in place, in the main thread (elsewhere a signal
    handler cannot be set, or someone else has chosen what SIGINT does): there the flag
    stays False.
    """
    own = (
        threading.current_thread() is threading.main_thread()
        and signal.getsignal(signal.SIGINT) is signal.default_int_handler
    )
    if not own:
        yield lambda: False
        return
    requested = False

    def handler(signum: int, frame: object) -> None:
        nonlocal requested
        if requested:
            raise KeyboardInterrupt
        requested = True
        on_request()

    signal.signal(signal.SIGINT, handler)
    try:
        yield lambda: requested
    finally:
        signal.signal(signal.SIGINT, signal.default_int_handler)
