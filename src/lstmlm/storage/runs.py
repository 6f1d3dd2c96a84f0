"""Run folders: their files (see layout.py), their lock, and loading a run's model.

config.json and vocab.json are JSON; the checkpoints are safetensors read by
checkpoint.py, so loading a run never unpickles anything.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from lstmlm.config import CELLS, FieldError, RunConfig, replace
from lstmlm.data.subword import SUBWORD_LEVELS, SubwordVocab
from lstmlm.data.vocab import Vocab
from lstmlm.device import resolve_device
from lstmlm.files import TMP_SUFFIX, atomic_write
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.checkpoint import load_model_file, short_error
from lstmlm.storage.layout import BEST, CONFIG, LAST, LOCK, RUN_FILES, SUMMARY, TOKENIZER, VOCAB


@contextmanager
def run_lock(run_dir: Path) -> Iterator[None]:
    """Hold RUN/.lock while training into RUN: a second process that tries to train the
    same folder gets a ValueError instead of two runs writing one checkpoint. The lock goes
    with the process, however it ends. (No-op where fcntl is missing.)"""
    try:
        import fcntl
    except ImportError:
        yield
        return
    try:
        run_dir.mkdir(parents=True, exist_ok=True)
        f = open(run_dir / LOCK, "a+")  # noqa: SIM115 (held open for the whole block)
    except OSError as e:
        raise ValueError(f"{run_dir}: cannot write the run folder ({e.strerror})") from None
    with f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            f.seek(0)
            holder = f.read().strip() or "?"
            raise ValueError(
                f"{run_dir}: another lstmlm process (pid {holder}) is training this run; "
                "wait for it to end or stop it first"
            ) from None
        f.seek(0)
        f.truncate()
        f.write(str(os.getpid()))
        f.flush()
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left by writers killed mid-write (`.NAME.*.tmp` of run files)."""
    names = (CONFIG, VOCAB, TOKENIZER, LAST, BEST, SUMMARY)
    stale = [
        p
        for p in Path(folder).glob(f".*{TMP_SUFFIX}")
        if any(p.name.startswith(f".{n}.") for n in names)
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


@dataclass(frozen=True)
class RunInfo:
    config: RunConfig
    level: str
    source: str
    extra: dict[str, Any]


def write_run_files(
    run_dir: Path, cfg: RunConfig, vocab: Vocab, level: str, source: str, text_sha256: str = ""
) -> None:
    """RUN/vocab.json (and RUN/tokenizer.json at a subword level) and RUN/config.json;
    `text_sha256` fingerprints the text trained on (see `text_changed`), `vocab_sha256`
    the vocabulary (see `read_run_files`)."""
    info = {"run": cfg.to_dict(), "level": level, "source": source, "vocab_size": len(vocab)}
    if text_sha256:
        info["text_sha256"] = text_sha256
    info["vocab_sha256"] = vocab_sha256(vocab)
    if isinstance(vocab, SubwordVocab):
        atomic_write(run_dir / TOKENIZER, vocab.to_str())
    atomic_write(run_dir / VOCAB, vocab.to_json())
    atomic_write(run_dir / CONFIG, json.dumps(info, indent=2))


def vocab_sha256(vocab: Vocab) -> str:
    """The vocabulary's fingerprint: sha256 of its tokens in id order (as vocab.json holds
    them, whatever the file's spacing)."""
    return hashlib.sha256(vocab.to_json().encode("utf-8")).hexdigest()


def is_run_dir(path: str | Path) -> bool:
    p = Path(path)
    return (p / CONFIG).is_file() and (p / VOCAB).is_file()


def read_run_files(run_dir: str | Path) -> tuple[RunInfo, Vocab]:
    run_dir = Path(run_dir)
    if not run_dir.exists():
        raise ValueError(f"{run_dir}: no such run folder")
    if not is_run_dir(run_dir):
        raise ValueError(f"{run_dir}: not an lstmlm run folder (no {CONFIG} / {VOCAB})")
    try:
        info = json.loads((run_dir / CONFIG).read_text("utf-8"))
        if not isinstance(info, dict):
            raise ValueError(f"{CONFIG} is not a JSON object")
        cfg = RunConfig.from_dict(info["run"])
        vocab = Vocab.from_json((run_dir / VOCAB).read_text("utf-8"))
        for key in ("level", "source"):
            if not isinstance(info.get(key, ""), str):
                raise FieldError(key, f"must be a string, got {info[key]!r}")
        level = info.get("level", cfg.data.level)
        if level in SUBWORD_LEVELS:
            vocab = _subword_vocab(run_dir, vocab, level)
    except FieldError as e:  # the field's own name: a config file, not a flag
        raise ValueError(f"{run_dir / CONFIG}: damaged run config ({e})") from None
    except (ValueError, KeyError, TypeError, UnicodeDecodeError, RecursionError) as e:
        raise ValueError(f"{run_dir}: damaged run files ({short_error(e)})") from None
    except OSError as e:
        raise ValueError(f"{run_dir}: cannot read the run files ({e.strerror})") from None
    if info.get("vocab_size", len(vocab)) != len(vocab):
        raise ValueError(f"{run_dir}: {VOCAB} does not match {CONFIG}")
    recorded = info.get("vocab_sha256")  # absent: a run from before the fingerprint
    if recorded is not None and recorded != vocab_sha256(vocab):
        raise ValueError(
            f"{run_dir / VOCAB}: changed since the run was trained (its fingerprint in "
            f"{CONFIG} differs: tokens reordered or replaced), so ids would map to the "
            "wrong tokens; restore the run's own vocabulary"
        )
    extra = {k: v for k, v in info.items() if k not in ("run", "level", "source")}
    return RunInfo(cfg, level, info.get("source", ""), extra), vocab


def _subword_vocab(run_dir: Path, vocab: Vocab, level: str) -> SubwordVocab:
    """RUN/tokenizer.json, checked against RUN/vocab.json."""
    path = run_dir / TOKENIZER
    if not path.is_file():
        raise ValueError(f"a {level} run needs {TOKENIZER}, which is missing")
    sub = SubwordVocab.from_str(path.read_text("utf-8"), level)
    if sub.itos != vocab.itos:
        raise ValueError(f"{TOKENIZER} does not match {VOCAB}")
    return sub


def load_run(
    run_dir: str | Path,
    which: str = "best",
    device: str | torch.device = "cpu",
    cell: str | None = None,
) -> tuple[LanguageModel, Vocab, RunInfo]:
    """Rebuild the model of a run folder with its best (or last) weights, in eval mode.

    `device`: "cpu", "cuda", "cuda:N", "auto" (cuda when available) or a torch.device.
    `cell`: build the recurrent layers as "fused" or "manual" instead of the run's own
    (their parameters are named alike, so either loads the other's weights; "manual"
    runs its matmuls in bf16 under a bf16 autocast, where nn.LSTM stays fp32).
    """
    if which not in ("best", "last"):
        raise ValueError(f"which must be 'best' or 'last', got {which!r}")
    device = resolve_device(device)  # ValueError for cuda without a GPU, before any reading
    if not isinstance(run_dir, str | Path):
        raise ValueError(f"a run folder is a path, got {run_dir!r}")
    run_dir = Path(run_dir)
    info, vocab = read_run_files(run_dir)
    if cell is not None and cell not in CELLS:
        raise FieldError("cell", f"must be one of {', '.join(CELLS)}, got {cell!r}")
    if cell is not None and cell != info.config.model.cell:
        run_cfg = dataclasses.replace(info.config, model=replace(info.config.model, cell=cell))
        info = dataclasses.replace(info, config=run_cfg)
    path = run_dir / (BEST if which == "best" else LAST)
    if which == "best" and not path.exists():
        path = run_dir / LAST
    if not path.exists():
        raise ValueError(f"{run_dir}: run has no checkpoint yet ({BEST} or {LAST})")
    model = LanguageModel(info.config.model, len(vocab))
    load_model_file(model, path)
    return model.to(device).eval(), vocab, info


def run_files_in(folder: Path) -> list[str]:
    """The names of the files a run would write that `folder` already holds."""
    return [n for n in RUN_FILES if (folder / n).exists()]


def text_changed(info: RunInfo, text_sha256: str, source: str) -> str:
    """Why the text read now (its fingerprint `text_sha256`, from `source`) is not the one
    the run was trained on ("" when it is, or when the run predates the fingerprint)."""
    recorded = info.extra.get("text_sha256", "")
    if not recorded or recorded == text_sha256:
        return ""
    return (
        f"its text ({source}) has changed since it was trained, so its train/valid/test "
        "differ from the run's; restore that text, or train a new run on this one"
    )
