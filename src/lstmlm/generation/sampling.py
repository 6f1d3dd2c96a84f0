"""Sampling text from a trained model.

One step = one forward of the whole batch of samples (B = `num_return_sequences`) for
one token, then a draw per sample. The rules (filters.py), applied in this order to the
last logits (B, V):

1. `<eos>` is masked until `min_new_tokens` tokens have been made; with
   `no_repeat_ngram_size` n, a token that would repeat an n-gram gets -inf.
2. Repetition penalty (CTRL, Keskar et al. 2019): the logit of every token this sample
   has already generated is divided by `penalty` when positive and multiplied by it when
   negative (so its probability always drops for penalty > 1). `<eos>` is exempt: line
   ends are structure, not repetition. Prompt tokens are not penalized.
3. `do_sample=False` or temperature 0 is greedy (argmax); otherwise logits are divided by
   the temperature.
4. Top-k keeps the k largest logits. With `top_k_decay` d < 1 the k is *adjusted* to the
   length of the current sentence: k_t = max(1, round(k * d ** n)), n = tokens since the
   last `<eos>` (prompt included), so a sentence starts varied and settles as it grows.
5. Top-p (nucleus, Holtzman et al. 2020) keeps the smallest set of most likely tokens
   whose probability mass (after top-k, renormalized) is >= p.
6. `min_p`, then `typical_p` (filters.py), on the kept tokens' probabilities.
7. One draw by inverse CDF from each sample's own `torch.Generator`, seeded `seed + i`:
   sample i of a batch is the very text a one-sample run with seed `seed + i` makes.

`<eos>` ends a sample when `stop_at_eos` is set; stop strings are checked on the text,
in text.py. With `output_scores`, each step also gives the model's own log-probability
of the chosen tokens (of the raw logits, before any rule), the number `score` reports.
Beam search (`num_beams` > 1) is in beam.py.
"""

from __future__ import annotations

import math
import secrets
from collections.abc import Iterator, Sequence

import torch
from torch import Tensor

from lstmlm.config import FieldError
from lstmlm.data.vocab import Vocab
from lstmlm.generation.config import SampleConfig
from lstmlm.generation.filters import (
    apply_min_p,
    apply_no_repeat_ngram,
    apply_repetition_penalty,
    apply_typical_p,
)
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.rnn import State

EOS_ID = Vocab.eos_id


# At most this many scores (samples x vocabulary) per step: each step holds a few (B, V)
# float tensors, so this bounds a sampling call's memory at about a GB.
MAX_STEP_SCORES = 2**26


# --- one step: logits -> token ------------------------------------------------------


def candidates(
    logits: Tensor,
    temperature: float,
    top_k: int | Tensor = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
) -> tuple[Tensor, Tensor | None]:
    """logits (B, V) -> (probs (B, C), ids (B, C) or None when C = V in vocabulary order).

    `top_k` is an int or a per-row (B,) tensor of k's (0 = all). Tokens outside the
    top-k / nucleus have probability 0. `temperature` must be > 0.

    The best score is subtracted before dividing by the temperature, so that a tiny
    temperature (or a tiny repetition penalty's huge scores) makes the draw greedy
    rather than inf / inf = NaN.
    """
    logits = torch.nan_to_num(logits.float(), nan=-math.inf, posinf=torch.finfo(torch.float32).max)
    temperature = max(temperature, torch.finfo(torch.float32).tiny)  # not 0 in fp32
    logits = (logits - logits.max(dim=-1, keepdim=True).values) / temperature  # (B, V), <= 0
    v = logits.size(-1)
    ids: Tensor | None = None
    k_row = top_k if isinstance(top_k, Tensor) else None
    k_max = int(k_row.max()) if k_row is not None else int(top_k)
    if k_row is not None or 0 < k_max < v:
        k_max = min(k_max, v)
        logits, ids = logits.topk(k_max, dim=-1)  # (B, k), sorted descending
        if k_row is not None:  # adjusted k: drop columns past each row's own k
            col = torch.arange(k_max, device=logits.device)
            logits = logits.masked_fill(col >= k_row.unsqueeze(1), float("-inf"))
    elif top_p < 1:
        logits, ids = logits.sort(dim=-1, descending=True)  # (B, V)
    probs = torch.softmax(logits, dim=-1)  # (B, C)
    if top_p < 1:
        mass_before = probs.cumsum(dim=-1) - probs  # (B, C) mass of the better tokens
        drop = mass_before >= top_p
        drop[:, 0] = False  # the best token always stays (top_p may round to 0 in fp32)
        probs = probs.masked_fill(drop, 0.0)
        probs = probs / probs.sum(dim=-1, keepdim=True)
    return apply_typical_p(apply_min_p(probs, min_p), typical_p), ids


