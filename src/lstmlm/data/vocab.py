"""Token <-> id mapping with `<unk>` and `<eos>`."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence

EOS = "<eos>"
UNK = "<unk>"


class Vocab:
    """Ids are ordered `<eos>`, `<unk>`, then by descending train frequency
    (ties by first occurrence), which adaptive softmax cutoffs rely on."""

    def __init__(self, itos: Sequence[str]):
        if len(itos) < 2 or itos[0] != EOS or itos[1] != UNK:
            raise ValueError("a vocabulary starts with <eos>, <unk>")
        self.itos: list[str] = list(itos)
        self.stoi: dict[str, int] = {t: i for i, t in enumerate(self.itos)}
        if len(self.stoi) != len(self.itos):
            raise ValueError("vocabulary has duplicate tokens")

    eos_id = 0
    unk_id = 1

    @classmethod
    def build(cls, tokens: Iterable[str], min_freq: int = 1, max_size: int | None = None) -> Vocab:
        return cls.from_counts(Counter(tokens), min_freq, max_size)

    @classmethod
    def from_counts(
        cls, counts: Mapping[str, int], min_freq: int = 1, max_size: int | None = None
    ) -> Vocab:
        """From token counts whose order is the tokens' first occurrence in the text."""
        counts = Counter(counts)
        counts.pop(EOS, None)
        counts.pop(UNK, None)
        itos = [EOS, UNK]
        for tok, n in counts.most_common():  # stable: ties keep first-seen order
            if n < min_freq or (max_size is not None and len(itos) >= max_size):
                break
            itos.append(tok)
        return cls(itos)

    def __len__(self) -> int:
        return len(self.itos)

    def __contains__(self, token: str) -> bool:
        return token in self.stoi

    def encode(self, tokens: Iterable[str]) -> list[int]:
        return list(self.iter_ids(tokens))

    def iter_ids(self, tokens: Iterable[str]) -> Iterator[int]:
        """The ids of `tokens` one at a time (unknown ones are `<unk>`)."""
        get, unk = self.stoi.get, self.unk_id
        return (get(t, unk) for t in tokens)

    def decode(self, ids: Iterable[int]) -> list[str]:
        itos = self.itos
        return [itos[i] for i in ids]

    def to_json(self) -> str:
        return json.dumps({"itos": self.itos}, ensure_ascii=False)

    @classmethod
    def from_json(cls, text: str) -> Vocab:
        try:
            itos = json.loads(text)["itos"]
        except (ValueError, KeyError, TypeError) as e:
            raise ValueError(f"not a vocabulary file ({e})") from None
        if not isinstance(itos, list) or not all(isinstance(t, str) for t in itos):
            raise ValueError("not a vocabulary file (itos is not a list of strings)")
        return cls(itos)
