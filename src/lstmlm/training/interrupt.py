"""Ctrl-C and preemption during training: stop at the next step, save, then leave.

The first SIGINT, SIGTERM or SIGHUP only asks the training loop to stop: it finishes the
step it is in, writes RUN/last.safetensors and raises `TrainingInterrupted`, so nothing
since the last checkpoint is lost and `lstmlm train --resume RUN` continues from that
very step. SIGTERM is what SLURM, Kubernetes and systemd send before they kill a job
(then SIGKILL after a grace period), SIGHUP what a closed terminal sends: both are a
preemption, handled like Ctrl-C. A second signal interrupts at once.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

STOP_SIGNALS = tuple(
    getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name)
)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on request (signal `signum`) after saving its checkpoint."""

    def __init__(
        self, run_dir: Path, step: int, signum: int = signal.SIGINT, world: int = 1, rank: int = 0
    ):
        super().__init__(f"interrupted at step {step}; saved {run_dir}")
        self.run_dir = run_dir
        self.step = step
        self.signum = signum
        self.world = world  # processes training: a resume needs as many (--nproc)
        self.rank = rank  # which of them raised it (only rank 0 reports)

    @property
    def resume_command(self) -> str:
        nproc = f" --nproc {self.world}" if self.world > 1 else ""
        return f"lstmlm train --resume {self.run_dir}{nproc}"

    @property
    def exit_status(self) -> int:
        """128 + the signal's number, as a shell reports a process ended by it (130, 143,
        129)."""
        return 128 + int(self.signum)


def _default(sig: int) -> bool:
    """Whether `sig` still does what Python does by default (nobody else chose)."""
    handler = signal.getsignal(sig)
    return handler is signal.default_int_handler or handler == signal.SIG_DFL


@contextmanager
def stop_on_signals(
    on_request: Callable[[], None] = lambda: None,
) -> Iterator[Callable[[], int | None]]:
    """Within the block, the first SIGINT/SIGTERM/SIGHUP records its number (returned by
    the yielded function, None before any) and calls `on_request`; a second one raises
    KeyboardInterrupt.

    Only in the main thread (elsewhere a signal handler cannot be set) and only for the
    signals whose default handler is in place (someone else has chosen what the others
    do): the rest are left alone.
    """
    if threading.current_thread() is not threading.main_thread():
        yield lambda: None
        return
    ours = [s for s in STOP_SIGNALS if _default(s)]
    before = {s: signal.getsignal(s) for s in ours}
    requested: int | None = None

    def handler(signum: int, frame: object) -> None:
        nonlocal requested
        if requested is not None:
            raise KeyboardInterrupt
        requested = signum
        on_request()

    for s in ours:
        signal.signal(s, handler)
    try:
        yield lambda: requested
    finally:
        for s, h in before.items():
            signal.signal(s, h)
