"""Sampled token ids as text: detokenized piece by piece, stop strings cut, streamed.

Every caller that turns samples into text goes through here: `generate` (a batch of
samples, whole texts), `stream` (one sample, yielded as pieces while it is made). Both
feed each sample's tokens to a `Completion`, which appends the token's text, cuts the
text at the first stop string and knows how much of it is safe to show: an end of the
text that could still grow into a stop string is held back until it is known not to,
so a streamed piece is never taken back.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from lstmlm.data.subword import SUBWORD_LEVELS, ByteDecoder, SubwordVocab
from lstmlm.data.tokenize import tokenize_prompt
from lstmlm.data.vocab import EOS, Vocab
from lstmlm.generation.beam import beam_search
from lstmlm.generation.config import SampleConfig
from lstmlm.generation.sampling import check_batch, sample_steps
from lstmlm.generation.scores import token_score, trim_scores
from lstmlm.nn.model import LanguageModel

FINISH_REASONS = ("length", "stop", "eos", "cancelled")


def encode_prompt(prompt: str, vocab: Vocab, level: str) -> tuple[list[int], list[str]]:
    """Prompt ids (starting with `<eos>`, as after a line break) and its unknown tokens."""
    if isinstance(vocab, SubwordVocab):  # bytes: never unknown
        return vocab.encode([EOS, *vocab.tokens(prompt)]), []
    tokens = tokenize_prompt(prompt, level)
    unknown = [t for t in tokens if t not in vocab]
    return vocab.encode([EOS, *tokens]), unknown


def token_piece(token: str, prev: str | None, level: str) -> str:
    """The text `token` adds after `prev`; joined pieces equal `detokenize(tokens)`."""
    if token == EOS:
        return "\n"
    if level == "char":
        return token
    if level == "symbols":
        return token.replace("_", " ")
    return token if prev is None or prev == EOS else " " + token


def joiner(prompt: str, level: str, continuation: str) -> str:
    """The space between a word-level prompt and its continuation, when one is needed to
    show them as one passage (`prompt + joiner(...) + continuation`)."""
    needs = level == "word" and prompt and not prompt.endswith((" ", "\n", "\t"))
    return " " if needs and continuation and not continuation.startswith("\n") else ""


def find_stop(text: str, stops: Sequence[str]) -> int:
    """Index of the earliest stop string in `text`, or -1."""
    hits = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(hits) if hits else -1


def held_back(text: str, stops: Sequence[str]) -> int:
    """Length of the longest end of `text` that could still grow into a stop string."""
    best = 0
    for s in stops:
        for n in range(min(len(s) - 1, len(text)), best, -1):
            if text.endswith(s[:n]):
                best = n
                break
    return best


@dataclass
class Completion:
    """One sample's continuation as it is made (the prompt is not part of it)."""

    text: str = ""
    tokens: int = 0  # tokens that went into the text (a cut stop string's tokens count)
    finish_reason: str = "length"  # length | stop | eos | cancelled
    done: bool = False
    shown: int = 0  # characters of `text` handed out as pieces so far
    # With output_scores: each token of `text` (scores.token_score), joined = `text`.
    token_scores: list[dict[str, Any]] = field(default_factory=list)
    _prev: str | None = field(default=None, repr=False)
    _bytes: ByteDecoder | None = field(default=None, repr=False)  # subword levels

    def add(
        self,
        token: str,
        level: str,
        stops: Sequence[str],
        stop_at_eos: bool,
        logprob: float | None = None,
    ) -> None:
        """Append one drawn token (with the model's log-probability of it, if given);
        sets `done` at a stop string or (`stop_at_eos`) <eos>."""
        if stop_at_eos and token == EOS:
            self.finish("eos")
            return
        piece = self._piece(token, level)
        self.text += piece
        if logprob is not None:
            self.token_scores.append(token_score(token, piece, logprob))
        self._prev = token
        self.tokens += 1
        cut = find_stop(self.text, stops) if stops else -1
        if cut >= 0:
            self.text = self.text[:cut]
            trim_scores(self.token_scores, cut)
            self.finish("stop")

    def _piece(self, token: str, level: str) -> str:
        """Byte-level pieces go through an incremental UTF-8 decoder (a character may
        span pieces); the other levels' tokens are whole strings."""
        if level in SUBWORD_LEVELS:
            self._bytes = self._bytes or ByteDecoder()
            return self._bytes.piece(token)
        return token_piece(token, self._prev, level)

    def finish(self, reason: str) -> None:
        self.finish_reason, self.done = reason, True

    def next_piece(self, stops: Sequence[str]) -> str:
        """The text not handed out yet that can no longer change ("" if none): all of it
        once done, else all but an end that may grow into a stop string."""
        safe = len(self.text) if self.done else len(self.text) - held_back(self.text, stops)
        if safe <= self.shown:
            return ""
        piece, self.shown = self.text[self.shown : safe], safe
        return piece


