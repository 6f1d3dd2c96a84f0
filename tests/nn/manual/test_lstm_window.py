"""The bf16 LSTM window in C (kernels/lstm_window.c, nn/manual/lstm_window.py)."""

from __future__ import annotations

import dataclasses
import shutil

import pytest
import torch

import lstmlm.nn.manual.lstm_window as lstm_window
import lstmlm.nn.manual.native as native
from lstmlm.nn.manual import ManualLSTM

pytestmark = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


def _window() -> native.WindowKernels:
    k = native.step_kernels()
    if k is None or k.window is None:
        pytest.skip("no AVX-512 BF16 on this CPU: the window kernel is not built")
    return k.window


@pytest.mark.parametrize("T,B,H", [(4, 12, 70), (2, 1, 16), (3, 6, 130)])
def test_kernel_matches_float64_arithmetic(T: int, B: int, H: int) -> None:
    # 12 rows: tiles of 5, 5 and 2 on one thread; 70 and 130 units: a partial group of 64
    # and a partial block of 16; 1 row and 16 units: the smallest tiles.
    assert lstm_window._agrees_with_float64(_window(), T, B, H)


def test_a_wrong_kernel_fails_the_check_and_the_layer_runs_step_by_step(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    window = _window()

    def forward_that_skips_the_last_row(T, B, H, *args):  # type: ignore[no-untyped-def]
        window.forward(T, B - 1, H, *args)

    broken = dataclasses.replace(window, forward=forward_that_skips_the_last_row)
    assert not lstm_window._agrees_with_float64(broken)
    kernels = dataclasses.replace(native.step_kernels(), window=broken)
    monkeypatch.setattr(native, "step_kernels", lambda: kernels)
    assert not lstm_window.usable()
    layer = ManualLSTM(5, 8, precision="bf16")
    out, _ = layer(torch.randn(3, 2, 5))
    out.sum().backward()  # the step kernels' path
    assert layer.weight_hh_l0.grad is not None


def _outputs_and_grads(threads: int) -> list[torch.Tensor]:
    torch.manual_seed(0)
    layer = ManualLSTM(24, 40, precision="bf16")
    x = torch.randn(6, 9, 24, requires_grad=True)
    state = tuple(torch.randn(1, 9, 40, requires_grad=True) for _ in range(2))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        out, (h, c) = layer(x, state)
        loss = (out * torch.linspace(-1, 1, out.numel()).view_as(out)).sum() + (c**2).sum()
        grads = torch.autograd.grad(loss, [x, *state, *layer.parameters()])
    finally:
        torch.set_num_threads(before)
    return [out, h, c, *grads]


def test_results_do_not_depend_on_the_thread_count() -> None:
    _window()
    assert lstm_window.usable()
    one, two, three = (_outputs_and_grads(n) for n in (1, 2, 3))
    for a, b, c in zip(one, two, three, strict=True):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bf16_window_stays_close_to_fp32_nn_lstm() -> None:
    _window()
    torch.manual_seed(1)
    ours = ManualLSTM(30, 50, precision="bf16")
    ref = torch.nn.LSTM(30, 50)
    ref.load_state_dict(ours.state_dict())
    x = torch.randn(20, 7, 30, requires_grad=True)
    out, _ = ours(x)
    want, _ = ref(x)
    assert (out - want).abs().max() < 2e-2
    g_ours = torch.autograd.grad(out.sum(), [x, ours.weight_hh_l0])
    g_ref = torch.autograd.grad(want.sum(), [x, ref.weight_hh_l0])
    for a, b in zip(g_ours, g_ref, strict=True):
        assert torch.nn.functional.cosine_similarity(a.flatten(), b.flatten(), dim=0) > 0.999


def test_on_a_cpu_with_avx512_bf16_the_kernels_build_and_pass_their_checks() -> None:
    # Elsewhere the tests of the bf16 kernels skip; here a failed check must not hide
    # behind a skip (the layers would fall back to slower paths without a word).
    from pathlib import Path

    from lstmlm.nn.manual import bf16_gemm

    cpuinfo = Path("/proc/cpuinfo")
    if not cpuinfo.exists() or "avx512_bf16" not in cpuinfo.read_text():
        pytest.skip("no AVX-512 BF16 on this CPU")
    assert bf16_gemm.usable() and lstm_window.usable()
