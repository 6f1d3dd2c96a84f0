"""Run folders and checkpoints on disk (safetensors + JSON, never pickle)."""

from lstmlm.storage.checkpoint import (
    load_model_file,
    load_model_tensors,
    load_tensors,
    model_tensors,
    save_tensors,
)
from lstmlm.storage.layout import BEST, CONFIG, LAST, LOCK, METRICS, RUN_FILES, SUMMARY, VOCAB
from lstmlm.storage.runs import (
    RunInfo,
    is_run_dir,
    load_run,
    read_run_files,
    run_lock,
    write_run_files,
)

__all__ = [
    "BEST", "CONFIG", "LAST", "LOCK", "METRICS", "RUN_FILES", "SUMMARY", "VOCAB", "RunInfo",
    "is_run_dir", "load_model_file", "load_model_tensors", "load_run", "load_tensors",
    "model_tensors", "read_run_files", "run_lock", "save_tensors", "write_run_files",
]  # fmt: skip
