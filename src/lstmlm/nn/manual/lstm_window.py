"""The bf16 LSTM window in two C calls (``kernels/lstm_window.c``), and its check.

Training with ``--cell manual --precision bf16`` spends most of its non-matmul time in
the LSTM's time loop: per step a oneDNN call, a kernel call through ctypes, casts and
copies, and per window a reorder of ``W_hh`` into oneDNN's layout (twice: the backward
reads its transpose). ``LSTMWindowFused`` hands the whole window to C instead: one call
for the forward, one for BPTT, each time step's recurrent GEMM and gate arithmetic
together, the batch rows split over torch's threads (they never read each other). The
recurrent products stay in fp32 (the step kernels' path rounds them to bf16 first), so
the results are a little closer to fp32's. Measured in benchmarks/RESULTS.md, round 10.

The kernel exists where the C compiler targets AVX-512 BF16; before its first use it is
checked against the same arithmetic in float64 (``_agrees_with_float64``), and where it
is missing or disagrees the layer runs ``lstm._LSTMWindowNative`` step by step.
"""

from __future__ import annotations

import functools
import logging
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import bf16_gemm, native, shadows
from lstmlm.nn.manual.common import prev_states, weight_hh_grad
from lstmlm.nn.manual.native import WindowKernels, ptrs

log = logging.getLogger(__name__)


def usable() -> bool:
    """Whether the window kernels exist here and passed their check (the backward's
    products read bf16_gemm's packing)."""
    k = native.step_kernels()
    if k is None or k.window is None or not bf16_gemm.usable():
        return False
    return _checked(k.window)


@functools.cache  # once per build of the kernels
def _checked(window: WindowKernels) -> bool:
    if _agrees_with_float64(window):
        return True
    log.warning("the bf16 LSTM window kernel disagrees with torch; it runs step by step")
    return False


def _pack_gates(weight_hh: Tensor) -> Tensor:
    """W_hh (4H, H) in the forward's layout: per block of 16 units, the four gates' rows."""
    w, H = _kernels(), weight_hh.size(1)
    packed = torch.empty(w.packed_forward_size(H), dtype=torch.bfloat16)
    w_hh = weight_hh.detach().float().contiguous()
    w.pack_forward(H, w_hh.data_ptr(), packed.data_ptr(), torch.get_num_threads())
    return packed


def _kernels() -> WindowKernels:
    window = native.loaded().window
    if window is None:
        raise RuntimeError("no LSTM window kernels here (check lstm_window.usable first)")
    return window


class LSTMWindowFused(torch.autograd.Function):
    """A bf16 LSTM window: inputs and results as for ``lstm._LSTMWindowNative`` with bf16
    matmuls. x_proj (T, B, 4H) bf16 holds ``x @ W_ih.T``; bias (4H,) is b_ih + b_hh; h0,
    c0 (B, H) and weight_hh (4H, H) fp32. The gradient of x_proj comes back in bf16."""

    @staticmethod
    def forward(
        ctx: Any, x_proj: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, weight_hh: Tensor
    ) -> tuple[Tensor, Tensor, Tensor]:
        w = _kernels()
        T, B, G = x_proj.shape
        H, threads = G // 4, torch.get_num_threads()
        packed = shadows.packed(weight_hh, "lstm_gates", _pack_gates)
        out, tanh_c = h0.new_empty(T, B, H), h0.new_empty(T, B, H)
        acts, cells = h0.new_empty(T, B, G), h0.new_empty(T + 1, B, H)
        inputs = (x_proj.contiguous(), bias.contiguous(), h0.contiguous(), c0.contiguous())
        w.forward(T, B, H, *ptrs(*inputs, packed, out, acts, cells, tanh_c), threads)
        ctx.save_for_backward(h0, weight_hh, out, acts, cells, tanh_c)
        return out, out[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor, d_cT: Tensor) -> tuple[Tensor | None, ...]:
        w = _kernels()
        h0, weight_hh, out, acts, cells, tanh_c = ctx.saved_tensors
        T, B, G = acts.shape
        H, threads = G // 4, torch.get_num_threads()
        packed = bf16_gemm.pack_weight(weight_hh).data  # W_hh (4H, H) as B
        d_out = d_out.contiguous().clone()  # (T, B, H)
        d_out[-1] += d_hT  # the last step's d h_T comes in beside its output's gradient
        dc = d_cT.contiguous().clone()  # (B, H): in d c_T, out d c_0
        d_gates = acts.new_empty(T, B, G, dtype=torch.bfloat16)  # == grad of x_proj
        d_bias, dh0 = acts.new_empty(G), acts.new_empty(B, H)
        saved = (acts, cells, tanh_c)
        w.backward(T, B, H, *ptrs(packed, d_out, *saved, dc, d_gates, d_bias, dh0), threads)
        d_weight_hh = None
        if ctx.needs_input_grad[4]:
            h_prev = prev_states(h0, out)  # (T, B, H)
            d_weight_hh = weight_hh_grad(d_gates, h_prev, weight_hh, torch.bfloat16)
        return d_gates, d_bias, dh0, dc, d_weight_hh


