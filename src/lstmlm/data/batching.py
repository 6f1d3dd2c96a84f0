"""A token stream as `B` parallel columns, read in BPTT windows.

stream  a b c d e f g h i j k l m n o p q r s t u v w x   (N = 24)
batchify(stream, 4):     window of bptt 2 at offset 0:
    ┌ a g m s ┐          x = ┌ a g m s ┐   y = ┌ b h n t ┐
    │ b h n t │              └ b h n t ┘       └ c i o u ┘
    │ c i o u │
    │ d j p v │          Each column is a contiguous piece of the stream;
    │ e k q w │          the hidden state of column j carries over from
    └ f l r x ┘          one window to the next.

`batchify` gives a view, not a copy: its (L, B) columns are strided over the stream, so
a stream mapped from the token cache (uint16/uint32, any size) stays on disk until a
window's rows are read. `window` turns the (T, B) rows it takes into a contiguous int64
tensor on the model's device: the only copy, one window at a time.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """(N,) -> (N // B, B), a view of `ids`; the last N mod B tokens are dropped."""
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    n = ids.numel() // batch_size
    if n < 2:
        raise ValueError(f"text of {ids.numel()} tokens is too short for batch size {batch_size}")
    return ids[: n * batch_size].view(batch_size, n).t()  # (L, B), strides (1, L)


MIN_EVAL_COLUMN = 64  # tokens per evaluation column, at least (see eval_columns)


def eval_columns(num_tokens: int, batch_size: int, min_length: int = MIN_EVAL_COLUMN) -> int:
    """How many columns to score `num_tokens` in: `batch_size`, fewer if a column would
    be shorter than `min_length` tokens, and at least 1.

    A column's first token is never a target and `batchify` drops the last N mod B
    tokens, so B columns leave up to 2B - 2 of the N - 1 targets unscored. With columns
    of at least 64 tokens that is under 1/32 of them, whatever the batch size asked for;
    a text under 128 tokens is one column, every target scored. (PTB's valid/test with
    32 or 10 columns run thousands of tokens per column: the cap never bites there.)
    """
    if batch_size <= 0:
        raise ValueError(f"batch size must be positive, got {batch_size}")
    return max(1, min(batch_size, num_tokens // min_length))


def window(
    data: Tensor, offset: int, length: int, device: torch.device | str | None = None
) -> tuple[Tensor, Tensor]:
    """Inputs data[offset : offset+T] and targets shifted by one, T <= length: (T, B)
    int64, contiguous, on `device` (default: where `data` is)."""
    t = min(length, data.size(0) - 1 - offset)
    x, y = data[offset : offset + t], data[offset + 1 : offset + 1 + t]  # (T, B) views
    return _rows(x, device), _rows(y, device)


def _rows(rows: Tensor, device: torch.device | str | None) -> Tensor:
    # int64 where the rows are (uint16/uint32 have few kernels on other devices), then moved
    rows = rows.to(dtype=torch.long, memory_format=torch.contiguous_format)
    return rows if device is None else rows.to(device)


def windows(
    data: Tensor, bptt: int, start: int = 0, device: torch.device | str | None = None
) -> Iterator[tuple[int, Tensor, Tensor]]:
    """Fixed-length windows from `start`: (offset, x, y); covers every target once."""
    for offset in range(start, data.size(0) - 1, bptt):
        x, y = window(data, offset, bptt, device)
        yield offset, x, y


def num_windows(data: Tensor, bptt: int) -> int:
    return (data.size(0) - 2) // bptt + 1


def as_tensor(ids: list[int]) -> Tensor:
    return torch.tensor(ids, dtype=torch.long)
