"""Run folders and checkpoints, with no pickled code anywhere.

    RUN/config.json       run config, token level, corpus description
    RUN/vocab.json        the vocabulary
    RUN/last.safetensors  weights + optimizer + trainer state (for --resume)
    RUN/best.safetensors  weights of the best model on validation
    RUN/metrics.jsonl     one JSON object per progress report / epoch
    RUN/summary.json      final evaluation

Everything that is a tensor goes into safetensors; everything else goes into
its JSON metadata, with a CRC-32 of every tensor (see tensorfile) that every
load checks: a file damaged on disk is refused, never loaded as garbage
weights. Every file is written to a temporary name, flushed to disk and
renamed over the old one, so a crash leaves either the old or the new file,
never a torn one.
"""

from __future__ import annotations

import dataclasses
import json
import os
import struct
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

import safetensors
import torch
from torch import Tensor

from lstmlm.config.schema import CELLS, RunConfig, replace
from lstmlm.data.vocab import Vocab
from lstmlm.files import chmod_like_new
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.tensorfile import (
    ChecksumError,
    checksums,
    read_header,
    read_into,
    verify,
    write_safetensors,
)
from lstmlm.training.distributed import resolve_device

CONFIG = "config.json"
VOCAB = "vocab.json"
LAST = "last.safetensors"
BEST = "best.safetensors"
METRICS = "metrics.jsonl"
SUMMARY = "summary.json"
_META_KEY = "lstmlm"
RUN_FILES = (CONFIG, VOCAB, LAST, BEST, METRICS, SUMMARY)  # what a run writes in its folder
LOCK = ".lock"  # held by the process training the run (run_lock)
TMP_SUFFIX = ".tmp"  # atomic_write's temporary files: .NAME.<random>.tmp


def atomic_write(path: str | Path, data: bytes | str | Callable[[BinaryIO], None]) -> None:
    """Replace `path` with `data` (or what the callable writes to the open file), atomically."""
    path = Path(path)
    if isinstance(data, str):
        data = data.encode("utf-8")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as e:
        raise _write_error(path, e) from None
    try:
        chmod_like_new(fd)  # mkstemp's 0600 would make every run file private
        with os.fdopen(fd, "wb") as f:
            if callable(data):
                data(f)
            else:
                f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        Path(tmp).unlink(missing_ok=True)
        if isinstance(e, OSError):
            raise _write_error(path, e) from None
        raise
    _fsync_dir(path.parent)


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


def _write_error(path: Path, e: OSError) -> OSError:
    """The OSError of a failed write, naming the file and saying the old one is intact."""
    why = e.strerror or str(e) or type(e).__name__
    return OSError(
        e.errno, f"cannot write it ({why}); the previous version (if any) is unchanged", str(path)
    )


def remove_stale_temps(folder: str | Path) -> list[Path]:
    """Delete temporary files left by writers killed mid-write (`.NAME.*.tmp` of run files)."""
    names = (CONFIG, VOCAB, LAST, BEST, SUMMARY)
    stale = [
        p
        for p in Path(folder).glob(f".*{TMP_SUFFIX}")
        if any(p.name.startswith(f".{n}.") for n in names)
    ]
    for p in stale:
        p.unlink(missing_ok=True)
    return stale


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def save_tensors(path: str | Path, tensors: dict[str, Tensor], meta: dict[str, Any]) -> None:
    """Write `tensors` and the JSON-able `meta` to `path` atomically, with a CRC-32 of every
    tensor in the file's metadata (checked by `load_tensors` and `load_model_file`)."""
    tensors = {k: v.detach().contiguous().cpu() for k, v in tensors.items()}
    metadata = {_META_KEY: json.dumps(meta)}
    atomic_write(path, lambda f: write_safetensors(f, tensors, metadata))  # streamed, no blob


def load_tensors(path: str | Path) -> tuple[dict[str, Tensor], dict[str, Any]]:
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    try:
        with safetensors.safe_open(str(path), framework="pt") as f:
            metadata = f.metadata() or {}
            meta = json.loads(metadata.get(_META_KEY, "{}"))
            sums = checksums(metadata)  # None for a file written before checksums
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            for k, t in tensors.items():
                verify(k, t, sums)  # over the tensor's own memory, no copy
    except ChecksumError as e:
        raise _damaged(path, e) from None
    except Exception as e:  # safetensors raises several types for a torn or foreign file
        raise ValueError(f"{path}: not a readable lstmlm checkpoint ({_short(e)})") from None
    return tensors, meta


def _damaged(path: Path, e: ChecksumError) -> ValueError:
    """The one-line error for a checkpoint whose bytes changed after it was written."""
    other = {BEST: (LAST, "last"), LAST: (BEST, "best")}.get(path.name)
    instead = f"load {other[0]} instead (--which {other[1]}) or retrain" if other else "retrain"
    return ValueError(f"{path}: damaged checkpoint: {e}; {instead}")


def _short(e: Exception) -> str:
    return str(e).splitlines()[0][:200] if str(e) else type(e).__name__


# --- model weights -----------------------------------------------------------


