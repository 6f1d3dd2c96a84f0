"""A small Python API over a run folder.

import lstmlm
model = lstmlm.load("runs/ptb-medium")
model.generate("the market", max_new_tokens=30, temperature=0.8, top_p=0.9, seed=1)
for piece in model.stream("the market", max_new_tokens=30):
    print(piece, end="", flush=True)
model.score("the market fell sharply\n")  # {"tokens", "loss", "ppl", "bpc"}
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import torch

from lstmlm.data.readers import normalize_text
from lstmlm.data.tokenize import tokenize
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.evaluation.perplexity import result, token_nlls
from lstmlm.generation.sampling import SampleConfig, encode_prompt
from lstmlm.generation.sampling import generate as _generate
from lstmlm.generation.sampling import stream as _stream
from lstmlm.nn.model import LanguageModel
from lstmlm.storage import checkpoint

MAX_PROMPT_CHARS = 100_000


class TextModel:
    """A trained model with its vocabulary and token level, in eval mode.

    `lowercase` is the run's `DataConfig.lowercase`: prompts and scored text are
    normalised as its training text was (`readers.normalize_text`) before tokenizing.
    """

    def __init__(
        self,
        model: LanguageModel,
        vocab: Vocab,
        level: str,
        run_dir: str = "",
        *,
        lowercase: bool = False,
    ):
        self.model = model.eval()
        self.vocab = vocab
        self.level = level
        self.run_dir = run_dir
        self.lowercase = lowercase

    def __repr__(self) -> str:
        return (
            f"TextModel({self.run_dir!r}, level={self.level!r}, vocab={len(self.vocab)}, "
            f"params={self.model.num_parameters():,})"
        )

    def _config(
        self,
        max_new_tokens: int,
        temperature: float,
        top_k: int,
        top_p: float,
        top_k_decay: float,
        repetition_penalty: float,
        stop: str | Sequence[str] | None,
        stop_at_eos: bool,
        min_new_tokens: int,
        seed: int | None,
        num_samples: int,
        precision: str = "fp32",
    ) -> SampleConfig:
        if stop is not None and not isinstance(stop, str | Sequence):
            raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")
        stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
        cfg = SampleConfig(
            max_new_tokens=max_new_tokens,
            temperature=temperature,
            top_k=top_k,
            seed=seed,
            num_samples=num_samples,
            top_p=top_p,
            top_k_decay=top_k_decay,
            repetition_penalty=repetition_penalty,
            stop=stops,
            stop_at_eos=stop_at_eos,
            min_new_tokens=min_new_tokens,
            precision=precision,
        )
        cfg.validate()
        return cfg

    def _check_prompt(self, prompt: str) -> None:
        _check_text("the prompt", prompt)
        if len(prompt) > MAX_PROMPT_CHARS:
            raise ValueError(f"the prompt is longer than {MAX_PROMPT_CHARS:,} characters")

    def unknown_tokens(self, prompt: str) -> list[str]:
        """Tokens of `prompt` that the vocabulary lacks (read as `<unk>`)."""
        _check_text("the prompt", prompt)
        return self.encode(prompt)[1]

    def generate(
        self,
        prompt: str = "",
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        num_samples: int = 1,
        *,
        top_k_decay: float = 1.0,
        stop_at_eos: bool = False,
        min_new_tokens: int = 0,
        precision: str = "fp32",
    ) -> list[str]:
        """`num_samples` continuations of `prompt` (prompt not included), made in parallel."""
        self._check_prompt(prompt)
        cfg = self._config(
            max_new_tokens, temperature, top_k, top_p, top_k_decay, repetition_penalty,
            stop, stop_at_eos, min_new_tokens, seed, num_samples, precision,
        )  # fmt: skip
        return _generate(self.model, self.vocab, self.level, self.normalize(prompt), cfg)

    def stream(
        self,
        prompt: str = "",
        max_new_tokens: int = 100,
        temperature: float = 1.0,
        top_k: int = 0,
        top_p: float = 1.0,
        repetition_penalty: float = 1.0,
        stop: str | Sequence[str] | None = None,
        seed: int | None = None,
        *,
        top_k_decay: float = 1.0,
        stop_at_eos: bool = False,
        min_new_tokens: int = 0,
        precision: str = "fp32",
    ) -> Iterator[str]:
        """One continuation, yielded as text pieces as the tokens are made."""
        self._check_prompt(prompt)
        cfg = self._config(
            max_new_tokens, temperature, top_k, top_p, top_k_decay, repetition_penalty,
            stop, stop_at_eos, min_new_tokens, seed, 1, precision,
        )  # fmt: skip
        return _stream(self.model, self.vocab, self.level, self.normalize(prompt), cfg)

    def score(self, text: str) -> dict[str, Any]:
        """Perplexity of `text` (bits per char too for character levels).

        The text is read as if it followed a line break (`<eos>`), so every token of it,
        the `<eos>` of each line end included, is scored.
        """
        _check_text("the text", text)
        tokens = self.tokens(text)
        if not tokens:
            raise ValueError("no text to score")
        ids = torch.tensor(self.vocab.encode([EOS, *tokens]), dtype=torch.long)
        nll = token_nlls(self.model, ids)  # (N,)
        res = result(nll.double().sum().item(), nll.numel(), self.level)
        return res.to_dict()

    def normalize(self, text: str) -> str:
        """`text` normalised as the run's training text was (every user text passes here)."""
        return normalize_text(text, lowercase=self.lowercase)

    def encode(self, prompt: str) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens) of `prompt`, normalised, starting with `<eos>`."""
        return encode_prompt(self.normalize(prompt), self.vocab, self.level)

    def tokens(self, text: str) -> list[str]:
        """Tokens of `text` to score, normalised."""
        return tokenize(self.normalize(text), self.level)


def _check_text(what: str, text: object) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")


def load(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> TextModel:
    """Load a run folder's best (or last) weights for generating and scoring."""
    model, vocab, info = checkpoint.load_run(run_dir, which, device)
    lowercase = info.config.data.lowercase
    return TextModel(model, vocab, info.level, str(run_dir), lowercase=lowercase)
