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
from lstmlm.nn.manual.common import prev_states
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
    with torch.no_grad(), torch.autocast("cpu", enabled=False):  # whatever the caller's mode
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
    """A bf16 LSTM layer over a window: the input projection (bf16_gemm) and the
    recurrence (the window kernels), forward and backward, as one autograd node.

    x (T, B, I), h0, c0 (B, H), weight_ih (4H, I), weight_hh (4H, H), all fp32; bias (4H,)
    is b_ih + b_hh. Returns out (T, B, H), h_T, c_T, as ``nn.LSTM`` would with bf16
    matmuls. The backward's kernel writes the gate gradients also transposed, the layout
    both weight gradients read, so no product packs them.
    """

    @staticmethod
    def forward(
        ctx: Any,
        x: Tensor,
        weight_ih: Tensor,
        bias: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
    ) -> tuple[Tensor, Tensor, Tensor]:
        w = _kernels()
        T, B, _ = x.shape
        G = weight_ih.size(0)
        H, threads = G // 4, torch.get_num_threads()
        xm = x.reshape(T * B, -1).to(torch.bfloat16)  # (T*B, I), saved for d weight_ih
        wt = bf16_gemm.pack_weight(weight_ih, transpose=True)  # B = weight_ih.T
        x_proj = bf16_gemm.matmul(bf16_gemm.rows(xm), wt, torch.bfloat16)  # (T*B, 4H)
        packed = shadows.packed(weight_hh, "lstm_gates", _pack_gates)
        out, tanh_c = h0.new_empty(T, B, H), h0.new_empty(T, B, H)
        acts, cells = h0.new_empty(T, B, G), h0.new_empty(T + 1, B, H)
        inputs = (x_proj, bias.contiguous(), h0.contiguous(), c0.contiguous())
        w.forward(T, B, H, *ptrs(*inputs, packed, out, acts, cells, tanh_c), threads)
        ctx.save_for_backward(xm, weight_ih, h0, weight_hh, out, acts, cells, tanh_c)
        return out, out[-1].clone(), cells[-1].clone()

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor, d_cT: Tensor) -> tuple[Tensor | None, ...]:
        w = _kernels()
        xm, weight_ih, h0, weight_hh, out, acts, cells, tanh_c = ctx.saved_tensors
        T, B, G = acts.shape
        H, threads = G // 4, torch.get_num_threads()
        packed = bf16_gemm.pack_weight(weight_hh).data  # W_hh (4H, H) as B
        d_out = d_out.contiguous().clone()  # (T, B, H)
        d_out[-1] += d_hT  # the last step's d h_T comes in beside its output's gradient
        dc = d_cT.contiguous().clone()  # (B, H): in d c_T, out d c_0
        d_gates = acts.new_empty(T * B, G, dtype=torch.bfloat16)  # == grad of x_proj
        pairs = bf16_gemm.pair_rows_buffer(T * B, G)  # d_gates.T as a first operand
        d_bias, dh0 = acts.new_empty(G), acts.new_empty(B, H)
        saved = (acts, cells, tanh_c)
        ptr = ptrs(packed, d_out, *saved, dc, d_gates, pairs.data, d_bias, dh0)
        w.backward(T, B, H, *ptr, threads)
        grads = ctx.needs_input_grad
        d_x = d_w_ih = d_w_hh = None
        if grads[0]:  # d x = d_gates @ weight_ih
            d_x = bf16_gemm.matmul(bf16_gemm.rows(d_gates), bf16_gemm.pack_weight(weight_ih))
            d_x = d_x.view(T, B, -1)
        if grads[1]:  # d weight_ih = d_gates.T @ x
            d_w_ih = bf16_gemm.matmul(pairs, bf16_gemm.pack(xm))
        if grads[5]:  # d weight_hh = d_gates.T @ h_prev
            h_prev = prev_states(h0, out).view(T * B, H)
            d_w_hh = bf16_gemm.matmul(pairs, bf16_gemm.pack(h_prev))
        return d_x, d_w_ih, d_bias, dh0, dc, d_w_hh


def _agrees_with_float64(w: WindowKernels, T: int = 3, B: int = 7, H: int = 37) -> bool:
    """A small bf16 window, forward and backward, against the same arithmetic in float64
    (the weights, each h and each gate gradient rounded to bf16 where the kernel's GEMMs
    read them). The default sizes reach every tile shape: B = 7 rows (5 + 2), H = 37 (a
    partial block of units and an odd k), and T B = 21 rows of gate gradients (an odd
    one in the transposed copy)."""
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
    saved, pairs = (acts, cells, tanh_c), bf16_gemm.pair_rows_buffer(T * B, 4 * H)
    pairs.data.zero_()  # the padding past the last column too, to compare whole buffers
    w.backward(T, B, H, *ptrs(packed, d_out, *saved, dc, d_gates, pairs.data, d_bias, dh0), 2)
    want_pairs = bf16_gemm.transposed(d_gates.view(T * B, -1), zeroed=True)
    if not torch.equal(pairs.data, want_pairs.data):
        return False  # the transposed copy of the gate gradients the weights' products read
    want = _window_in_float64(x_proj, bias, h0, c0, w_hh, d_out, dc_in)
    got = (out, cells[-1], d_gates.float(), d_bias, dh0, dc)
    # fp32 against float64 (~1e-7 here), or one bf16 ulp where a gate gradient's rounding flips
    both = zip(got, want, strict=True)
    return all(torch.allclose(a.double(), b, atol=1e-3, rtol=1e-2) for a, b in both)


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
