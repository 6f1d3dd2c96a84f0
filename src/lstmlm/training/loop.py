"""The training loop: epochs of steps until a budget is spent, over one `Trainer`.

The loop decides when: when to report progress, when a checkpoint is due, when a
budget (--epochs, --max-steps, --max-minutes) or Ctrl-C stops the run, what to do after
a non-finite step (skip, restore, stop: guard.py), what an epoch's end does (validate,
keep the best, schedule the lr, NT-ASGD), and the final evaluation. The trainer does
each of those things.
"""

from __future__ import annotations

import json
import math
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from lstmlm.data.batching import num_windows
from lstmlm.data.dataset import unk_share
from lstmlm.evaluation.perplexity import EvalResult, result
from lstmlm.files import atomic_write
from lstmlm.generation import SampleConfig, generate
from lstmlm.storage import checkpoint as ckpt
from lstmlm.storage.layout import BEST, LAST, SUMMARY
from lstmlm.training import distributed, guard
from lstmlm.training import state as training_state
from lstmlm.training.interrupt import TrainingInterrupted, stop_on_signals
from lstmlm.training.optim import averaged_weights, make_asgd, validation_stalled
from lstmlm.training.schedule import next_lr
from lstmlm.training.state import TrainingState
from lstmlm.training.trainer import Trainer


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

    def summary(self) -> dict[str, Any]:
        """summary.json's numbers: per token (loss in nats, ppl), and of the raw text
        (bpc: bits per character, word_ppl: per-word perplexity; data/stats.py)."""
        d: dict[str, Any] = {
            "epochs": round(self.epochs, 3),
            "steps": self.steps,
            "tokens_per_sec": round(self.tokens_per_sec, 1),
            "seconds": round(self.seconds, 1),
            "stopped": self.stopped,
        }
        for key in ("loss", "ppl", "bpc", "word_ppl"):
            d.update(
                {f"valid_{key}": getattr(self.valid, key), f"test_{key}": getattr(self.test, key)}
            )
        return d


@dataclass
class _Running:
    """The loss and speed since the last progress report."""

    loss: Tensor  # () sum of per-step mean losses, on the device (read every log_every steps)
    norm: Tensor  # () sum of the steps' gradient norms (before clipping), on the device
    steps: int = 0
    tokens: int = 0
    start: float = field(default_factory=time.monotonic)

    def reset(self) -> None:
        self.loss.zero_()
        self.norm.zero_()
        self.steps, self.tokens, self.start = 0, 0, time.monotonic()


