"""Flags made from dataclass fields, and the flags several subcommands share.

`add_dataclass_flags` turns a frozen config dataclass into argparse options: a field
`max_new_tokens` becomes `--max-new-tokens`, its `metadata["help"]` the help (with the
default), its `choices` and `action` those of the flag. Values given on the command
line land under `DEST.field`; `given(args, DEST)` collects them as `{field: value}`, the
overrides that `config.apply` (run configs) or `TextModel.sample_config` (sampling)
take. Fields left unset stay unset, so the dataclass's own defaults (or a preset's)
apply.
"""

from __future__ import annotations

import argparse
import dataclasses
import types
import typing
from typing import Any, NoReturn

from lstmlm.config import SECTIONS, RunConfig


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _scalar_type(tp: Any) -> tuple[Any, bool]:
    """(base type, is_tuple) of a field annotation like `int | None` or `tuple[float, ...]`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True
    return tp, False


def add_dataclass_flags(
    group: argparse._ActionsContainer,
    cls: type,
    dest: str,
    skip: tuple[str, ...] = (),
    more_help: dict[str, str] | None = None,
) -> None:
    """One flag per field of dataclass `cls` (but `skip`), stored as `DEST.field`;
    `more_help[field]` is added to a field's own help (what only the CLI needs said). A
    field's `metadata["alias"]` (an older name) is a second spelling of its flag."""
    hints = typing.get_type_hints(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip:
            continue
        tp, is_tuple = _scalar_type(hints[f.name])
        kw: dict[str, Any] = {
            "dest": f"{dest}.{f.name}",
            "default": argparse.SUPPRESS,
            "help": (f.metadata.get("help", "") + (more_help or {}).get(f.name, "")).replace(
                "%", "%%"
            ),
        }
        if f.default not in (None, (), dataclasses.MISSING):
            kw["help"] += f" (default: {f.default})"
        if tp is bool:
            kw["action"] = argparse.BooleanOptionalAction
        else:
            kw["type"] = tp
            if f.metadata.get("action") == "append":
                kw["action"] = "append"
            elif is_tuple:
                kw["nargs"] = "+"
            if "choices" in f.metadata:
                kw["choices"] = f.metadata["choices"]
            else:
                kw["metavar"] = f.metadata.get("metavar", f.name.split("_")[-1].upper())
        names = [f.name, *([f.metadata["alias"]] if "alias" in f.metadata else [])]
        group.add_argument(*("--" + n.replace("_", "-") for n in names), **kw)


def given(args: argparse.Namespace, dest: str) -> dict[str, Any]:
    """The `DEST.field` values given on the command line: {field: value}."""
    prefix = dest + "."
    return {
        key.removeprefix(prefix): tuple(v) if isinstance(v, list) else v
        for key, v in vars(args).items()
        if key.startswith(prefix)
    }


def add_config_flags(p: argparse.ArgumentParser) -> None:
    """The run config's flags (every field of data, model and train), grouped by section."""
    for section, cls in SECTIONS:
        add_dataclass_flags(p.add_argument_group(f"{section} options"), cls, "cfg")


def config_overrides(args: argparse.Namespace) -> dict[str, Any]:
    """The run config fields given as flags: {field: value}."""
    return given(args, "cfg")


def level_asked(args: argparse.Namespace, cfg: RunConfig) -> str | None:
    """The token level asked for: given by flag, or a user text's; None = the corpus's own."""
    given_level = "cfg.level" in vars(args)
    return cfg.data.level if (given_level or cfg.data.corpus is None) else None


def add_which_flag(p: argparse.ArgumentParser) -> None:
    """--which: the run's checkpoint to load (evaluate, generate, serve)."""
    p.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="checkpoint: best (lowest validation loss) or last (default: %(default)s)",
    )


def add_device_flag(p: argparse.ArgumentParser, default: str = "auto") -> None:
    """--device, `auto` (a GPU when there is one) by default as in `lstmlm train`."""
    p.add_argument(
        "--device",
        default=default,
        help="cpu, cuda, cuda:N or auto: cuda when available (default: %(default)s)",
    )
