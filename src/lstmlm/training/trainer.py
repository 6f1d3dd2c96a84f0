"""The training loop: one owner of a run's model, optimizer and state while it trains.

The loop never prints. It reports through `on_event(kind, data)`; the CLI turns those
events into a progress bar, and every event with a number in it is also appended to
RUN/metrics.jsonl. Everything a resume needs is one `state.TrainingState`, taken with
`capture` and put back with `restore`, for the checkpoint file and the NaN guard alike.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lstmlm.config import RunConfig, TrainConfig
from lstmlm.data.batching import batchify, num_windows, window
from lstmlm.data.dataset import Dataset
from lstmlm.device import resolve_device
from lstmlm.evaluation.perplexity import EvalResult
from lstmlm.files import atomic_write
from lstmlm.generation import SampleConfig, generate
from lstmlm.nn.model import LanguageModel, LMOutput
from lstmlm.nn.precision import autocast
from lstmlm.nn.regularize import (
    activation_regularization,
    sample_bptt,
    temporal_activation_regularization,
)
from lstmlm.nn.rnn import State, detach_state
from lstmlm.storage import checkpoint as ckpt
from lstmlm.storage.layout import BEST, LAST, METRICS, SUMMARY
from lstmlm.training import distributed, guard
from lstmlm.training import state as training_state
from lstmlm.training.interrupt import TrainingInterrupted, stop_on_sigint
from lstmlm.training.optim import (
    averaged_weights,
    is_averaging,
    make_asgd,
    make_optimizer,
    validation_stalled,
)
from lstmlm.training.schedule import cosine_factor, next_lr, run_progress
from lstmlm.training.state import TrainerState, TrainingState

EventFn = Callable[[str, dict[str, Any]], None]
EVAL_BPTT = 100  # evaluation carries state across windows: the length only sets the chunking


@dataclass
class TrainResult:
    valid: EvalResult
    test: EvalResult
    epochs: float
    steps: int
    tokens_per_sec: float
    seconds: float
    stopped: str  # "epochs" | "time" | "steps" | "stalled" (asgd fine-tuning)
    history: list[dict[str, Any]] = field(default_factory=list)

    def summary(self, level: str) -> dict[str, Any]:
        d: dict[str, Any] = {
            "epochs": round(self.epochs, 3),
            "steps": self.steps,
            "tokens_per_sec": round(self.tokens_per_sec, 1),
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
            "valid_loss": self.valid.loss,
            "test_loss": self.test.loss,
            "valid_ppl": self.valid.ppl,
            "test_ppl": self.test.ppl,
        }
        if level in ("char", "symbols"):
            d["valid_bpc"] = self.valid.bpc
            d["test_bpc"] = self.test.bpc
        return d


def regularization(out: LMOutput, cfg: TrainConfig) -> Tensor | None:
    """AR + TAR on the last recurrent layer (None when both are off)."""
    if cfg.alpha == 0 and cfg.beta == 0:
        return None
    last = out.hiddens[-1]  # (T, B, H), before dropout
    dropped = out.dropped if out.dropped is not None else last
    return activation_regularization(dropped, cfg.alpha) + temporal_activation_regularization(
        last, cfg.beta
    )


@dataclass
class _Running:
    """The loss and speed since the last progress report."""

    loss: Tensor  # () sum of per-step mean losses, on the device (read every log_every steps)
    steps: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.monotonic)

    def reset(self) -> None:
        self.loss.zero_()
        self.steps, self.tokens, self.start = 0, 0, time.monotonic()


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
        self.train_data = distributed.shard_columns(columns, self.rank, self.world).to(
            self.device
        )  # (L, B)
        self.st = TrainerState(lr=self.tc.lr, world_size=self.world)
        self.hidden: State = self.model.init_state(self.tc.batch_size)
        # Variable BPTT draws from its own generator, checkpointed with the run.
        self.bptt_gen = torch.Generator().manual_seed(self.tc.seed)
        self.guard = guard.NonFiniteGuard(self.tc.nan_patience, self.tc.nan_max_restores)
        self.step_ok = True  # False after a non-finite step (skipped, see guard.py)
        self.bad_step: dict[str, Any] = {}  # its loss and gradient norm
        self.start_state: TrainingState | None = None  # restore point before any checkpoint
        self.last_checkpoint = time.monotonic()

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

    def log(self, kind: str, record: dict[str, Any]) -> None:
        if not self.is_main:  # only rank 0 writes metrics and reports
            return
        record = {"event": kind, **record}
        with open(self.run_dir / METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.on_event(kind, record)

    # --- one step -------------------------------------------------------------------

    def evaluate(self, ids: Tensor) -> EvalResult:
        return distributed.evaluate(  # plain evaluate() for one process
            self.model, ids, self.data.level, self.tc.eval_batch_size, EVAL_BPTT, self.tc.precision
        )

    def validate(self) -> EvalResult:
        return self.evaluate(self.data.valid)

    def set_lr(self, lr: float, scale: float = 1.0) -> None:
        """Set the base lr; `scale` applies to the optimizer only (variable BPTT)."""
        self.st.lr = lr
        for g in self.opt.param_groups:
            g["lr"] = lr * scale

    def next_window(self) -> tuple[Tensor, Tensor]:
        """The next training window; sets this step's lr for variable BPTT and `cosine`."""
        tc, st = self.tc, self.st
        if not tc.variable_bptt:
            x, y = window(self.train_data, st.offset, tc.bptt)
            scale = 1.0
        else:
            x, y = window(self.train_data, st.offset, sample_bptt(tc.bptt, self.bptt_gen))
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
        norm = guard.grad_norm(self.model.parameters(), self.tc.clip)  # clips when clip > 0
        self.step_ok = guard.step_is_finite(total, norm)
        if self.step_ok:
            self.opt.step()
        else:
            self.bad_step = guard.describe(total, norm)
        return loss.detach()

    # --- the loop ---------------------------------------------------------------------

    def run(self) -> TrainResult:
        """Train until a budget is spent. Ctrl-C stops after the current step, saves the
        checkpoint and raises `TrainingInterrupted` (see interrupt.py)."""
        with stop_on_sigint(lambda: self.on_event("stop_requested", {})) as stop_requested:
            return self._run(stop_requested)

    def _run(self, stop_requested: Callable[[], bool]) -> TrainResult:
        self.set_lr(self.st.lr)
        if not (self.run_dir / LAST).exists():
            self.start_state = training_state.detached_copy(self.capture())
        steps_per_epoch = num_windows(self.train_data, self.tc.bptt)
        stopped = "epochs"
        self.last_checkpoint = time.monotonic()
        while self.st.epoch < self.tc.epochs:
            stopped = self._train_epoch(steps_per_epoch, stop_requested)
            if stopped != "epochs":
                break
            if self.end_epoch(steps_per_epoch):
                stopped = "stalled"
                break
            self.last_checkpoint = time.monotonic()
        return self.finish(stopped)

    def _train_epoch(self, steps_per_epoch: int, stop_requested: Callable[[], bool]) -> str:
        """Train to the end of the epoch ("epochs") or until a budget stops the run ("time",
        "steps"); a stop request saves the checkpoint and raises TrainingInterrupted."""
        self.model.train()
        self.on_event(
            "epoch_start",
            {
                "epoch": self.st.epoch + 1,
                "steps": steps_per_epoch,
                "done": self.st.offset // self.tc.bptt,
            },
        )
        running = _Running(torch.zeros((), device=self.device))
        stopped = "epochs"
        while self.st.offset < self.train_data.size(0) - 1:
            t0 = time.monotonic()
            x, y = self.next_window()
            loss = self.train_step(x, y)
            if not self.step_ok:  # NaN/inf: nothing learned from this window
                if self.nonfinite_step(x.size(0)):  # restored the last good state
                    running.reset()
                continue
            self.guard.record(True)
            self._count(running, loss, x.size(0), y.numel() * self.world, t0)
            if running.steps % self.tc.log_every == 0:
                self._report(running, steps_per_epoch)
            stopped = self._stop_or_checkpoint(running, stop_requested)
            if stopped != "epochs":
                break
        self._flush(running)
        return stopped

    def _count(self, running: _Running, loss: Tensor, rows: int, tokens: int, t0: float) -> None:
        """Count one good step of a window of `rows` time steps (`tokens`: all ranks'
        tokens), begun at time `t0`."""
        st = self.st
        running.loss += loss
        st.offset += rows
        st.step += 1
        st.tokens += tokens
        running.steps += 1
        running.tokens += tokens
        st.elapsed += time.monotonic() - t0

    def _report(self, running: _Running, steps_per_epoch: int) -> None:
        """The "progress" event for the steps since the last one."""
        st, tc = self.st, self.tc
        loss = running.loss.item()
        st.epoch_loss += loss
        st.epoch_steps += running.steps
        self.log(
            "progress",
            {
                "epoch": st.epoch + 1,
                "step": st.step,
                "done": st.offset // tc.bptt,
                "steps": steps_per_epoch,
                "train_loss": loss / running.steps,
                "train_ppl": _exp(loss / running.steps),
                "lr": self.opt.param_groups[0]["lr"] if tc.lr_schedule == "cosine" else st.lr,
                "tokens_per_sec": running.tokens / (time.monotonic() - running.start),
                "elapsed": st.elapsed,
            },
        )
        running.reset()

    def _stop_or_checkpoint(self, running: _Running, stop_requested: Callable[[], bool]) -> str:
        """After a step: "time" or "steps" when a budget is spent, else "epochs" (go on),
        having saved a checkpoint when one is due; a stop request saves and raises."""
        st, tc = self.st, self.tc
        budget = tc.max_minutes * 60 if tc.max_minutes is not None else math.inf
        # Clocks differ between ranks; all must stop / checkpoint together (one small
        # all-reduce per step when world > 1).
        time_up, ckpt_due, interrupted = distributed.any_of(
            st.elapsed >= budget,
            tc.checkpoint_minutes > 0
            and time.monotonic() - self.last_checkpoint >= tc.checkpoint_minutes * 60,
            stop_requested(),
        )
        if interrupted:
            self._flush(running)
            self.save_last()
            self.log("interrupted", {"epoch": st.epoch + 1, "step": st.step})
            raise TrainingInterrupted(self.run_dir, st.step)
        if time_up:
            return "time"
        if tc.max_steps is not None and st.step >= tc.max_steps:
            return "steps"
        if ckpt_due:
            self._flush(running)
            running.loss.zero_()
            running.steps = 0
            self.save_last()
            self.last_checkpoint = time.monotonic()
        return "epochs"

    def _flush(self, running: _Running) -> None:
        """Add the steps not yet reported to the epoch's train loss."""
        if running.steps:
            self.st.epoch_loss += running.loss.item()
            self.st.epoch_steps += running.steps

    def limit_reached(self) -> str | None:
        """Why this run has nothing left to train (its budget is spent), or None."""
        st, tc = self.st, self.tc
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

    def nonfinite_step(self, window: int) -> bool:
        """After a skipped step: log it; maybe restore (True) or raise (diverged)."""
        st = self.st
        action = self.guard.record(False)
        self.log(
            "nonfinite",
            {
                "epoch": st.epoch + 1,
                "step": st.step + 1,
                "lr": st.lr,
                **self.bad_step,
                "in_a_row": self.guard.streak or self.guard.patience,
            },
        )
        if any(not bool(torch.isfinite(t).all()) for layer in self.hidden for t in layer):
            self.hidden = self.model.init_state(self.tc.batch_size)
        if action == "skip":
            st.offset += window
            st.step += 1
            return False
        last = self.run_dir / LAST
        if action == "diverged" or not (last.exists() or self.start_state is not None):
            self.log("diverged", {"step": st.step, "lr": st.lr, "restores": self.guard.restores})
            raise ValueError(guard.diverged_message(self.guard, st.lr, last))
        lr, elapsed = st.lr, st.elapsed
        if last.exists():
            self.load_last()
        else:
            assert self.start_state is not None
            self.restore(training_state.detached_copy(self.start_state))
        self.st.elapsed = elapsed  # the time budget counts the lost steps too
        self.set_lr(min(self.st.lr, lr) / 2)
        self.log(
            "nonfinite_restore",
            {"step": self.st.step, "lr": self.st.lr, "restores": self.guard.restores},
        )
        return True

    def end_epoch(self, steps_per_epoch: int) -> bool:
        """Validate, keep the best, schedule; True when asgd fine-tuning has stalled."""
        st, tc = self.st, self.tc
        self.opt.zero_grad(set_to_none=True)  # the last step's grads: not needed, not kept
        with averaged_weights(self.model, self.opt):
            v = self.validate()
        epoch = st.epoch + 1
        record = {
            "epoch": epoch,
            "step": st.step,
            "lr": st.lr,
            "elapsed": st.elapsed,
            "train_loss": st.epoch_loss / max(st.epoch_steps, 1),
            "train_ppl": _exp(st.epoch_loss / max(st.epoch_steps, 1)),
            "valid_loss": v.loss,
            "valid_ppl": v.ppl,
            "valid_bpc": v.bpc,
            "tokens_per_sec": st.tokens / max(st.elapsed, 1e-9),
        }
        if v.loss < st.best_loss:
            st.best_loss, st.best_epoch = v.loss, float(epoch)
            with averaged_weights(self.model, self.opt):
                self.save_best(v.loss)
        new_lr = next_lr(tc, st, epoch, v.loss)
        st.sched_best = min(st.sched_best, v.loss)
        self.set_lr(new_lr)
        stalled = self.nt_asgd_check(v.loss, epoch)
        st.epoch, st.offset, st.epoch_loss, st.epoch_steps = epoch, 0, 0.0, 0
        self.hidden = self.model.init_state(tc.batch_size)
        self.save_last()
        self.log("epoch", record)
        if tc.sample_every_epoch and self.is_main:
            with averaged_weights(self.model, self.opt):
                self.sample(epoch)
        return stalled

    def nt_asgd_check(self, valid_loss: float, epoch: int) -> bool:
        """NT-ASGD at an epoch-end check: maybe switch to averaging; True = asgd should stop."""
        st, tc = self.st, self.tc
        if tc.optimizer not in ("ntasgd", "asgd"):
            return False
        stalled = validation_stalled(st.val_history, valid_loss, tc.nonmono)
        st.val_history.append(valid_loss)
        if tc.optimizer == "ntasgd" and stalled and not st.averaging:
            self.opt = make_asgd(list(self.model.parameters()), st.lr, tc.weight_decay)
            st.averaging = True
            self.log("asgd_switch", {"epoch": epoch, "step": st.step, "valid_loss": valid_loss})
            return False
        return tc.optimizer == "asgd" and stalled

    def sample(self, epoch: int) -> None:
        for temp in self.tc.sample_temperatures:
            scfg = SampleConfig(
                max_new_tokens=self.tc.sample_length, temperature=temp, seed=self.tc.seed + epoch
            )
            text = generate(self.model, self.data.vocab, self.data.level, "", scfg)[0]
            self.log("sample", {"epoch": epoch, "temperature": temp, "text": text})
        self.model.train()

    def finish(self, stopped: str) -> TrainResult:
        st = self.st
        # Free the last step's gradients (a model's worth of memory) before checkpointing and
        # evaluating: otherwise they are held through the end and set the run's peak RSS.
        self.opt.zero_grad(set_to_none=True)
        epochs = st.epoch + st.offset / max(self.train_data.size(0) - 1, 1)
        no_best = not (self.run_dir / BEST).exists()
        if stopped in ("time", "steps") or distributed.broadcast_flag(no_best):  # rank 0's view
            # Stopped mid-epoch: the current (averaged, after an ASGD switch) weights compete
            # for best, then the checkpoint records where we are and the best loss, so that
            # --resume continues exactly and never replaces best with a worse model.
            with averaged_weights(self.model, self.opt):
                v = self.validate()
                if v.loss < st.best_loss:
                    st.best_loss, st.best_epoch = v.loss, epochs
                    self.save_best(v.loss)
            self.save_last()
        if self.is_main:
            ckpt.load_model_file(self.model, self.run_dir / BEST)  # no second copy
        distributed.broadcast_module(self.model)  # the others need not see the run folder
        self.on_event("final_eval", {"step": st.step})  # the last step trained
        valid, test = self.validate(), self.evaluate(self.data.test)
        result = TrainResult(
            valid, test, epochs, st.step, st.tokens / max(st.elapsed, 1e-9), st.elapsed, stopped
        )
        summary = {
            **result.summary(self.data.level),
            "best_epoch": st.best_epoch,
            "params": self.model.num_parameters(),
        }
        if self.is_main:
            atomic_write(self.run_dir / SUMMARY, json.dumps(summary, indent=2))
        self.log("final", summary)
        # No rank leaves while rank 0 still writes: one that went on to resume this run
        # would delete rank 0's temporary files as stale, one that exited would abort it.
        distributed.barrier()
        return result


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


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf
