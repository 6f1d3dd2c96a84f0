"""The C step kernels (kernels/*.c): build, cache, fallback, and the LSTM's and GRU's two paths."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

import lstmlm.nn.manual.native as native
from lstmlm.nn.manual import ManualGRU, ManualLSTM

needs_cc = pytest.mark.skipif(
    shutil.which("cc") is None and shutil.which("gcc") is None, reason="no C compiler"
)


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path):
    """An empty kernel cache and no kernels loaded yet in this process."""
    monkeypatch.setenv(native.ENV_CACHE, str(tmp_path / "cache"))
    monkeypatch.delenv(native.ENV_SWITCH, raising=False)
    native.step_kernels.cache_clear()
    yield tmp_path / "cache"
    native.step_kernels.cache_clear()


@needs_cc
def test_builds_once_into_the_cache_and_agrees_with_torch(fresh: Path) -> None:
    fresh.mkdir(parents=True)
    (fresh / "rnn_steps-0000000000000000.so").write_bytes(b"an older build")
    (fresh / "lstm_step-0000000000000000.so").write_bytes(b"a build before the GRU's kernels")
    assert native.step_kernels() is not None  # built, then checked against torch
    (built,) = fresh.glob("*.so")
    assert built.name.startswith(native.LIBRARY)
    stamp = built.stat().st_mtime_ns
    native.step_kernels.cache_clear()
    assert native.step_kernels() is not None
    assert [p.name for p in fresh.iterdir()] == [built.name]  # no leftovers from the build
    assert built.stat().st_mtime_ns == stamp  # found, not rebuilt


def test_switch_off_and_missing_compiler_fall_back(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    assert native.step_kernels() is None
    native.step_kernels.cache_clear()
    monkeypatch.delenv(native.ENV_SWITCH)
    monkeypatch.setenv("CC", str(fresh.parent / "no-such-cc"))
    assert native.step_kernels() is None
    assert not native.usable(torch.zeros(1))
    for layer in (ManualLSTM(3, 4), ManualGRU(3, 4)):  # still train, on torch ops
        out, _ = layer(torch.randn(2, 1, 3))
        out.sum().backward()
        assert layer.weight_hh_l0.grad is not None


def test_a_compiler_error_falls_back(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    failing = fresh.parent / "cc"
    failing.write_text('#!/bin/sh\n[ "$1" = --version ] && echo fake 1.0 && exit 0\nexit 1\n')
    failing.chmod(0o755)
    monkeypatch.setenv("CC", str(failing))
    assert native.step_kernels() is None


def _run(layer: ManualLSTM | ManualGRU, x: torch.Tensor, state) -> list[torch.Tensor]:
    """Outputs and every gradient of a loss that reads the output and the final state."""
    out, final = layer(x, state)
    w = torch.linspace(-1, 1, out.numel()).view_as(out)
    finals = final if isinstance(final, tuple) else (final,)
    loss = (out * w).sum() + sum((s ** (2 + k)).sum() for k, s in enumerate(finals))
    states = list(state) if isinstance(state, tuple) else [state]
    grads = torch.autograd.grad(loss, [x, *states, *layer.parameters()])
    return [out, *finals, *grads]


def _make(kind: str, n_in: int, H: int, B: int, precision: str):
    if kind == "lstm":
        state = tuple(torch.randn(1, B, H, requires_grad=True) for _ in range(2))
        return ManualLSTM(n_in, H, precision=precision), state
    return ManualGRU(n_in, H, precision=precision), torch.randn(1, B, H, requires_grad=True)


@needs_cc
@pytest.mark.parametrize("kind", ["lstm", "gru"])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
@pytest.mark.parametrize("T,B,n_in,H", [(5, 3, 4, 7), (3, 2, 9, 40)])
def test_native_and_torch_paths_agree(
    fresh: Path,
    monkeypatch: pytest.MonkeyPatch,
    kind: str,
    precision: str,
    T: int,
    B: int,
    n_in: int,
    H: int,
) -> None:
    torch.manual_seed(0)
    layer, state = _make(kind, n_in, H, B, precision)
    x = torch.randn(T, B, n_in, requires_grad=True)
    assert native.usable(x)
    fast = _run(layer, x, state)
    if kind == "gru":  # no gradient: the same kernel without saving anything
        with torch.no_grad():
            out, h = layer(x, state)
        assert torch.equal(out, fast[0]) and torch.equal(h, fast[1])
    monkeypatch.setenv(native.ENV_SWITCH, "0")
    native.step_kernels.cache_clear()
    assert not native.usable(x)
    plain = _run(layer, x, state)
    # fp32: the same arithmetic in another order. bf16: the native path rounds the input
    # projection to bf16 before adding the bias (the torch path after), so a few bf16 ulps.
    tol = 1e-5 if precision == "fp32" else 3e-2
    for a, b in zip(fast, plain, strict=True):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert torch.allclose(a, b, rtol=tol, atol=tol * b.abs().max().item())


@needs_cc
@pytest.mark.parametrize("cls", [ManualLSTM, ManualGRU])
def test_non_finite_values_propagate(fresh: Path, cls: type) -> None:
    """The trainer's guard must see a NaN that enters the recurrence (no clamp hides it)."""
    layer = cls(3, 5)
    x = torch.randn(4, 2, 3)
    x[1, 0, 0] = float("nan")
    out, _ = layer(x.requires_grad_())
    assert torch.isnan(out[1:, 0]).all()
    assert torch.isfinite(out[0]).all() and torch.isfinite(out[:, 1]).all()
    out.sum().backward()
    assert torch.isnan(layer.weight_ih_l0.grad).any()
