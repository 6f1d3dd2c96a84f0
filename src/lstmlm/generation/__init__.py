"""Sampling from a trained model: the options, the draw per step, and text out of it."""

from lstmlm.generation.config import MAX_PROMPT_CHARS, SampleConfig
from lstmlm.generation.sampling import draw_seed, next_token, sample_ids
from lstmlm.generation.text import Completion, encode_prompt, generate, joiner, stream

__all__ = [
    "MAX_PROMPT_CHARS", "Completion", "SampleConfig", "draw_seed", "encode_prompt",
    "generate", "joiner", "next_token", "sample_ids", "stream",
]  # fmt: skip
