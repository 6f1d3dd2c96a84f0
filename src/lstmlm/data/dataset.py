"""Turn a DataConfig into a vocabulary and three id streams, through the token cache.

`load_dataset` finds the text (`sources.resolve`: nothing read yet) and names it by
content (`cache.py`: a known file's sha256 comes from a memo, not a read). The vocabulary
is the one given (`--resume`, `evaluate`), or the one cached for this text, level and
vocabulary options, or built from passes over the train split's pieces and cached. The
ids are the token file cached for this text, level and vocabulary (`tokenfile.py`),
or made in one streamed pass over the three splits (`stream.py`) and written. A second
run on a text therefore starts without reading or tokenizing it, and the ids are views
of a memory-mapped file whatever the text's size: `batching.batchify` keeps them views,
and each training or evaluation window becomes int64 only as it is used.

With the cache off (`LSTMLM_TOKEN_CACHE=off`) or unwritable, the ids go to an unnamed
temporary file and are mapped from there: the same memory behaviour, nothing kept.
"""

from __future__ import annotations

import logging
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, BinaryIO

import numpy as np
import tokenizers
import torch
from torch import Tensor

from lstmlm import files
from lstmlm.config import DataConfig
from lstmlm.data import cache, sources, stream
from lstmlm.data.cache import Store
from lstmlm.data.stats import TextStats
from lstmlm.data.subword import SUBWORD_LEVELS
from lstmlm.data.tokenfile import SPLITS, BadTokenFile, TokenFile, TokenWriter, open_tokens
from lstmlm.data.vocab import Vocab

log = logging.getLogger("lstmlm")
UNK_CHUNK = 1 << 22  # ids compared at a time when counting <unk>


@dataclass(frozen=True)
class Dataset:
    vocab: Vocab
    level: str
    train: Tensor  # (N,) token ids: int64, or uint16/uint32 views of the token file
    valid: Tensor
    test: Tensor
    source: str  # where the text came from, for the model card
    text_sha256: str = ""  # of the three texts as read: a run notices when its text changed
    # per split: raw characters, words and tokens (bits per character, per-word ppl)
    stats: Mapping[str, TextStats] = field(default_factory=dict)
    unk_counts: Mapping[str, int] = field(default_factory=dict)  # <unk> ids per split
    tokens: TokenFile | None = field(default=None, repr=False, compare=False)

    def unk_share(self, split: str) -> float:
        """The share of `<unk>` among the ids of `split`."""
        ids: Tensor = getattr(self, split)
        if split in self.unk_counts:
            return self.unk_counts[split] / ids.numel() if ids.numel() else 0.0
        return unk_share(self.vocab, ids)

    def release_pages(self) -> None:
        """Let the kernel take back the token file's pages read so far (see tokenfile.py);
        they are read again from the page cache or the disk when next used."""
        if self.tokens is not None:
            self.tokens.release()


UNK_WARN_SHARE = 0.05  # above this share of <unk> in valid, the CLI suggests --level bpe


def unk_share(vocab: Vocab, ids: Tensor) -> float:
    """The share of `<unk>` among the token ids `ids` (N,), counted a block at a time."""
    n = ids.numel()
    hits = sum(int((ids[i : i + UNK_CHUNK] == vocab.unk_id).sum()) for i in range(0, n, UNK_CHUNK))
    return hits / n if n else 0.0


def encode_ids(vocab: Vocab, text: str, level: str) -> Tensor:
    """Token ids (N,) int64 of a short `text` (a file to score), as a split's would be."""
    return torch.from_numpy(stream.encode_text(vocab, text, level).astype(np.int64))


def load_dataset(cfg: DataConfig, level: str | None = None, vocab: Vocab | None = None) -> Dataset:
    """Read and encode. `level` overrides the corpus' own; `vocab` is reused if given."""
    store = Store.open()
    src = sources.resolve(cfg, store)
    level = level or src.level
    text_key, digests = src.key_parts(store) if store is not None else ({}, {})
    texts = sources.Texts(src, digests)
    vocab_entry = _vocab_entry(text_key, level, cfg)
    if vocab is None and store is not None:
        vocab = store.get_vocab(vocab_entry, level)
    built = vocab is None
    if vocab is None and level not in SUBWORD_LEVELS:  # one pass: vocabulary and ids
        vocab, tf = _new_vocab(store, text_key, texts, level, cfg)
    else:
        if vocab is None:
            vocab = stream.build_vocab(texts.train, level, cfg)
        known = vocab
        tf = _token_file(store, text_key, level, known, lambda f: _encode(f, texts, level, known))
    if built and store is not None:
        store.put_vocab(vocab_entry, level, vocab)
    for split in SPLITS:
        if tf.lengths[split] < 2:
            raise ValueError(f"the {split} text has fewer than 2 tokens")
    meta = tf.meta
    return Dataset(
        vocab,
        level,
        tf.tensor("train"),
        tf.tensor("valid"),
        tf.tensor("test"),
        src.description,
        meta["text_sha256"],
        {s: TextStats.from_dict(meta["stats"][s]) for s in SPLITS},
        {s: int(meta["unk"][s]) for s in SPLITS},
        tf,
    )


