"""The Python API over a run folder: the one entry for inference (the CLI and the server
use it too).

    import lstmlm
    model = lstmlm.load("runs/ptb-medium")
    model.generate("the market", max_new_tokens=30, temperature=0.8, top_p=0.9, seed=1)
    for piece in model.stream("the market", max_new_tokens=30):
        print(piece, end="", flush=True)
    model.score("the market fell sharply\\n")  # {"tokens", "loss", "ppl", "bpc", "unknown"}

Sampling options are the fields of `generation.SampleConfig` (`max_new_tokens`,
`temperature`, `top_k`, `top_p`, `repetition_penalty`, `stop`, `seed`, `num_samples`,
`top_k_decay`, `stop_at_eos`, `min_new_tokens`, `precision`), given by name, or as a
`SampleConfig` with options on top.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lstmlm.data.readers import normalize_text
from lstmlm.data.subword import SubwordVocab
from lstmlm.data.tokenize import tokenize
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.evaluation.perplexity import result, token_nlls
from lstmlm.generation import Completion, SampleConfig, encode_prompt
from lstmlm.generation import generate as generate_texts
from lstmlm.generation import stream as stream_text
from lstmlm.generation.config import check_prompt
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.runs import load_run

SAMPLE_OPTIONS = tuple(f.name for f in dataclasses.fields(SampleConfig))


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

    # --- sampling -----------------------------------------------------------------

    def sample_config(self, config: SampleConfig | None = None, **options: Any) -> SampleConfig:
        """`config` (default: `SampleConfig()`) with `options` on top, validated.

        `stop` may be one string or a list of them. ValueError for an unknown option or
        a value out of range, named as the option is (`max_new_tokens must be positive`).
        """
        if config is not None and not isinstance(config, SampleConfig):
            raise ValueError(
                f"sampling options are given by name (max_new_tokens=40, ...), got {config!r}"
            )
        unknown = sorted(set(options) - set(SAMPLE_OPTIONS))
        if unknown:
            raise ValueError(
                f"unknown sampling option {unknown[0]!r}; known: {', '.join(SAMPLE_OPTIONS)}"
            )
        if "stop" in options:
            options["stop"] = _stop_strings(options["stop"])
        return dataclasses.replace(config or SampleConfig(), **options).validate()

    def generate(
        self, prompt: str = "", config: SampleConfig | None = None, **options: Any
    ) -> list[str]:
        """`num_samples` continuations of `prompt` (prompt not included), made in parallel."""
        cfg = self.sample_config(config, **options)
        return generate_texts(self.model, self.vocab, self.level, self._prompt(prompt), cfg)

    def stream(
        self,
        prompt: str = "",
        config: SampleConfig | None = None,
        *,
        cancel: threading.Event | None = None,
        completion: Completion | None = None,
        **options: Any,
    ) -> Iterator[str]:
        """One continuation, yielded as text pieces as the tokens are made.

        `cancel`, set from another thread, stops it before the next token; `completion`
        receives the whole text, its token count and why it ended (length, stop, eos,
        cancelled).
        """
        cfg = self.sample_config(config, **options)
        if cfg.num_samples != 1:
            raise ValueError("stream makes one sample; use generate for num_samples > 1")
        p = self._prompt(prompt)
        return stream_text(
            self.model, self.vocab, self.level, p, cfg, cancel=cancel, completion=completion
        )

    def _prompt(self, prompt: str) -> str:
        return self.normalize(check_prompt(prompt))

    def unknown_tokens(self, prompt: str) -> list[str]:
        """Tokens of `prompt` that the vocabulary lacks (read as `<unk>`)."""
        _check_text("the prompt", prompt)
        return self.encode(prompt)[1]

    # --- scoring ------------------------------------------------------------------

    def score(self, text: str) -> dict[str, Any]:
        """Perplexity of `text` (bits per char too for character levels), and how many of
        its tokens the vocabulary lacks (`unknown`, scored as `<unk>`).

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
        return {**res.to_dict(), "unknown": sum(1 for t in tokens if t not in self.vocab)}

    # --- reading user text ----------------------------------------------------------

    def normalize(self, text: str) -> str:
        """`text` normalised as the run's training text was (every user text passes here)."""
        return normalize_text(text, lowercase=self.lowercase)

    def encode(self, prompt: str) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens) of `prompt`, normalised, starting with `<eos>`."""
        return encode_prompt(self.normalize(prompt), self.vocab, self.level)

    def tokens(self, text: str) -> list[str]:
        """Tokens of `text` to score, normalised."""
        if isinstance(self.vocab, SubwordVocab):
            return self.vocab.tokens(self.normalize(text))
        return tokenize(self.normalize(text), self.level)


def _stop_strings(stop: object) -> tuple[str, ...]:
    if stop is None:
        return ()
    if isinstance(stop, str):
        return (stop,)
    if isinstance(stop, list | tuple):
        return tuple(stop)
    raise ValueError(f"stop must be a string or a list of strings, got {stop!r}")


def _check_text(what: str, text: object) -> None:
    if not isinstance(text, str):
        raise ValueError(f"{what} must be a string, got {type(text).__name__}")


def load(run_dir: str | Path, which: str = "best", device: str | torch.device = "cpu") -> TextModel:
    """Load a run folder's best (or last) weights for generating and scoring."""
    model, vocab, info = load_run(run_dir, which, device)
    lowercase = info.config.data.lowercase
    return TextModel(model, vocab, info.level, str(run_dir), lowercase=lowercase)
