"""Sampling text from a trained model."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch
from torch import Tensor

from .model import LanguageModel
from .rnn import State
from .tokenize import detokenize, tokenize_prompt
from .vocab import EOS, Vocab


@dataclass(frozen=True)
class SampleConfig:
    max_new_tokens: int = 100
    temperature: float = 1.0  # 0 = greedy
    top_k: int = 0  # 0 = all tokens
    seed: int | None = None
    num_samples: int = 1

    def validate(self) -> None:
        if self.max_new_tokens < 1:
            raise ValueError(f"--max-new-tokens must be positive, got {self.max_new_tokens}")
        if not (self.temperature >= 0):
            raise ValueError(f"--temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"--top-k must be >= 0, got {self.top_k}")
        if self.num_samples < 1:
            raise ValueError(f"--num-samples must be positive, got {self.num_samples}")


def next_token(
    logits: Tensor, temperature: float, top_k: int, generator: torch.Generator | None
) -> Tensor:
    """logits (B, V) -> token ids (B,)."""
    if temperature == 0:
        return logits.argmax(dim=-1)
    logits = logits.float() / temperature
    if 0 < top_k < logits.size(-1):
        kth = logits.topk(top_k, dim=-1).values[:, -1:]  # (B, 1)
        logits = logits.masked_fill(logits < kth, float("-inf"))
    probs = torch.softmax(logits, dim=-1)
    return torch.multinomial(probs, 1, generator=generator).squeeze(1)


def encode_prompt(prompt: str, vocab: Vocab, level: str) -> tuple[list[int], list[str]]:
    """Prompt ids (starting with `<eos>`, as after a line break) and its unknown tokens."""
    tokens = tokenize_prompt(prompt, level)
    unknown = [t for t in tokens if t not in vocab]
    return vocab.encode([EOS, *tokens]), unknown


@torch.inference_mode()
def sample_ids(model: LanguageModel, prompt_ids: list[int], cfg: SampleConfig) -> Iterator[Tensor]:
    """Yield (num_samples,) new token ids per step, all samples in one batch."""
    cfg.validate()
    model.eval()
    device = model.embedding.weight.device
    gen = torch.Generator(device=device)
    gen.manual_seed(cfg.seed if cfg.seed is not None else torch.seed())
    b = cfg.num_samples
    x = torch.tensor(prompt_ids, dtype=torch.long, device=device).unsqueeze(1).expand(-1, b)
    state: State = model.init_state(b)
    out = model(x, state)  # feed the whole prompt at once
    logits, state = out.logits[-1], out.state  # (B, V)
    for _ in range(cfg.max_new_tokens):
        tok = next_token(logits, cfg.temperature, cfg.top_k, gen)  # (B,)
        yield tok
        out = model(tok.unsqueeze(0), state)
        logits, state = out.logits[0], out.state


def generate(
    model: LanguageModel, vocab: Vocab, level: str, prompt: str, cfg: SampleConfig
) -> list[str]:
    """Continuations of `prompt` as detokenized text (prompt not included)."""
    ids, _ = encode_prompt(prompt, vocab, level)
    steps = list(sample_ids(model, ids, cfg))
    cols = torch.stack(steps, dim=1).tolist() if steps else [[] for _ in range(cfg.num_samples)]
    return [detokenize(vocab.decode(c), level) for c in cols]
