"""The hand-written single-layer LSTM (``ManualLSTM``): drop-in for ``nn.LSTM(I, H)``."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import lstm_window, native
from lstmlm.nn.manual.cells import (
    LSTMState,
    lstm_cell,
)
from lstmlm.nn.manual.common import (
    WindowLayer,
    native_forward_steps,
    needs_grad,
    prev_states,
    project,
    split_input,
    state_in,
    state_out,
    step_linear,
    weight_hh_grad,
)


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
    rec = step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, 4H)
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
    x: Tensor, h0: Tensor, c0: Tensor, weights: Sequence[Tensor], mm_dtype: torch.dtype | None
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
    context: contextlib.AbstractContextManager[Any] = (
        contextlib.nullcontext()
        if mm_dtype is None
        else torch.autocast(x.device.type, dtype=mm_dtype)
    )
    with context:
        out, h, c = torch.lstm(x, state, list(weights), True, 1, 0.0, False, False, False)
    return out.to(x.dtype), h[0].to(x.dtype), c[0].to(x.dtype)


class _LSTMWindow(torch.autograd.Function):
    """The LSTM recurrence over a whole window as one autograd node with hand-written BPTT."""

    @staticmethod
    def forward(
        ctx: Any,
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
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor, d_cT: Tensor) -> tuple[Tensor | None, ...]:
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
        rec_t = step_linear(weight_hh.t(), B, mm_dtype)  # d_gates (B, 4H) -> (B, H)

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
            d_weight_hh = weight_hh_grad(d_gates, prev_states(h0, out), weight_hh, mm_dtype)
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
        ctx: Any,
        x_proj: Tensor,
        bias: Tensor,
        h0: Tensor,
        c0: Tensor,
        weight_hh: Tensor,
        mm_dtype: torch.dtype | None,
    ) -> tuple[Tensor, Tensor, Tensor]:
        k = native.loaded()
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
        steps = native_forward_steps(x_proj, h0.contiguous(), weight_hh, mm_dtype, out)
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
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor, d_cT: Tensor) -> tuple[Tensor | None, ...]:
        k = native.loaded()
        h0, weight_hh, out, acts, cells, tanh_c = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 4
        rec_t = step_linear(weight_hh.t(), B, ctx.mm_dtype)  # d_gates (B, 4H) -> (B, H)
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
            h_prev = prev_states(h0, out)  # (T, B, H)
            d_weight_hh = weight_hh_grad(d_gates, h_prev, weight_hh, ctx.mm_dtype)
        return d_gates, d_bias, dh.to(h0.dtype), dc, d_weight_hh, None


class ManualLSTM(WindowLayer):
    """Single-layer LSTM, drop-in for ``nn.LSTM(input_size, hidden_size)``; ``impl``
    and ``precision`` as for ``WindowLayer``."""

    GATES = 4

    def _forward(
        self, x: Tensor, hx: LSTMState | None, mm_dtype: torch.dtype | None
    ) -> tuple[Tensor, LSTMState]:
        x, batched = split_input(x, self.input_size, "ManualLSTM")
        T, B, _ = x.shape
        H = self.hidden_size
        h0_in, c0_in = (None, None) if hx is None else hx
        h0 = state_in(h0_in, batched, B, H, x, "ManualLSTM h")
        c0 = state_in(c0_in, batched, B, H, x, "ManualLSTM c")
        weights = [self.weight_ih_l0, self.weight_hh_l0, self.bias_ih_l0, self.bias_hh_l0]
        weight_hh = self.weight_hh_l0
        if self.impl == "function" and not needs_grad(x, h0, c0, *weights):
            out, h, c = _lstm_inference(x, h0, c0, weights, mm_dtype)
        elif self.impl == "function" and native.usable(x, h0, c0, *weights):
            bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,): the kernels add it in fp32
            if mm_dtype == torch.bfloat16 and lstm_window.usable():
                out, h, c = lstm_window.LSTMWindowFused.apply(
                    x, self.weight_ih_l0, bias, h0, c0, weight_hh
                )
            else:  # the C kernels read the projection in the matmul dtype
                x_proj = project(x, self.weight_ih_l0, None, mm_dtype, True)  # (T, B, 4H)
                out, h, c = _LSTMWindowNative.apply(x_proj, bias, h0, c0, weight_hh, mm_dtype)
        else:
            bias = self.bias_ih_l0 + self.bias_hh_l0  # (4H,), folded into the projection
            x_proj = project(x, self.weight_ih_l0, bias, mm_dtype)  # (T, B, 4H)
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
        return out, (state_out(h, batched), state_out(c, batched))
