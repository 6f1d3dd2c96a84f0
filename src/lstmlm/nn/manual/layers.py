"""Hand-written single-layer LSTM / GRU / Mogrifier-LSTM, drop-in for one-layer nn.LSTM / nn.GRU.

Call them exactly like a single-layer ``nn.LSTM`` / ``nn.GRU`` (time-first):
``out, hx = layer(x, hx)`` with x (T, B, I) (or unbatched (T, I)), out (T, B, H),
hx = (h, c) each (1, B, H) for the LSTMs and h (1, B, H) for the GRU; hx may be None.
Parameters carry nn.LSTM's single-layer names (``weight_ih_l0``, ``weight_hh_l0``,
``bias_ih_l0``, ``bias_hh_l0``), shapes and initialisation, so state dicts move
between these layers and ``nn.LSTM(I, H)`` / ``nn.GRU(I, H)`` with ``strict=True``.

Weights are read by attribute at call time, so
``torch.func.functional_call(layer, {"weight_hh_l0": dropped}, (x, hx))`` applies
weight drop (DropConnect) without touching the module.

Speed: the input projection of the whole window is one matmul; only the recurrent
part loops over time. With ``impl="function"`` the recurrence of the whole
window is a single autograd node whose backward is hand-written BPTT, so autograd does
no per-step bookkeeping. On CPU fp32 tensors each step's elementwise work (gates, state,
their gradients) is one call into the C kernels of ``native.py``
(``_LSTMWindowNative`` / ``_GRUWindowNative``), built on first use; without a C
compiler the same loop runs on torch ops (``_LSTMWindow`` / ``_GRUWindow``). When no
gradient is needed, the GRU runs the same loop without saving anything and the LSTM
hands the window to torch's fused kernel (``torch.lstm``; oneDNN on CPU), which is
faster there and has nothing to save either. ``impl="loop"`` is a plain
autograd loop over the step functions of ``cells.py``, kept as a reference.
``precision="bf16"`` runs every matmul in bfloat16 (fp32 accumulation inside the
kernel, product rounded to bf16) while states, gates and gradients stay in the input
dtype. The window Functions are differentiable once (no double backward, no
``torch.func`` transforms such as vmap/grad; ``functional_call`` is fine); use
``impl="loop"`` where those are needed.
"""

from __future__ import annotations

import contextlib
import functools
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import native
from lstmlm.nn.manual.cells import (
    LSTMState,
    build_mogrifier,
    check_sizes,
    gru_cell,
    lstm_cell,
    mogrify,
    reset_uniform,
)

IMPLS = ("function", "loop")
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16}
StepLinear = Callable[[Tensor], Tensor]


def _check_options(impl: str, precision: str) -> None:
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


def _mm_dtype(precision: str, x: Tensor) -> torch.dtype | None:
    """The layer's own precision, or bf16 when called under a bf16 autocast region."""
    dtype = PRECISIONS[precision]
    if dtype is None and torch.is_autocast_enabled(x.device.type):
        if torch.get_autocast_dtype(x.device.type) == torch.bfloat16:
            return torch.bfloat16
    return dtype


def _full(x: Tensor) -> Tensor:
    return x.float() if x.dtype in (torch.bfloat16, torch.float16) else x


@functools.cache  # probed once per process
def _onednn_available() -> bool:
    try:
        w = torch.linspace(-1.0, 1.0, 24).view(6, 4)
        a = torch.linspace(0.5, -0.5, 12).view(3, 4)
        packed = torch.ops.mkldnn._reorder_linear_weight(w, 3)
        r = torch.ops.mkldnn._linear_pointwise(a, packed, None, "none", [], "")
        return bool(torch.allclose(r, a @ w.t(), atol=1e-5))
    except (AttributeError, RuntimeError):
        return False


def _onednn_ok(t: Tensor, dtypes: tuple[torch.dtype, ...]) -> bool:
    return USE_ONEDNN and t.device.type == "cpu" and t.dtype in dtypes and _onednn_available()


def _matmul_nt(a: Tensor, b: Tensor, mm_dtype: torch.dtype | None) -> Tensor:
    """``a @ b.T`` for a (M, K), b (N, K), in ``mm_dtype`` when given; result in a's dtype."""
    if mm_dtype is not None and (a.dtype != mm_dtype or b.dtype != mm_dtype):
        return (a.to(mm_dtype) @ b.to(mm_dtype).t()).to(a.dtype)
    if _onednn_ok(a, (torch.float32,)):
        return torch.ops.mkldnn._linear_pointwise(
            a.contiguous(), b.contiguous(), None, "none", [], ""
        )
    return a @ b.t()


