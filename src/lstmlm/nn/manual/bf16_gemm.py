"""bf16 matrix products on the C kernel of ``kernels/gemm_bf16.c``, for training's
window-wide products: the LSTM's input projection and weight gradients, and the fused
decoder + cross-entropy's three products.

Why not ``torch.mm``: on the 2-core AMD EPYC (Zen 4, AVX-512 BF16, no AMX) oneDNN ran
the medium step's products at 356-396 GFLOP/s on two threads, this kernel at 390-440,
packing included where the operand changes every step (benchmarks/RESULTS.md, round
10). Its accumulators are fp32 and a bias or a per-row scale is applied to them before
the one rounding, so results are at least as close to fp32 as oneDNN's.

The second operand is packed once per product (``pack``: from a (K, N) matrix, or the
transpose of an (N, K) one such as an ``nn.Linear`` weight); the first is a row-major
bf16 matrix (``Rows``) or the transpose of one (``transposed``, laid out by the kernel).
``usable()`` says whether the kernel exists here and passed its check against torch;
callers keep their torch path for everything else (fp32, other CPUs, no compiler).
"""

from __future__ import annotations

import functools
import logging
from dataclasses import dataclass

import torch
from torch import Tensor

from lstmlm.nn.manual import native, shadows
from lstmlm.nn.manual.native import GemmKernels

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Packed:
    """The second operand B (K, N), packed: bf16 panels of 64 columns."""

    data: Tensor
    K: int
    N: int


@dataclass(frozen=True)
class Left:
    """The first operand A (M, K): row-major bf16 (lda = its row stride), or with lda 0 the
    kernel's layout of a transposed matrix."""

    data: Tensor
    M: int
    K: int
    lda: int


def usable(*tensors: Tensor) -> bool:
    """Whether the kernel exists here, passed its check, and takes these tensors (CPU)."""
    if not all(t.device.type == "cpu" for t in tensors):
        return False
    k = native.step_kernels()
    return k is not None and k.gemm is not None and _checked(k.gemm)


def _kernels() -> GemmKernels:
    gemm = native.loaded().gemm
    if gemm is None:
        raise RuntimeError("no bf16 GEMM kernel here (check bf16_gemm.usable first)")
    return gemm


def _source(t: Tensor) -> tuple[Tensor, int]:
    """t as the kernel reads a matrix: fp32 or bf16 rows with unit column stride."""
    if t.dtype not in (torch.float32, torch.bfloat16):
        t = t.float()
    if t.stride(-1) != 1:
        t = t.contiguous()
    return t, int(t.dtype == torch.bfloat16)


def pack(b: Tensor, transpose: bool = False) -> Packed:
    """B = b (K, N), or with `transpose` B = b.T for b (N, K): fp32 (rounded to nearest even)
    or bf16, packed for `matmul`."""
    k = _kernels()
    b, is_bf16 = _source(b)
    K, N = (b.size(1), b.size(0)) if transpose else (b.size(0), b.size(1))
    out = torch.empty(k.packed_size(K, N), dtype=torch.bfloat16)
    fill = k.pack_nk if transpose else k.pack_kn
    fill(K, N, b.data_ptr(), is_bf16, b.stride(0), out.data_ptr(), torch.get_num_threads())
    return Packed(out, K, N)


def pack_weight(weight: Tensor, transpose: bool = False, keep_copy: bool = False) -> Packed:
    """``pack(weight, transpose)`` for a weight: its kept copy where there is one (see
    shadows.py; `keep_copy` keeps this one while the weight is unchanged)."""
    layout = "nk" if transpose else "kn"
    data = shadows.packed(weight, layout, _MAKE[layout], keep_copy)
    K, N = (weight.size(1), weight.size(0)) if transpose else (weight.size(0), weight.size(1))
    return Packed(data, K, N)


def _pack_nk(weight: Tensor) -> Tensor:
    return pack(weight, transpose=True).data


def _pack_kn(weight: Tensor) -> Tensor:
    return pack(weight).data


_MAKE = {"nk": _pack_nk, "kn": _pack_kn}  # the layouts sgd_step.c also writes


def rows(a: Tensor) -> Left:
    """A = a (M, K), bf16 (cast if not)."""
    a = a.to(torch.bfloat16)
    if a.stride(-1) != 1:
        a = a.contiguous()
    return Left(a, a.size(0), a.size(1), a.stride(0))


