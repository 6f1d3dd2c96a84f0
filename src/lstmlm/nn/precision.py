"""Matmul precision: bf16 autocast regions, and whether this CPU runs bf16 matmuls fast."""

from __future__ import annotations

import contextlib
import functools
import logging

import torch

log = logging.getLogger(__name__)


def autocast(precision: str, device_type: str = "cpu") -> contextlib.AbstractContextManager[object]:
    """bf16: a bfloat16 autocast region on `device_type`; fp32: nothing."""
    if precision == "bf16":
        if device_type == "cpu":
            _warn_if_bf16_is_slow()
        return torch.autocast(device_type, dtype=torch.bfloat16)
    return contextlib.nullcontext()


def cpu_has_fast_bf16() -> bool:
    """Whether oneDNN has bf16 matmul kernels for this CPU (AVX-512 or newer).

    Without them (AVX2-only CPUs, most laptops before 2021) bf16 matmuls fall back to
    slow paths; everything measured in benchmarks/ ran on a CPU that has them.
    """
    probe = getattr(torch.ops.mkldnn, "_is_mkldnn_bf16_supported", None)
    try:
        return bool(probe()) if probe is not None else False
    except RuntimeError:
        return False


@functools.cache  # once per process
def _warn_if_bf16_is_slow() -> None:
    if not cpu_has_fast_bf16():
        log.warning(
            "this CPU has no fast bf16 matmuls (oneDNN reports none); --precision bf16 "
            "may run slower than fp32 here"
        )