def sampling_distribution(
    logits: Tensor,
    temperature: float,
    top_k: int | Tensor = 0,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
) -> Tensor:
    """The distribution a step draws from, over the whole vocabulary: (B, V)."""
    if temperature == 0:
        return torch.nn.functional.one_hot(logits.argmax(-1), logits.size(-1)).float()
    probs, ids = candidates(logits, temperature, top_k, top_p, min_p, typical_p)
    if ids is None:
        return probs
    return torch.zeros(logits.shape, dtype=probs.dtype, device=probs.device).scatter_(
        -1, ids, probs
    )


def _draw(probs: Tensor, generators: Sequence[torch.Generator] | torch.Generator | None) -> Tensor:
    """Inverse-CDF draw of one index per row of probs (B, C): one uniform per row."""
    b = probs.size(0)
    if isinstance(generators, Sequence):
        u = torch.cat([torch.rand(1, generator=g, device=probs.device) for g in generators])
    else:
        u = torch.rand(b, generator=generators, device=probs.device)
    cdf = probs.cumsum(dim=-1)  # (B, C)
    total = cdf[:, -1]  # (B,) 1 up to rounding
    if not bool((total > 0).all() & torch.isfinite(total).all()):  # one host read per token
        raise ValueError("the model's scores are not finite numbers (a diverged model?)")
    u = (u * total).unsqueeze(1)  # (B, 1) scaled by the (float) total
    idx = torch.searchsorted(cdf, u, right=True)  # first index whose cdf exceeds u
    return idx.clamp_(max=probs.size(-1) - 1).squeeze(1)


def next_token(
    logits: Tensor,
    temperature: float,
    top_k: int | Tensor,
    generator: Sequence[torch.Generator] | torch.Generator | None,
    top_p: float = 1.0,
    min_p: float = 0.0,
    typical_p: float = 1.0,
) -> Tensor:
    """logits (B, V) -> token ids (B,). `generator`: one for the batch or one per row."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    probs, ids = candidates(logits, temperature, top_k, top_p, min_p, typical_p)  # (B, C)
    idx = _draw(probs, generator)  # (B,)
    return idx if ids is None else ids.gather(1, idx.unsqueeze(1)).squeeze(1)


# --- the sampling loop --------------------------------------------------------------


def draw_seed() -> int:
    """A random seed for a sampling call given none (from the OS: the caller's torch RNG
    is left alone), to report so that the text can be made again."""
    return secrets.randbelow(2**31)


def _generators(seed: int | None, n: int, device: torch.device) -> list[torch.Generator]:
    base = seed if seed is not None else draw_seed()
    gens = []
    for i in range(n):
        g = torch.Generator(device=device)
        g.manual_seed(base + i)
        gens.append(g)
    return gens


def start(model: LanguageModel, prompt_ids: list[int], b: int) -> tuple[Tensor, State]:
    """Feed the prompt once with batch 1 and copy its state to `b` columns: the last
    logits (B, V) and the state, for the first step of B samples (or beams)."""
    if not prompt_ids:
        raise ValueError("the prompt needs at least one token (start with <eos>)")
    model.eval()
    device = model.embedding.weight.device
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device).unsqueeze(1)  # (T, 1)
    last, prompt_state = model.last_logits(x, model.init_state(1))  # (1, V)
    state: State = [
        tuple(t.expand(-1, b, -1).contiguous() for t in layer) for layer in prompt_state
    ]
    return last.expand(b, -1), state  # (B, V)


def chosen_logprobs(logits: Tensor, tok: Tensor) -> Tensor:
    """logits (B, V), tok (B,) -> the model's log-probability of each chosen token (B,)."""
    logp = torch.log_softmax(logits.float(), dim=-1)  # (B, V)
    return logp.gather(1, tok.unsqueeze(1)).squeeze(1)