class _Linear(torch.autograd.Function):
    """``x @ weight.T (+ bias)`` for a whole window, every matmul routed by ``_matmul_nt``.

    The result is in x's dtype, or with ``keep_mm_dtype`` in the matmul dtype as the
    matmul left it (no bias then: the caller adds it later, in fp32).
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x: Tensor,
        weight: Tensor,
        bias: Tensor | None,
        mm_dtype: torch.dtype | None,
        keep_mm_dtype: bool = False,
    ) -> Tensor:
        # Cast once: the backward reuses the matmul-dtype copies (half the bytes saved).
        xm = x if mm_dtype is None else x.to(mm_dtype)  # (N, in)
        wm = weight if mm_dtype is None else weight.to(mm_dtype)  # (out, in)
        ctx.save_for_backward(xm, wm)
        ctx.dtypes = (x.dtype, weight.dtype)
        y = _matmul_nt(xm, wm, None)  # (N, out)
        if keep_mm_dtype:
            return y
        y = y.to(x.dtype)
        return y if bias is None else y + bias

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_out: Tensor
    ) -> tuple[Tensor | None, ...]:
        xm, wm = ctx.saved_tensors
        x_dtype, w_dtype = ctx.dtypes
        dm = d_out.to(wm.dtype)  # (N, out)
        d_x = d_weight = d_bias = None
        if ctx.needs_input_grad[0]:
            d_x = _matmul_nt(dm, wm.t(), None).to(x_dtype)  # (N, in)
        if ctx.needs_input_grad[1]:
            d_weight = _matmul_nt(dm.t(), xm.t(), None).to(w_dtype)  # (out, in)
        if ctx.needs_input_grad[2]:
            d_bias = d_out.sum(dim=0)
        return d_x, d_weight, d_bias, None, None


def _step_linear(weight: Tensor, batch: int, mm_dtype: torch.dtype | None) -> StepLinear:
    """``f(a) = a @ weight.T`` for a (batch, in), weight (out, in); result in the matmul dtype.

    The weight is cast to ``mm_dtype`` (if given) and, when oneDNN is usable, packed once.
    """
    w = weight if mm_dtype is None else weight.to(mm_dtype)
    if _onednn_ok(w, (torch.float32, torch.bfloat16)):
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


def _project(
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


def _split_input(x: Tensor, input_size: int, name: str) -> tuple[Tensor, bool]:
    """Validate x and return it as (T, B, I) plus whether the caller passed a batch."""
    if x.dim() not in (2, 3) or x.shape[-1] != input_size:
        raise ValueError(
            f"{name} expects input of shape (T, B, {input_size}) or (T, {input_size}), "
            f"got {tuple(x.shape)}"
        )
    if x.shape[0] == 0:
        raise ValueError(f"{name} got an empty sequence (T = 0)")
    return (x, True) if x.dim() == 3 else (x.unsqueeze(1), False)


def _state_in(s: Tensor | None, batched: bool, B: int, H: int, like: Tensor, name: str) -> Tensor:
    """(1, B, H) (or (1, H) unbatched) state -> (B, H); None -> zeros."""
    if s is None:
        return like.new_zeros(B, H)
    if not batched:
        s = s.unsqueeze(1)
    if s.shape != (1, B, H):
        raise ValueError(f"{name} state must have shape (1, {B}, {H}), got {tuple(s.shape)}")
    return s[0]


def _state_out(s: Tensor, batched: bool) -> Tensor:
    """(B, H) -> (1, B, H) (or (1, H) unbatched)."""
    return s.unsqueeze(0) if batched else s


def _needs_grad(*tensors: Tensor) -> bool:
    return torch.is_grad_enabled() and any(t.requires_grad for t in tensors)


def _prev_states(h0: Tensor, out: Tensor) -> Tensor:
    """The state each step of a window started from: h0 (B, H), out (T, B, H) -> (T, B, H)."""
    return torch.cat((h0.unsqueeze(0), out[:-1]), dim=0)


def _weight_hh_grad(
    d_pre: Tensor, h_prev: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype | None
) -> Tensor:
    """Gradient of ``weight_hh`` (G, H) from the window's gradients of ``h_prev @ W_hh.T``.

    d_pre (T, B, G), h_prev (T, B, H): one (G, T*B) x (T*B, H) matmul, in the weight's dtype.
    """
    T, B, G = d_pre.shape
    flat_d, flat_h = d_pre.reshape(T * B, G), h_prev.reshape(T * B, -1)
    return _matmul_nt(flat_d.t(), flat_h.t(), mm_dtype).to(weight_hh.dtype)


def _native_forward_steps(
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
    rec = _step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, G*H)
    bf16 = x_proj.dtype == torch.bfloat16
    h_mm = x_proj.new_empty(2, B, out.size(-1)) if bf16 else None  # ring of bf16 h copies
    step_x = x_proj[0].numel() * x_proj.element_size()  # bytes
    h_in = h0
    for t in range(T):
        r = rec(h_in).to(x_proj.dtype).contiguous()  # (B, G*H), alive through the call
        h_next = out[t] if h_mm is None else h_mm[t % 2]  # what the next matmul reads
        yield t, x_proj.data_ptr() + t * step_x, r.data_ptr(), h_next.data_ptr() if bf16 else None
        h_in = h_next


# ---------------------------------------------------------------------------------------------
# LSTM
# ---------------------------------------------------------------------------------------------


def _lstm_recurrence(
    x_proj: Tensor, h: Tensor, c: Tensor, weight_hh: Tensor, mm_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor]]:
    """Forward loop of the LSTM over a window, no autograd, keeping what BPTT needs.

    x_proj: (T, B, 4H) with both biases folded in; h, c: (B, H); weight_hh: (4H, H).
    Returns out (T, B, H), h_T, c_T and the saved activations: the activated gates
    (T, B, 4H) [sigmoid(i), sigmoid(f), tanh(g), sigmoid(o)], the cells (T + 1, B, H)
    starting with c_0, and tanh of the cells (T, B, H).
    """
    T, B, G = x_proj.shape
    H = G // 4
    rec = _step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, 4H)
    out = x_proj.new_empty(T, B, H)
    gates = x_proj.new_empty(B, G)
    acts = x_proj.new_empty(T, B, G)
    cells = x_proj.new_empty(T + 1, B, H)
    tanh_cs = x_proj.new_empty(T, B, H)
    cells[0] = c
    for t in range(T):
        torch.add(x_proj[t], rec(h), out=gates)  # (B, 4H)
        a = acts[t]
        torch.sigmoid(gates, out=a)  # g's slice is overwritten next
        torch.tanh(gates[:, 2 * H : 3 * H], out=a[:, 2 * H : 3 * H])
        i, f, g, o = a[:, :H], a[:, H : 2 * H], a[:, 2 * H : 3 * H], a[:, 3 * H :]
        c = torch.addcmul(f * c, i, g, out=cells[t + 1])  # (B, H)
        h = torch.mul(o, torch.tanh(c, out=tanh_cs[t]), out=out[t])
    return out, h.clone(), c.clone(), (acts, cells, tanh_cs)


def _lstm_inference(
    x: Tensor, h0: Tensor, c0: Tensor, weights: list[Tensor], mm_dtype: torch.dtype | None
) -> tuple[Tensor, Tensor, Tensor]:
    """x (T, B, I), h0, c0 (B, H) -> out (T, B, H), h_T, c_T through torch's fused LSTM kernel.

    Without gradients nothing needs saving, so the time loop can be torch's own (oneDNN
    on CPU, in bf16 under a bf16 autocast). ``benchmarks/bench_ops.py`` on AMD EPYC
    (2 threads, torch 2.13), bf16: 63 ms against the training path's 119 for
    (T, B, H) = (100, 32, 650), 3.3 against 9.7 for (70, 10, 200). Results come back in
    x's dtype.
    weights: [weight_ih, weight_hh, bias_ih, bias_hh].
    """
    state = (h0.unsqueeze(0), c0.unsqueeze(0))  # (1, B, H) each
    if mm_dtype is None:
        context = contextlib.nullcontext()
    else:
        context = torch.autocast(x.device.type, dtype=mm_dtype)
    with context:
        out, h, c = torch.lstm(x, state, weights, True, 1, 0.0, False, False, False)
    return out.to(x.dtype), h[0].to(x.dtype), c[0].to(x.dtype)


class _LSTMWindow(torch.autograd.Function):
    """The LSTM recurrence over a whole window as one autograd node with hand-written BPTT."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_proj: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        mm_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        out, h_T, c_T, saved = _lstm_recurrence(x_proj, h0, c0, weight_hh, mm_dtype)
        ctx.save_for_backward(h0, weight_hh, out, *saved)
        ctx.mm_dtype = mm_dtype
        return out, h_T, c_T

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_out: Tensor, d_hT: Tensor, d_cT: Tensor
    ) -> tuple[Tensor | None, ...]:
        h0, weight_hh, out, acts, cells, tanh_c = ctx.saved_tensors
        mm_dtype = ctx.mm_dtype
        T, B, G = acts.shape
        H = G // 4
        i, f, g, o = (
            acts[..., :H],
            acts[..., H : 2 * H],
            acts[..., 2 * H : 3 * H],
            acts[..., 3 * H :],
        )  # each (T, B, H)
        # Everything that does not depend on the incoming gradient, for all steps at once:
        # d gate_pre = dc * coef for i, f, g, and dh * coef for o.
        coef_ifg = torch.stack(
            (g * i * (1 - i), cells[:-1] * f * (1 - f), i * (1 - g * g)), dim=2
        )  # (T, B, 3, H)
        coef_o = tanh_c * o * (1 - o)  # (T, B, H)
        dc_from_h = o * (1 - tanh_c * tanh_c)  # (T, B, H)
        rec_t = _step_linear(weight_hh.t(), B, mm_dtype)  # d_gates (B, 4H) -> (B, H)

        d_gates = acts.new_empty(T, B, G)  # pre-activation gate grads == grad of x_proj
        d_gates4 = d_gates.view(T, B, 4, H)
        dh = d_hT.clone()
        dc = d_cT.clone()
        for t in range(T - 1, -1, -1):
            dh += d_out[t]
            dc.addcmul_(dh, dc_from_h[t])
            torch.mul(dc.unsqueeze(1), coef_ifg[t], out=d_gates4[t, :, :3])
            torch.mul(dh, coef_o[t], out=d_gates4[t, :, 3])
            dc = dc * f[t]
            dh = rec_t(d_gates[t]).to(dh.dtype)  # (B, H)

        d_weight_hh = None
        if ctx.needs_input_grad[3]:
            d_weight_hh = _weight_hh_grad(d_gates, _prev_states(h0, out), weight_hh, mm_dtype)
        return d_gates, dh, dc, d_weight_hh, None


