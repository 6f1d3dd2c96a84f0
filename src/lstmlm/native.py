"""The fused C kernels of ``kernels/lstm_step.c``: built with the system C compiler on
first use, cached, loaded through ctypes.

The hand-written LSTM's time loop (``rnn_manual.py``) makes, per step, one matmul call
and a few small elementwise torch ops (gates, cell update, their gradients). On a 2-core
CPU those small ops cost more than their arithmetic: dispatch, a pass over memory each,
and torch's tanh at about 2 ns per element. ``lstm_step.c`` does a step's elementwise work
in one pass, and also writes the bf16 copy the next matmul reads.

There is nothing to install: the first ``lstm_kernels()`` call compiles the source with
``$CC`` or ``cc`` (``-O3 -march=native``, about a second) into ``$LSTMLM_CACHE``
(default ``~/.cache/lstmlm``), keyed by the source, the flags, the compiler and the CPU,
and checks the result against torch on a small case. Without a compiler, or if the build
or the check fails, it returns None and callers use torch ops; ``LSTMLM_NATIVE=0`` turns
the kernels off. The outcome is logged (logger ``lstmlm.native``), never printed.
"""

from __future__ import annotations

import ctypes
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor

log = logging.getLogger(__name__)

SOURCE = Path(__file__).parent / "kernels" / "lstm_step.c"
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c11", "-shared", "-fPIC")
ENV_SWITCH = "LSTMLM_NATIVE"  # "0" turns the kernels off
ENV_CACHE = "LSTMLM_CACHE"

_I64, _PTR, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
# lstm_forward_step(B, H, x_proj, rec, mm_bf16, bias, c_prev, acts, c, tanh_c, h, h_bf16)
_FORWARD_ARGS = [_I64, _I64, _PTR, _PTR, _INT, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
# lstm_backward_step(B, H, dh_rec, mm_bf16, d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias)
_BACKWARD_ARGS = [_I64, _I64, _PTR, _INT, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]


@dataclass(frozen=True)
class LSTMKernels:
    """The two entry points; arguments are sizes, data pointers and 0/1 dtype flags.

    Every tensor behind a pointer is a contiguous CPU tensor: fp32, or bf16 where the
    flag (or the ``*_bf16`` output) says so. See ``kernels/lstm_step.c`` for the layout.
    """

    forward_step: ctypes._CFuncPtr
    backward_step: ctypes._CFuncPtr


def usable(*tensors: Tensor) -> bool:
    """Whether tensors can go to the kernels (CPU, fp32, contiguous) and the kernels exist."""
    ok = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    return ok and lstm_kernels() is not None


@functools.cache  # built (or found in the cache) and checked once per process
def lstm_kernels() -> LSTMKernels | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("native LSTM kernels off (%s=0)", ENV_SWITCH)
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.SubprocessError) as e:
        log.info("native LSTM kernels unavailable, using torch ops: %s", e)
        return None
    lib.lstm_forward_step.argtypes = _FORWARD_ARGS
    lib.lstm_forward_step.restype = None
    lib.lstm_backward_step.argtypes = _BACKWARD_ARGS
    lib.lstm_backward_step.restype = None
    kernels = LSTMKernels(lib.lstm_forward_step, lib.lstm_backward_step)
    if not _agrees_with_torch(kernels):
        log.warning("native LSTM kernels disagree with torch; using torch ops")
        return None
    return kernels


def _compiler() -> str:
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        raise OSError("no C compiler (set CC, or install cc/gcc)")
    return cc


def _cache_dir() -> Path:
    if os.environ.get(ENV_CACHE):
        return Path(os.environ[ENV_CACHE])
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "lstmlm"


def _cpu_id() -> str:
    """What -march=native depends on: the CPU's model and feature flags where Linux says."""
    try:
        info = Path("/proc/cpuinfo").read_text()
    except OSError:
        return platform.machine() + platform.processor()
    keep = ("model name", "flags", "Features", "CPU part")
    lines = sorted({line for line in info.splitlines() if line.startswith(keep)})
    return platform.machine() + "\n".join(lines)


def _build() -> Path:
    cc = _compiler()
    version = subprocess.run(
        [cc, "--version"], capture_output=True, text=True, timeout=30, check=True
    ).stdout
    source = SOURCE.read_bytes()
    key = hashlib.sha256(
        b"\0".join([source, " ".join(FLAGS).encode(), version.encode(), _cpu_id().encode()])
    ).hexdigest()[:16]
    target = _cache_dir() / f"lstm_step-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: processes building at once never see a torn file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        result = subprocess.run(
            [cc, *FLAGS, "-o", str(built), str(SOURCE)],
            capture_output=True,
            text=True,
            timeout=120,
        )
        if result.returncode != 0:
            raise OSError(f"{cc} failed: {result.stderr.strip()[-500:]}")
        os.replace(built, target)
    log.info("built native LSTM kernels: %s", target)
    for old in target.parent.glob("lstm_step-*.so"):  # builds of older sources or CPUs
        if old != target:
            old.unlink(missing_ok=True)  # a process that loaded it keeps its mapping
    return target


def _agrees_with_torch(k: LSTMKernels) -> bool:
    """One fp32 forward and backward step on values that reach both tails of the gates."""
    B, H = 3, 37  # H not a multiple of the vector width: the loop tails run too
    gen = torch.Generator().manual_seed(0)
    x_proj, rec = (torch.randn(B, 4 * H, generator=gen) * 6 for _ in range(2))
    bias = torch.randn(4 * H, generator=gen)
    c_prev = torch.randn(B, H, generator=gen)
    acts, c, tanh_c, h = torch.empty(B, 4 * H), *(torch.empty(B, H) for _ in range(3))
    k.forward_step(B, H, *_ptrs(x_proj, rec), 0, *_ptrs(bias, c_prev, acts, c, tanh_c, h), None)
    i, f, g, o = (x_proj + rec + bias).chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    want_c = f * c_prev + i * g
    ok = torch.allclose(acts, torch.cat((i, f, g, o), dim=1), atol=1e-6)
    ok = ok and torch.allclose(c, want_c, atol=1e-5)
    ok = ok and torch.allclose(h, o * want_c.tanh(), atol=1e-5)
    dh_rec, d_out, dc = (torch.randn(B, H, generator=gen) for _ in range(3))
    d_c = dc + (dh_rec + d_out) * o * (1 - tanh_c**2)
    d_gates, d_bias = torch.empty(B, 4 * H), torch.zeros(4 * H)
    k.backward_step(
        B, H, *_ptrs(dh_rec), 0, *_ptrs(d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias)
    )
    want_i = d_c * g * i * (1 - i)
    ok = ok and torch.allclose(d_gates[:, :H], want_i, atol=1e-5)
    ok = ok and torch.allclose(d_bias, d_gates.sum(0), atol=1e-5)
    return ok and torch.allclose(dc, d_c * f, atol=1e-5)


def _ptrs(*tensors: Tensor) -> list[int]:
    return [t.data_ptr() for t in tensors]