def model_tensors(model: LanguageModel, prefix: str = "") -> dict[str, Tensor]:
    tied = set(model.tied_keys)
    return {prefix + k: v for k, v in model.state_dict().items() if k not in tied}


def load_model_tensors(
    model: LanguageModel, tensors: dict[str, Tensor], prefix: str = "", source: str = "checkpoint"
) -> None:
    sd = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    _check_weights(model, {k: tuple(v.shape) for k, v in sd.items()}, source)
    model.load_state_dict(sd, strict=False)


def load_model_file(model: LanguageModel, path: str | Path, prefix: str = "model.") -> None:
    """Load a checkpoint's weights into `model`, read straight into its parameters on CPU.

    Unlike ``load_tensors`` + ``load_model_tensors``, no second copy of the weights (not
    even a mapped file) exists at any moment, so loading into a live model (the end of a
    training run, ``load_run``) does not set the process's peak memory. A model on a GPU
    loads through a CPU copy.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: checkpoint not found")
    if any(p.device.type != "cpu" for p in model.parameters()):
        load_model_tensors(model, load_tensors(path)[0], prefix, source=str(path))
        return
    tied = set(model.tied_keys)
    try:
        with open(path, "rb") as f:
            parsed = read_header(f)
            shapes = {
                k[len(prefix) :]: tuple(e["shape"])
                for k, e in parsed[0].items()
                if k.startswith(prefix)
            }
            _check_weights(model, shapes, str(path))
            targets = {prefix + k: v for k, v in model.state_dict().items() if k not in tied}
            read_into(f, targets, parsed)  # checks each tensor's checksum
    except ChecksumError as e:
        raise _damaged(path, e) from None
    except (OSError, ValueError, KeyError, TypeError, struct.error) as e:
        if str(e).startswith(str(path)):
            raise
        raise ValueError(f"{path}: not a readable lstmlm checkpoint ({_short(e)})") from None


def _check_weights(model: LanguageModel, shapes: dict[str, tuple[int, ...]], source: str) -> None:
    """ValueError unless `shapes` has exactly the model's (untied) weights, shaped alike."""
    expected = {
        k: tuple(v.shape) for k, v in model.state_dict().items() if k not in model.tied_keys
    }
    missing = sorted(set(expected) - set(shapes))
    unexpected = sorted(set(shapes) - set(expected))
    if missing or unexpected:
        raise ValueError(
            f"{source}: weights do not match the model config "
            f"(missing {missing[:3]}, unexpected {unexpected[:3]})"
        )
    for k, shape in expected.items():
        if shapes[k] != shape:
            raise ValueError(
                f"{source}: {k} has shape {shapes[k]}, the config needs "
                f"{shape} (different vocabulary or sizes?)"
            )


# --- optimizer state -----------------------------------------------------------


def optimizer_tensors(opt: torch.optim.Optimizer) -> tuple[dict[str, Tensor], dict[str, Any]]:
    sd = opt.state_dict()
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def load_optimizer(
    opt: torch.optim.Optimizer, tensors: dict[str, Tensor], meta: dict[str, Any]
) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, idx, name = key.split(".", 2)
            state.setdefault(int(idx), {})[name] = value
    for idx, d in meta.get("scalars", {}).items():
        state.setdefault(int(idx), {}).update(d)
    groups = meta["param_groups"]
    for g in groups:
        if "betas" in g:
            g["betas"] = tuple(g["betas"])
    opt.load_state_dict({"state": state, "param_groups": groups})


# --- run folders -----------------------------------------------------------------


@dataclass(frozen=True)
class RunInfo:
    config: RunConfig
    level: str
    source: str
    extra: dict[str, Any]


def write_run_files(
    run_dir: Path, cfg: RunConfig, vocab: Vocab, level: str, source: str, text_sha256: str = ""
) -> None:
    """RUN/vocab.json and RUN/config.json; `text_sha256` fingerprints the text trained on
    (see `train.text_changed`)."""
    info = {"run": cfg.to_dict(), "level": level, "source": source, "vocab_size": len(vocab)}
    if text_sha256:
        info["text_sha256"] = text_sha256
    atomic_write(run_dir / VOCAB, vocab.to_json())
    atomic_write(run_dir / CONFIG, json.dumps(info, indent=2))


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
        cfg = RunConfig.from_dict(info["run"])
        vocab = Vocab.from_json((run_dir / VOCAB).read_text("utf-8"))
    except (ValueError, KeyError, TypeError, UnicodeDecodeError) as e:
        raise ValueError(f"{run_dir}: damaged run files ({_short(e)})") from None
    if info.get("vocab_size", len(vocab)) != len(vocab):
        raise ValueError(f"{run_dir}: {VOCAB} does not match {CONFIG}")
    extra = {k: v for k, v in info.items() if k not in ("run", "level", "source")}
    return RunInfo(cfg, info.get("level", cfg.data.level), info.get("source", ""), extra), vocab


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
        raise ValueError(f"--cell must be one of {', '.join(CELLS)}, got {cell!r}")
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