class _LSTMWindowNative(torch.autograd.Function):
    """``_LSTMWindow`` with each step's elementwise work in one call to the C kernels.

    x_proj (T, B, 4H) holds only ``x @ W_ih.T``, in the matmul dtype (bf16 or fp32); the
    kernel adds bias (4H,) in fp32. With bf16 matmuls the kernels also write the bf16
    copies the next matmul reads (h forward, the gate gradients backward) and read the
    matmul's bf16 results as they are, so the loop has no casts. The gradient of x_proj
    comes back in its dtype, ready for the projection's backward matmuls.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_proj: Tensor,
        bias: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        mm_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = native.step_kernels()
        T, B, G = x_proj.shape
        H = G // 4
        x_proj = x_proj.contiguous()
        bf16 = x_proj.dtype == torch.bfloat16
        out = h0.new_empty(T, B, H)
        acts = h0.new_empty(T, B, G)  # [sigmoid i, sigmoid f, tanh g, sigmoid o]
        cells = h0.new_empty(T + 1, B, H)  # c_0 .. c_T
        tanh_c = h0.new_empty(T, B, H)
        cells[0] = c0
        bias = bias.contiguous()
        a, cs, tc, o = (t.data_ptr() for t in (acts, cells, tanh_c, out))
        step_g, step_h = B * G * 4, B * H * 4  # bytes
        steps = _native_forward_steps(x_proj, h0.contiguous(), weight_hh, mm_dtype, out)
        for t, x_t, rec_t, h_bf16 in steps:
            k.lstm_forward_step(
                B, H, x_t, rec_t, int(bf16), bias.data_ptr(), cs + t * step_h, a + t * step_g,
                cs + (t + 1) * step_h, tc + t * step_h, o + t * step_h, h_bf16,
            )  # fmt: skip
        ctx.save_for_backward(h0, weight_hh, out, acts, cells, tanh_c)
        ctx.mm_dtype, ctx.x_dtype = mm_dtype, x_proj.dtype
        return out, out[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_out: Tensor, d_hT: Tensor, d_cT: Tensor
    ) -> tuple[Tensor | None, ...]:
        k = native.step_kernels()
        h0, weight_hh, out, acts, cells, tanh_c = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        rec_t = _step_linear(weight_hh.t(), B, ctx.mm_dtype)  # d_gates (B, 4H) -> (B, H)
        d_gates = acts.new_empty(T, B, G, dtype=ctx.x_dtype)  # == grad of x_proj
        bf16 = d_gates.dtype == torch.bfloat16
        d_bias = acts.new_zeros(G)  # fp32 sum of the gate gradients over T and B
        d_out = d_out.contiguous().clone()  # (T, B, H)
        d_out[-1] += d_hT  # the last step's d h_T comes in beside its output's gradient
        dh = d_out.new_zeros(B, H, dtype=d_gates.dtype)  # d_gates_{t+1} W_hh; none at T
        dc = d_cT.contiguous().clone()  # (B, H), updated in place step by step
        dg, do, a, cs, tc = (t.data_ptr() for t in (d_gates, d_out, acts, cells, tanh_c))
        step_d, step_g, step_h = B * G * d_gates.element_size(), B * G * 4, B * H * 4
        for t in range(T - 1, -1, -1):
            k.lstm_backward_step(
                B, H, dh.data_ptr(), int(bf16), do + t * step_h, a + t * step_g,
                cs + t * step_h, tc + t * step_h, dc.data_ptr(), dg + t * step_d,
                d_bias.data_ptr(),
            )  # fmt: skip
            dh = rec_t(d_gates[t]).to(d_gates.dtype).contiguous()  # (B, H)

        d_weight_hh = None
        if ctx.needs_input_grad[4]:
            h_prev = _prev_states(h0, out)  # (T, B, H)
            d_weight_hh = _weight_hh_grad(d_gates, h_prev, weight_hh, ctx.mm_dtype)
        return d_gates, d_bias, dh.to(h0.dtype), dc, d_weight_hh, None


class ManualLSTM(nn.Module):
    """Single-layer LSTM, drop-in for ``nn.LSTM(input_size, hidden_size)``.

    impl: ``"function"`` (one autograd node per window, hand-written BPTT) or
    ``"loop"`` (plain autograd loop). precision: ``"fp32"`` (matmuls in the input
    dtype) or ``"bf16"`` (bfloat16 matmuls, state and gradients in the input dtype).
    """

    def __init__(
        self, input_size: int, hidden_size: int, impl: str = "function", precision: str = "fp32"
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        _check_options(impl, precision)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = 1
        self.impl = impl
        self.precision = precision
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.LSTM``."""

    def forward(self, x: Tensor, hx: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        mm_dtype = _mm_dtype(self.precision, x)
        with torch.autocast(x.device.type, enabled=False):  # precision is explicit here
            return self._forward(_full(x), hx, mm_dtype)

    def _forward(
        self, x: Tensor, hx: LSTMState | None, mm_dtype: torch.dtype | None
    ) -> tuple[Tensor, LSTMState]:
        x, batched = _split_input(x, self.input_size, "ManualLSTM")
        T, B, _ = x.shape
        H = self.hidden_size
        h0_in, c0_in = (None, None) if hx is None else hx
        h0 = _state_in(h0_in, batched, B, H, x, "ManualLSTM h")
        c0 = _state_in(c0_in, batched, B, H, x, "ManualLSTM c")
        weights = [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]
        weight_hh = self.weight_hh_l0
        if self.impl == "function" and not _needs_grad(x, h0, c0, *weights):
            out, h, c = _lstm_inference(x, h0, c0, weights, mm_dtype)
        elif self.impl == "function" and native.usable(x, h0, c0, *weights):
            # The C kernels add the bias and read the projection in the matmul dtype.
            x_proj = _project(x, self.weight_ih_l0, None, mm_dtype, True)  # (T, B, 4H)
            bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,)
            out, h, c = _LSTMWindowNative.apply(x_proj, bias, h0, c0, weight_hh, mm_dtype)
        else:
            bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,), folded into the projection
            x_proj = _project(x, self.weight_ih_l0, bias, mm_dtype)  # (T, B, 4H)
            if self.impl == "loop":
                h, c = h0, c0
                outs = []
                for t in range(T):
                    h, c = lstm_cell(x_proj[t], h, c, weight_hh, None, mm_dtype)
                    outs.append(h)
                out = torch.stack(outs)  # (T, B, H)
            else:
                out, h, c = _LSTMWindow.apply(x_proj, h0, c0, weight_hh, mm_dtype)
        if not batched:
            out = out.squeeze(1)  # (T, H)
        return out, (_state_out(h, batched), _state_out(c, batched))

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, impl={self.impl!r}, "
            f"precision={self.precision!r}"
        )


