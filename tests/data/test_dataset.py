import pytest
import torch

from lstmlm.data.dataset import encode_ids
from lstmlm.data.tokenize import iter_tokens, tokenize
from lstmlm.data.vocab import Vocab

TEXT = "the cat sat\non the mat\r\n\nzebra here\n"


@pytest.mark.parametrize("level", ["word", "char", "symbols"])
def test_streamed_ids_equal_the_list_encoding(level):
    vocab = Vocab.build(iter_tokens("the cat sat\non a mat\n", level))
    ids = encode_ids(vocab, TEXT, level)
    assert ids.dtype == torch.long
    assert ids.tolist() == vocab.encode(tokenize(TEXT, level))
    assert vocab.unk_id in ids.tolist()  # "zebra" / "z" were not in the vocabulary


def test_empty_text_and_unknown_level():
    vocab = Vocab.build(["a"])
    assert encode_ids(vocab, "", "word").shape == (0,)
    with pytest.raises(ValueError, match="unknown level"):
        iter_tokens("a b", "bytes")
