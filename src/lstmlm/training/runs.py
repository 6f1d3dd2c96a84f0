"""The training loop: optimizer, clipping, schedules, checkpoints, resume.

The loop never prints. It reports through `on_event(kind, data)`; the CLI
turns those events into a progress bar, and every event with a number in it
is also appended to RUN/metrics.jsonl.
"""

from __future__ import annotations

import contextlib
import json
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from lstmlm.config.schema import RunConfig, TrainConfig, replace
from lstmlm.data.batching import batchify, num_windows, window
from lstmlm.data.dataset import Dataset, load_dataset
from lstmlm.evaluation.perplexity import EvalResult, autocast
from lstmlm.generation.sampling import SampleConfig, generate
from lstmlm.nn.model import LanguageModel, LMOutput
from lstmlm.nn.regularize import (
    activation_regularization,
    sample_bptt,
    temporal_activation_regularization,
)
from lstmlm.nn.rnn import State, detach_state
from lstmlm.storage import checkpoint as ckpt
from lstmlm.training import distributed, guard
from lstmlm.training.asgd import averaged_weights, is_averaging, make_asgd, validation_stalled
from lstmlm.training.guard import NonFiniteGuard, Snapshot, take_snapshot
from lstmlm.training.interrupt import TrainingInterrupted, stop_on_sigint
from lstmlm.training.schedule import cosine_factor, run_progress

EventFn = Callable[[str, dict[str, Any]], None]
EVAL_BPTT = 100  # evaluation carries state across windows: the length only sets the chunking


@dataclass
class TrainerState:
    """Everything besides weights and optimizer that a resume needs."""

    epoch: int = 0  # 0-based epoch in progress
    offset: int = 0  # next window starts at this row of the batchified train data
    step: int = 0  # optimizer steps so far
    lr: float = 0.0
    sched_best: float = math.inf  # best epoch-end validation loss (drives the plateau schedule)
    best_loss: float = math.inf  # validation loss of best.safetensors
    best_epoch: float = 0.0
    elapsed: float = 0.0  # training seconds, all sessions together
    tokens: int = 0  # training tokens seen
    epoch_loss: float = 0.0  # sum of per-token mean losses this epoch
    epoch_steps: int = 0
    averaging: bool = False  # ntasgd: switched to averaged SGD
    val_history: list[float] = field(default_factory=list)  # epoch-end validation losses
    world_size: int = 1  # training processes; a resume needs the same number


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


