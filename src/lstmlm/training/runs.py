"""A run folder's life: start a new run, resume one exactly, fine-tune one into another.

Each entry point checks everything it can before it touches the folder (the config,
the folder, the text against the batch size, the model built on the meta device), then
holds the folder's lock while a `Trainer` trains into it.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from lstmlm.config import RunConfig, replace
from lstmlm.data.dataset import Dataset, load_dataset
from lstmlm.nn.model import LanguageModel
from lstmlm.storage import checkpoint as ckpt
from lstmlm.storage import runs as run_files
from lstmlm.storage.layout import BEST, CONFIG, EPOCH_CHECKPOINTS, LAST, METRICS, SUMMARY, VOCAB
from lstmlm.training import distributed
from lstmlm.training.loop import Loop, TrainResult
from lstmlm.training.sinks import reporting
from lstmlm.training.state import TrainerState
from lstmlm.training.trainer import EventFn, Trainer, budget_spent


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
    # The level trained at (a named corpus's own when none was asked for) is the config's,
    # so RUN/config.json starts the same run again (`train --config RUN/config.json`).
    cfg = replace(cfg, data=replace(cfg.data, level=data.level))
    # The model is built before the folder is touched: a config that cannot be built (a
    # softmax cutoff past the vocabulary, sizes that do not fit) leaves an --overwrite
    # target as it was.
    with reporting(cfg.train.report_to, out, on_event) as on_event:
        trainer = Trainer(out, cfg, data, on_event)
        with _new_run_folder(out, overwrite, cfg, data):
            return _start(trainer)


@contextlib.contextmanager
def _new_run_folder(out: Path, overwrite: bool, cfg: RunConfig, data: Dataset) -> Iterator[None]:
    """Hold the folder's lock, make it (clearing an --overwrite target) and write its run
    files, once every rank has checked it; the block trains into it."""
    with _locked(out):
        distributed.barrier()  # every rank has checked the folder before rank 0 fills it
        if distributed.is_main():
            _make_out_dir(out, overwrite)
            try:
                _write_run_files(out, cfg, data)
            except OSError:  # disk full: no half run (vocab.json alone) blocks a retry
                for name in (VOCAB, CONFIG):
                    (out / name).unlink(missing_ok=True)
                raise
        yield


def _write_run_files(run: Path, cfg: RunConfig, data: Dataset) -> None:
    run_files.write_run_files(run, cfg, data.vocab, data.level, data.source, data.text_sha256)


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


def _start(trainer: Trainer, **extra: Any) -> TrainResult:
    """Log the "start" event (what is trained on what, and `extra`), then train."""
    data = trainer.data
    trainer.log(
        "start",
        {
            "config": trainer.cfg.to_dict(),
            "level": data.level,
            "source": data.source,
            "vocab_size": len(data.vocab),
            "params": trainer.model.num_parameters(),
            "train_tokens": data.train.numel(),
            "unk_train": data.unk_share("train"),
            "unk_valid": data.unk_share("valid"),
            **extra,
        },
    )
    return Loop(trainer).run()


def _locked(run: Path) -> contextlib.AbstractContextManager[None]:
    """The run folder's lock, held by the process that writes it (rank 0)."""
    return run_files.run_lock(run) if distributed.is_main() else contextlib.nullcontext()


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
    if run_files.is_run_dir(out) and not overwrite and not (out / LAST).exists():
        raise ValueError(
            f"{out}: holds a run with no checkpoint yet (stopped before its first one); "
            f"use --resume {out} to train it from step 0 or --overwrite to replace it"
        )
    if run_files.is_run_dir(out) and not overwrite:
        raise ValueError(
            f"{out}: already holds a run; use --resume {out} to continue it or "
            "--overwrite to replace it"
        )
    # Any other folder is fine (its files are left alone), unless a run would replace one.
    taken = run_files.run_files_in(out) if out.is_dir() and not overwrite else []
    if taken:
        raise ValueError(
            f"{out}: holds {taken[0]}, which a run would replace; choose another --out "
            "or add --overwrite"
        )


def _make_out_dir(out: Path, overwrite: bool) -> None:
    if out.exists() and overwrite:
        for name in (LAST, BEST, METRICS, SUMMARY):
            (out / name).unlink(missing_ok=True)
        for kept in out.glob(EPOCH_CHECKPOINTS):
            kept.unlink()
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
    info, vocab = run_files.read_run_files(src)
    best = src / BEST
    if not best.exists():
        raise ValueError(f"{src}: no {BEST} to fine-tune")
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
    with reporting(cfg.train.report_to, out, on_event) as on_event:
        trainer = Trainer(out, cfg, data, on_event)
        ckpt.load_model_file(trainer.model, best)
        with _new_run_folder(out, overwrite, cfg, data):
            return _finetune(trainer, src)


