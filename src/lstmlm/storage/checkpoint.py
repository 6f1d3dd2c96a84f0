"""Checkpoints: tensors and JSON metadata in safetensors files, with no pickled code.

Everything that is a tensor goes into safetensors; everything else goes into its
JSON metadata, with a CRC-32 of every tensor (see tensorfile) that every load checks:
a file damaged on disk is refused, never loaded as garbage weights. Files are written
through `files.atomic_write`, so a crash leaves the old file or the new one.
"""

from __future__ import annotations

import json
import logging
import struct
from pathlib import Path
from typing import Any

import safetensors
from torch import Tensor

from lstmlm.files import atomic_write
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.layout import BEST, LAST
from lstmlm.storage.tensorfile import (
    ChecksumError,
    checksums,
    read_header,
    read_into,
    verify,
    verify_metadata,
    write_safetensors,
)

logger = logging.getLogger("lstmlm")

_META_KEY = "lstmlm"


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
            _check_metadata(path, metadata)
            meta = json.loads(metadata.get(_META_KEY, "{}"))
            if not isinstance(meta, dict):
                raise ValueError(f"its {_META_KEY} metadata is not a table")
            sums = checksums(metadata)  # None for a file written before checksums
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
            for k, t in tensors.items():
                verify(k, t, sums)  # over the tensor's own memory, no copy
    except ChecksumError as e:
        raise _damaged(path, e) from None
    except Exception as e:  # safetensors raises several types for a torn or foreign file
        raise ValueError(f"{path}: not a readable lstmlm checkpoint ({short_error(e)})") from None
    return tensors, meta


def _check_metadata(path: Path, metadata: dict[str, str]) -> None:
    """ChecksumError for metadata changed since it was written; a warning for a file from
    before metadata checksums (it loads, unchecked)."""
    if not verify_metadata(metadata):
        logger.warning(
            "%s: written by an older lstmlm, without a checksum of its trainer and optimizer "
            "state; loading it unchecked",
            path,
        )


def _damaged(path: Path, e: ChecksumError) -> ValueError:
    """The one-line error for a checkpoint whose bytes changed after it was written."""
    other = {BEST: (LAST, "last"), LAST: (BEST, "best")}.get(path.name)
    instead = f"load {other[0]} instead (--which {other[1]}) or retrain" if other else "retrain"
    return ValueError(f"{path}: damaged checkpoint: {e}; {instead}")


def short_error(e: Exception) -> str:
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
            _check_metadata(path, parsed[1])
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
        raise ValueError(f"{path}: not a readable lstmlm checkpoint ({short_error(e)})") from None


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


def optimizer_tensors(sd: dict[str, Any]) -> tuple[dict[str, Tensor], dict[str, Any]]:
    """An optimizer's `state_dict()` -> (tensors "optim.{param}.{name}", JSON metadata)."""
    tensors: dict[str, Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for idx, st in sd["state"].items():
        for name, value in st.items():
            if isinstance(value, Tensor):
                tensors[f"optim.{idx}.{name}"] = value
            else:
                scalars.setdefault(str(idx), {})[name] = value
    return tensors, {"param_groups": sd["param_groups"], "scalars": scalars}


def optimizer_state_dict(tensors: dict[str, Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    """The inverse of `optimizer_tensors`: a state dict for `Optimizer.load_state_dict`."""
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
    return {"state": state, "param_groups": groups}
