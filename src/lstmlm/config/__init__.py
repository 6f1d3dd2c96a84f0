"""Run configuration: the frozen dataclasses, the named presets, and the one override path."""

from lstmlm.config.bounds import check_device_name, validate_cutoffs
from lstmlm.config.errors import FieldError
from lstmlm.config.overrides import (
    FIELDS,
    SECTIONS,
    apply,
    build,
    parse_value,
    split_sections,
    to_flags,
)
from lstmlm.config.presets import PRESETS, Preset, preset_config
from lstmlm.config.schema import (
    CELLS,
    EVAL_BATCH_SIZE,
    LEVELS,
    OPTIMIZERS,
    PRECISIONS,
    REDUCTIONS,
    RNN_KINDS,
    SCHEDULES,
    SOFTMAXES,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    replace,
)

__all__ = [
    "CELLS", "EVAL_BATCH_SIZE", "FIELDS", "LEVELS", "OPTIMIZERS", "PRECISIONS", "PRESETS",
    "REDUCTIONS", "RNN_KINDS", "SCHEDULES", "SECTIONS", "SOFTMAXES", "DataConfig",
    "FieldError", "ModelConfig", "Preset", "RunConfig", "TrainConfig", "apply", "build",
    "check_device_name", "parse_value", "preset_config", "replace", "split_sections", "to_flags",
    "validate_cutoffs",
]  # fmt: skip
