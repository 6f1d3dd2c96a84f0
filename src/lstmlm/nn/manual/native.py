"""The C kernels of ``kernels/``: built with the system C compiler on first use, cached,
loaded through ctypes. The step kernels (``lstm_step.c``, ``gru_step.c``) are below; the
bf16 ones (``lstm_window.c``, ``gemm_bf16.c``, ``sgd_step.c``, ``softmax_xent.c``; CPUs
with AVX-512 BF16) are bound here and checked by ``lstm_window.py`` and ``bf16_gemm.py``.

The hand-written LSTM's and GRU's time loops (``lstm.py``, ``gru.py``) make, per step, one
matmul call and a few small elementwise torch ops (gates, state update, their
gradients). On a 2-core CPU those small ops cost more than their arithmetic: dispatch,
a pass over memory each, and torch's tanh at about 2 ns per element. The kernels do a
step's elementwise work in one pass, and also write the bf16 copy the next matmul reads.

There is nothing to install: the first ``step_kernels()`` call compiles the sources with
``$CC`` or ``cc`` (``-O3 -march=native -fopenmp``, a few seconds) into ``$LSTMLM_CACHE``
(default ``~/.cache/lstmlm``), keyed by the source, the flags, the compiler and the CPU,
and checks the result against torch on a small case. Without a compiler, or if the build
or the check fails, it returns None and callers use torch ops; ``LSTMLM_NATIVE=0`` turns
the kernels off. The outcome is logged (logger ``lstmlm.nn.manual.native``: a warning when the
kernels cannot be had, info otherwise), never printed.
"""

from __future__ import annotations

import ctypes
import dataclasses
import functools
import hashlib
import logging
import os
import platform
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

log = logging.getLogger(__name__)

KERNELS = Path(__file__).parent / "kernels"
SOURCES = tuple(
    KERNELS / f
    for f in (
        "lstm_step.c", "gru_step.c", "lstm_window.c", "gemm_bf16.c", "sgd_step.c",
        "softmax_xent.c",
    )
)  # fmt: skip
HEADERS = tuple(KERNELS / f for f in ("step_common.h", "gemm_bf16.h", "vec_math.h"))
LIBRARY = "rnn_steps"  # the cached file is rnn_steps-<key>.so
FLAGS = ("-O3", "-march=native", "-fno-math-errno", "-std=c11", "-shared", "-fPIC")
# The threads of lstm_window.c and gemm_bf16.c. In torch's process the library's libgomp is
# torch's own (same soname, loaded first), so both share one thread pool; a compiler
# without OpenMP builds them serial.
OPENMP = "-fopenmp"
ENV_SWITCH = "LSTMLM_NATIVE"  # "0" turns the kernels off
ENV_CACHE = "LSTMLM_CACHE"

_I64, _PTR, _INT = ctypes.c_int64, ctypes.c_void_p, ctypes.c_int
# lstm_forward_step(B, H, x_proj, rec, mm_bf16, bias, c_prev, acts, c, tanh_c, h, h_bf16)
_FORWARD_ARGS = [_I64, _I64, _PTR, _PTR, _INT, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
# lstm_backward_step(B, H, dh_rec, mm_bf16, d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias)
_BACKWARD_ARGS = [_I64, _I64, _PTR, _INT, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
# gru_forward_step(B, H, x_proj, rec, mm_bf16, b_ih, b_hh, h_prev, acts, h_n, h, h_bf16)
_GRU_FORWARD_ARGS = [_I64, _I64, _PTR, _PTR, _INT, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR, _PTR]
# gru_backward_step(B, H, dh_rec, mm_bf16, d_out, acts, h_n, h_prev, dh_carry, d_x, d_hp,
#                   db_ih, db_hh)
_GRU_BACKWARD_ARGS = [_I64, _I64, _PTR, _INT, *[_PTR] * 9]
# lstm_pack_forward(H, w_hh, packed, threads)
_PACK_ARGS = [_I64, _PTR, _PTR, _INT]
# lstm_window_forward(T, B, H, x_proj, bias, h0, c0, packed, out, acts, cells, tanh_c, threads)
_WINDOW_FORWARD_ARGS = [_I64, _I64, _I64, *[_PTR] * 9, _INT]
# lstm_window_backward(T, B, H, packed, d_out, acts, cells, tanh_c, dc, d_gates, d_pairs,
#                      d_bias, dh0, threads)
_WINDOW_BACKWARD_ARGS = [_I64, _I64, _I64, *[_PTR] * 10, _INT]
# bf16_pack_kn / bf16_pack_nk / bf16_pair_rows(K, N or M, src, src_bf16, ld, dst, threads)
_GEMM_PACK_ARGS = [_I64, _I64, _PTR, _INT, _I64, _PTR, _INT]
# bf16_gemm(M, N, K, a, lda, packed, bias, row_scale, c, c_bf16, ldc, extra, threads)
_GEMM_ARGS = [_I64, _I64, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _INT, _I64, _PTR, _INT]
# sgd_step(R, C, p, g, coef, alpha, nk, kn, threads)
_SGD_ARGS = [_I64, _I64, _PTR, _PTR, ctypes.c_float, ctypes.c_float, _PTR, _PTR, _INT]
# bf16_gemm_xent(M, N, K, a, lda, packed, bias, targets, nll, threads)
_GEMM_XENT_ARGS = [_I64, _I64, _I64, _PTR, _I64, _PTR, _PTR, _PTR, _PTR, _INT]
# softmax_xent(N, V, scores, targets, nll, grad, pairs, threads)
_XENT_ARGS = [_I64, _I64, _PTR, _PTR, _PTR, _INT, _PTR, _INT]
# sampled_xent(N, M, used, scores, hit, extra, nll, d_extra, pairs, threads)
_SAMPLED_XENT_ARGS = [_I64, _I64, _I64, *[_PTR] * 6, _INT]


@dataclass(frozen=True)
class StepKernels:
    """The entry points; arguments are sizes, data pointers and 0/1 dtype flags.

    Every tensor behind a pointer is a contiguous CPU tensor: fp32, or bf16 where the
    flag (or the ``*_bf16`` output) says so. See ``kernels/lstm_step.c`` and
    ``kernels/gru_step.c`` for the layouts.
    """

    lstm_forward_step: Callable[..., None]  # ctypes functions of the built library
    lstm_backward_step: Callable[..., None]
    gru_forward_step: Callable[..., None]
    gru_backward_step: Callable[..., None]
    # lstm_window.c and gemm_bf16.c (None where the CPU or the build lacks AVX-512 BF16;
    # lstm_window.py and bf16_gemm.py check them against torch before first use)
    window: WindowKernels | None = None
    gemm: GemmKernels | None = None


@dataclass(frozen=True, eq=False)  # hashed by identity: lstm_window checks each build once
class WindowKernels:
    """lstm_window.c's entry points: pack W_hh (4H, H) fp32 for the forward
    (``packed_forward_size(H)`` bf16 elements; the backward reads GemmKernels.pack_kn's
    layout), then run a window's forward or backward on ``threads`` threads (see the C
    file for the layouts)."""

    packed_forward_size: Callable[[int], int]
    pack_forward: Callable[..., None]
    forward: Callable[..., None]
    backward: Callable[..., None]


@dataclass(frozen=True, eq=False)  # hashed by identity: bf16_gemm checks each build once
class GemmKernels:
    """gemm_bf16.c's entry points: pack the second operand (``packed_size(K, N)`` bf16
    elements) from a (K, N) or an (N, K) matrix, lay out a (K, M) matrix as the transpose
    first operand (``pair_rows_size(K, M)``), and multiply, or multiply and score each row
    against a target without keeping the product (see the C file); sgd_step.c's
    update that writes a weight's packed copies in the same pass; softmax_xent.c's loss
    per row of bf16 scores (full or sampled softmax), which leaves the gradient in both
    operand layouts."""

    packed_size: Callable[[int, int], int]
    pair_rows_size: Callable[[int, int], int]
    pack_kn: Callable[..., None]
    pack_nk: Callable[..., None]
    pair_rows: Callable[..., None]
    gemm: Callable[..., None]
    gemm_xent: Callable[..., None]
    sgd_step: Callable[..., None]
    softmax_xent: Callable[..., None]
    sampled_xent: Callable[..., None]


def loaded() -> StepKernels:
    """The kernels, for a caller that has checked `usable` (RuntimeError otherwise)."""
    k = step_kernels()
    if k is None:
        raise RuntimeError("the C step kernels are not available (check native.usable first)")
    return k


def usable(*tensors: Tensor) -> bool:
    """Whether tensors can go to the kernels (CPU, fp32) and the kernels exist.

    The callers hand the kernels contiguous copies where a tensor is not contiguous.
    """
    ok = all(t.device.type == "cpu" and t.dtype == torch.float32 for t in tensors)
    return ok and step_kernels() is not None


@functools.cache  # built (or found in the cache) and checked once per process
def step_kernels() -> StepKernels | None:
    if os.environ.get(ENV_SWITCH, "1") == "0":
        log.info("native RNN kernels off (%s=0)", ENV_SWITCH)
        return None
    try:
        lib = ctypes.CDLL(str(_build()))
    except (OSError, subprocess.SubprocessError) as e:
        log.warning(
            "C step kernels unavailable (%s); the hand-written LSTM/GRU run on torch ops, "
            "slower (%s=0 turns the kernels off without this warning)",
            e,
            ENV_SWITCH,
        )
        return None
    signatures = {
        "lstm_forward_step": _FORWARD_ARGS,
        "lstm_backward_step": _BACKWARD_ARGS,
        "gru_forward_step": _GRU_FORWARD_ARGS,
        "gru_backward_step": _GRU_BACKWARD_ARGS,
    }
    for name, args in signatures.items():
        getattr(lib, name).argtypes = args
        getattr(lib, name).restype = None
    kernels = StepKernels(**{name: getattr(lib, name) for name in signatures})
    if not (_lstm_agrees_with_torch(kernels) and _gru_agrees_with_torch(kernels)):
        log.warning("native RNN kernels disagree with torch; using torch ops")
        return None
    lib.lstm_window_available.restype = lib.gemm_bf16_available.restype = _INT
    if not (lib.lstm_window_available() and lib.gemm_bf16_available()):
        log.info("no AVX-512 BF16: bf16 matmuls run on torch, the LSTM window step by step")
        return kernels
    return dataclasses.replace(kernels, window=_window_kernels(lib), gemm=_gemm_kernels(lib))


def _bind(lib: ctypes.CDLL, name: str, args: Sequence[type], result: type | None = None) -> Any:
    f = getattr(lib, name)
    f.argtypes, f.restype = args, result
    return f


def _window_kernels(lib: ctypes.CDLL) -> WindowKernels:
    """lstm_window.c's entry points."""
    return WindowKernels(
        _bind(lib, "lstm_packed_forward_size", [_I64], _I64),
        _bind(lib, "lstm_pack_forward", _PACK_ARGS),
        _bind(lib, "lstm_window_forward", _WINDOW_FORWARD_ARGS),
        _bind(lib, "lstm_window_backward", _WINDOW_BACKWARD_ARGS),
    )


def _gemm_kernels(lib: ctypes.CDLL) -> GemmKernels:
    """gemm_bf16.c's entry points."""
    return GemmKernels(
        _bind(lib, "bf16_packed_size", [_I64, _I64], _I64),
        _bind(lib, "bf16_pair_rows_size", [_I64, _I64], _I64),
        _bind(lib, "bf16_pack_kn", _GEMM_PACK_ARGS),
        _bind(lib, "bf16_pack_nk", _GEMM_PACK_ARGS),
        _bind(lib, "bf16_pair_rows", _GEMM_PACK_ARGS),
        _bind(lib, "bf16_gemm", _GEMM_ARGS),
        _bind(lib, "bf16_gemm_xent", _GEMM_XENT_ARGS),
        _bind(lib, "sgd_step", _SGD_ARGS),
        _bind(lib, "softmax_xent", _XENT_ARGS),
        _bind(lib, "sampled_xent", _SAMPLED_XENT_ARGS),
    )


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
    texts = [p.read_bytes() for p in (*SOURCES, *HEADERS)]
    flags = " ".join((*FLAGS, OPENMP)).encode()
    key = hashlib.sha256(
        b"\0".join([*texts, flags, version.encode(), _cpu_id().encode()])
    ).hexdigest()[:16]
    target = _cache_dir() / f"{LIBRARY}-{key}.so"
    if target.exists():
        return target
    target.parent.mkdir(parents=True, exist_ok=True)
    # Build beside the target and rename: processes building at once never see a torn file.
    with tempfile.TemporaryDirectory(dir=target.parent) as tmp:
        built = Path(tmp) / target.name
        for openmp in ([OPENMP], []):  # a compiler without OpenMP builds the serial version
            result = subprocess.run(
                [cc, *FLAGS, *openmp, "-o", str(built), *map(str, SOURCES)],
                capture_output=True,
                text=True,
                timeout=120,
            )
            if result.returncode == 0:
                break
        if result.returncode != 0:
            raise OSError(f"{cc} failed: {result.stderr.strip()[-500:]}")
        os.replace(built, target)
    log.info("built native RNN kernels: %s", target)
    # Builds of older sources or CPUs (lstm_step-*.so: before the GRU kernels joined).
    for old in [*target.parent.glob(f"{LIBRARY}-*.so"), *target.parent.glob("lstm_step-*.so")]:
        if old != target:
            old.unlink(missing_ok=True)  # a process that loaded it keeps its mapping
    return target


def _lstm_agrees_with_torch(k: StepKernels) -> bool:
    """One fp32 LSTM forward and backward step on values that reach both gate tails."""
    B, H = 3, 37  # H not a multiple of the vector width: the loop tails run too
    gen = torch.Generator().manual_seed(0)
    x_proj, rec = (torch.randn(B, 4 * H, generator=gen) * 6 for _ in range(2))
    bias = torch.randn(4 * H, generator=gen)
    c_prev = torch.randn(B, H, generator=gen)
    acts, c, tanh_c, h = torch.empty(B, 4 * H), *(torch.empty(B, H) for _ in range(3))
    k.lstm_forward_step(B, H, *ptrs(x_proj, rec), 0, *ptrs(bias, c_prev, acts, c, tanh_c, h), None)
    i, f, g, o = (x_proj + rec + bias).chunk(4, dim=1)
    i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
    want_c = f * c_prev + i * g
    ok = torch.allclose(acts, torch.cat((i, f, g, o), dim=1), atol=1e-6)
    ok = ok and torch.allclose(c, want_c, atol=1e-5)
    ok = ok and torch.allclose(h, o * want_c.tanh(), atol=1e-5)
    dh_rec, d_out, dc = (torch.randn(B, H, generator=gen) for _ in range(3))
    d_c = dc + (dh_rec + d_out) * o * (1 - tanh_c**2)
    d_gates, d_bias = torch.empty(B, 4 * H), torch.zeros(4 * H)
    k.lstm_backward_step(
        B, H, *ptrs(dh_rec), 0, *ptrs(d_out, acts, c_prev, tanh_c, dc, d_gates, d_bias)
    )
    want_i = d_c * g * i * (1 - i)
    ok = ok and torch.allclose(d_gates[:, :H], want_i, atol=1e-5)
    ok = ok and torch.allclose(d_bias, d_gates.sum(0), atol=1e-5)
    return ok and torch.allclose(dc, d_c * f, atol=1e-5)


def _gru_agrees_with_torch(k: StepKernels) -> bool:
    """One fp32 GRU forward and backward step, checked like the LSTM's."""
    B, H = 3, 37
    gen = torch.Generator().manual_seed(1)
    x_proj, rec = (torch.randn(B, 3 * H, generator=gen) * 6 for _ in range(2))
    b_ih, b_hh = (torch.randn(3 * H, generator=gen) for _ in range(2))
    h_prev = torch.randn(B, H, generator=gen)
    acts, h_n, h = torch.empty(B, 3 * H), torch.empty(B, H), torch.empty(B, H)
    k.gru_forward_step(B, H, *ptrs(x_proj, rec), 0, *ptrs(b_ih, b_hh, h_prev, acts, h_n, h), None)
    (x_r, x_z, x_n), (h_r, h_z, want_hn) = (t.chunk(3, dim=1) for t in (x_proj + b_ih, rec + b_hh))
    r, z = (x_r + h_r).sigmoid(), (x_z + h_z).sigmoid()
    n = (x_n + r * want_hn).tanh()
    ok = torch.allclose(acts, torch.cat((r, z, n), dim=1), atol=1e-6)
    ok = ok and torch.allclose(h_n, want_hn, atol=1e-5)
    ok = ok and torch.allclose(h, n + z * (h_prev - n), atol=1e-5)
    dh_rec, d_out, carry = (torch.randn(B, H, generator=gen) for _ in range(3))
    dh = dh_rec + d_out + carry
    d_x, d_hp = torch.empty(B, 3 * H), torch.empty(B, 3 * H)
    db_ih, db_hh = torch.zeros(3 * H), torch.zeros(3 * H)
    k.gru_backward_step(
        B, H, *ptrs(dh_rec), 0, *ptrs(d_out, acts, h_n, h_prev, carry, d_x, d_hp, db_ih, db_hh)
    )
    d_n = dh * (1 - z) * (1 - n * n)
    d_r = d_n * want_hn * r * (1 - r)
    ok = ok and torch.allclose(d_x[:, :H], d_r, atol=1e-5)
    ok = ok and torch.allclose(d_hp[:, 2 * H :], d_n * r, atol=1e-5)
    ok = ok and torch.allclose(db_ih, d_x.sum(0), atol=1e-5)
    ok = ok and torch.allclose(db_hh, d_hp.sum(0), atol=1e-5)
    return ok and torch.allclose(carry, dh * z, atol=1e-5)


def ptrs(*tensors: Tensor | None) -> list[int | None]:
    """The tensors' data pointers (None: a NULL pointer), for a kernel call."""
    return [None if t is None else t.data_ptr() for t in tensors]