def make_optimizer(model: LanguageModel, cfg: TrainConfig) -> torch.optim.Optimizer:
    params = list(model.parameters())
    if cfg.optimizer in ("sgd", "ntasgd"):
        return torch.optim.SGD(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "adamw":
        return torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    if cfg.optimizer == "rmsprop":
        return torch.optim.RMSprop(
            params, lr=cfg.lr, momentum=cfg.momentum, weight_decay=cfg.weight_decay
        )
    if cfg.optimizer == "asgd":
        return make_asgd(params, cfg.lr, cfg.weight_decay)
    raise ValueError(f"unknown optimizer {cfg.optimizer!r}")


def regularization(out: LMOutput, cfg: TrainConfig) -> Tensor | None:
    """AR + TAR on the last recurrent layer (None when both are off)."""
    if cfg.alpha == 0 and cfg.beta == 0:
        return None
    last = out.hiddens[-1]  # (T, B, H), before dropout
    dropped = out.dropped if out.dropped is not None else last
    return activation_regularization(dropped, cfg.alpha) + temporal_activation_regularization(
        last, cfg.beta
    )


def next_lr(cfg: TrainConfig, st: TrainerState, epoch_done: int, valid_loss: float) -> float:
    """The learning rate after epoch `epoch_done` (1-based) ended with `valid_loss`."""
    if cfg.lr_schedule == "plateau":
        return st.lr if valid_loss < st.sched_best else st.lr / cfg.lr_decay
    if cfg.lr_schedule == "epoch" and epoch_done >= cfg.decay_after:
        return st.lr / cfg.lr_decay
    return st.lr


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
        self.device = distributed.resolve_device(self.tc.device, distributed.local_rank())
        torch.manual_seed(self.tc.seed)
        self.model = _build_model(cfg, len(data.vocab), self.device)
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
        self.guard = NonFiniteGuard(self.tc.nan_patience, self.tc.nan_max_restores)
        self.step_ok = True  # False after a non-finite step (skipped, see guard.py)
        self.bad_step: dict[str, Any] = {}  # its loss and gradient norm
        self.start_snapshot: Snapshot | None = None  # restore point before the first checkpoint

    # --- checkpoints -------------------------------------------------------------

    def save_last(self) -> None:
        tensors = ckpt.model_tensors(self.model, "model.")
        opt_tensors, opt_meta = ckpt.optimizer_tensors(self.opt)
        tensors.update(opt_tensors)
        tensors.update(self._rank_tensors())  # collective when world > 1
        tensors["rng.bptt"] = self.bptt_gen.get_state()  # the same on every rank
        meta = {"trainer": asdict(self.st), "optimizer": opt_meta}
        if self.is_main:
            ckpt.save_tensors(self.run_dir / ckpt.LAST, tensors, meta)
        distributed.barrier()  # the other ranks wait until rank 0's checkpoint is on disk

    def _rank_tensors(self) -> dict[str, Tensor]:
        """Hidden state and RNG state: hidden.{i}.{j}, rng.torch (rng.cuda on a GPU).

        With several processes, every rank's, gathered: hidden.{rank}.{i}.{j}, rng.torch.{rank}.
        """
        own = {
            f"hidden.{i}.{j}": t for i, layer in enumerate(self.hidden) for j, t in enumerate(layer)
        }
        own["rng.torch"] = torch.get_rng_state()
        if self.device.type == "cuda":
            own["rng.cuda"] = torch.cuda.get_rng_state(self.device)
        if self.world == 1:
            return own
        return {
            _rank_key(key, r): g
            for key, t in own.items()
            for r, g in enumerate(distributed.all_gather(t))
        }

    def load_last(self) -> None:
        path = self.run_dir / ckpt.LAST
        tensors, meta = ckpt.load_tensors(path)
        saved_world = meta.get("trainer", {}).get("world_size", 1)
        if saved_world != self.world:
            raise ValueError(
                f"{path}: this run was trained by {saved_world} process(es); resume it with "
                f"the same number (now {self.world}: use --nproc {saved_world}, or torchrun "
                f"with {saved_world} processes in all)"
            )

        def own(key: str) -> Tensor:  # this rank's entry
            return tensors[key if self.world == 1 else _rank_key(key, self.rank)]

        try:
            ckpt.load_model_tensors(self.model, tensors, "model.", source=str(path))
            self.st = TrainerState(**meta["trainer"])
            if self.st.averaging and not is_averaging(self.opt):
                self.opt = make_asgd(
                    list(self.model.parameters()), self.st.lr, self.tc.weight_decay
                )
            ckpt.load_optimizer(self.opt, tensors, meta["optimizer"])
            n = len(self.hidden[0])
            self.hidden = [
                tuple(own(f"hidden.{i}.{j}").to(self.device) for j in range(n))
                for i in range(len(self.hidden))
            ]
            torch.set_rng_state(own("rng.torch"))
            cuda_key = "rng.cuda" if self.world == 1 else _rank_key("rng.cuda", self.rank)
            if self.device.type == "cuda" and cuda_key in tensors:  # absent: saved on a CPU
                torch.cuda.set_rng_state(tensors[cuda_key], self.device)
            if "rng.bptt" in tensors:
                self.bptt_gen.set_state(tensors["rng.bptt"])
        except (KeyError, TypeError, ValueError) as e:
            why = str(e).removeprefix(f"{path}: ")  # load_model_tensors names the file too
            raise ValueError(f"{path}: cannot resume from this checkpoint ({why})") from None

    def save_best(self, loss: float) -> None:
        meta = {"epoch": self.st.best_epoch, "valid_loss": loss}
        if self.is_main:
            tensors = ckpt.model_tensors(self.model, "model.")
            ckpt.save_tensors(self.run_dir / ckpt.BEST, tensors, meta)

    def log(self, kind: str, record: dict[str, Any]) -> None:
        if not self.is_main:  # only rank 0 writes metrics and reports
            return
        record = {"event": kind, **record}
        with open(self.run_dir / ckpt.METRICS, "a", encoding="utf-8") as f:
            f.write(json.dumps(record) + "\n")
        self.on_event(kind, record)

    # --- the loop -------------------------------------------------------------

    def validate(self) -> EvalResult:
        return distributed.evaluate(  # plain evaluate() for one process
            self.model,
            self.data.valid,
            self.data.level,
            self.tc.eval_batch_size,
            EVAL_BPTT,
            self.tc.precision,
        )

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

    def run(self) -> TrainResult:
        """Train until a budget is spent. Ctrl-C stops after the current step, saves the
        checkpoint and raises `TrainingInterrupted` (see interrupt.py)."""
        with stop_on_sigint(lambda: self.on_event("stop_requested", {})) as stop_requested:
            return self._run(stop_requested)

    def _run(self, stop_requested: Callable[[], bool]) -> TrainResult:
        tc, st = self.tc, self.st
        self.set_lr(st.lr)
        if not (self.run_dir / ckpt.LAST).exists():
            self.start_snapshot = take_snapshot(self)
        steps_per_epoch = num_windows(self.train_data, tc.bptt)
        budget = tc.max_minutes * 60 if tc.max_minutes is not None else math.inf
        stopped = "epochs"
        last_ckpt = time.monotonic()
        while st.epoch < tc.epochs:
            self.model.train()
            self.on_event(
                "epoch_start",
                {"epoch": st.epoch + 1, "steps": steps_per_epoch, "done": st.offset // tc.bptt},
            )
            running = torch.zeros((), device=self.device)
            run_steps, run_tokens, t_run = 0, 0, time.monotonic()
            while st.offset < self.train_data.size(0) - 1:
                t0 = time.monotonic()
                x, y = self.next_window()
                loss = self.train_step(x, y)
                if not self.step_ok:  # NaN/inf: nothing learned from this window
                    if self.nonfinite_step(x.size(0)):  # restored the last good state
                        st = self.st
                        running.zero_()
                        run_steps, run_tokens, t_run = 0, 0, time.monotonic()
                    continue
                self.guard.record(True)
                running += loss
                st.offset += x.size(0)
                st.step += 1
                st.tokens += y.numel() * self.world  # all ranks' tokens
                run_steps += 1
                run_tokens += y.numel() * self.world
                st.elapsed += time.monotonic() - t0
                if run_steps % tc.log_every == 0:
                    loss = running.item()
                    st.epoch_loss += loss
                    st.epoch_steps += run_steps
                    self.log(
                        "progress",
                        {
                            "epoch": st.epoch + 1,
                            "step": st.step,
                            "done": st.offset // tc.bptt,
                            "steps": steps_per_epoch,
                            "train_loss": loss / run_steps,
                            "train_ppl": _exp(loss / run_steps),
                            "lr": self.opt.param_groups[0]["lr"]
                            if tc.lr_schedule == "cosine"
                            else st.lr,
                            "tokens_per_sec": run_tokens / (time.monotonic() - t_run),
                            "elapsed": st.elapsed,
                        },
                    )
                    running.zero_()
                    run_steps, run_tokens, t_run = 0, 0, time.monotonic()
                # Clocks differ between ranks; all must stop / checkpoint together (one
                # small all-reduce per step when world > 1).
                time_up, ckpt_due, interrupted = distributed.any_of(
                    st.elapsed >= budget,
                    tc.checkpoint_minutes > 0
                    and time.monotonic() - last_ckpt >= tc.checkpoint_minutes * 60,
                    stop_requested(),
                )
                if interrupted:
                    self._flush_running(running, run_steps)
                    self.save_last()
                    self.log("interrupted", {"epoch": st.epoch + 1, "step": st.step})
                    raise TrainingInterrupted(self.run_dir, st.step)
                if time_up:
                    stopped = "time"
                    break
                if tc.max_steps is not None and st.step >= tc.max_steps:
                    stopped = "steps"
                    break
                if ckpt_due:
                    self._flush_running(running, run_steps)
                    running.zero_()
                    run_steps = 0
                    self.save_last()
                    last_ckpt = time.monotonic()
            self._flush_running(running, run_steps)
            if stopped != "epochs":
                break
            if self.end_epoch(steps_per_epoch):
                stopped = "stalled"
                break
            last_ckpt = time.monotonic()
        return self.finish(stopped, steps_per_epoch)

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
        last = self.run_dir / ckpt.LAST
        if action == "diverged" or not (last.exists() or self.start_snapshot is not None):
            self.log("diverged", {"step": st.step, "lr": st.lr, "restores": self.guard.restores})
            raise ValueError(guard.diverged_message(self.guard, st.lr, last))
        lr, elapsed = st.lr, st.elapsed
        if last.exists():
            self.load_last()
        else:
            guard.restore_snapshot(self, self.start_snapshot)
        self.st.elapsed = elapsed  # the time budget counts the lost steps too
        self.set_lr(min(self.st.lr, lr) / 2)
        self.log(
            "nonfinite_restore",
            {"step": self.st.step, "lr": self.st.lr, "restores": self.guard.restores},
        )
        return True

    def _flush_running(self, running: Tensor, run_steps: int) -> None:
        if run_steps:
            self.st.epoch_loss += running.item()
            self.st.epoch_steps += run_steps

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

    def finish(self, stopped: str, steps_per_epoch: int) -> TrainResult:
        st = self.st
        # Free the last step's gradients (a model's worth of memory) before checkpointing and
        # evaluating: otherwise they are held through the end and set the run's peak RSS.
        self.opt.zero_grad(set_to_none=True)
        epochs = st.epoch + st.offset / max(self.train_data.size(0) - 1, 1)
        no_best = not (self.run_dir / ckpt.BEST).exists()
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
            ckpt.load_model_file(self.model, self.run_dir / ckpt.BEST)  # no second copy
        distributed.broadcast_module(self.model)  # the others need not see the run folder
        self.on_event("final_eval", {"step": st.step})  # the last step trained
        valid, test = (
            self.validate(),
            distributed.evaluate(
                self.model,
                self.data.test,
                self.data.level,
                self.tc.eval_batch_size,
                EVAL_BPTT,
                self.tc.precision,
            ),
        )
        result = TrainResult(
            valid, test, epochs, st.step, st.tokens / max(st.elapsed, 1e-9), st.elapsed, stopped
        )
        summary = {
            **result.summary(self.data.level),
            "best_epoch": st.best_epoch,
            "params": self.model.num_parameters(),
        }
        if self.is_main:
            ckpt.atomic_write(self.run_dir / ckpt.SUMMARY, json.dumps(summary, indent=2))
        self.log("final", summary)
        # No rank leaves while rank 0 still writes: one that went on to resume this run
        # would delete rank 0's temporary files as stale, one that exited would abort it.
        distributed.barrier()
        return result


def _build_model(cfg: RunConfig, vocab_size: int, device: torch.device) -> LanguageModel:
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


def _rank_key(key: str, rank: int) -> str:
    """hidden.{i}.{j} -> hidden.{rank}.{i}.{j}; rng.torch -> rng.torch.{rank}."""
    if key.startswith("hidden."):
        return f"hidden.{rank}.{key.removeprefix('hidden.')}"
    return f"{key}.{rank}"


def _exp(x: float) -> float:
    return math.exp(x) if x < 700 else math.inf


# --- starting and resuming runs ---------------------------------------------------


def start_run(
    cfg: RunConfig,
    out_dir: str | Path,
    *,
    overwrite: bool = False,
    level: str | None = None,
    on_event: EventFn | None = None,
) -> TrainResult:
    """Train a new model into `out_dir` (refuses to replace an existing run)."""
    distributed.init(cfg.train.device)  # joins torchrun's process group; no-op for one process
    out = Path(out_dir)
    cfg = absolute_paths(cfg)
    data = check_start(cfg, out, overwrite, level, distributed.world())
    # The model is built before the folder is touched: a config that cannot be built (a
    # softmax cutoff past the vocabulary, sizes that do not fit) leaves an --overwrite
    # target as it was.
    trainer = Trainer(out, cfg, data, on_event)
    with _new_run_folder(out, overwrite, cfg, data):
        return _start(trainer, cfg, data)


@contextlib.contextmanager
def _new_run_folder(out: Path, overwrite: bool, cfg: RunConfig, data: Dataset) -> Iterator[None]:
    """Hold the folder's lock, make it (clearing an --overwrite target) and write its run
    files, once every rank has checked it; the block trains into it."""
    with _locked(out):
        distributed.barrier()  # every rank has checked the folder before rank 0 fills it
        if distributed.is_main():
            _make_out_dir(out, overwrite)
            ckpt.write_run_files(out, cfg, data.vocab, data.level, data.source, data.text_sha256)
        yield


def text_changed(info: ckpt.RunInfo, data: Dataset) -> str:
    """Why `data` is not the text the run was trained on ("" when it is, or when the run
    predates the fingerprint)."""
    recorded = info.extra.get("text_sha256", "")
    if not recorded or recorded == data.text_sha256:
        return ""
    return (
        f"its text ({data.source}) has changed since it was trained, so its train/valid/test "
        "differ from the run's; restore that text, or train a new run on this one"
    )


def absolute_paths(cfg: RunConfig) -> RunConfig:
    """`cfg` with its text and data folder paths absolute: the run folder then works from
    any working directory (evaluate, --resume and finetune read the text again)."""
    d = cfg.data
    fixed = {
        k: str(Path(v).expanduser().resolve())
        for k in ("train", "valid", "test", "data_dir")
        if (v := getattr(d, k)) is not None
    }
    return replace(cfg, data=replace(d, **fixed)) if fixed else cfg


def check_start(
    cfg: RunConfig, out: Path, overwrite: bool, level: str | None = None, world: int = 1
) -> Dataset:
    """Every check of a new run that needs no model in memory: the config, the output
    folder, the text (read here) against the batch size. Returns the dataset. `lstmlm
    train --nproc` runs it once before starting its processes, so that a mistake is one
    line rather than a report from each of them."""
    cfg.validate()
    _check_out_dir(out, overwrite)
    data = load_dataset(cfg.data, level=level)  # read before touching the output folder
    if len(data.vocab) <= 2:  # <eos>, <unk> and nothing else
        raise ValueError(
            f"the vocabulary has only <eos> and <unk>: no token of the text occurs "
            f"--min-freq {cfg.data.min_freq} times; lower --min-freq"
        )
    check_batch_size(cfg.train.batch_size, data.train.numel(), world)
    return data


def check_model(cfg: RunConfig, vocab_size: int) -> None:
    """Build the model without memory (PyTorch's meta device): the checks that need the
    vocabulary (adaptive softmax cutoffs) run, no weights are made."""
    with torch.device("meta"):
        LanguageModel(cfg.model, vocab_size)


def _start(trainer: Trainer, cfg: RunConfig, data: Dataset) -> TrainResult:
    trainer.log(
        "start",
        {
            "config": cfg.to_dict(),
            "level": data.level,
            "source": data.source,
            "vocab_size": len(data.vocab),
            "params": trainer.model.num_parameters(),
            "train_tokens": data.train.numel(),
        },
    )
    return trainer.run()


def _locked(run: Path) -> contextlib.AbstractContextManager[None]:
    """The run folder's lock, held by the process that writes it (rank 0)."""
    return ckpt.run_lock(run) if distributed.is_main() else contextlib.nullcontext()


def run_files_in(folder: Path) -> list[str]:
    """The names of the files a run would write that `folder` already holds."""
    return [n for n in ckpt.RUN_FILES if (folder / n).exists()]


def check_batch_size(batch_size: int, train_tokens: int, world: int = 1) -> None:
    """ValueError when the training text is too short for `batch_size` columns per process
    (each column needs at least two tokens)."""
    if batch_size * world * 2 > train_tokens:
        procs = f" x {world} processes" if world > 1 else ""
        raise ValueError(
            f"training text has {train_tokens} tokens, too few for batch size {batch_size}{procs}"
        )


def _check_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder")
    if ckpt.is_run_dir(out) and not overwrite:
        raise ValueError(
            f"{out}: already holds a run; use --resume {out} to continue it or "
            "--overwrite to replace it"
        )
    # Any other folder is fine (its files are left alone), unless a run would replace one.
    taken = run_files_in(out) if out.is_dir() and not overwrite else []
    if taken:
        raise ValueError(
            f"{out}: holds {taken[0]}, which a run would replace; choose another --out "
            "or add --overwrite"
        )


def _make_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and overwrite:
        for name in (ckpt.LAST, ckpt.BEST, ckpt.METRICS, ckpt.SUMMARY):
            (out / name).unlink(missing_ok=True)
    try:
        out.mkdir(parents=True, exist_ok=True)
        probe = out / ".write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as e:
        raise ValueError(f"{out}: cannot write the run folder ({e.strerror})") from None


def finetune_run(
    run_dir: str | Path,
    out_dir: str | Path | None = None,
    *,
    epochs: int | None = None,
    lr: float | None = None,
    max_minutes: float | None = None,
    overwrite: bool = False,
    on_event: EventFn | None = None,
) -> TrainResult:
    """AWD-LSTM fine-tuning: RUN's best weights, trained on with averaged SGD from the start.

    Writes a new run folder (default RUN-finetune) whose config is RUN's with
    optimizer "asgd" and no lr schedule; it stops when validation stalls (see
    TrainConfig.nonmono). Its best.safetensors starts as RUN's best model and is
    replaced only by averaged weights that validate better. Resume it with
    `resume_run` like any other run.
    """
    src = Path(run_dir)
    info, vocab = ckpt.read_run_files(src)
    best = src / ckpt.BEST
    if not best.exists():
        raise ValueError(f"{src}: no {ckpt.BEST} to fine-tune")
    out = Path(out_dir) if out_dir is not None else src.with_name(src.name + "-finetune")
    if out.resolve() == src.resolve():
        raise ValueError("fine-tuning writes a new run folder; give a different --out")
    changes: dict[str, Any] = {"optimizer": "asgd", "lr_schedule": "none", "max_steps": None}
    for name, value in (("epochs", epochs), ("lr", lr), ("max_minutes", max_minutes)):
        if value is not None:
            changes[name] = value
    base = info.config
    cfg = RunConfig(base.data, base.model, replace(base.train, **changes), base.preset).validate()
    distributed.init(cfg.train.device)
    _check_out_dir(out, overwrite)
    data = load_dataset(cfg.data, level=info.level, vocab=vocab)
    # Built and loaded (straight into the parameters: no second copy) before the folder
    # is touched, so a checkpoint that does not fit fails first.
    trainer = Trainer(out, cfg, data, on_event)
    ckpt.load_model_file(trainer.model, best)
    with _new_run_folder(out, overwrite, cfg, data):
        return _finetune(trainer, src)


def _finetune(trainer: Trainer, src: Path) -> TrainResult:
    cfg, data, vocab = trainer.cfg, trainer.data, trainer.data.vocab
    v = trainer.validate()
    trainer.st.best_loss = v.loss
    trainer.save_best(v.loss)
    trainer.log(
        "start",
        {
            "config": cfg.to_dict(),
            "level": data.level,
            "source": data.source,
            "vocab_size": len(vocab),
            "params": trainer.model.num_parameters(),
            "train_tokens": data.train.numel(),
            "finetune_of": str(src),
            "valid_loss": v.loss,
        },
    )
    return trainer.run()


RESUME_OVERRIDES = (
    "epochs",
    "max_minutes",
    "max_steps",
    "log_every",
    "checkpoint_minutes",
    "device",
)


def resume_run(
    run_dir: str | Path, overrides: dict[str, Any] | None = None, on_event: EventFn | None = None
) -> TrainResult:
    """Continue a run from RUN/last.safetensors, exactly where it stopped."""
    run = Path(run_dir)
    info, vocab = ckpt.read_run_files(run)
    if not (run / ckpt.LAST).exists():
        raise ValueError(f"{run}: nothing to resume (no {ckpt.LAST})")
    if distributed.is_main():  # only rank 0 writes, so only it may clean up
        ckpt.remove_stale_temps(run)  # left by a process killed while writing a checkpoint
    cfg = info.config
    if overrides:
        bad = set(overrides) - set(RESUME_OVERRIDES)
        if bad:
            raise ValueError(
                f"--resume keeps the run's config; only {', '.join(RESUME_OVERRIDES)}"
                f" may change (not {', '.join(sorted(bad))})"
            )
        cfg = RunConfig(cfg.data, cfg.model, replace(cfg.train, **overrides), cfg.preset)
        cfg.validate()
    distributed.init(cfg.train.device)
    data = load_dataset(cfg.data, level=info.level, vocab=vocab)
    changed = text_changed(info, data)
    if changed:
        raise ValueError(f"{run}: cannot resume exactly: {changed}")
    with _locked(run):
        return _resume(run, cfg, data, overrides, on_event)


def _resume(
    run: Path,
    cfg: RunConfig,
    data: Dataset,
    overrides: dict[str, Any] | None,
    on_event: EventFn | None,
) -> TrainResult:
    vocab = data.vocab
    trainer = Trainer(run, cfg, data, on_event)
    trainer.load_last()
    done = trainer.limit_reached()
    if done:
        raise ValueError(f"{run}: already finished ({done})")
    if overrides and distributed.is_main():
        ckpt.write_run_files(run, cfg, vocab, data.level, data.source, data.text_sha256)
    trainer.log("resume", {"epoch": trainer.st.epoch + 1, "step": trainer.st.step})
    return trainer.run()