# ---------------------------------------------------------------------------------------------
# GRU
# ---------------------------------------------------------------------------------------------


def _gru_recurrence(
    x_proj: Tensor,
    h: Tensor,
    weight_hh: Tensor,
    bias_hh: Tensor,
    mm_dtype: torch.dtype | None,
    save: bool,
) -> tuple[Tensor, Tensor, Tensor | None, Tensor | None]:
    """Forward loop of the GRU over a window, no autograd.

    x_proj: (T, B, 3H) including b_ih; h: (B, H); weight_hh: (3H, H); bias_hh: (3H,).
    Returns out (T, B, H), h_T and, when ``save``, the activations (T, B, 3H)
    [r, z, n] and ``W_hn h + b_hn`` (T, B, H).
    """
    T, B, G = x_proj.shape
    H = G // 3
    rec = _step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, 3H)
    out = x_proj.new_empty(T, B, H)
    acts = x_proj.new_empty(T, B, G) if save else None
    h_ns = x_proj.new_empty(T, B, H) if save else None
    h_proj = x_proj.new_empty(B, G)
    a_tmp = x_proj.new_empty(B, G)
    for t in range(T):
        torch.add(bias_hh, rec(h), out=h_proj)  # (B, 3H)
        a = acts[t] if acts is not None else a_tmp
        x_t = x_proj[t]
        torch.add(x_t[:, : 2 * H], h_proj[:, : 2 * H], out=a[:, : 2 * H])
        a[:, : 2 * H].sigmoid_()
        r, z, n = a[:, :H], a[:, H : 2 * H], a[:, 2 * H :]
        h_n = h_proj[:, 2 * H :]
        if h_ns is not None:
            h_ns[t] = h_n
        torch.addcmul(x_t[:, 2 * H :], r, h_n, out=n)
        n.tanh_()
        h = torch.addcmul(n, z, h - n, out=out[t])  # (1 - z) n + z h
    return out, out[-1].clone(), acts, h_ns


