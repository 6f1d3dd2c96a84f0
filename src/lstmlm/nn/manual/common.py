"""What the hand-written layers share: matmul routing (oneDNN), the window-wide input
projection, state checks, and the time loop of the C-kernel forwards.

See the package docstring (``lstmlm.nn.manual``) for how the layers are built.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import bf16_gemm
from lstmlm.nn.manual.cells import check_sizes, reset_uniform

IMPLS = ("function", "loop")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
StepLinear = Callable[[Tensor], Tensor]


def check_options(impl: str, precision: str) -> None:
    if impl not in IMPLS:
        raise ValueError(f"impl must be one of {IMPLS}, got {impl!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {tuple(PRECISIONS)}, got {precision!r}")


# Matmuls go through oneDNN where that is faster on the CPUs this was measured on
# (AMD EPYC, 2 threads, torch 2.13): the small-batch ones inside the time loop with the
# weight packed once per window (about 2x faster than ``torch.mm`` for
# (20, 650) x (650, 2600), fp32 and bf16), and the window-wide fp32 ones (about 1.3x).
# The ops are PyTorch-internal (the ones inductor uses for CPU linear layers), so they
# are probed once, and every caller falls back to ``torch.mm`` when they are missing,
# switched off here, or the tensors are not CPU fp32 / bf16.
USE_ONEDNN = True


def matmul_dtype(precision: str, x: Tensor) -> torch.dtype | None:
    """The layer's own precision, or bf16 when called under a bf16 autocast region."""
    dtype = PRECISIONS[precision]
    if dtype is None and torch.is_autocast_enabled(x.device.type):
        if torch.get_autocast_dtype(x.device.type) == torch.bfloat16:
            return torch.bfloat16
    return dtype


