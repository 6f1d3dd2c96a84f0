"""Turn a DataConfig into a vocabulary and three id streams."""

from __future__ import annotations

import hashlib
from array import array
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import Tensor

from lstmlm.config import DataConfig
from lstmlm.data import corpora
from lstmlm.data.readers import read_text, split_text
from lstmlm.data.stats import TextStats, text_stats
from lstmlm.data.subword import SUBWORD_LEVELS, SubwordVocab, train_tokenizer
from lstmlm.data.tokenize import iter_tokens
from lstmlm.data.vocab import Vocab


@dataclass(frozen=True)
class Dataset:
    vocab: Vocab
    level: str
    train: Tensor  # (N,) token ids
    valid: Tensor
    test: Tensor
    source: str  # where the text came from, for the model card
    text_sha256: str = ""  # of the three texts as read: a run notices when its text changed
    # per split: raw characters, words and tokens (bits per character, per-word ppl)
    stats: Mapping[str, TextStats] = field(default_factory=dict)


UNK_WARN_SHARE = 0.05  # above this share of <unk> in valid, the CLI suggests --level bpe


def unk_share(vocab: Vocab, ids: Tensor) -> float:
    """The share of `<unk>` among the token ids `ids` (N,)."""
    return float((ids == vocab.unk_id).double().mean()) if ids.numel() else 0.0


def read_splits(cfg: DataConfig) -> tuple[dict[str, str], str, str]:
    """The raw train/valid/test texts, the token level and a description."""
    if cfg.corpus is not None:
        spec = corpora.CORPORA.get(cfg.corpus)
        if spec is None:
            raise ValueError(f"unknown corpus {cfg.corpus!r}; known: {', '.join(corpora.CORPORA)}")
        paths = corpora.find_corpus(cfg.corpus, cfg.data_dir)
        texts = {split: read_text(p, lowercase=cfg.lowercase) for split, p in paths.items()}
        if set(texts) == {"train"}:
            texts = dict(zip(("train", "valid", "test"), split_text(texts["train"]), strict=True))
        where = str(Path(paths["train"]).parent)
        return texts, spec.level, f"{cfg.corpus} ({where})"
    assert cfg.train is not None
    train = read_text(cfg.train, lowercase=cfg.lowercase)
    if cfg.valid is not None and cfg.test is not None:
        texts = {
            "train": train,
            "valid": read_text(cfg.valid, lowercase=cfg.lowercase),
            "test": read_text(cfg.test, lowercase=cfg.lowercase),
        }
        return texts, cfg.level, cfg.train
    parts = split_text(train)
    return dict(zip(("train", "valid", "test"), parts, strict=True)), cfg.level, cfg.train


def encode_ids(vocab: Vocab, text: str, level: str) -> Tensor:
    """Token ids (N,) int64 of `text`, streamed: no list of tokens or of Python ints.

    A list of 2M token strings (WikiText-2) leaves ~180 MB of Python heap behind after
    it is freed; here each line's tokens are dropped as soon as they are encoded.
    A subword vocabulary encodes with its own tokenizer, the text in chunks.
    """
    if isinstance(vocab, SubwordVocab):
        return vocab.encode_text(text)
    buf = array("q", vocab.iter_ids(iter_tokens(text, level)))  # int64
    if not buf:
        return torch.zeros(0, dtype=torch.long)
    return torch.frombuffer(buf, dtype=torch.long).clone()  # (N,), owns its memory


def build_vocab(train: str, level: str, cfg: DataConfig) -> Vocab:
    """The vocabulary of a new run, from the train text only."""
    if level in SUBWORD_LEVELS:
        return SubwordVocab(train_tokenizer(train, level, cfg.vocab_size), level)
    return Vocab.build(iter_tokens(train, level), cfg.min_freq, cfg.max_vocab)


def load_dataset(cfg: DataConfig, level: str | None = None, vocab: Vocab | None = None) -> Dataset:
    """Read and encode. `level` overrides the corpus' own; `vocab` is reused if given."""
    texts, corpus_level, source = read_splits(cfg)
    level = level or corpus_level
    if vocab is None:
        vocab = build_vocab(texts["train"], level, cfg)
    digest = hashlib.sha256()
    for split in ("train", "valid", "test"):
        digest.update(texts[split].encode("utf-8", "surrogatepass") + b"\0")
    ids = {split: encode_ids(vocab, text, level) for split, text in texts.items()}
    for split, t in ids.items():
        if t.numel() < 2:
            raise ValueError(f"the {split} text has fewer than 2 tokens")
    stats = {split: text_stats(texts[split], level, ids[split].numel()) for split in texts}
    return Dataset(
        vocab, level, ids["train"], ids["valid"], ids["test"], source, digest.hexdigest(), stats
    )
