import pytest

from lstmlm.data.vocab import EOS, UNK, Vocab


def test_build_orders_specials_then_frequency():
    v = Vocab.build("b a b c b a".split())
    assert v.itos == [EOS, UNK, "b", "a", "c"]


def test_encode_decode_round_trip_and_unknowns():
    v = Vocab.build("x y z x".split())
    ids = v.encode(["x", "z", "never-seen"])
    assert v.decode(ids) == ["x", "z", UNK]


def test_min_freq_and_max_size():
    toks = "a a a b b c".split()
    assert Vocab.build(toks, min_freq=2).itos == [EOS, UNK, "a", "b"]
    assert Vocab.build(toks, max_size=3).itos == [EOS, UNK, "a"]


def test_corpus_eos_and_unk_are_not_duplicated():
    v = Vocab.build([UNK, "a", EOS, UNK])
    assert v.itos == [EOS, UNK, "a"]


def test_json_round_trip():
    v = Vocab.build("héllo wörld 日本".split())
    assert Vocab.from_json(v.to_json()).itos == v.itos


def test_bad_vocab_file():
    with pytest.raises(ValueError):
        Vocab.from_json("[1, 2]")
    with pytest.raises(ValueError):
        Vocab(["a", "b"])
