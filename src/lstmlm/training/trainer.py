"""The trainer: the one owner of a run's model, optimizer and state while it trains.

It builds them, takes one training step (`train_step`), validates, and saves and
restores its state: everything a resume needs is one `state.TrainingState`, taken with
`capture` and put back with `restore`, for the checkpoint file and the NaN guard alike.
The schedule of steps (epochs, budgets, checkpoints, the guard) is loop.py's. Nothing
here prints: events go to `on_event(kind, data)` and, with their numbers, to
RUN/metrics.jsonl.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lstmlm import files
from lstmlm.config import RunConfig, TrainConfig
from lstmlm.data.batching import batchify, window
from lstmlm.data.dataset import Dataset
from lstmlm.device import resolve_device
from lstmlm.evaluation.perplexity import EvalResult
from lstmlm.nn.model import LanguageModel, LMOutput
from lstmlm.nn.precision import autocast
from lstmlm.nn.regularize import (
    activation_regularization,
    sample_bptt,
    temporal_activation_regularization,
)
from lstmlm.nn.rnn import State, detach_state
from lstmlm.storage import checkpoint as ckpt
from lstmlm.storage.layout import BEST, EPOCH_CHECKPOINTS, LAST, METRICS, epoch_checkpoint
from lstmlm.training import distributed, guard
from lstmlm.training import state as training_state
from lstmlm.training.optim import (
    FusedSGD,
    fused_sgd,
    is_averaging,
    make_asgd,
    make_optimizer,
)
from lstmlm.training.schedule import cosine_factor, run_progress
from lstmlm.training.state import TrainerState, TrainingState

EventFn = Callable[[str, dict[str, Any]], None]
EVAL_BPTT = 100  # evaluation carries state across windows: the length only sets the chunking
RELEASE_EVERY = 1000  # steps between handing the mapped token pages read so far back


def regularization(out: LMOutput, cfg: TrainConfig) -> Tensor | None:
    """AR + TAR on the last recurrent layer (None when both are off)."""
    if cfg.alpha == 0 and cfg.beta == 0:
        return None
    last = out.hiddens[-1]  # (T, B, H), before dropout
    dropped = out.dropped if out.dropped is not None else last
    return activation_regularization(dropped, cfg.alpha) + temporal_activation_regularization(
        last, cfg.beta
    )


class Trainer:
    def __init__(
        self, run_dir: Path, cfg: RunConfig, data: Dataset, on_event: EventFn | None = None
    ):
        self.run_dir = run_dir
        self.cfg = cfg
        self.tc = cfg.train
        self.data = data
        self.on_event = on_event or (lambda kind, d: None)
        # Several processes (see distributed.py): rank r trains on columns [r*B, (r+1)*B) of
        # world*B; only rank 0 writes. One process: world 1, rank 0, self.net is self.model.
        self.world, self.rank = distributed.world(), distributed.rank()
        self.is_main = self.rank == 0
        self.device = resolve_device(self.tc.device, distributed.local_rank())
        torch.manual_seed(self.tc.seed)
        self.model = build_model(cfg, len(data.vocab), self.device)
        if self.world > 1:  # same initial weights everywhere, different dropout masks
            torch.manual_seed(self.tc.seed + 7919 * (self.rank + 1))
        self.net = distributed.wrap(self.model, self.device)  # DDP when world > 1
        self.opt = make_optimizer(self.model, self.tc)
        columns = batchify(data.train, self.tc.batch_size * self.world)  # (L, world*B)
        # (L, B): a view of the stream (a token-cache map stays on disk); `window` copies
        # each (T, B) window to the device as int64
        self.train_data = distributed.shard_columns(columns, self.rank, self.world)
        self.st = TrainerState(lr=self.tc.lr, world_size=self.world)
        self.hidden: State = self.model.init_state(self.tc.batch_size)
        # Variable BPTT draws from its own generator, checkpointed with the run.
        self.bptt_gen = torch.Generator().manual_seed(self.tc.seed)
        self.step_ok = True  # False after a non-finite step (skipped, see guard.py)
        self.bad_step: dict[str, Any] = {}  # its loss and gradient norm
        self.grad_norm = torch.zeros((), device=self.device)  # the last step's, before clipping
        self._fused_for: torch.optim.Optimizer | None = None  # the optimizer _fused is for
        self._fused: FusedSGD | None = None

    # --- state and checkpoints ------------------------------------------------------

    def capture(self) -> TrainingState:
        """The trainer's whole state now (references to its tensors, not copies)."""
        return TrainingState(
            model=ckpt.model_tensors(self.model),
            optimizer=self.opt.state_dict(),
            trainer=self.st,
            hidden=self.hidden,
            rng_torch=torch.get_rng_state(),
            rng_bptt=self.bptt_gen.get_state(),
            rng_cuda=torch.cuda.get_rng_state(self.device) if self.device.type == "cuda" else None,
        )

    def restore(self, s: TrainingState, source: str = "checkpoint") -> None:
        """Put the trainer back into state `s` (whose tensors it may take over)."""
        ckpt.load_model_tensors(self.model, s.model, source=source)
        self.st = s.trainer
        if self.st.averaging and not is_averaging(self.opt):
            self.opt = make_asgd(list(self.model.parameters()), self.st.lr, self.tc.weight_decay)
        self.opt.load_state_dict(s.optimizer)
        self.hidden = [tuple(t.to(self.device) for t in layer) for layer in s.hidden]
        torch.set_rng_state(s.rng_torch)
        if self.device.type == "cuda" and s.rng_cuda is not None:
            torch.cuda.set_rng_state(s.rng_cuda, self.device)
        if s.rng_bptt is not None:
            self.bptt_gen.set_state(s.rng_bptt)

    def save_last(self) -> None:
        training_state.save(self.run_dir / LAST, self.capture())

    def load_last(self) -> None:
        path = self.run_dir / LAST
        tensors, meta = training_state.read(path)
        try:
            s = training_state.from_tensors(tensors, meta, len(self.hidden), len(self.hidden[0]))
            self.restore(s, source=str(path))
        except (KeyError, TypeError, ValueError) as e:
            why = str(e).removeprefix(f"{path}: ")  # load_model_tensors names the file too
            raise ValueError(f"{path}: cannot resume from this checkpoint ({why})") from None

    def save_best(self, loss: float) -> None:
        meta = {"epoch": self.st.best_epoch, "valid_loss": loss}
        if self.is_main:
            ckpt.save_tensors(self.run_dir / BEST, ckpt.model_tensors(self.model, "model."), meta)

    def keep_epoch(self, epoch: int, loss: float) -> None:
        """Keep this epoch's weights (--keep-checkpoints N), removing all but the last N."""
        if not self.is_main or self.tc.keep_checkpoints == 0:
            return
        path = self.run_dir / epoch_checkpoint(epoch, loss)
        meta = {"epoch": epoch, "valid_loss": loss}
        ckpt.save_tensors(path, ckpt.model_tensors(self.model, "model."), meta)
        kept = sorted(
            self.run_dir.glob(EPOCH_CHECKPOINTS),
            key=lambda p: int(p.name[5:].split("-", 1)[0]) if p.name[5:7].isdigit() else -1,
        )
        for old in kept[: -self.tc.keep_checkpoints]:
            old.unlink(missing_ok=True)

    def log(self, kind: str, record: dict[str, Any]) -> None:
        if not self.is_main:  # only rank 0 writes metrics and reports
            return
        record = {"event": kind, **record}
        files.append_line(self.run_dir / METRICS, json.dumps(record))  # whole lines only
        self.on_event(kind, record)

    # --- one step -------------------------------------------------------------------

    def evaluate(self, split: str) -> EvalResult:
        """The model's score on the "valid" or "test" split, with the split's bits per
        character and per-word perplexity (`EvalResult.on_text`)."""
        r = distributed.evaluate(  # plain evaluate() for one process
            self.model,
            getattr(self.data, split),
            self.tc.eval_batch_size,
            EVAL_BPTT,
            self.tc.precision,
        )
        self.data.release_pages()  # a pass over a mapped split leaves no pages behind
        return r.on_text(self.data.stats.get(split))

    def validate(self) -> EvalResult:
        return self.evaluate("valid")

    def set_lr(self, lr: float, scale: float = 1.0) -> None:
        """Set the base lr; `scale` applies to the optimizer only (variable BPTT)."""
        self.st.lr = lr
        for g in self.opt.param_groups:
            g["lr"] = lr * scale

    def lr_now(self) -> float:
        """The lr the last step ran with, for the logs: the base lr, or under `cosine` the
        optimizer's annealed one (an epoch's line said lr 20 at the end of an annealed run)."""
        if self.tc.lr_schedule == "cosine":
            return float(self.opt.param_groups[0]["lr"])
        return self.st.lr

    def next_window(self) -> tuple[Tensor, Tensor]:
        """The next training window; sets this step's lr for variable BPTT and `cosine`."""
        tc, st = self.tc, self.st
        if st.step % RELEASE_EVERY == 0:  # resident memory stays flat over a long epoch
            self.data.release_pages()
        if not tc.variable_bptt:
            x, y = window(self.train_data, st.offset, tc.bptt, self.device)
            scale = 1.0
        else:
            bptt = sample_bptt(tc.bptt, self.bptt_gen)
            x, y = window(self.train_data, st.offset, bptt, self.device)
            scale = x.size(0) / tc.bptt
        if tc.lr_schedule == "cosine":  # st.lr stays the peak; the optimizer gets the curve
            epochs_done = st.epoch + st.offset / max(self.train_data.size(0) - 1, 1)
            progress = run_progress(
                st.elapsed, st.step, epochs_done, tc.max_minutes, tc.max_steps, tc.epochs
            )
            scale *= cosine_factor(progress, tc.lr_final)
        if tc.variable_bptt or tc.lr_schedule == "cosine":
            self.set_lr(st.lr, scale)
        return x, y

    def train_step(self, x: Tensor, y: Tensor) -> Tensor:
        self.hidden = detach_state(self.hidden)
        with autocast(self.tc.precision, self.device.type):
            # The loss is computed inside forward (mean NLL per token, fp32): DDP sees every
            # parameter used, and the adaptive softmax never builds (T, B, V).
            out = self.net(x, self.hidden, y)  # DDP averages the gradients when world > 1
        self.hidden = out.state
        loss = out.loss
        reg = regularization(out, self.tc)
        total = loss if reg is None else loss + reg
        scaled = total * x.size(0) if self.tc.loss_reduction == "sum" else total
        self.opt.zero_grad(set_to_none=True)
        scaled.backward()
        self.update(total)
        return loss.detach()

    def update(self, total: Tensor) -> None:
        """After the backward of `total`: clip, check the step (guard.py), and apply it, or
        skip it and describe it in self.bad_step."""
        fused = self._fused_step()  # plain SGD: clipping, update and bf16 copies in one pass
        clip = 0.0 if fused else self.tc.clip
        norm = guard.grad_norm(self.model.parameters(), clip)  # clips when clip > 0
        self.step_ok = guard.step_is_finite(total, norm)
        self.grad_norm = norm.detach()
        if not self.step_ok:
            self.bad_step = guard.describe(total, norm)
        elif fused:
            fused.step(guard.clip_coefficient(norm, self.tc.clip))
        else:
            self.opt.step()

    def _fused_step(self) -> FusedSGD | None:
        """optim.fused_sgd for the optimizer of the moment (NT-ASGD replaces it)."""
        if self._fused_for is not self.opt:
            self._fused_for, self._fused = self.opt, fused_sgd(self.opt)
        return self._fused

    def limit_reached(self) -> str | None:
        """Why this run has nothing left to train (its budget is spent), or None."""
        return budget_spent(self.st, self.tc)