def _vocab_entry(text_key: dict[str, Any], level: str, cfg: DataConfig) -> str:
    """The cache key of the vocabulary a new run builds from this text with `cfg`."""
    if level in SUBWORD_LEVELS:  # a new tokenizers release may learn other pieces
        options: dict[str, Any] = {"vocab_size": cfg.vocab_size, "hf": tokenizers.__version__}
    else:
        options = {"min_freq": cfg.min_freq, "max_vocab": cfg.max_vocab}
    return cache.key(kind="vocab", text=text_key, level=level, **options)


def _new_vocab(
    store: Store | None, text_key: dict[str, Any], texts: sources.Texts, level: str, cfg: DataConfig
) -> tuple[Vocab, TokenFile]:
    """A new word/symbols/char run: its vocabulary and token file from one tokenizing
    pass (`stream.encode_new`: provisional ids to a scratch file, then remapped)."""
    where = store.ids if store is not None else None
    with tempfile.TemporaryFile(prefix="lstmlm-scratch-", dir=where) as f:
        scratch = TokenWriter(f, stream.SCRATCH_IDS)
        vocab, table, meta, blank = stream.encode_new(texts.splits(), level, cfg, scratch)
        _check_blank(texts, blank)
        scratch.close(meta)
        provisional = open_tokens(f)

    def fill(out: BinaryIO) -> None:
        writer = TokenWriter(out, len(vocab))
        unk = stream.remap(provisional, table, vocab.unk_id, writer)
        writer.close({**meta, "unk": unk})

    return vocab, _token_file(store, text_key, level, vocab, fill)


def _token_file(
    store: Store | None,
    text_key: dict[str, Any],
    level: str,
    vocab: Vocab,
    fill: Callable[[BinaryIO], None],
) -> TokenFile:
    """The cached token file of this text, level and vocabulary, or one `fill` writes now
    (into the cache, or an unnamed temporary file without one)."""
    if store is not None:
        entry = cache.key(kind="ids", text=text_key, level=level, vocab=cache.vocab_sha256(vocab))
        path = store.ids_path(entry)
        try:
            return _checked(open_tokens(path), level)
        except FileNotFoundError:
            pass
        except BadTokenFile as e:
            store.discard(path, str(e))
        try:
            files.atomic_write(path, fill)
            return open_tokens(path)
        except OSError as e:  # disk full: the run goes on without the cache
            log.warning("token cache: cannot write %s (%s); not cached", path, e.strerror or e)
    with tempfile.TemporaryFile(prefix="lstmlm-tokens-") as f:
        fill(f)
        return open_tokens(f)  # the map outlives the file object


def _checked(tf: TokenFile, level: str) -> TokenFile:
    """`tf` if its meta is what `load_dataset` reads, else `BadTokenFile`."""
    meta = tf.meta
    try:
        ok = meta["level"] == level and len(meta["text_sha256"]) == 64
        for split in SPLITS:
            stats = TextStats.from_dict(meta["stats"][split])
            ok = ok and stats.tokens == tf.lengths[split] and int(meta["unk"][split]) >= 0
    except (KeyError, TypeError, ValueError):
        ok = False
    if not ok:
        raise BadTokenFile("its header lacks what a dataset needs")
    return tf


def _encode(f: BinaryIO, texts: sources.Texts, level: str, vocab: Vocab) -> None:
    out = TokenWriter(f, len(vocab))
    meta, blank = stream.encode_splits(texts.splits(), vocab, level, out)
    _check_blank(texts, blank)
    out.close(meta)


def _check_blank(texts: sources.Texts, blank: set[str]) -> None:
    for split in SPLITS:
        if split in blank:
            raise texts.blank_error(split)