def full_precision(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


@functools.cache  # probed once per process
def onednn_available() -> bool:
    try:
        w = torch.linspace(-1.0, 1.0, 24).view(6, 4)
        a = torch.linspace(0.5, -0.5, 12).view(3, 4)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
        r = torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
        return bool(torch.allclose(r, a @ w.t(), atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


def onednn_ok(t: Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    return USE_ONEDNN and t.device.type == "cpu" and t.dtype in dtypes and onednn_available()


def matmul_nt(a: Tensor, b: Tensor, mm_dtype: torch.dtype | None) -> Tensor:
    """``a @ b.T`` for a (M, K), b (N, K), in ``mm_dtype`` when given; result in a's dtype."""
    if mm_dtype is not None and (a.dtype != mm_dtype or b.dtype != mm_dtype):
        return (a.to(mm_dtype) @ b.to(mm_dtype).t()).to(a.dtype)
    if onednn_ok(a, (torch.float32,)):
        return torch.ops.mkldnn._linear_pointwise(
            a.contiguous(), b.contiguous(), None, "none", [], ""
        )
    return a @ b.t()


class _Linear(torch.autograd.Function):
    """``x @ weight.T (+ bias)`` for a whole window, every matmul routed by ``matmul_nt``.

    The result is in x's dtype, or with ``keep_mm_dtype`` in the matmul dtype as the
    matmul left it (no bias then: the caller adds it later, in fp32).
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        mm_dtype: torch.dtype | None,
        keep_mm_dtype: bool = False,
    ) -> Tensor:
        ctx.dtypes = (x.dtype, weight.dtype)
        ctx.kernel = mm_dtype == torch.bfloat16 and bf16_gemm.usable(x, weight)
        if ctx.kernel:  # the C GEMM (bf16_gemm.py): reads the fp32 weight, adds the bias in fp32
            xm = x.to(torch.bfloat16)  # (N, in), saved: the weight's gradient reads it
            ctx.save_for_backward(xm, weight)
            wt = bf16_gemm.pack_weight(weight, transpose=True)  # B = weight.T
            out_dtype = torch.bfloat16 if keep_mm_dtype else x.dtype
            return bf16_gemm.matmul(
                bf16_gemm.rows(xm), wt, out_dtype, None if keep_mm_dtype else bias
            )
        # Cast once: the backward reuses the matmul-dtype copies (half the bytes saved).
        xm = x if mm_dtype is None else x.to(mm_dtype)  # (N, in)
        wm = weight if mm_dtype is None else weight.to(mm_dtype)  # (out, in)
        ctx.save_for_backward(xm, wm)
        y = matmul_nt(xm, wm, None)  # (N, out)
        if keep_mm_dtype:
            return y
        y = y.to(x.dtype)
        return y if bias is None else y + bias

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor) -> tuple[Tensor | None, ...]:
        xm, wm = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        d_x = d_weight = d_bias = None
        if ctx.needs_input_grad[2]:
            d_bias = d_out.sum(dim=0)
        if ctx.kernel:  # wm is the fp32 weight (out, in)
            left = bf16_gemm.rows(d_out)  # (N, out)
            if ctx.needs_input_grad[0]:
                d_x = bf16_gemm.matmul(left, bf16_gemm.pack_weight(wm), x_dtype)  # (N, in)
            if ctx.needs_input_grad[1]:
                d_t = bf16_gemm.transposed(left.data)  # d_out.T (out, N)
                d_weight = bf16_gemm.matmul(d_t, bf16_gemm.pack(xm), w_dtype)  # (out, in)
            return d_x, d_weight, d_bias, None, None
        dm = d_out.to(wm.dtype)  # (N, out)
        if ctx.needs_input_grad[0]:
            d_x = matmul_nt(dm, wm.t(), None).to(x_dtype)  # (N, in)
        if ctx.needs_input_grad[1]:
            d_weight = matmul_nt(dm.t(), xm.t(), None).to(w_dtype)  # (out, in)
        return d_x, d_weight, d_bias, None, None


def step_linear(weight: Tensor, batch: int, mm_dtype: torch.dtype | None) -> StepLinear:
    """``f(a) = a @ weight.T`` for a (batch, in), weight (out, in); result in the matmul dtype.

    The weight is cast to ``mm_dtype`` (if given) and, when oneDNN is usable, packed once.
    """
    w = weight if mm_dtype is None else weight.to(mm_dtype)
    if onednn_ok(w, (torch.float32, torch.bfloat16)):
        packed = torch.ops.mkldnn._reorder_linear_weight(w.contiguous(), batch)

        def onednn(a: Tensor) -> Tensor:
            return torch.ops.mkldnn._linear_pointwise(
                a.to(w.dtype).contiguous(), packed, None, "none", [], ""
            )

        return onednn
    w_t = w.t()

    def plain(a: Tensor) -> Tensor:
        return a.to(w.dtype) @ w_t

    return plain


def project(
    x: Tensor,
    weight_ih: Tensor,
    bias: Tensor | None,
    mm_dtype: torch.dtype | None,
    keep_mm_dtype: bool = False,
) -> Tensor:
    """Input projection of a whole window in one matmul: (T, B, I) -> (T, B, G*H)."""
    T, B, _ = x.shape
    x2 = x.reshape(T * B, -1)  # (T*B, I)
    y = _Linear.apply(x2, weight_ih, bias, mm_dtype, keep_mm_dtype)  # (T*B, G*H)
    return y.view(T, B, -1)


def split_input(x: Tensor, input_size: int, name: str) -> tuple[Tensor, bool]:
    """Validate x and return it as (T, B, I) plus whether the caller passed a batch."""
    if x.dim() not in (2, 3) or x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expects input of shape (T, B, {input_size}) or (T, {input_size}), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} got an empty sequence (T = 0)")
    return (x, True) if x.dim() == 3 else (x.unsqueeze(1), False)


def state_in(s: Tensor | None, batched: bool, B: int, H: int, like: Tensor, name: str) -> Tensor:
    """(1, B, H) (or (1, H) unbatched) state -> (B, H); None -> zeros."""
    if s is None:
        return like.new_zeros(B, H)
    if not batched:
        s = s.unsqueeze(1)
    if s.shape != (1, B, H):
        raise ValueError(f"{name} state must have shape (1, {B}, {H}), got {tuple(s.shape)}")
    return s[0]


def state_out(s: Tensor, batched: bool) -> Tensor:
    """(B, H) -> (1, B, H) (or (1, H) unbatched)."""
    return s.unsqueeze(0) if batched else s


def needs_grad(*tensors: Tensor | None) -> bool:
    """Whether autograd will want a gradient of any of the tensors (None: absent)."""
    return torch.is_grad_enabled() and any(t is not None and t.requires_grad for t in tensors)


def prev_states(h0: Tensor, out: Tensor) -> Tensor:
    """The state each step of a window started from: h0 (B, H), out (T, B, H) -> (T, B, H)."""
    return torch.cat((h0.unsqueeze(0), out[:-1]), dim=0)


def weight_hh_grad(
    d_pre: Tensor, h_prev: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype | None
) -> Tensor:
    """Gradient of ``weight_hh`` (G, H) from the window's gradients of ``h_prev @ W_hh.T``.

    d_pre (T, B, G), h_prev (T, B, H): one (G, T*B) x (T*B, H) matmul, in the weight's dtype.
    """
    T, B, G = d_pre.shape
    flat_d, flat_h = d_pre.reshape(T * B, G), h_prev.reshape(T * B, -1)
    if mm_dtype == torch.bfloat16 and bf16_gemm.usable(flat_d, flat_h):
        d_t = bf16_gemm.transposed(flat_d)  # d_pre.T (G, T*B)
        return bf16_gemm.matmul(d_t, bf16_gemm.pack(flat_h), weight_hh.dtype)
    return matmul_nt(flat_d.t(), flat_h.t(), mm_dtype).to(weight_hh.dtype)


def native_forward_steps(
    x_proj: Tensor, h0: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype | None, out: Tensor
) -> Iterator[tuple[int, int, int, int | None]]:
    """The time loop of a forward on the C kernels, all but the kernel call itself.

    x_proj (T, B, G*H) contiguous, in the matmul dtype; h0 (B, H); out (T, B, H), which the
    caller's kernel call fills with h_t at step t. Yields for t = 0 .. T-1: t, the
    address of x_proj[t], the address of ``h_{t-1} @ W_hh.T`` (B, G*H) in x_proj's dtype,
    and where the kernel writes h_t's bf16 copy for the next matmul (None with fp32
    matmuls, which read out[t]). Both kernels (LSTM, GRU) run from this loop.
    """
    T, B, _ = x_proj.shape
    rec = step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, G*H)
    bf16 = x_proj.dtype == torch.bfloat16
    h_mm = x_proj.new_empty(2, B, out.size(-1)) if bf16 else None  # ring of bf16 h copies
    step_x = x_proj[0].numel() * x_proj.element_size()  # bytes
    h_in = h0
    for t in range(T):
        r = rec(h_in).to(x_proj.dtype).contiguous()  # (B, G*H), alive through the call
        h_next = out[t] if h_mm is None else h_mm[t % 2]  # what the next matmul reads
        yield t, x_proj.data_ptr() + t * step_x, r.data_ptr(), h_next.data_ptr() if bf16 else None
        h_in = h_next


def add_layer_parameters(layer: nn.Module, input_size: int, hidden_size: int, gates: int) -> None:
    """nn.LSTM's / nn.GRU's single-layer parameters on `layer`, in their order and shapes:
    weight_ih_l0 (G*H, I), weight_hh_l0 (G*H, H), bias_ih_l0 and bias_hh_l0 (G*H,), with
    G = `gates` (4 for an LSTM, 3 for a GRU); also input_size, hidden_size, num_layers."""
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    layer.input_size = input_size  # type: ignore[assignment]  # plain ints on the module
    layer.hidden_size = hidden_size  # type: ignore[assignment]
    layer.num_layers = 1  # type: ignore[assignment]
    layer.weight_ih_l0 = nn.Parameter(torch.empty(gates * hidden_size, input_size))
    layer.weight_hh_l0 = nn.Parameter(torch.empty(gates * hidden_size, hidden_size))
    layer.bias_ih_l0 = nn.Parameter(torch.empty(gates * hidden_size))
    layer.bias_hh_l0 = nn.Parameter(torch.empty(gates * hidden_size))


class WindowLayer(nn.Module):
    """The shell of the hand-written LSTM and GRU: parameters, options, and a forward that
    runs the subclass's `_forward(x, hx, mm_dtype)` outside any autocast, in the matmul
    dtype its precision (or a bf16 autocast region around the call) asks for.

    impl: ``"function"`` (one autograd node per window, hand-written BPTT) or ``"loop"``
    (plain autograd loop). precision: ``"fp32"`` (matmuls in the input dtype) or
    ``"bf16"`` (bfloat16 matmuls, state and gradients in the input dtype).
    """

    GATES = 0  # 4 (LSTM) or 3 (GRU)
    input_size: int
    hidden_size: int
    num_layers: int
    weight_ih_l0: nn.Parameter
    weight_hh_l0: nn.Parameter
    bias_ih_l0: nn.Parameter
    bias_hh_l0: nn.Parameter

    def __init__(
        self, input_size: int, hidden_size: int, impl: str = "function", precision: str = "fp32"
    ) -> None:
        super().__init__()
        check_options(impl, precision)
        self.impl = impl
        self.precision = precision
        add_layer_parameters(self, input_size, hidden_size, self.GATES)
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.LSTM`` / ``nn.GRU``."""

    def forward(self, x: Tensor, hx: Any = None) -> tuple[Tensor, Any]:
        mm_dtype = matmul_dtype(self.precision, x)
        with torch.autocast(x.device.type, enabled=False):  # precision is explicit here
            return self._forward(full_precision(x), hx, mm_dtype)

    def _forward(self, x: Tensor, hx: Any, mm_dtype: torch.dtype | None) -> tuple[Tensor, Any]:
        raise NotImplementedError

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, impl={self.impl!r}, "
            f"precision={self.precision!r}"
        )
