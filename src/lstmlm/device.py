"""Which device to run on: `resolve_device` turns a --device name into a torch.device.

Kept out of training/distributed.py: loading a checkpoint needs a device, not
torch.distributed.
"""

from __future__ import annotations

import torch

from lstmlm.config import FieldError, check_device_name


def resolve_device(
    name: str | torch.device = "auto", local_rank: int | None = None
) -> torch.device:
    """'auto' -> cuda when available, else cpu; 'cuda' -> cuda:local_rank (0 if None).

    Raises FieldError (a ValueError) for cuda on a machine (or torch build) without a GPU.
    """
    if isinstance(name, torch.device):
        name = str(name)
    check_device_name(name)
    if name == "auto":
        name = "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cpu":
        return torch.device("cpu")
    if not torch.cuda.is_available():
        build = "a CPU-only torch build" if torch.version.cuda is None else "no GPU visible"
        raise FieldError("device", f"{name}: CUDA is not available here ({build}); use cpu")
    dev = torch.device(name)
    if dev.index is None:
        dev = torch.device("cuda", local_rank or 0)
    if dev.index >= torch.cuda.device_count():
        raise FieldError("device", f"{dev}: only {torch.cuda.device_count()} GPU(s) visible")
    return dev
