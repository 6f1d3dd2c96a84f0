"""Config files: a run config as YAML or JSON, the base of a new run.

The format is the one `lstmlm train --print-config` writes: sections `data`, `model`,
`train` with any of their fields, and optionally `preset` (whose values the file's
fields then override). A run folder's own `config.json` works too (its `run` entry is
read, with the token level the run really used). JSON is YAML, so one reader (PyYAML's
safe loader, which builds only plain data) reads both.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from lstmlm.config.overrides import FIELDS, SECTIONS, apply, parse_value
from lstmlm.config.presets import preset_config
from lstmlm.config.schema import RunConfig

MAX_CONFIG_BYTES = 1 << 20  # a config is a few KB; anything far bigger is not one


def read_config_file(path: str | Path) -> tuple[RunConfig, frozenset[str]]:
    """The RunConfig a config file describes (not yet validated: its preset's values, or
    the defaults, with the file's fields on top) and the names of the fields it sets.
    ValueError, naming the file, for a file that cannot be read or is not a config."""
    p = Path(path)
    try:
        if not p.is_file():
            raise ValueError("no such file")
        if p.stat().st_size > MAX_CONFIG_BYTES:
            raise ValueError(f"larger than {MAX_CONFIG_BYTES:,} bytes: not a config file")
        data = yaml.safe_load(p.read_text(encoding="utf-8"))
        return _config(data)
    except (OSError, UnicodeDecodeError, yaml.YAMLError) as e:
        raise ValueError(f"{path}: cannot read it as YAML or JSON ({_short(e)})") from None
    except ValueError as e:
        raise ValueError(f"{path}: {e}") from None


def _config(data: Any) -> tuple[RunConfig, frozenset[str]]:
    if isinstance(data, dict) and "run" in data:  # a run folder's config.json
        run, level = data["run"], data.get("level")
        if isinstance(run, dict) and isinstance(level, str):
            run = {**run, "data": {**(run.get("data") or {}), "level": level}}
        data = run
    if not isinstance(data, dict):
        raise ValueError("a config file holds a mapping with data/model/train sections")
    names = {s for s, _ in SECTIONS}
    unknown = sorted(set(data) - names - {"preset"})
    if unknown:
        raise ValueError(
            f"unknown section {unknown[0]!r}; a config has data, model, train and preset"
        )
    preset = data.get("preset")
    if preset is not None and not isinstance(preset, str):
        raise ValueError(f"preset must be a preset's name, got {preset!r}")
    overrides: dict[str, Any] = {}
    for section in names & set(data):
        fields = data[section] or {}
        if not isinstance(fields, dict):
            raise ValueError(f"section {section} must map field names to values")
        for name, value in fields.items():
            if name not in FIELDS:
                raise ValueError(f"unknown config field {name!r} in section {section}")
            if FIELDS[name][0] != section:
                raise ValueError(f"{name} belongs in section {FIELDS[name][0]}, not {section}")
            overrides[name] = _typed(name, value)
    return apply(preset_config(preset), overrides), frozenset(overrides)


def _typed(name: str, value: Any) -> Any:
    """A YAML string where the field wants a number (YAML reads `1e-3` as text) is read
    as a flag's value would be; anything else is left for validation to judge."""
    if isinstance(value, str) and name in FIELDS and "str" not in str(FIELDS[name][1]):
        return parse_value(name, value)
    return value


def config_text(cfg: RunConfig) -> str:
    """`cfg` as YAML that `read_config_file` reads back to the same config."""
    d = cfg.to_dict()
    out = {"preset": d.pop("preset"), **d}
    return yaml.safe_dump(_plain(out), sort_keys=False)


def _plain(x: Any) -> Any:
    """Tuples as lists: YAML's safe dumper writes only plain types."""
    if isinstance(x, dict):
        return {k: _plain(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_plain(v) for v in x]
    return x


def _short(e: Exception) -> str:
    return " ".join(str(e).split())[:200] or type(e).__name__
