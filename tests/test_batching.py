import pytest
import torch

from lstmlm.batching import batchify, num_windows, windows


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