class Loop:
    """Runs a `Trainer` to the end of its budget (`run`)."""

    def __init__(self, trainer: Trainer):
        self.t = trainer
        tc = trainer.tc
        self.guard = guard.NonFiniteGuard(tc.nan_patience, tc.nan_max_restores)
        self.start_state: TrainingState | None = None  # restore point before any checkpoint
        self.last_checkpoint = time.monotonic()

    def run(self) -> TrainResult:
        """Train until a budget is spent. Ctrl-C (or SIGTERM, SIGHUP) stops after the
        current step, saves the checkpoint and raises `TrainingInterrupted` (see
        interrupt.py)."""
        with stop_on_signals(lambda: self.t.on_event("stop_requested", {})) as stop_requested:
            return self._run(stop_requested)

    def _run(self, stop_requested: Callable[[], int | None]) -> TrainResult:
        self.t.set_lr(self.t.st.lr)
        if not (self.t.run_dir / LAST).exists():
            self.start_state = training_state.detached_copy(self.t.capture())
        steps_per_epoch = num_windows(self.t.train_data, self.t.tc.bptt)
        stopped = "epochs"
        self.last_checkpoint = time.monotonic()
        while self.t.st.epoch < self.t.tc.epochs:
            stopped = self._train_epoch(steps_per_epoch, stop_requested)
            if stopped != "epochs":
                break
            if self.end_epoch(steps_per_epoch):
                stopped = "stalled"
                break
            self.last_checkpoint = time.monotonic()
        return self.finish(stopped)

    def _train_epoch(self, steps_per_epoch: int, stop_requested: Callable[[], int | None]) -> str:
        """Train to the end of the epoch ("epochs") or until a budget stops the run ("time",
        "steps"); a stop request saves the checkpoint and raises TrainingInterrupted."""
        self.t.model.train()
        self.t.on_event(
            "epoch_start",
            {
                "epoch": self.t.st.epoch + 1,
                "steps": steps_per_epoch,
                "done": self.t.st.offset // self.t.tc.bptt,
                "step": self.t.st.step,
                "elapsed": self.t.st.elapsed,
                "max_steps": self.t.tc.max_steps,  # budgets: the bar's total and ETA
                "max_minutes": self.t.tc.max_minutes,
            },
        )
        zero = torch.zeros((), device=self.t.device)
        running = _Running(zero, zero.clone())
        stopped = "epochs"
        while self.t.st.offset < self.t.train_data.size(0) - 1:
            t0 = time.monotonic()
            x, y = self.t.next_window()
            loss = self.t.train_step(x, y)
            if not self.t.step_ok:  # NaN/inf: nothing learned from this window
                if self.nonfinite_step(x.size(0)):  # restored the last good state
                    running.reset()
                continue
            self.guard.record(True)
            self._count(running, loss, x.size(0), y.numel() * self.t.world, t0)
            if running.steps % self.t.tc.log_every == 0:
                self._report(running, steps_per_epoch)
            stopped = self._stop_or_checkpoint(running, stop_requested)
            if stopped != "epochs":
                break
        if running.steps:  # the steps since the last report: a short run has a curve too
            self._report(running, steps_per_epoch)
        return stopped

    def _count(self, running: _Running, loss: Tensor, rows: int, tokens: int, t0: float) -> None:
        """Count one good step of a window of `rows` time steps (`tokens`: all ranks'
        tokens), begun at time `t0`."""
        st = self.t.st
        running.loss += loss
        running.norm += self.t.grad_norm
        st.offset += rows
        st.step += 1
        st.tokens += tokens
        running.steps += 1
        running.tokens += tokens
        st.elapsed += time.monotonic() - t0

    def _report(self, running: _Running, steps_per_epoch: int) -> None:
        """The "progress" event for the steps since the last one."""
        st, tc = self.t.st, self.t.tc
        loss = running.loss.item()
        st.epoch_loss += loss
        st.epoch_steps += running.steps
        mean = self._train_result(loss, running.steps)  # per-step mean loss, ppl, bpc
        self.t.log(
            "progress",
            {
                "epoch": st.epoch + 1,
                "step": st.step,
                "done": st.offset // tc.bptt,
                "steps": steps_per_epoch,
                "train_loss": mean.loss,
                "train_ppl": mean.ppl,
                **({"train_bpc": mean.bpc} if mean.bpc is not None else {}),
                "grad_norm": running.norm.item() / running.steps,
                "lr": self.t.lr_now(),
                "tokens_per_sec": running.tokens / (time.monotonic() - running.start),
                "elapsed": st.elapsed,
            },
        )
        running.reset()

    def _train_result(self, loss_sum: float, steps: int) -> EvalResult:
        """The mean of `steps` steps' losses summing to `loss_sum`, with the train text's
        bits per character (its counts, data/stats.py)."""
        return result(loss_sum, steps).on_text(self.t.data.stats.get("train"))

    def _stop_or_checkpoint(
        self, running: _Running, stop_requested: Callable[[], int | None]
    ) -> str:
        """After a step: "time" or "steps" when a budget is spent, else "epochs" (go on),
        having saved a checkpoint when one is due; a stop request saves and raises."""
        st, tc = self.t.st, self.t.tc
        budget = tc.max_minutes * 60 if tc.max_minutes is not None else math.inf
        # Clocks differ between ranks; all must stop / checkpoint together (one small
        # all-reduce per step when world > 1).
        time_up, ckpt_due, interrupted = distributed.any_of(
            st.elapsed >= budget,
            tc.checkpoint_minutes > 0
            and time.monotonic() - self.last_checkpoint >= tc.checkpoint_minutes * 60,
            stop_requested() is not None,
        )
        if interrupted:
            self._flush(running)
            self.t.save_last()
            self.t.log("interrupted", {"epoch": st.epoch + 1, "step": st.step})
            signum = stop_requested() or signal.SIGTERM  # another rank's signal: SIGTERM
            raise TrainingInterrupted(
                self.t.run_dir, st.step, signum, self.t.world, distributed.rank()
            )
        if time_up:
            return "time"
        if tc.max_steps is not None and st.step >= tc.max_steps:
            return "steps"
        if ckpt_due:
            self._flush(running)
            running.loss.zero_()
            running.norm.zero_()
            running.steps = 0
            self.t.save_last()
            self.last_checkpoint = time.monotonic()
        return "epochs"

    def _flush(self, running: _Running) -> None:
        """Add the steps not yet reported to the epoch's train loss."""
        if running.steps:
            self.t.st.epoch_loss += running.loss.item()
            self.t.st.epoch_steps += running.steps

    def nonfinite_step(self, window: int) -> bool:
        """After a skipped step: log it; maybe restore (True) or raise (diverged)."""
        st = self.t.st
        action = self.guard.record(False)
        self.t.log(
            "nonfinite",
            {
                "epoch": st.epoch + 1,
                "step": st.step + 1,
                "lr": st.lr,
                **self.t.bad_step,
                "in_a_row": self.guard.streak or self.guard.patience,
            },
        )
        if any(not bool(torch.isfinite(t).all()) for layer in self.t.hidden for t in layer):
            self.t.hidden = self.t.model.init_state(self.t.tc.batch_size)
        if action == "skip":
            st.offset += window
            st.step += 1
            return False
        last = self.t.run_dir / LAST
        if action == "diverged" or not (last.exists() or self.start_state is not None):
            self.t.log("diverged", {"step": st.step, "lr": st.lr, "restores": self.guard.restores})
            raise ValueError(guard.diverged_message(self.guard, st.lr, last))
        lr, elapsed = st.lr, st.elapsed
        if last.exists():
            self.t.load_last()
        else:
            assert self.start_state is not None
            self.t.restore(training_state.detached_copy(self.start_state))
        self.t.st.elapsed = elapsed  # the time budget counts the lost steps too
        self.t.set_lr(min(self.t.st.lr, lr) / 2)
        self.t.log(
            "nonfinite_restore",
            {"step": self.t.st.step, "lr": self.t.st.lr, "restores": self.guard.restores},
        )
        return True

    def end_epoch(self, steps_per_epoch: int) -> bool:
        """Validate, keep the best, schedule; True when asgd fine-tuning has stalled."""
        st, tc = self.t.st, self.t.tc
        self.t.opt.zero_grad(set_to_none=True)  # the last step's grads: not needed, not kept
        with averaged_weights(self.t.model, self.t.opt):
            v = self.t.validate()
        epoch = st.epoch + 1
        train = self._train_result(st.epoch_loss, max(st.epoch_steps, 1))
        record = {
            "epoch": epoch,
            "step": st.step,
            "lr": self.t.lr_now(),
            "elapsed": st.elapsed,
            "train_loss": train.loss,
            "train_ppl": train.ppl,
            "train_bpc": train.bpc,
            "valid_loss": v.loss,
            "valid_ppl": v.ppl,
            "valid_bpc": v.bpc,  # bits per character of the raw text, at every level
            "valid_word_ppl": v.word_ppl,
            "tokens_per_sec": st.tokens / max(st.elapsed, 1e-9),
        }
        if v.loss < st.best_loss:
            st.best_loss, st.best_epoch = v.loss, float(epoch)
            with averaged_weights(self.t.model, self.t.opt):
                self.t.save_best(v.loss)
        with averaged_weights(self.t.model, self.t.opt):
            self.t.keep_epoch(epoch, v.loss)
        new_lr = next_lr(tc, st, epoch, v.loss)
        st.sched_best = min(st.sched_best, v.loss)
        switching = st.averaging
        stalled = self.nt_asgd_check(v.loss, epoch)  # may switch to ASGD, at this epoch's lr
        if st.averaging == switching:  # the switch keeps the lr (AWD-LSTM): no decay on top
            self.t.set_lr(new_lr)
        st.epoch, st.offset, st.epoch_loss, st.epoch_steps = epoch, 0, 0.0, 0
        self.t.hidden = self.t.model.init_state(tc.batch_size)
        self.t.save_last()
        self.t.log("epoch", record)
        if tc.sample_every_epoch and self.t.is_main:
            with averaged_weights(self.t.model, self.t.opt):
                self.sample(epoch)
        return stalled

    def nt_asgd_check(self, valid_loss: float, epoch: int) -> bool:
        """NT-ASGD at an epoch-end check: maybe switch to averaging; True = asgd should stop."""
        st, tc = self.t.st, self.t.tc
        if tc.optimizer not in ("ntasgd", "asgd"):
            return False
        stalled = validation_stalled(st.val_history, valid_loss, tc.nonmono)
        st.val_history.append(valid_loss)
        if tc.optimizer == "ntasgd" and stalled and not st.averaging:
            self.t.opt = make_asgd(list(self.t.model.parameters()), st.lr, tc.weight_decay)
            st.averaging = True
            self.t.log("asgd_switch", {"epoch": epoch, "step": st.step, "valid_loss": valid_loss})
            return False
        return tc.optimizer == "asgd" and stalled

    def sample(self, epoch: int) -> None:
        for temp in self.t.tc.sample_temperatures:
            scfg = SampleConfig(
                max_new_tokens=self.t.tc.sample_length,
                temperature=temp,
                seed=self.t.tc.seed + epoch,
            )
            text = generate(self.t.model, self.t.data.vocab, self.t.data.level, "", scfg)[0]
            self.t.log("sample", {"epoch": epoch, "temperature": temp, "text": text})
        self.t.model.train()

    def finish(self, stopped: str) -> TrainResult:
        st = self.t.st
        # Free the last step's gradients (a model's worth of memory) before checkpointing and
        # evaluating: otherwise they are held through the end and set the run's peak RSS.
        self.t.opt.zero_grad(set_to_none=True)
        epochs = st.epoch + st.offset / max(self.t.train_data.size(0) - 1, 1)
        no_best = not (self.t.run_dir / BEST).exists()
        if stopped in ("time", "steps") or distributed.broadcast_flag(no_best):  # rank 0's view
            # Stopped mid-epoch: the current (averaged, after an ASGD switch) weights compete
            # for best, then the checkpoint records where we are and the best loss, so that
            # --resume continues exactly and never replaces best with a worse model. The
            # checkpoint is written before the evaluation too: an evaluation that fails
            # (out of memory) never loses what was trained.
            self.t.save_last()
            improved = False
            with averaged_weights(self.t.model, self.t.opt):
                v = self.t.validate()
                if v.loss < st.best_loss:
                    st.best_loss, st.best_epoch = v.loss, epochs
                    self.t.save_best(v.loss)
                    improved = True
            if improved:  # the checkpoint records the new best loss (outside the averaging)
                self.t.save_last()
        if self.t.is_main:
            ckpt.load_model_file(self.t.model, self.t.run_dir / BEST)  # no second copy
        distributed.broadcast_module(self.t.model)  # the others need not see the run folder
        self.t.on_event("final_eval", {"step": st.step})  # the last step trained
        valid, test = self.t.validate(), self.t.evaluate("test")
        result = TrainResult(
            valid, test, epochs, st.step, st.tokens / max(st.elapsed, 1e-9), st.elapsed, stopped
        )
        data = self.t.data
        summary = {
            **result.summary(),
            # the share of <unk> among the split's tokens: the cost of spelling an unknown
            # word is not in a word run's bpc, so it is shown beside it
            "valid_unk_share": unk_share(data.vocab, data.valid),
            "test_unk_share": unk_share(data.vocab, data.test),
            "level": data.level,
            "text": {k: c.to_dict() for k, c in data.stats.items()},  # the denominators
            "best_epoch": st.best_epoch,
            "params": self.t.model.num_parameters(),
        }
        if self.t.is_main:
            atomic_write(self.t.run_dir / SUMMARY, json.dumps(summary, indent=2))
        self.t.log("final", summary)
        # No rank leaves while rank 0 still writes: one that went on to resume this run
        # would delete rank 0's temporary files as stale, one that exited would abort it.
        distributed.barrier()
        return result
