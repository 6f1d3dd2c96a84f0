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
dtype. Where the C compiler targets AVX-512 BF16, a bf16 LSTM's whole window (input
projection and recurrence, forward and BPTT) is one autograd node on the C kernels
(``lstm_window.py``, ``bf16_gemm.py``; the recurrent products then stay in fp32 until
the gates), and the layers' products read packed bf16 weight copies (``shadows.py``).
The window Functions are differentiable once (no double backward, no
``torch.func`` transforms such as vmap/grad; ``functional_call`` is fine); use
``impl="loop"`` where those are needed.
"""

from lstmlm.nn.manual.gru import ManualGRU
from lstmlm.nn.manual.lstm import ManualLSTM
from lstmlm.nn.manual.mogrifier import MogrifierLSTM

__all__ = ["ManualGRU", "ManualLSTM", "MogrifierLSTM"]