def transposed(a: Tensor, zeroed: bool = False) -> Left:
    """A = a.T for a (K, M), fp32 (rounded to nearest even) or bf16 (`zeroed`: the layout's
    padding past column M zero, not left as it was: for comparing whole buffers)."""
    k = _kernels()
    a, is_bf16 = _source(a)
    K, M = a.shape
    out = (torch.zeros if zeroed else torch.empty)(k.pair_rows_size(K, M), dtype=torch.bfloat16)
    k.pair_rows(K, M, a.data_ptr(), is_bf16, a.stride(0), out.data_ptr(), torch.get_num_threads())
    return Left(out, M, K, 0)


def pair_rows_buffer(K: int, M: int) -> Left:
    """An uninitialized first operand A = x.T (M, K) for a (K, M) matrix x, for a kernel
    that writes the layout itself (zeroed where K is odd: the last pair's second half)."""
    size = _kernels().pair_rows_size(K, M)
    make = torch.zeros if K % 2 else torch.empty
    data = make(size, dtype=torch.bfloat16)
    return Left(data, M, K, 0)


def softmax_xent(scores: Tensor, targets: Tensor, grad: bool) -> tuple[Tensor, Left | None]:
    """The cross-entropy of each row of bf16 scores (N, V) against targets (N,): nll (N,)
    fp32. With `grad`, each row of `scores` is overwritten in place by its gradient
    softmax - onehot (bf16), and the second result is that gradient's transpose as a first
    operand (what ``transposed(scores)`` would give), written in the same pass."""
    k = _kernels()
    N, V = scores.shape
    if not (scores.dtype == torch.bfloat16 and scores.is_contiguous()):
        raise ValueError("softmax_xent takes contiguous bf16 scores")
    targets = _checked_targets(targets, V)
    nll = torch.empty(N)
    pairs = torch.empty(k.pair_rows_size(N, V), dtype=torch.bfloat16) if grad else None
    k.softmax_xent(
        N, V, scores.data_ptr(), targets.data_ptr(), nll.data_ptr(), int(grad),
        None if pairs is None else pairs.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return nll, None if pairs is None else Left(pairs, V, N, 0)


def sampled_xent(
    scores: Tensor, hit: Tensor, extra: Tensor, used: int
) -> tuple[Tensor, Tensor, Left]:
    """The sampled-softmax loss of each row of bf16 scores (N, M) (nn/sampled.py): of
    the columns below `used` but hit[n] (-1 for none) and the row's target score extra[n]
    (fp32, outside the row), nll[n] = log(exp(extra[n]) + sum exp(scores[n])) - extra[n].
    Returns nll (N,) and the gradient of each nll[n] with respect to extra[n] (N,), fp32;
    each row of `scores` is overwritten in place by its gradient (bf16, 0 where a column
    takes no part), and the third result is that gradient's transpose as a first operand."""
    N, M = scores.shape
    if not (scores.dtype == torch.bfloat16 and scores.is_contiguous()):
        raise ValueError("sampled_xent takes contiguous bf16 scores")
    if not 0 < used <= M:
        raise ValueError(f"used must be in [1, {M}], got {used}")
    hit = hit.to(torch.int64).contiguous()
    if hit.numel() and (int(hit.min()) < -1 or int(hit.max()) >= used):
        raise ValueError(
            f"hit columns must lie in [-1, {used}), got {int(hit.min())} .. {int(hit.max())}"
        )
    extra = extra.detach().float().contiguous()
    nll, d_extra = torch.empty(N), torch.empty(N)
    k = _kernels()
    pairs = torch.empty(k.pair_rows_size(N, M), dtype=torch.bfloat16)
    k.sampled_xent(
        N, M, used, scores.data_ptr(), hit.data_ptr(), extra.data_ptr(), nll.data_ptr(),
        d_extra.data_ptr(), pairs.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return nll, d_extra, Left(pairs, M, N, 0)


def matmul_xent(a: Left, b: Packed, bias: Tensor | None, targets: Tensor) -> Tensor:
    """The cross-entropy of each row of ``A @ B + bias`` (M, N) against targets (M,): nll
    (M,) fp32, the product's values rounded to bf16 first as ``matmul`` would store them
    (the numbers of ``softmax_xent(matmul(a, b, bf16, bias), targets, False)``), without
    ever holding the (M, N) product: memory O(M). A row-major."""
    if a.K != b.K or a.lda == 0:
        raise ValueError("matmul_xent takes a row-major A with as many columns as B has rows")
    targets = _checked_targets(targets, b.N)
    nll = torch.empty(a.M)
    bias = _fp32(bias)
    _kernels().gemm_xent(
        a.M, b.N, a.K, a.data.data_ptr(), a.lda, b.data.data_ptr(),
        None if bias is None else bias.data_ptr(), targets.data_ptr(), nll.data_ptr(),
        torch.get_num_threads(),
    )  # fmt: skip
    return nll


def _checked_targets(targets: Tensor, V: int) -> Tensor:
    targets = targets.to(torch.int64).contiguous()
    if targets.numel() and (int(targets.min()) < 0 or int(targets.max()) >= V):
        low, high = int(targets.min()), int(targets.max())
        raise ValueError(f"targets must lie in [0, {V}), got {low} .. {high}")
    return targets


def matmul(
    a: Left,
    b: Packed,
    out_dtype: torch.dtype = torch.float32,
    bias: Tensor | None = None,
    row_scale: Tensor | None = None,
    last_column: Tensor | None = None,
) -> Tensor:
    """A @ B (M, N) in fp32 or bf16: ``(A @ B + bias) * row_scale[:, None]`` computed in
    fp32 and rounded once. bias (N,) and row_scale (M,) are fp32. With `last_column` (M,)
    fp32, B's last column's products go there and the result has N - 1 columns."""
    if a.K != b.K:
        raise ValueError(f"inner sizes differ: A has {a.K} columns, B {b.K} rows")
    if out_dtype not in (torch.float32, torch.bfloat16):
        raise ValueError(f"out_dtype must be float32 or bfloat16, got {out_dtype}")
    n_out = b.N - (last_column is not None)
    out = torch.empty(a.M, n_out, dtype=out_dtype)
    vectors = [_fp32(v) for v in (bias, row_scale)]
    k = _kernels()
    k.gemm(
        a.M, b.N, a.K, a.data.data_ptr(), a.lda, b.data.data_ptr(),
        *(None if v is None else v.data_ptr() for v in vectors),
        out.data_ptr(), int(out_dtype == torch.bfloat16), n_out,
        None if last_column is None else last_column.data_ptr(), torch.get_num_threads(),
    )  # fmt: skip
    return out


def _fp32(v: Tensor | None) -> Tensor | None:
    return None if v is None else v.detach().float().contiguous()


@functools.cache  # once per build of the kernels
def _checked(gemm: GemmKernels) -> bool:
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # whatever the caller's mode
        if _agrees_with_torch():
            return True
    log.warning("the bf16 GEMM kernel disagrees with torch; bf16 products run on torch.mm")
    return False


def _agrees_with_torch() -> bool:
    """Each operand form and epilogue on small odd sizes (partial tiles, panels and pairs)
    against torch's fp32 product of the same bf16-rounded operands."""
    gen = torch.Generator().manual_seed(3)
    M, K, N = 13, 37, 70
    a, w = torch.randn(M, K, generator=gen), torch.randn(N, K, generator=gen)
    bias, scale = torch.randn(N, generator=gen), torch.randn(M, generator=gen)
    want = a.bfloat16().float() @ w.bfloat16().float().t()  # (M, N)
    got = [
        matmul(rows(a), pack(w, transpose=True), bias=bias, row_scale=scale),
        matmul(transposed(a.t().contiguous()), pack(w.t().contiguous())),
        matmul(rows(a.bfloat16()), pack(w.t().bfloat16()), torch.bfloat16).float(),
    ]
    last = torch.empty(M)
    got.append(torch.cat((matmul(rows(a), pack(w, True), last_column=last), last[:, None]), 1))
    wants = [(want + bias) * scale[:, None], want, want, want]
    pairs = zip(got, wants, strict=True)
    if not all(torch.allclose(g, x, rtol=1e-2, atol=1e-2 * x.abs().max().item()) for g, x in pairs):
        return False
    targets = torch.randint(0, N, (M,), generator=gen)  # the scoring: as softmax_xent does it
    scores = matmul(rows(a), pack(w, True), torch.bfloat16, bias)
    folded = matmul_xent(rows(a), pack(w, True), bias, targets)
    return torch.allclose(folded, softmax_xent(scores, targets, False)[0], atol=1e-5, rtol=1e-5)