class _GRUWindow(torch.autograd.Function):
    """The GRU recurrence over a whole window as one autograd node with hand-written BPTT."""

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_proj: Tensor,
        h0: Tensor,
        weight_hh: Tensor,
        bias_hh: Tensor,
        mm_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor]:
        out, h_T, acts, h_ns = _gru_recurrence(x_proj, h0, weight_hh, bias_hh, mm_dtype, True)
        ctx.save_for_backward(h0, weight_hh, out, acts, h_ns)
        ctx.mm_dtype = mm_dtype
        return out, h_T

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_out: Tensor, d_hT: Tensor
    ) -> tuple[Tensor | None, ...]:
        h0, weight_hh, out, acts, h_ns = ctx.saved_tensors
        mm_dtype = ctx.mm_dtype
        T, B, G = acts.shape
        H = G // 3
        r, z, n = acts[..., :H], acts[..., H : 2 * H], acts[..., 2 * H :]
        h_prev = _prev_states(h0, out)  # (T, B, H)
        # Gradient-independent factors for all steps at once.
        coef_n = (1 - z) * (1 - n * n)  # dh -> d n_pre
        coef_z = (h_prev - n) * z * (1 - z)  # dh -> d z_pre
        coef_r = h_ns * r * (1 - r)  # d n_pre -> d r_pre
        rec_t = _step_linear(weight_hh.t(), B, mm_dtype)  # d_hp (B, 3H) -> (B, H)

        d_x = acts.new_empty(T, B, G)  # grad of x_proj: [d r_pre, d z_pre, d n_pre]
        d_hp = acts.new_empty(T, B, G)  # grad of W_hh h + b_hh: [d r_pre, d z_pre, r * d n_pre]
        dh = d_hT.clone()
        for t in range(T - 1, -1, -1):
            dh += d_out[t]
            dn = torch.mul(dh, coef_n[t], out=d_x[t, :, 2 * H :])
            torch.mul(dh, coef_z[t], out=d_hp[t, :, H : 2 * H])
            torch.mul(dn, coef_r[t], out=d_hp[t, :, :H])
            torch.mul(dn, r[t], out=d_hp[t, :, 2 * H :])
            dh = torch.addcmul(rec_t(d_hp[t]).to(dh.dtype), dh, z[t])  # (B, H)
        d_x[..., : 2 * H] = d_hp[..., : 2 * H]

        d_weight_hh = d_bias_hh = None
        if ctx.needs_input_grad[2]:
            d_weight_hh = _weight_hh_grad(d_hp, h_prev, weight_hh, mm_dtype)
        if ctx.needs_input_grad[3]:
            d_bias_hh = d_hp.sum(dim=(0, 1))
        return d_x, dh, d_weight_hh, d_bias_hh, None


