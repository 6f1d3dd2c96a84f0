"""Beam search over the recurrent state: the beams are the batch columns of one step.

Each step runs the K = `num_beams` beams as one batch (K, V), adds each beam's score to
the log-probabilities of its next tokens (after the rules of filters.py that come before
any choice: min_new_tokens, no-repeat n-grams, the repetition penalty), and keeps the K
best continuations of all K x V; the state is then reordered by the beams they came from
(`index_select` on the batch dimension) before the next step.

With `stop_at_eos`, a continuation that ends in `<eos>` among the K best is a finished
hypothesis, scored `sum(log p) / length ** length_penalty` (length: its new tokens, the
`<eos>` included); at `max_new_tokens` the live beams finish too. The K best finished
hypotheses are kept. `early_stopping` ends the search once K have finished; otherwise
it ends once the best live beam, scored at its current length, cannot beat the worst
kept one (Hugging Face's heuristic). Without `stop_at_eos` every beam runs to
`max_new_tokens` (so length_penalty does not matter). Deterministic: temperature,
top-k/p, min_p, typical_p and the seed are not used. `num_beams=1` is greedy search.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from lstmlm.generation.config import SampleConfig
from lstmlm.generation.sampling import EOS_ID, check_batch, start, step_rules
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.rnn import State


@dataclass
class Hypothesis:
    tokens: list[int]  # the new tokens, an ending <eos> included
    logprobs: list[float]  # the model's own log-probability of each (before any rule)
    score: float  # sum of the (ruled) log-probabilities / len(tokens) ** length_penalty


@dataclass
class _Beams:
    tokens: list[list[int]]
    logprobs: list[list[float]]
    scores: Tensor  # (K,) summed log-probabilities; -inf for an empty column


@torch.inference_mode()
def beam_search(model: LanguageModel, prompt_ids: list[int], cfg: SampleConfig) -> list[Hypothesis]:
    """The `num_return_sequences` best hypotheses, best first."""
    check_batch(model, cfg)
    k = cfg.num_beams
    logits, state = start(model, prompt_ids, k)  # (K, V)
    device, v = logits.device, logits.size(-1)
    scores = torch.full((k,), -math.inf, device=device)
    scores[0] = 0.0  # the K columns start equal: one live beam, not K copies of it
    beams = _Beams([[] for _ in range(k)], [[] for _ in range(k)], scores)
    seen = (
        torch.zeros(k, v, dtype=torch.bool, device=device) if cfg.repetition_penalty != 1 else None
    )
    finished: list[Hypothesis] = []
    step_once = None
    for step in range(cfg.max_new_tokens):
        histories = [prompt_ids + t for t in beams.tokens] if cfg.no_repeat_ngram_size else []
        ruled = torch.log_softmax(step_rules(logits, step, cfg, seen, histories).float(), -1)
        model_logp = torch.log_softmax(logits.float(), -1)  # (K, V)
        total = beams.scores.unsqueeze(1) + ruled  # (K, V)
        top, flat = total.view(-1).topk(min(2 * k, k * v))  # (2K,) best continuations
        length = step + 1
        live: list[tuple[int, int, float]] = []  # (beam, token, summed log-prob)
        for rank, (s, f) in enumerate(zip(top.tolist(), flat.tolist(), strict=True)):
            if s == -math.inf or len(live) == k:
                break
            beam, tok = divmod(f, v)
            if cfg.stop_at_eos and tok == EOS_ID:
                if rank < k:  # an ended beam counts only among the K best (as in HF)
                    _keep(finished, _hyp(beams, beam, tok, s, model_logp, cfg, length), k)
                continue
            live.append((beam, tok, s))
        last = step + 1 == cfg.max_new_tokens
        if last:
            for beam, tok, s in live:
                _keep(finished, _hyp(beams, beam, tok, s, model_logp, cfg, length), k)
        if last or not live or _done(finished, live, cfg, length):
            break
        live += [(0, EOS_ID, -math.inf)] * (k - len(live))  # empty columns
        idx = torch.tensor([b for b, _, _ in live], device=device)  # (K,) beam of each column
        toks = torch.tensor([t for _, t, _ in live], device=device)  # (K,)
        beams = _Beams(
            [beams.tokens[b] + [t] for b, t, _ in live],
            [beams.logprobs[b] + [float(model_logp[b, t])] for b, t, _ in live],
            torch.tensor([s for _, _, s in live], device=device),
        )
        state = _reorder(state, idx)
        if seen is not None:
            seen = seen.index_select(0, idx)
            seen[torch.arange(k, device=device), toks] = True
            seen[:, EOS_ID] = False
        if step_once is None:
            step_once = model.stepper(cfg.precision)
        logits, state = step_once(toks, state)  # (K, V)
    return finished[: cfg.num_return_sequences]


def _reorder(state: State, idx: Tensor) -> State:
    """Each layer's state, (L, K, H) per tensor, with column j taken from column idx[j]."""
    return [tuple(t.index_select(1, idx) for t in layer) for layer in state]


def _hyp(
    beams: _Beams, beam: int, tok: int, s: float, model_logp: Tensor, cfg: SampleConfig, n: int
) -> Hypothesis:
    return Hypothesis(
        beams.tokens[beam] + [tok],
        beams.logprobs[beam] + [float(model_logp[beam, tok])],
        s / n**cfg.length_penalty,
    )


def _keep(finished: list[Hypothesis], hyp: Hypothesis, k: int) -> None:
    """Add `hyp`, keeping the k best, best first."""
    finished.append(hyp)
    finished.sort(key=lambda h: h.score, reverse=True)
    del finished[k:]


def _done(
    finished: list[Hypothesis], live: list[tuple[int, int, float]], cfg: SampleConfig, n: int
) -> bool:
    if len(finished) < cfg.num_beams:
        return False
    if cfg.early_stopping:
        return True
    best_live = max(s for _, _, s in live) / n**cfg.length_penalty
    return best_live <= finished[-1].score