def step_rules(
    logits: Tensor, step: int, cfg: SampleConfig, seen: Tensor | None, histories: list[list[int]]
) -> Tensor:
    """The rules before any choice (min_new_tokens, no-repeat n-grams, repetition
    penalty) applied to a step's logits (B, V)."""
    if step < cfg.min_new_tokens:
        logits = logits.clone()
        logits[:, EOS_ID] = float("-inf")
    logits = apply_no_repeat_ngram(logits, histories, cfg.no_repeat_ngram_size)
    if seen is not None:
        logits = apply_repetition_penalty(logits, seen, cfg.repetition_penalty)
    return logits


@torch.inference_mode()
def sample_ids(model: LanguageModel, prompt_ids: list[int], cfg: SampleConfig) -> Iterator[Tensor]:
    """Yield (num_return_sequences,) new token ids per step, all samples in one batch.

    With `stop_at_eos`, a sample that has drawn `<eos>` keeps yielding `<eos>` (padding)
    and the iterator ends once every sample has; stop strings are the caller's job.
    """
    for tok, _ in sample_steps(model, prompt_ids, cfg):
        yield tok


@torch.inference_mode()
def sample_steps(
    model: LanguageModel, prompt_ids: list[int], cfg: SampleConfig
) -> Iterator[tuple[Tensor, Tensor | None]]:
    """`sample_ids`, each step's ids (B,) with the model's log-probabilities of them (B,)
    when `cfg.output_scores` (else None)."""
    check_batch(model, cfg)
    b = cfg.num_return_sequences
    logits, state = start(model, prompt_ids, b)  # (B, V)
    device = logits.device
    step_once = None  # made after the first token: its weight copies take ms
    gens = _generators(cfg.seed, b, device)
    v = logits.size(-1)
    seen = (
        torch.zeros(b, v, dtype=torch.bool, device=device) if cfg.repetition_penalty != 1 else None
    )
    histories = [list(prompt_ids) for _ in range(b)] if cfg.no_repeat_ngram_size else []
    adjust_k = cfg.top_k > 0 and cfg.top_k_decay < 1
    since_eos = torch.full((b,), _tokens_since_eos(prompt_ids), dtype=torch.long, device=device)
    done = torch.zeros(b, dtype=torch.bool, device=device)
    temperature = 0.0 if cfg.greedy else cfg.temperature
    for step in range(cfg.max_new_tokens):
        ruled = step_rules(logits, step, cfg, seen, histories)
        top_k: int | Tensor = cfg.top_k
        if adjust_k:
            decayed = cfg.top_k * cfg.top_k_decay ** since_eos.double()  # (B,)
            top_k = decayed.round().long().clamp_(1, cfg.top_k)
        tok = next_token(ruled, temperature, top_k, gens, cfg.top_p, cfg.min_p, cfg.typical_p)
        if cfg.stop_at_eos:
            tok = tok.masked_fill(done, EOS_ID)
            done |= tok == EOS_ID
        yield tok, chosen_logprobs(logits, tok) if cfg.output_scores else None
        if cfg.stop_at_eos and bool(done.all()):
            return
        if step + 1 == cfg.max_new_tokens:
            return  # no forward for a token nobody will read
        if seen is not None:
            seen[torch.arange(b, device=device), tok] = True
            seen[:, EOS_ID] = False
        for history, t in zip(histories, tok.tolist(), strict=False):
            history.append(t)
        if adjust_k:
            since_eos = torch.where(tok == EOS_ID, 0, since_eos + 1)
        if step_once is None:
            step_once = model.stepper(cfg.precision)
        logits, state = step_once(tok, state)  # (B, V)


def check_batch(model: LanguageModel, cfg: SampleConfig) -> None:
    """Validate `cfg`; FieldError when its samples (or beams) at once would not fit in
    memory (before any per-sample state is made)."""
    cfg.validate()
    v = model.embedding.num_embeddings
    name = "num_beams" if cfg.num_beams > 1 else "num_return_sequences"
    n = max(cfg.num_beams, cfg.num_return_sequences)
    if n * v > MAX_STEP_SCORES:
        raise FieldError(
            name,
            f"{n} is too many at once for a vocabulary of {v:,} "
            f"(at most {MAX_STEP_SCORES // v:,}); split it into several calls",
        )


def _tokens_since_eos(ids: list[int]) -> int:
    for n, i in enumerate(reversed(ids)):
        if i == EOS_ID:
            return n
    return len(ids)