def _gru_native_recurrence(
    x_proj: Tensor,
    b_ih: Tensor,
    b_hh: Tensor,
    h0: Tensor,
    weight_hh: Tensor,
    mm_dtype: torch.dtype | None,
    save: bool,
) -> tuple[Tensor, Tensor | None, Tensor | None]:
    """``_gru_recurrence`` with each step's elementwise work in one C kernel call.

    x_proj (T, B, 3H) holds only ``x @ W_ih.T``, in the matmul dtype; the kernel adds
    b_ih, b_hh (3H,) in fp32. Returns out (T, B, H) and, when ``save``, the activations
    (T, B, 3H) [r, z, n] and ``W_hn h + b_hn`` (T, B, H); without ``save`` those go to
    one step's scratch space.
    """
    k = native.step_kernels()
    T, B, G = x_proj.shape
    H = G // 3
    x_proj, h0 = x_proj.contiguous(), h0.contiguous()
    bf16 = x_proj.dtype == torch.bfloat16
    out = h0.new_empty(T, B, H)
    steps = T if save else 1
    acts = h0.new_empty(steps, B, G)  # [r, z, n]
    h_ns = h0.new_empty(steps, B, H)  # W_hn h + b_hn
    b_ih, b_hh = b_ih.contiguous(), b_hh.contiguous()
    a, hn, o = (t.data_ptr() for t in (acts, h_ns, out))
    step_g, step_h = B * G * 4, B * H * 4  # bytes
    for t, x_t, rec_t, h_bf16 in _native_forward_steps(x_proj, h0, weight_hh, mm_dtype, out):
        s = t if save else 0
        k.gru_forward_step(
            B, H, x_t, rec_t, int(bf16), b_ih.data_ptr(), b_hh.data_ptr(),
            h0.data_ptr() if t == 0 else o + (t - 1) * step_h, a + s * step_g,
            hn + s * step_h, o + t * step_h, h_bf16,
        )  # fmt: skip
    return out, (acts if save else None), (h_ns if save else None)


