"""The language model: embed -> recurrent stack -> (FC) -> decoder."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from lstmlm.config import ModelConfig
from lstmlm.nn import tied
from lstmlm.nn.regularize import dropout, embedding_dropout, locked_dropout
from lstmlm.nn.rnn import RNNStack, State
from lstmlm.nn.softmax import AdaptiveSoftmax, FullSoftmax, make_head
from lstmlm.nn.step import decoder_step

StepFn = Callable[[Tensor, State], tuple[Tensor, State]]


@dataclass
class LMOutput:
    # (T, B, V) scores whose log_softmax is the exact log-probabilities: logits for the
    # full softmax, the log-probabilities themselves for the adaptive one. None when
    # forward was given targets (training computes `loss` and never builds (T, B, V)).
    logits: Tensor | None
    state: State
    hiddens: list[Tensor]  # each layer's output (T, B, H_i), before dropout
    dropped: Tensor | None = None  # last layer's output after dropout (T, B, H_last), for AR
    features: Tensor | None = None  # the decoder's input (T, B, D)
    loss: Tensor | None = None  # mean NLL per target token (fp32), when given targets


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
        self.fc = nn.ModuleList(nn.Linear(hidden[-1], hidden[-1]) for _ in range(cfg.fc_layers))
        out_size = hidden[-1]
        self.proj: nn.Linear | None = None
        if cfg.tie_weights and out_size != cfg.emb_size:
            self.proj = nn.Linear(out_size, cfg.emb_size)
            out_size = cfg.emb_size
        # Output head (softmax.py): FullSoftmax is an nn.Linear, so `decoder.weight` ties.
        self.decoder: FullSoftmax | AdaptiveSoftmax = make_head(
            cfg.softmax, out_size, vocab_size, cfg.cutoffs, cfg.div_value, cfg.sampled_softmax
        )
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
                for name, p in self.decoder.named_parameters():
                    if name.endswith("weight"):
                        nn.init.uniform_(p, -r, r)
        for name, p in self.decoder.named_parameters():
            if name.endswith("bias"):
                nn.init.zeros_(p)

    def init_state(self, batch_size: int) -> State:
        return self.rnn.init_state(batch_size, self.embedding.weight.device)

    def forward(
        self, tokens: Tensor, state: State | None = None, targets: Tensor | None = None
    ) -> LMOutput:
        """tokens (T, B) -> logits (T, B, V); with targets (T, B), the mean NLL instead.

        Training passes targets so the loss is computed inside forward (DDP sees every
        parameter used there) and the adaptive softmax never builds (T, B, V).
        """
        if state is None:
            state = self.init_state(tokens.size(1))
        mailbox = self._tied_mailbox(targets)
        out, state, hiddens, dropped = self._features(tokens, state, mailbox)  # (T, B, D)
        if targets is not None:
            loss = self.loss(out, targets, mailbox=mailbox)  # ()
            return LMOutput(None, state, hiddens, dropped, out, loss)
        return LMOutput(self.decoder(out), state, hiddens, dropped, out)  # (T, B, V)

    def last_logits(self, tokens: Tensor, state: State | None = None) -> tuple[Tensor, State]:
        """tokens (T, B) -> the scores after the last token only (B, V), and the state.

        What a sampler needs from its prompt: the decoder runs on one position, not T.
        """
        if state is None:
            state = self.init_state(tokens.size(1))
        out, state, _, _ = self._features(tokens, state)  # (T, B, D)
        return self.decoder(out[-1:])[0], state  # (B, V)

    def _tied_mailbox(self, targets: Tensor | None) -> tied.Mailbox | None:
        """A Mailbox when the tied weight's gradient can be made in one piece (tied.py): a
        training forward with targets, a full softmax (sampled or not), no embedding dropout."""
        cfg = self.cfg
        plain = cfg.tie_weights and isinstance(self.decoder, FullSoftmax)
        plain = plain and (cfg.dropout_e == 0 or not self.training)
        wanted = targets is not None and torch.is_grad_enabled()
        wanted = wanted and self.embedding.weight.requires_grad
        return tied.Mailbox() if wanted and plain and tied.can_share(self.embedding) else None

    def _features(
        self, tokens: Tensor, state: State, mailbox: tied.Mailbox | None = None
    ) -> tuple[Tensor, State, list[Tensor], Tensor]:
        """tokens (T, B) -> decoder input (T, B, D), state, each layer's output, dropped."""
        cfg = self.cfg
        if mailbox is not None:
            x = tied.lookup(self.embedding.weight, tokens, mailbox)  # (T, B, E)
        else:
            x = embedding_dropout(self.embedding, tokens, cfg.dropout_e, self.training)
        x = locked_dropout(dropout(x, cfg.dropout, self.training), cfg.dropout_i, self.training)
        out, state, hiddens = self.rnn(x, state)  # (T, B, H)
        out, dropped = self._decoder_input(out)
        return out, state, hiddens, dropped

    def _decoder_input(self, out: Tensor) -> tuple[Tensor, Tensor]:
        """The last recurrent layer's output (..., H) -> (decoder input (..., D), its
        dropped copy (..., H), which AR reads)."""
        cfg = self.cfg
        out = dropout(out, cfg.dropout, self.training)
        dropped = out = locked_dropout(out, cfg.dropout_o, self.training)
        for fc in self.fc:
            out = dropout(torch.relu(fc(out)), cfg.dropout, self.training)
        if self.proj is not None:
            out = self.proj(out)  # (..., E)
        return out, dropped

    def stepper(self, precision: str = "fp32") -> StepFn:
        """`(tokens (B,), state) -> (scores (B, V), state)`: one time step, for sampling.

        The same computation as `forward` on a one-token window (to float rounding,
        tests/nn/test_step.py), through the one-step forms of `nn.step` where every
        recurrent layer has one and the model is in eval mode: `precision` "bf16" then
        runs the step's matmuls on bfloat16 copies of the weights, made here. Anything
        else steps through `forward`.
        """
        rnn_step = self.rnn.stepper(precision) if not self.training else None
        if rnn_step is None:

            def slow(tok: Tensor, state: State) -> tuple[Tensor, State]:
                out = self(tok.unsqueeze(0), state)  # (1, B) -> logits (1, B, V)
                return out.logits[0], out.state

            return slow
        decode = decoder_step(self.decoder, precision)

        def fast(tok: Tensor, state: State) -> tuple[Tensor, State]:
            x, state = rnn_step(self.embedding(tok), state)  # (B, E) -> (B, H)
            return decode(self._decoder_input(x)[0]), state  # (B, V)

        return fast

    def log_probs(self, features: Tensor) -> Tensor:
        """Decoder input (..., D) -> exact log-probabilities over the vocabulary (..., V), fp32."""
        return self.decoder.log_probs(features)

    def loss(
        self,
        features: Tensor,
        targets: Tensor,
        reduction: str = "mean",
        mailbox: tied.Mailbox | None = None,
    ) -> Tensor:
        """Decoder input (..., D), targets (...) -> NLL, fp32 (mean | sum | none). With a
        `mailbox` (tied weights, see _tied_mailbox) the decoder's weight gradient goes
        there, for the embedding lookup to complete."""
        if mailbox is not None and isinstance(self.decoder, FullSoftmax):
            return self.decoder.loss(features, targets, reduction, mailbox)
        return self.decoder.loss(features, targets, reduction)

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.parameters())