def complete(
    model: LanguageModel,
    vocab: Vocab,
    level: str,
    prompt: str,
    cfg: SampleConfig,
    *,
    cancel: threading.Event | None = None,
) -> list[Completion]:
    """`cfg.num_return_sequences` continuations of `prompt` (prompt not included): the
    text, token count, finish reason and, with `output_scores`, the tokens' scores.

    `cancel` (set from another thread) stops the sampling before the next token.
    """
    check_batch(model, cfg)  # before the per-sample lists below
    ids, _ = encode_prompt(prompt, vocab, level)
    stops = cfg.stop_strings
    if cfg.num_beams > 1:
        out = []
        for hyp in beam_search(model, ids, cfg):
            c = Completion()
            for t, lp in zip(hyp.tokens, hyp.logprobs, strict=True):
                if not c.done:
                    c.add(vocab.itos[t], level, stops, cfg.stop_at_eos, _lp(cfg, lp))
            out.append(c)
        return out
    samples = [Completion() for _ in range(cfg.num_return_sequences)]
    for tok, logp in sample_steps(model, ids, cfg):
        if cancel is not None and cancel.is_set():
            for sample in samples:
                if not sample.done:
                    sample.finish("cancelled")
            break
        lps = logp.tolist() if logp is not None else [None] * len(samples)
        for sample, t, lp in zip(samples, tok.tolist(), lps, strict=True):
            if not sample.done:
                sample.add(vocab.itos[t], level, stops, cfg.stop_at_eos, lp)
        if all(s.done for s in samples):
            break
    for sample in samples:
        sample.done = True
    return samples


def _lp(cfg: SampleConfig, logprob: float) -> float | None:
    return logprob if cfg.output_scores else None


def generate(
    model: LanguageModel, vocab: Vocab, level: str, prompt: str, cfg: SampleConfig
) -> list[str]:
    """`cfg.num_return_sequences` continuations of `prompt` as text (prompt not included)."""
    return [c.text for c in complete(model, vocab, level, prompt, cfg)]


def stream(
    model: LanguageModel,
    vocab: Vocab,
    level: str,
    prompt: str,
    cfg: SampleConfig,
    *,
    cancel: threading.Event | None = None,
    completion: Completion | None = None,
) -> Iterator[str]:
    """Text pieces of one sample as it is made; `"".join` equals `generate(...)[0]`.

    `cancel` (set from another thread) stops the sampling before the next token;
    `completion`, when given, holds the whole text, the token count and the finish
    reason once the iterator is done. Beam search (`num_beams` > 1) knows its text only
    at the end: it comes as one piece.
    """
    if cfg.num_return_sequences != 1:
        raise ValueError("stream makes one sequence; use generate for num_return_sequences > 1")
    c = completion if completion is not None else Completion()
    if cfg.num_beams > 1:
        (best,) = complete(model, vocab, level, prompt, cfg, cancel=cancel)
        for name in ("text", "tokens", "finish_reason", "token_scores"):
            setattr(c, name, getattr(best, name))
        c.done = True
        if c.text:
            c.shown = len(c.text)
            yield c.text
        return
    ids, _ = encode_prompt(prompt, vocab, level)
    for tok, logp in sample_steps(model, ids, cfg):
        if cancel is not None and cancel.is_set():
            c.finish("cancelled")
            return
        lp = float(logp[0]) if logp is not None else None
        c.add(vocab.itos[int(tok[0])], level, cfg.stop_strings, cfg.stop_at_eos, lp)
        piece = c.next_piece(cfg.stop_strings)
        if piece:
            yield piece
        if c.done:
            return
    c.done = True
    piece = c.next_piece(cfg.stop_strings)
    if piece:
        yield piece
