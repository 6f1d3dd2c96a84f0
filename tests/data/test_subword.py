"""The bpe and unigram levels: byte-exact round trips, no <unk>, saved with the run."""

import json
import random

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

import lstmlm
from helpers import tiny_config, write_corpus
from lstmlm.config import DataConfig, RunConfig
from lstmlm.data.subword import (
    SUBWORD_LEVELS,
    ByteDecoder,
    SubwordVocab,
    chunks,
    default_vocab_size,
    train_tokenizer,
)
from lstmlm.generation import SampleConfig
from lstmlm.storage.layout import TOKENIZER
from lstmlm.training import start_run

TRAIN = (
    "The cat sat on the mat.\n  Le chat — naïve café, 日本語のテキスト 🎉!\n\n"
    "\"Quoted,\" she said: 'tabs\tand  spaces' (parens) [brackets] {braces}.\n"
) * 20


@pytest.fixture(scope="module", params=SUBWORD_LEVELS)
def vocab(request):
    return SubwordVocab(train_tokenizer(TRAIN, request.param, 300), request.param)


@given(text=st.text(max_size=200))
def test_every_text_round_trips_byte_for_byte_without_unk(vocab, text):
    ids = vocab.tokenizer.encode(text).ids
    assert vocab.unk_id not in ids and vocab.eos_id not in ids
    assert vocab.decode_ids(ids) == text
    decoder = ByteDecoder()  # the sampling path: piece by piece, characters split in bytes
    assert "".join(decoder.piece(vocab.itos[i]) for i in ids) == text


def test_specials_written_in_a_text_are_plain_bytes(vocab):
    ids = vocab.tokenizer.encode("<eos> and <unk>").ids
    assert vocab.decode_ids(ids) == "<eos> and <unk>"
    assert {vocab.eos_id, vocab.unk_id}.isdisjoint(ids)


def test_whole_text_encoding_streams_in_chunks_and_decodes_back(vocab):
    text = TRAIN * 3
    ids = vocab.encode_text(text)  # (N,)
    assert ids.dtype == torch.long and ids.numel() > 0
    assert vocab.decode_ids(ids.tolist()) == text
    assert "".join(chunks(text, 100)) == text
    assert all(c.endswith("\n") for c in list(chunks(text, 100))[:-1])


def test_saved_tokenizer_loads_to_the_same_vocabulary(vocab):
    again = SubwordVocab.from_str(vocab.to_str(), vocab.level)
    assert again.itos == vocab.itos
    assert again.tokenizer.encode(TRAIN).ids == vocab.tokenizer.encode(TRAIN).ids


def test_default_vocab_size_follows_the_train_size():
    assert default_vocab_size(10_000) == 512
    assert default_vocab_size(400_000) == 2000
    assert default_vocab_size(10**9) == 8000


def test_vocab_size_below_the_byte_alphabet_is_refused():
    with pytest.raises(ValueError, match="vocab_size"):
        DataConfig(train="x.txt", level="bpe", vocab_size=100).validate()


@pytest.fixture(scope="module", params=SUBWORD_LEVELS)
def subword_run(request, tmp_path_factory):
    d = tmp_path_factory.mktemp(request.param)
    corpus = write_corpus(d / "c.txt")
    text = corpus.read_text() + "Ünïcödé 🎉 line\n"
    corpus.write_text(text)
    cfg = tiny_config(corpus, epochs=1)
    data = DataConfig(train=str(corpus), level=request.param, vocab_size=300)
    start_run(RunConfig(data, cfg.model, cfg.train), d / "run")
    return d / "run", request.param


def test_a_run_saves_its_tokenizer_and_the_api_uses_it(subword_run):
    run, level = subword_run
    assert (run / TOKENIZER).is_file()
    assert json.loads((run / "config.json").read_text())["level"] == level
    lm = lstmlm.load(run)
    assert isinstance(lm.vocab, SubwordVocab) and lm.level == level
    ids, unknown = lm.encode("Ünïcödé 🎉 and words never seen: qzxv")
    assert unknown == [] and lm.vocab.unk_id not in ids
    assert lm.vocab.decode_ids(ids) == "Ünïcödé 🎉 and words never seen: qzxv"
    assert lm.score("the cat sees a qzxv 🎉\n")["unknown"] == 0


def test_generated_text_is_the_decoded_id_sequence(subword_run):
    run, _ = subword_run
    lm = lstmlm.load(run)
    cfg = SampleConfig(max_new_tokens=40, seed=random.Random(5).randrange(1000))
    text = lm.generate("the cat", cfg)[0]
    streamed = "".join(lm.stream("the cat", cfg))
    assert streamed == text and text  # the same sample, pieces joined exactly
    assert "Ġ" not in text and "Ċ" not in text  # byte stand-ins never leak into text
