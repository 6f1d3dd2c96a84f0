"""The one path by which flags, presets and compare variants change a config.

Every config field has a unique name across the three sections (data, model, train),
so an override is a flat ``{field: value}``: ``apply`` sorts it into the sections and
returns the new ``RunConfig``. ``parse_value`` reads one value from text (a compare
variant's ``hidden-sizes=400+200``), typed like its field.
"""

from __future__ import annotations

import dataclasses
import re
import types
import typing
from typing import Any

from lstmlm.config.errors import FieldError
from lstmlm.config.presets import preset_config
from lstmlm.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig, replace

SECTIONS: tuple[tuple[str, type], ...] = (
    ("data", DataConfig),
    ("model", ModelConfig),
    ("train", TrainConfig),
)


def _field_index() -> dict[str, tuple[str, Any]]:
    """field name -> (section, type annotation), over the three config sections."""
    index: dict[str, tuple[str, Any]] = {}
    for section, cls in SECTIONS:
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            assert f.name not in index, f"config field {f.name} is in two sections"
            index[f.name] = (section, hints[f.name])
    return index


FIELDS = _field_index()


def section_of(name: str) -> str:
    """ "data", "model" or "train"; ValueError for a name that is no config field."""
    if name not in FIELDS:
        raise ValueError(f"unknown config field {name!r}")
    return FIELDS[name][0]


def split_sections(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: value} -> {"data": {...}, "model": {...}, "train": {...}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s, _ in SECTIONS}
    for key, value in overrides.items():
        out[section_of(key)][key] = tuple(value) if isinstance(value, list) else value
    return out


def apply(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """`cfg` with field overrides from any section (not validated)."""
    o = split_sections(overrides)
    return RunConfig(
        data=replace(cfg.data, **o["data"]),
        model=replace(cfg.model, **o["model"]),
        train=replace(cfg.train, **o["train"]),
        preset=cfg.preset,
    )


def build(preset: str | None, overrides: dict[str, Any]) -> RunConfig:
    """A preset's config (the defaults for None) with `overrides`, validated."""
    return apply(preset_config(preset), overrides).validate()


def parse_value(name: str, text: str) -> Any:
    """One value for config field `name` from text, typed like the field.

    Tuples join values with '+' or spaces (`400+200`); optional fields take `none`;
    booleans take true/false, yes/no, 1/0, on/off.
    """
    if name not in FIELDS:
        raise ValueError(f"unknown config field {name!r}")
    return _parse(name, text, FIELDS[name][1])


def _parse(name: str, text: str, tp: Any) -> Any:
    optional = False
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        args = typing.get_args(tp)
        optional = type(None) in args
        tp = next(a for a in args if a is not type(None))
    if optional and text.lower() == "none":
        return None
    if typing.get_origin(tp) is tuple:
        inner = typing.get_args(tp)[0]
        parts = [p for p in re.split(r"[+\s]+", text.strip()) if p]
        if not parts:
            raise FieldError(name, f"takes values joined by '+', e.g. {name}=400+200")
        return tuple(_parse(name, p, inner) for p in parts)
    if tp is bool:
        low = text.lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise FieldError(name, f"takes true or false, got {text!r}")
    try:
        return tp(text)
    except ValueError:
        what = {int: "an integer", float: "a number"}.get(tp, tp.__name__)
        raise FieldError(name, f"takes {what}, got {text!r}") from None


def to_flags(overrides: dict[str, Any]) -> list[str]:
    """{field: value} -> the train flags that set them (for a report's command line)."""
    flags: list[str] = []
    for key, value in overrides.items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, tuple):
            flags += [flag, *(str(x) for x in value)]
        else:
            flags += [flag, str(value)]
    return flags
