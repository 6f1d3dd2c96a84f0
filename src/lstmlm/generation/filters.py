"""Rules that reshape one step's scores before a token is chosen (sampling and beams).

On logits (B, V), before any choice: `<eos>` masked until `min_new_tokens`, the
repetition penalty (CTRL, Keskar et al. 2019) and `no_repeat_ngram_size` (a token that
would repeat an n-gram already in the row's history gets -inf). On a step's candidate
probabilities (B, C), after temperature, top-k and top-p: `min_p` (Nguyen et al. 2024:
drop a token under `min_p` times the most likely one's probability) and `typical_p`
(Meister et al. 2023: keep the tokens whose surprisal is closest to the entropy, up to
mass p). Each renormalizes what it keeps; the most likely (or most typical) token always
stays.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor


def apply_repetition_penalty(logits: Tensor, seen: Tensor, penalty: float) -> Tensor:
    """logits (B, V), seen (B, V) bool -> penalized logits (CTRL rule)."""
    if penalty == 1.0:
        return logits
    scaled = torch.where(logits > 0, logits / penalty, logits * penalty)
    return torch.where(seen, scaled, logits)


def banned_ngram_tokens(history: Sequence[int], n: int) -> list[int]:
    """The tokens that, appended to `history`, would repeat one of its n-grams."""
    if n <= 0 or len(history) < n:
        return []
    tail = list(history[len(history) - n + 1 :])  # the n-1 tokens a new n-gram starts with
    return [
        history[i + n - 1]
        for i in range(len(history) - n + 1)
        if list(history[i : i + n - 1]) == tail
    ]


def apply_no_repeat_ngram(logits: Tensor, histories: Sequence[Sequence[int]], n: int) -> Tensor:
    """logits (B, V) with -inf at each row's tokens that would repeat an n-gram of its
    history (row b's tokens so far, `histories[b]`)."""
    if n <= 0:
        return logits
    out = logits
    for row, history in enumerate(histories):
        banned = banned_ngram_tokens(history, n)
        if banned:
            if out is logits:
                out = logits.clone()
            out[row, banned] = float("-inf")
    return out


def apply_min_p(probs: Tensor, min_p: float) -> Tensor:
    """probs (B, C) without the tokens under `min_p` x the row's best, renormalized."""
    if min_p <= 0:
        return probs
    keep = probs >= min_p * probs.max(dim=-1, keepdim=True).values  # (B, C), the best stays
    probs = probs * keep
    return probs / probs.sum(dim=-1, keepdim=True)


def apply_typical_p(probs: Tensor, typical_p: float) -> Tensor:
    """probs (B, C) cut to the locally typical set of mass >= `typical_p`, renormalized.

    Tokens are ranked by |surprisal - entropy| (nearest first); the smallest prefix of
    that ranking with mass >= typical_p is kept.
    """
    if typical_p >= 1:
        return probs
    logp = probs.clamp_min(torch.finfo(probs.dtype).tiny).log()  # (B, C)
    entropy = -(probs * logp).sum(dim=-1, keepdim=True)  # (B, 1), 0 * log 0 = 0
    distance = (-logp - entropy).abs().masked_fill(probs == 0, float("inf"))  # (B, C)
    order = distance.argsort(dim=-1)  # most typical first
    ranked = probs.gather(1, order)  # (B, C)
    mass_before = ranked.cumsum(dim=-1) - ranked
    drop_ranked = mass_before >= typical_p
    drop_ranked[:, 0] = False
    drop = torch.zeros_like(drop_ranked).scatter_(1, order, drop_ranked)
    probs = probs.masked_fill(drop, 0.0)
    return probs / probs.sum(dim=-1, keepdim=True)
