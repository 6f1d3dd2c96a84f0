"""The hand-written single-layer GRU (``ManualGRU``): drop-in for ``nn.GRU(I, H)``."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor
from torch.autograd.function import once_differentiable

from lstmlm.nn.manual import native
from lstmlm.nn.manual.cells import (
    gru_cell,
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
    rec = step_linear(weight_hh, B, mm_dtype)  # h (B, H) -> (B, 3H)
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
        ctx: Any,
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
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor) -> tuple[Tensor | None, ...]:
        h0, weight_hh, out, acts, h_ns = ctx.saved_tensors
        mm_dtype = ctx.mm_dtype
        T, B, G = acts.shape
        H = G // 3
        r, z, n = acts[..., :H], acts[..., H : 2 * H], acts[..., 2 * H :]
        h_prev = prev_states(h0, out)  # (T, B, H)
        # Gradient-independent factors for all steps at once.
        coef_n = (1 - z) * (1 - n * n)  # dh -> d n_pre
        coef_z = (h_prev - n) * z * (1 - z)  # dh -> d z_pre
        coef_r = h_ns * r * (1 - r)  # d n_pre -> d r_pre
        rec_t = step_linear(weight_hh.t(), B, mm_dtype)  # d_hp (B, 3H) -> (B, H)

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
            d_weight_hh = weight_hh_grad(d_hp, h_prev, weight_hh, mm_dtype)
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
    k = native.loaded()
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
    for t, x_t, rec_t, h_bf16 in native_forward_steps(x_proj, h0, weight_hh, mm_dtype, out):
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
        ctx: Any,
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
    def backward(ctx: Any, d_out: Tensor, d_hT: Tensor) -> tuple[Tensor | None, ...]:
        k = native.loaded()
        h0, weight_hh, out, acts, h_ns = ctx.saved_tensors
        T, B, G = acts.shape
        H = G // 3
        rec_t = step_linear(weight_hh.t(), B, ctx.mm_dtype)  # d_hp (B, 3H) -> (B, H)
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
            d_weight_hh = weight_hh_grad(d_hp, prev_states(h0, out), weight_hh, ctx.mm_dtype)
        d_h0 = (dh_rec.to(carry.dtype) + carry).to(h0.dtype)
        return d_x, db_ih, d_h0, d_weight_hh, db_hh, None


class ManualGRU(WindowLayer):
    """Single-layer GRU, drop-in for ``nn.GRU(input_size, hidden_size)``.

    ``impl`` and ``precision`` as for ``WindowLayer``.
    """

    GATES = 3

    def _forward(
        self, x: Tensor, hx: Tensor | None, mm_dtype: torch.dtype | None
    ) -> tuple[Tensor, Tensor]:
        x, batched = split_input(x, self.input_size, "ManualGRU")
        T, B, _ = x.shape
        h0 = state_in(hx, batched, B, self.hidden_size, x, "ManualGRU h")
        weight_hh, bias_hh = self.weight_hh_l0, self.bias_hh_l0
        bias_ih = self.bias_ih_l0
        if self.impl == "function" and native.usable(x, h0, weight_hh, bias_ih, bias_hh):
            # The C kernels add both biases and read the projection in the matmul dtype.
            x_proj = project(x, self.weight_ih_l0, None, mm_dtype, True)  # (T, B, 3H)
            if needs_grad(x, h0, weight_hh, bias_hh, self.weight_ih_l0, bias_ih):
                out, h = _GRUWindowNative.apply(x_proj, bias_ih, h0, weight_hh, bias_hh, mm_dtype)
            else:
                with torch.no_grad():
                    out, _, _ = _gru_native_recurrence(
                        x_proj, bias_ih, bias_hh, h0, weight_hh, mm_dtype, False
                    )
                h = out[-1].clone()
            if not batched:
                out = out.squeeze(1)  # (T, H)
            return out, state_out(h, batched)
        x_proj = project(x, self.weight_ih_l0, self.bias_ih_l0, mm_dtype)  # (T, B, 3H)

        if self.impl == "loop":
            h = h0
            outs = []
            for t in range(T):
                h = gru_cell(x_proj[t], h, weight_hh, bias_hh, mm_dtype)
                outs.append(h)
            out = torch.stack(outs)  # (T, B, H)
        elif needs_grad(x_proj, h0, weight_hh, bias_hh):
            out, h = _GRUWindow.apply(x_proj, h0, weight_hh, bias_hh, mm_dtype)
        else:
            with torch.no_grad():
                out, h, _, _ = _gru_recurrence(x_proj, h0, weight_hh, bias_hh, mm_dtype, False)
        if not batched:
            out = out.squeeze(1)  # (T, H)
        return out, state_out(h, batched)
