"""Packed bf16 copies ("shadows") of weights, kept while the weight is unchanged.

The C GEMM and the LSTM window kernel read a weight as bf16 in their own layouts
(bf16_gemm.py, lstm_window.py). Packing it from the fp32 weight costs a pass over memory
on every use: ~14 ms of a ~200 ms medium step for all weights (benchmarks/RESULTS.md,
round 10). Two things avoid it:

- ``packed(weight, layout, make)`` keeps the copy it makes while the weight's version
  counter and storage are unchanged (any in-place change, an optimizer step or
  ``load_state_dict``, makes a new one), for weights marked with ``keep`` and wherever
  the caller asks (evaluation, whose weights do not change);
- the fused SGD step (training/optim.py) writes a kept weight's "nk" and "kn" copies in
  the same pass as the update and calls ``refreshed``; other layouts it makes again with
  their ``make``. The next step then finds every copy ready.

A copy equals what ``make`` gives from the weight at that moment (the same rounding), so
kept or made, the products are the same.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from torch import Tensor
from torch.utils.weak import WeakIdKeyDictionary

Make = Callable[[Tensor], Tensor]  # weight -> its packed copy (never closes over the weight)


@dataclass
class Shadow:
    key: tuple[int, int]  # the weight's (version, data pointer) the copy was made from
    data: Tensor  # the packed copy
    make: Make


_SHADOWS = WeakIdKeyDictionary()  # weight -> {layout: Shadow}
_KEPT = WeakIdKeyDictionary()  # weight -> True: keep its copies between steps


def _key(weight: Tensor) -> tuple[int, int]:
    return weight._version, weight.data_ptr()


def keep(weights: list[Tensor]) -> None:
    """Keep these weights' copies between uses (the fused optimizer refreshes them)."""
    for w in weights:
        _KEPT[w] = True


def packed(weight: Tensor, layout: str, make: Make, keep_copy: bool = False) -> Tensor:
    """make(weight), kept while the weight is unchanged if it is kept (or `keep_copy`)."""
    shadows = _SHADOWS.get(weight)
    hit = None if shadows is None else shadows.get(layout)
    if hit is not None and hit.key == _key(weight):
        return hit.data
    data = make(weight.detach())
    if keep_copy or weight in _KEPT:
        _SHADOWS.setdefault(weight, {})[layout] = Shadow(_key(weight), data, make)
    return data


def kept(weight: Tensor) -> dict[str, Shadow]:
    """The weight's kept copies by layout (for the optimizer to refresh)."""
    return _SHADOWS.get(weight, {})


def refreshed(weight: Tensor, written: tuple[str, ...]) -> None:
    """After an in-place update of a kept weight whose `written` layouts were rewritten in
    the same pass: mark those current and make the others again."""
    for layout, shadow in kept(weight).items():
        if layout not in written:
            shadow.data = shadow.make(weight.detach())
        shadow.key = _key(weight)