class _GRUWindowNative(torch.autograd.Function):
    """``_GRUWindow`` with each step's elementwise work in one call to the C kernels.

    Inputs as for ``_gru_native_recurrence``; the gradient of x_proj comes back in its
    dtype, the biases' in fp32, summed by the kernel.
    """

    @staticmethod
    def forward(
        ctx: torch.autograd.function.FunctionCtx,
        x_proj: Tensor,
        b_ih: Tensor,
        h0: Tensor,
        weight_hh: Tensor,
        b_hh: Tensor,
        mm_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor]:
        h0 = h0.contiguous()
        out, acts, h_ns = _gru_native_recurrence(x_proj, b_ih, b_hh, h0, weight_hh, mm_dtype, True)
        ctx.save_for_backward(h0, weight_hh, out, acts, h_ns)
        ctx.mm_dtype, ctx.x_dtype = mm_dtype, x_proj.dtype
        return out, out[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(
        ctx: torch.autograd.function.FunctionCtx, d_out: Tensor, d_hT: Tensor
    ) -> tuple[Tensor | None, ...]:
        k = native.step_kernels()
        h0, weight_hh, out, acts, h_ns = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 3
        rec_t = _step_linear(weight_hh.t(), B, ctx.mm_dtype)  # d_hp (B, 3H) -> (B, H)
        d_x = acts.new_empty(T, B, G, dtype=ctx.x_dtype)  # == grad of x_proj
        d_hp = torch.empty_like(d_x)  # grad of W_hh h + b_hh
        bf16 = d_x.dtype == torch.bfloat16
        db_ih, db_hh = acts.new_zeros(G), acts.new_zeros(G)  # fp32 sums over T and B
        d_out = d_out.contiguous().clone()  # (T, B, H)
        d_out[-1] += d_hT  # the last step's d h_T comes in beside its output's gradient
        dh_rec = d_out.new_zeros(B, H, dtype=d_x.dtype)  # d_hp_{t+1} W_hh; none at T
        carry = d_out.new_zeros(B, H)  # z_{t+1} d h_{t+1}, updated in place
        dx, dhp, do, a, hn, o = (t.data_ptr() for t in (d_x, d_hp, d_out, acts, h_ns, out))
        step_d, step_g, step_h = B * G * d_x.element_size(), B * G * 4, B * H * 4
        for t in range(T - 1, -1, -1):
            k.gru_backward_step(
                B, H, dh_rec.data_ptr(), int(bf16), do + t * step_h, a + t * step_g,
                hn + t * step_h, h0.data_ptr() if t == 0 else o + (t - 1) * step_h,
                carry.data_ptr(), dx + t * step_d, dhp + t * step_d, db_ih.data_ptr(),
                db_hh.data_ptr(),
            )  # fmt: skip
            dh_rec = rec_t(d_hp[t]).to(d_x.dtype).contiguous()  # (B, H)

        d_weight_hh = None
        if ctx.needs_input_grad[3]:
            d_weight_hh = _weight_hh_grad(d_hp, _prev_states(h0, out), weight_hh, ctx.mm_dtype)
        d_h0 = (dh_rec.to(carry.dtype) + carry).to(h0.dtype)
        return d_x, db_ih, d_h0, d_weight_hh, db_hh, None


class ManualGRU(nn.Module):
    """Single-layer GRU, drop-in for ``nn.GRU(input_size, hidden_size)``.

    ``impl`` and ``precision`` as for ``ManualLSTM``.
    """

    def __init__(
        self, input_size: int, hidden_size: int, impl: str = "function", precision: str = "fp32"
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        _check_options(impl, precision)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = 1
        self.impl = impl
        self.precision = precision
        self.weight_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(3 * hidden_size))
        self.reset_parameters()

    def reset_parameters(self) -> None:
        reset_uniform(self, self.hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.GRU``."""

    def forward(self, x: Tensor, hx: Tensor | None = None) -> tuple[Tensor, Tensor]:
        mm_dtype = _mm_dtype(self.precision, x)
        with torch.autocast(x.device.type, enabled=False):  # precision is explicit here
            return self._forward(_full(x), hx, mm_dtype)

    def _forward(
        self, x: Tensor, hx: Tensor | None, mm_dtype: torch.dtype | None
    ) -> tuple[Tensor, Tensor]:
        x, batched = _split_input(x, self.input_size, "ManualGRU")
        T, B, _ = x.shape
        h0 = _state_in(hx, batched, B, self.hidden_size, x, "ManualGRU h")
        weight_hh, bias_hh = self.weight_hh_l0, self.bias_hh_l0
        bias_ih = self.bias_ih_l0
        if self.impl == "function" and native.usable(x, h0, weight_hh, bias_ih, bias_hh):
            # The C kernels add both biases and read the projection in the matmul dtype.
            x_proj = _project(x, self.weight_ih_l0, None, mm_dtype, True)  # (T, B, 3H)
            if _needs_grad(x, h0, weight_hh, bias_hh, self.weight_ih_l0, bias_ih):
                out, h = _GRUWindowNative.apply(x_proj, bias_ih, h0, weight_hh, bias_hh, mm_dtype)
            else:
                with torch.no_grad():
                    out, _, _ = _gru_native_recurrence(
                        x_proj, bias_ih, bias_hh, h0, weight_hh, mm_dtype, False
                    )
                h = out[-1].clone()
            if not batched:
                out = out.squeeze(1)  # (T, H)
            return out, _state_out(h, batched)
        x_proj = _project(x, self.weight_ih_l0, self.bias_ih_l0, mm_dtype)  # (T, B, 3H)

        if self.impl == "loop":
            h = h0
            outs = []
            for t in range(T):
                h = gru_cell(x_proj[t], h, weight_hh, bias_hh, mm_dtype)
                outs.append(h)
            out = torch.stack(outs)  # (T, B, H)
        elif _needs_grad(x_proj, h0, weight_hh, bias_hh):
            out, h = _GRUWindow.apply(x_proj, h0, weight_hh, bias_hh, mm_dtype)
        else:
            with torch.no_grad():
                out, h, _, _ = _gru_recurrence(x_proj, h0, weight_hh, bias_hh, mm_dtype, False)
        if not batched:
            out = out.squeeze(1)  # (T, H)
        return out, _state_out(h, batched)

    def extra_repr(self) -> str:
        return (
            f"{self.input_size}, {self.hidden_size}, impl={self.impl!r}, "
            f"precision={self.precision!r}"
        )


# ---------------------------------------------------------------------------------------------
# Mogrifier LSTM
# ---------------------------------------------------------------------------------------------


class MogrifierLSTM(nn.Module):
    """Single-layer Mogrifier LSTM (Melis et al. 2020), called like ``nn.LSTM``.

    LSTM parameters are named as in ``nn.LSTM`` (``weight_ih_l0``, ...); mogrifier
    matrices are ``mog_q.{j}`` / ``mog_r.{j}`` (see ``lstmlm.nn.manual.cells``), so the state
    dict loads into ``nn.LSTM`` only with ``strict=False``. ``rounds=0`` is a plain
    LSTM. x changes every step, so there is no window-wide input projection; each
    step does one matmul of ``[x, h]`` against ``[W_ih, W_hh]``. Plain autograd loop.
    """

    def __init__(
        self, input_size: int, hidden_size: int, rounds: int = 5, rank: int | None = None
    ) -> None:
        super().__init__()
        check_sizes(input_size=input_size, hidden_size=hidden_size)
        self.input_size = input_size
        self.hidden_size = hidden_size
        self.num_layers = 1
        self.rounds = rounds
        self.rank = rank
        self.weight_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size, input_size))
        self.weight_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size, hidden_size))
        self.bias_ih_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.bias_hh_l0 = nn.Parameter(torch.empty(4 * hidden_size))
        self.mog_q, self.mog_r = build_mogrifier(input_size, hidden_size, rounds, rank)
        reset_uniform(self, hidden_size)

    def flatten_parameters(self) -> None:
        """No-op, for code written against ``nn.LSTM``."""

    def forward(self, x: Tensor, hx: LSTMState | None = None) -> tuple[Tensor, LSTMState]:
        x, batched = _split_input(x, self.input_size, "MogrifierLSTM")
        T, B, _ = x.shape
        H = self.hidden_size
        h0_in, c0_in = (None, None) if hx is None else hx
        h = _state_in(h0_in, batched, B, H, x, "MogrifierLSTM h")
        c = _state_in(c0_in, batched, B, H, x, "MogrifierLSTM c")
        w_cat = torch.cat((self.weight_ih_l0, self.weight_hh_l0), dim=1).t()  # (I + H, 4H)
        bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,)
        outs = []
        for t in range(T):
            x_t, h = mogrify(x[t], h, self.mog_q, self.mog_r)  # (B, I), (B, H)
            gates = torch.addmm(bias, torch.cat((x_t, h), dim=1), w_cat)  # (B, 4H)
            i, f, g, o = gates.chunk(4, dim=1)
            c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
            h = torch.sigmoid(o) * torch.tanh(c)
            outs.append(h)
        out = torch.stack(outs)  # (T, B, H)
        if not batched:
            out = out.squeeze(1)
        return out, (_state_out(h, batched), _state_out(c, batched))

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, rounds={self.rounds}, rank={self.rank}"