def _finetune(trainer: Trainer, src: Path) -> TrainResult:
    v = trainer.validate()
    trainer.st.best_loss = v.loss
    trainer.save_best(v.loss)
    return _start(trainer, finetune_of=str(src), valid_loss=v.loss)


RESUME_OVERRIDES = (
    "epochs",
    "max_minutes",
    "max_steps",
    "log_every",
    "checkpoint_minutes",
    "device",
    "report_to",
    "keep_checkpoints",
)


def check_resume(run_dir: str | Path, nproc: int, overrides: dict[str, Any] | None = None) -> None:
    """The checks of `resume_run` that need no process group, for `lstmlm train --resume
    --nproc N` to make before it starts N processes: the run files, the checkpoint's
    process count against `nproc`, a budget left to train (with `overrides`)."""
    run = Path(run_dir)
    info, _ = run_files.read_run_files(run)
    if not (run / LAST).exists():
        return  # trains from step 0 with any number of processes
    _, meta = ckpt.load_tensors(run / LAST)
    try:
        st = TrainerState(**meta["trainer"])
    except (KeyError, TypeError) as e:
        raise ValueError(f"{run / LAST}: cannot resume from this checkpoint ({e})") from None
    tc = replace(info.config.train, **(overrides or {}))
    done = budget_spent(st, tc)
    if done and (run / SUMMARY).exists():  # without a summary, --resume evaluates it
        raise ValueError(f"{run}: already finished ({done})")
    if st.world_size != nproc:
        raise ValueError(
            f"{run / LAST}: this run was trained by {st.world_size} process(es); resume it "
            f"with --nproc {st.world_size} (not {nproc})"
        )


def resume_run(
    run_dir: str | Path, overrides: dict[str, Any] | None = None, on_event: EventFn | None = None
) -> TrainResult:
    """Continue a run from RUN/last.safetensors, exactly where it stopped; a run folder
    with its config and vocabulary but no checkpoint yet (stopped before its first one)
    starts again from step 0."""
    run = Path(run_dir)
    info, vocab = run_files.read_run_files(run)
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
    changed = run_files.text_changed(info, data.text_sha256, data.source)
    if changed:
        raise ValueError(f"{run}: cannot resume exactly: {changed}")
    with _locked(run), reporting(cfg.train.report_to, run, on_event) as on_event:
        # Only the lock holder cleans up: a refused second process must not delete the
        # temporary file of the checkpoint the first one is writing.
        if distributed.is_main():  # only rank 0 writes, so only it may clean up
            run_files.remove_stale_temps(run)  # left by a writer killed mid-write
        return _resume(run, cfg, data, overrides, on_event)


def _stopped_by(trainer: Trainer) -> str:
    """Which budget a finished run spent: "epochs", "steps" or "time"."""
    st, tc = trainer.st, trainer.tc
    if st.epoch >= tc.epochs:
        return "epochs"
    return "steps" if tc.max_steps is not None and st.step >= tc.max_steps else "time"


def _resume(
    run: Path,
    cfg: RunConfig,
    data: Dataset,
    overrides: dict[str, Any] | None,
    on_event: EventFn | None,
) -> TrainResult:
    trainer = Trainer(run, cfg, data, on_event)
    if not (run / LAST).exists():  # stopped before its first checkpoint: from step 0
        if distributed.is_main():
            (run / METRICS).unlink(missing_ok=True)
            if overrides:
                _write_run_files(run, cfg, data)
        return _start(trainer, resumed_from_step=0)
    trainer.load_last()
    done = trainer.limit_reached()
    if done and not (run / SUMMARY).exists():  # trained, but its final evaluation failed
        trainer.log("resume", {"epoch": trainer.st.epoch + 1, "step": trainer.st.step})
        return Loop(trainer).finish(_stopped_by(trainer))
    if done:
        raise ValueError(f"{run}: already finished ({done})")
    if overrides and distributed.is_main():
        _write_run_files(run, cfg, data)
    trainer.log("resume", {"epoch": trainer.st.epoch + 1, "step": trainer.st.step})
    return Loop(trainer).run()