def _agrees_with_float64(w: WindowKernels, T: int = 3, B: int = 7, H: int = 37) -> bool:
    """A small bf16 window, forward and backward, against the same arithmetic in float64
    (the weights, each h and each gate gradient rounded to bf16 where the kernel's GEMMs
    read them). The default sizes reach every tile shape: B = 7 rows (5 + 2), H = 37 (a
    partial block of units and an odd k)."""
    gen = torch.Generator().manual_seed(2)
    w_hh = torch.randn(4 * H, H, generator=gen) * 0.3
    x_proj = (torch.randn(T, B, 4 * H, generator=gen) * 2).bfloat16()
    bias, (h0, c0) = torch.randn(4 * H, generator=gen), torch.randn(2, B, H, generator=gen)
    d_out, dc = torch.randn(T, B, H, generator=gen), torch.randn(B, H, generator=gen)
    out, acts, cells, tanh_c = (
        torch.empty(T, B, H),
        torch.empty(T, B, 4 * H),
        *(torch.empty(n, B, H) for n in (T + 1, T)),
    )
    packed = torch.empty(w.packed_forward_size(H), dtype=torch.bfloat16)
    w.pack_forward(H, w_hh.data_ptr(), packed.data_ptr(), 2)
    w.forward(T, B, H, *ptrs(x_proj, bias, h0, c0, packed, out, acts, cells, tanh_c), 2)
    d_gates, d_bias, dh0 = (
        torch.empty(T, B, 4 * H, dtype=torch.bfloat16),
        *(torch.empty(n) for n in ((4 * H,), (B, H))),
    )
    packed = bf16_gemm.pack(w_hh).data  # the backward reads W_hh (4H, H) as B
    dc_in = dc.clone()
    w.backward(T, B, H, *ptrs(packed, d_out, acts, cells, tanh_c, dc, d_gates, d_bias, dh0), 2)
    want = _window_in_float64(x_proj, bias, h0, c0, w_hh, d_out, dc_in)
    got = (out, cells[-1], d_gates.float(), d_bias, dh0, dc)
    # fp32 against float64 (~1e-7 here), or one bf16 ulp where a gate gradient's rounding flips
    pairs = zip(got, want, strict=True)
    return all(torch.allclose(a.double(), b, atol=1e-3, rtol=1e-2) for a, b in pairs)


def _window_in_float64(
    x_proj: Tensor, bias: Tensor, h0: Tensor, c0: Tensor, w_hh: Tensor, d_out: Tensor, dc: Tensor
) -> tuple[Tensor, ...]:
    """What lstm_window.c computes, in float64: out, c_T, d_gates, d_bias, d h_0, d c_0."""
    w, bf = w_hh.bfloat16().double(), lambda t: t.bfloat16().double()
    h, c, H = h0.double(), c0.double(), h0.size(1)
    outs, saved = [], []
    for xt in x_proj.double():
        i, f, g, o = (xt + bf(h) @ w.t() + bias.double()).split(H, dim=1)
        i, f, g, o = i.sigmoid(), f.sigmoid(), g.tanh(), o.sigmoid()
        saved.append((i, f, g, o, c))
        c = f * c + i * g
        h = o * c.tanh()
        outs.append(h)
    dgs: list[Tensor] = []
    dh, dcc = torch.zeros_like(h), dc.double()
    for t in range(len(outs) - 1, -1, -1):
        i, f, g, o, c_prev = saved[t]
        tc = (f * c_prev + i * g).tanh()
        d = dh + d_out[t].double()
        d_c = dcc + d * o * (1 - tc * tc)
        dg = torch.cat((d_c * g * i * (1 - i), d_c * c_prev * f * (1 - f), d_c * i * (1 - g * g),
                        d * tc * o * (1 - o)), dim=1)  # fmt: skip
        dgs.insert(0, dg)
        dcc, dh = d_c * f, bf(dg) @ w
    d_gates = torch.stack(dgs)
    return torch.stack(outs), c, bf(d_gates), d_gates.sum((0, 1)), dh, dcc
