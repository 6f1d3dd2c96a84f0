"""The Python API over a run folder: the one entry for inference (the CLI and the server
use it too).

    import lstmlm
    model = lstmlm.load("runs/ptb-medium")
    model.generate("the market", max_new_tokens=30, temperature=0.8, top_p=0.9, seed=1)
    model.generate(["the market", "a bank"], num_beams=4, do_sample=False)  # one list each
    for piece in model.stream("the market", max_new_tokens=30):
        print(piece, end="", flush=True)
    model.score("the market fell sharply\\n")  # {"tokens", "loss", "ppl", "bpc", "word_ppl", ...}

Sampling options are the fields of `generation.SampleConfig`, named as in Hugging Face's
`generate` (`max_new_tokens`, `do_sample`, `temperature`, `top_k`, `top_p`, `min_p`,
`typical_p`, `repetition_penalty`, `no_repeat_ngram_size`, `num_beams`,
`length_penalty`, `early_stopping`, `num_return_sequences`, `stop_strings`,
`output_scores`, ...; `num_samples` and `stop` are older names that still work), given
by name, or as a `SampleConfig` with options on top.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lstmlm.data.readers import normalize_text
from lstmlm.data.stats import text_stats
from lstmlm.data.subword import SubwordVocab
from lstmlm.data.tokenize import tokenize
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.evaluation.perplexity import result, token_nlls
from lstmlm.generation import (
    ALIASES,
    Completion,
    SampleConfig,
    complete,
    encode_prompt,
    resolve_aliases,
    token_piece,
    token_score,
)
from lstmlm.generation import stream as stream_text
from lstmlm.generation.config import check_prompt
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.runs import load_run

SAMPLE_OPTIONS = tuple(f.name for f in dataclasses.fields(SampleConfig))
Generated = list[str] | list[dict[str, Any]]  # texts, or with output_scores {text, tokens}


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

        `stop_strings` (alias `stop`) may be one string or a list of them; `num_samples`
        is `num_return_sequences`. ValueError for an unknown option or a value out of
        range, named as the option is (`max_new_tokens must be positive`).
        """
        if config is not None and not isinstance(config, SampleConfig):
            raise ValueError(
                f"sampling options are given by name (max_new_tokens=40, ...), got {config!r}"
            )
        unknown = sorted(set(options) - set(SAMPLE_OPTIONS) - set(ALIASES))
        if unknown:
            raise ValueError(
                f"unknown sampling option {unknown[0]!r}; known: {', '.join(SAMPLE_OPTIONS)}"
            )
        options = resolve_aliases(options)
        if "stop_strings" in options:
            options["stop_strings"] = _stop_strings(options["stop_strings"])
        return dataclasses.replace(config or SampleConfig(), **options).validate()

    def generate(
        self, prompt: str | list[str] = "", config: SampleConfig | None = None, **options: Any
    ) -> Generated | list[Generated]:
        """`num_return_sequences` continuations of `prompt` (prompt not included), made in
        parallel (or the best beams). With `output_scores`, each is a dict: `text` and
        `tokens`, one {token, text, logprob, bits} per new token of the text.

        A list of prompts gives a list with one such result per prompt.
        """
        cfg = self.sample_config(config, **options)
        if isinstance(prompt, list):
            return [self._generated(self.complete(p, cfg), cfg) for p in prompt]
        return self._generated(self.complete(prompt, cfg), cfg)

    @staticmethod
    def _generated(done: list[Completion], cfg: SampleConfig) -> Generated:
        if cfg.output_scores:
            return [{"text": c.text, "tokens": c.token_scores} for c in done]
        return [c.text for c in done]

    def complete(
        self,
        prompt: str,
        config: SampleConfig | None = None,
        *,
        cancel: threading.Event | None = None,
        **options: Any,
    ) -> list[Completion]:
        """`generate` with each continuation's whole record: its text, token count, why
        it ended (length, stop, eos, cancelled) and, with `output_scores`, its tokens'
        scores. `cancel`, set from another thread, stops it before the next token."""
        cfg = self.sample_config(config, **options)
        p = self._prompt(prompt)
        return complete(self.model, self.vocab, self.level, p, cfg, cancel=cancel)

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
        if cfg.num_return_sequences != 1:
            raise ValueError("stream makes one sequence; use generate for num_return_sequences > 1")
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

    def score(self, text: str, return_token_logprobs: bool = False) -> dict[str, Any]:
        """Perplexity per token of `text`, its bits per character and per-word perplexity
        (`bpc`, `word_ppl`: the sum of its tokens' NLLs over its own `chars` and `words`,
        data/stats.py; for any level), and how many of its tokens the vocabulary lacks
        (`unknown`, scored as `<unk>`).

        The text is read as if it followed a line break (`<eos>`), so every token of it,
        the `<eos>` of each line end included, is scored. `return_token_logprobs` adds
        `token_logprobs`: one {token, text, logprob, bits} per token, in order (`text`:
        what the token adds to the text, "\\n" for a line end; bits = surprisal).
        """
        if not isinstance(return_token_logprobs, bool):
            raise ValueError(
                f"return_token_logprobs must be true or false, got {return_token_logprobs!r}"
            )
        _check_text("the text", text)
        tokens = self.tokens(text)
        if not tokens:
            raise ValueError("no text to score")
        ids = torch.tensor(self.vocab.encode([EOS, *tokens]), dtype=torch.long)
        nll = token_nlls(self.model, ids)  # (N,): every token of the text scored
        counts = text_stats(self.normalize(text), self.level, len(tokens))
        res = result(nll.double().sum().item(), nll.numel()).on_text(counts)
        out: dict[str, Any] = {**res.to_dict(), "chars": counts.chars, "words": counts.words}
        out["unknown"] = sum(1 for t in tokens if t not in self.vocab)
        if return_token_logprobs:
            prevs = [None, *tokens[:-1]]
            out["token_logprobs"] = [
                token_score(t, token_piece(t, prev, self.level), -float(n))
                for t, prev, n in zip(tokens, prevs, nll.tolist(), strict=True)
            ]
        return out

    # --- reading user text ----------------------------------------------------------

    def normalize(self, text: str) -> str:
        """`text` normalised as the run's training text was (every user text passes here)."""
        _check_text("the text", text)
        return normalize_text(text, lowercase=self.lowercase)

    def encode(self, prompt: str) -> tuple[list[int], list[str]]:
        """(ids, unknown tokens) of `prompt`, normalised, starting with `<eos>`."""
        _check_text("the prompt", prompt)
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
