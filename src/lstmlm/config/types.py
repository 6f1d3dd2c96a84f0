"""Check the JSON types of a config's fields before the dataclass is built from them.

A run's config.json (or any dict handed to `RunConfig.from_dict`) is read back by
`json.loads`, so a damaged or hand-edited file can hold a list where a section belongs,
a string for the lr, a float for a layer count or "yes" for a flag. Each is a
`FieldError` naming the field, never a TypeError deep in training or a silent default.
"""

from __future__ import annotations

import dataclasses
import types
import typing
from typing import Any

from lstmlm.config.errors import FieldError

_NAMES = {int: "an integer", float: "a number", bool: "true or false", str: "a string"}


def typed_fields(cls: type, d: object, section: str) -> dict[str, Any]:
    """The fields of `d` (a JSON object for the dataclass `cls`), type-checked against
    `cls`'s hints, lists turned into tuples. FieldError for a wrong type; ValueError for
    a `d` that is not an object, or unknown fields."""
    if not isinstance(d, dict):
        raise ValueError(f"the {section} section must be a JSON object, got {_kind(d)}")
    hints = typing.get_type_hints(cls)
    known = {f.name for f in dataclasses.fields(cls)}
    unknown = sorted(str(k) for k in set(d) - known)
    if unknown:
        raise ValueError(f"unknown {cls.__name__} fields: {', '.join(unknown)}")
    out: dict[str, Any] = {}
    for name, value in d.items():
        if not _fits(value, hints[name]):
            raise FieldError(name, f"must be {_describe(hints[name])}, got {_short(value)}")
        out[name] = tuple(value) if isinstance(value, list) else value
    return out


def _fits(value: object, hint: Any) -> bool:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_fits(value, h) for h in typing.get_args(hint))
    if origin is tuple:
        (inner, _) = typing.get_args(hint)
        return isinstance(value, list | tuple) and all(_fits(v, inner) for v in value)
    if hint is type(None):
        return value is None
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    return isinstance(value, hint) if isinstance(hint, type) else True


def _describe(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        parts = [h for h in typing.get_args(hint) if h is not type(None)]
        return " or ".join(_describe(h) for h in parts) + " (or null)"
    if origin is tuple:
        return f"a list of {_describe(typing.get_args(hint)[0]).removeprefix('a ')}s"
    return _NAMES.get(hint, getattr(hint, "__name__", str(hint)))


def _kind(value: object) -> str:
    return {list: "a list", dict: "an object", str: "a string", type(None): "null"}.get(
        type(value), type(value).__name__
    )


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."
