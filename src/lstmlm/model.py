"""The language model: embed -> recurrent stack -> (FC) -> decoder."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from .config import ModelConfig
from .regularize import embedding_dropout, locked_dropout
from .rnn import RNNStack, State


@dataclass
class LMOutput:
    logits: Tensor  # (T, B, V)
    state: State
    hiddens: list[Tensor]  # each layer's output (T, B, H_i), before dropout
    dropped: Tensor | None = None  # last layer's output after dropout (T, B, H_last), for AR


class LanguageModel(nn.Module):
    def __init__(self, cfg: ModelConfig, vocab_size: int):
        super().__init__()
        cfg.validate()
        if vocab_size < 2:
            raise ValueError(f"vocabulary size must be at least 2, got {vocab_size}")
        self.cfg = cfg
        self.vocab_size = vocab_size
        hidden = list(cfg.layer_sizes)
        self.embedding = nn.Embedding(vocab_size, cfg.emb_size)
        self.rnn = RNNStack(
            cfg.rnn,
            cfg.emb_size,
            hidden,
            cfg.cell,
            cfg.dropout,
            cfg.dropout_h,
            cfg.wdrop,
            cfg.mogrifier_rounds,
            cfg.mogrifier_rank,
        )
        self.drop = nn.Dropout(cfg.dropout)
        self.fc = nn.ModuleList(nn.Linear(hidden[-1], hidden[-1]) for _ in range(cfg.fc_layers))
        out_size = hidden[-1]
        self.proj: nn.Linear | None = None
        if cfg.tie_weights and out_size != cfg.emb_size:
            self.proj = nn.Linear(out_size, cfg.emb_size)
            out_size = cfg.emb_size
        self.decoder = nn.Linear(out_size, vocab_size)
        if cfg.tie_weights:
            self.decoder.weight = self.embedding.weight
        self._init_weights()

    @property
    def tied_keys(self) -> tuple[str, ...]:
        """State-dict keys that alias another key (left out of checkpoints)."""
        return ("decoder.weight",) if self.cfg.tie_weights else ()

    def _init_weights(self) -> None:
        r = self.cfg.init_range
        if r is None:
            return
        if self.cfg.init_all:
            for p in self.parameters():
                nn.init.uniform_(p, -r, r)
        else:
            nn.init.uniform_(self.embedding.weight, -r, r)
            if not self.cfg.tie_weights:
                nn.init.uniform_(self.decoder.weight, -r, r)
        nn.init.zeros_(self.decoder.bias)

    def init_state(self, batch_size: int) -> State:
        return self.rnn.init_state(batch_size, self.embedding.weight.device)

    def forward(self, tokens: Tensor, state: State | None = None) -> LMOutput:
        """tokens (T, B) -> logits (T, B, V)."""
        if state is None:
            state = self.init_state(tokens.size(1))
        cfg = self.cfg
        x = embedding_dropout(self.embedding, tokens, cfg.dropout_e, self.training)  # (T, B, E)
        x = locked_dropout(self.drop(x), cfg.dropout_i, self.training)
        out, state, hiddens = self.rnn(x, state)  # (T, B, H)
        out = locked_dropout(self.drop(out), cfg.dropout_o, self.training)
        dropped = out
        for fc in self.fc:
            out = self.drop(torch.relu(fc(out)))
        if self.proj is not None:
            out = self.proj(out)  # (T, B, E)
        return LMOutput(self.decoder(out), state, hiddens, dropped)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
