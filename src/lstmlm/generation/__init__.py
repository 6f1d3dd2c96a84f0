"""Sampling from a trained model: the options, the draw per step, beams, and text out of it."""

from lstmlm.generation.beam import Hypothesis, beam_search
from lstmlm.generation.config import ALIASES, MAX_PROMPT_CHARS, SampleConfig, resolve_aliases
from lstmlm.generation.sampling import draw_seed, next_token, sample_ids, sample_steps
from lstmlm.generation.scores import token_score
from lstmlm.generation.text import (
    Completion,
    complete,
    encode_prompt,
    generate,
    joiner,
    stream,
    token_piece,
)

__all__ = [
    "ALIASES", "MAX_PROMPT_CHARS", "Completion", "Hypothesis", "SampleConfig", "beam_search",
    "complete", "draw_seed", "encode_prompt", "generate", "joiner", "next_token",
    "resolve_aliases", "sample_ids", "sample_steps", "stream", "token_piece", "token_score",
]  # fmt: skip
