import pytest
import torch

from lstmlm.data.batching import MIN_EVAL_COLUMN, batchify, eval_columns, num_windows, windows


def test_batchify_shape_and_columns_are_contiguous():
    ids = torch.arange(26)
    data = batchify(ids, 4)
    assert data.shape == (6, 4)
    assert data[:, 1].tolist() == list(range(6, 12))


@pytest.mark.parametrize("bptt", [1, 3, 5, 7, 100])
def test_windows_cover_each_target_exactly_once(bptt):
    data = batchify(torch.arange(103), 5)  # (20, 5)
    seen_x, seen_y = [], []
    for _, x, y in windows(data, bptt):
        assert x.shape == y.shape and x.size(0) <= bptt
        assert torch.equal(y[:-1], x[1:])  # targets are the inputs shifted by one
        seen_x.append(x)
        seen_y.append(y)
    assert torch.equal(torch.cat(seen_x), data[:-1])
    assert torch.equal(torch.cat(seen_y), data[1:])
    assert len(seen_x) == num_windows(data, bptt)


def test_too_short_text_is_refused():
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(5), 4)


@pytest.mark.parametrize(
    "n, asked, columns",
    [
        (7, 32, 1),  # a short text: one column, every target scored
        (127, 100_000, 1),
        (128, 100_000, 2),
        (10_000, 100_000, 10_000 // MIN_EVAL_COLUMN),
        (73_760, 32, 32),  # PTB valid as the runs evaluate it: unchanged
        (82_430, 10, 10),  # PTB test with pytorch/examples' 10
    ],
)
def test_eval_columns_are_at_least_min_length_long(n, asked, columns):
    assert eval_columns(n, asked) == columns
    data = batchify(torch.arange(n), columns)
    scored = data.size(1) * (data.size(0) - 1)
    assert n - 1 - scored < max(1, (n - 1) / 32)  # under 1/32 of the targets left out


def test_eval_columns_refuses_a_non_positive_batch():
    with pytest.raises(ValueError, match="batch size must be positive"):
        eval_columns(1000, 0)


def test_columns_are_a_view_and_windows_int64_copies():
    ids = torch.arange(26, dtype=torch.int32).to(torch.uint16)  # as the token cache maps them
    data = batchify(ids, 4)  # (6, 4)
    assert data.data_ptr() == ids.data_ptr() and data.stride() == (1, 6)  # nothing copied
    for _, x, y in windows(data, 4):
        assert x.dtype == y.dtype == torch.long and x.is_contiguous() and y.is_contiguous()
        assert x.data_ptr() != ids.data_ptr()
    _, x, y = next(windows(data, 4))
    assert x.tolist() == [[0, 6, 12, 18], [1, 7, 13, 19], [2, 8, 14, 20], [3, 9, 15, 21]]