def budget_spent(st: TrainerState, tc: TrainConfig) -> str | None:
    """Why a run at `st` has nothing left to train under `tc` (its budget is spent), or None."""
    if st.epoch >= tc.epochs:
        return f"all {tc.epochs} epochs are done; raise --epochs to train on"
    if tc.max_steps is not None and st.step >= tc.max_steps:
        return f"{st.step} of --max-steps {tc.max_steps} are done; raise --max-steps"
    if tc.max_minutes is not None and st.elapsed >= tc.max_minutes * 60:
        return (
            f"{st.elapsed / 60:.2f} of --max-minutes {tc.max_minutes:g} are used; "
            "raise --max-minutes"
        )
    return None


def build_model(cfg: RunConfig, vocab_size: int, device: torch.device) -> LanguageModel:
    """The run's model on `device`; ValueError (not an allocator traceback) when it does
    not fit in memory."""
    try:
        return LanguageModel(cfg.model, vocab_size).to(device)
    except (RuntimeError, MemoryError) as e:  # torch.OutOfMemoryError is a RuntimeError
        text = str(e).lower()
        if not isinstance(e, MemoryError) and "alloc" not in text and "out of memory" not in text:
            raise
        m = cfg.model
        raise ValueError(
            f"the model does not fit in memory on {device} (vocabulary {vocab_size:,}, "
            f"--emb-size {m.emb_size}, --hidden-size {m.hidden_size}, --num-layers "
            f"{m.num_layers}); choose smaller sizes"
        ) from None


def exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf
