"""Per-token log-probabilities as the callers show them: the token, its text, its
log-probability (natural log) and its surprisal in bits (-log2 p)."""

from __future__ import annotations

import math
from typing import Any


def token_score(token: str, text: str, logprob: float) -> dict[str, Any]:
    """{"token", "text", "logprob", "bits"} of one token (`text`: what it adds to the text)."""
    return {"token": token, "text": text, "logprob": logprob, "bits": -logprob / math.log(2)}


def trim_scores(scores: list[dict[str, Any]], length: int) -> None:
    """Cut `scores` (in place) so that their texts join to the first `length` characters:
    a token a stop string cuts keeps the part before it."""
    kept = 0
    for i, s in enumerate(scores):
        if kept + len(s["text"]) >= length:
            s["text"] = s["text"][: length - kept]
            del scores[i + 1 :]
            if not s["text"]:
                del scores[i]
            return
        kept += len(s["text"])
