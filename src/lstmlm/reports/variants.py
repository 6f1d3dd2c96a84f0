"""Comparison presets and variants: what `lstmlm compare` trains, before anything runs.

A comparison is a base `RunConfig` plus named variants, each a few field overrides
(`rnn=gru`, `fc_layers=1`, `level=bpe`), applied through `config.overrides` like any
flag. The variants share one text: they may set how it is cut into tokens (`TOKENIZATION`:
each then builds its own vocabulary, and bits per character compare them), not which
text it is or how it is read. Flags given to every variant may not set a field a variant
sets (the comparison would then compare nothing).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from lstmlm.config import FIELDS, FieldError, RunConfig, apply, parse_value, preset_config

_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")

# The data fields a variant may set: how the shared text becomes tokens. The others
# (corpus, train/valid/test, lowercase, data_dir) choose or change the text itself, and
# bits per character compare runs on one text only.
TOKENIZATION = frozenset({"level", "min_freq", "max_vocab", "vocab_size"})


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # field name -> value (any section)

    def label(self) -> str:
        """`rnn=gru, fc_layers=1` (or `base` when it changes nothing)."""
        return ", ".join(f"{k}={show(v)}" for k, v in self.overrides.items()) or "base"


@dataclass(frozen=True)
class Comparison:
    name: str
    description: str
    base_preset: str | None  # a run preset (`lstmlm presets`) the base starts from
    base: dict[str, Any]  # field overrides on that preset, shared by every variant
    variants: tuple[Variant, ...]


_ADAM_PTB = dict(
    level="word",
    num_layers=2,
    dropout=0.5,
    dropout_e=0.1,
    optimizer="adam",
    lr=1e-3,
    clip=0.25,
    batch_size=20,
    bptt=35,
    epochs=40,
    lr_schedule="plateau",
    lr_decay=4.0,
)
_FOUR = (
    Variant("lstm", {"rnn": "lstm"}),
    Variant("gru", {"rnn": "gru"}),
    Variant("lstm-fc", {"rnn": "lstm", "fc_layers": 1}),
    Variant("gru-fc", {"rnn": "gru", "fc_layers": 1}),
)

COMPARISONS: dict[str, Comparison] = {
    c.name: c
    for c in [
        Comparison(
            "compare-ptb",
            "LSTM vs GRU on PTB, 2x650 units, dropout 0.5, embedding dropout 0.1, Adam lr 1e-3, "
            "clip 0.25, bptt 35, batch 20, lr/4 on a validation plateau, 40 epochs; each with and "
            "without one fully-connected ReLU layer before the decoder (4 variants)",
            None,
            dict(_ADAM_PTB, emb_size=650, hidden_size=650),
            _FOUR,
        ),
        Comparison(
            "compare-ptb-small",
            "compare-ptb scaled to minutes on a CPU: 2x200 units, dropout 0.2, embedding "
            "dropout 0.05, Adam lr 2e-3 (the rest as compare-ptb; 4 variants)",
            None,
            dict(_ADAM_PTB, emb_size=200, hidden_size=200, dropout=0.2, dropout_e=0.05, lr=2e-3),
            _FOUR,
        ),
    ]
}


def parse_variant(spec: str) -> Variant:
    """`NAME:flag=value,flag=value` (or just `NAME`) -> Variant.

    Flags are config field names, with dashes or underscores (`fc-layers=1`); tuple
    fields join values with '+' (`hidden-sizes=400+200`), optional ones take `none`.
    """
    name, _, rest = spec.partition(":")
    name = name.strip()
    if not _NAME.fullmatch(name):
        raise ValueError(
            f"variant {spec!r}: name it with letters, digits, '.', '_' or '-' "
            "(NAME:flag=value,flag=value)"
        )
    overrides: dict[str, Any] = {}
    for item in (s.strip() for s in rest.split(",")):
        if not item:
            continue
        key, eq, value = item.partition("=")
        key = key.strip().lstrip("-").replace("-", "_")
        if not eq:
            raise ValueError(f"variant {name}: {item!r} is not flag=value")
        if key not in FIELDS:
            raise ValueError(f"variant {name}: unknown flag {key.replace('_', '-')!r}")
        if key in overrides:
            raise ValueError(f"variant {name}: {key.replace('_', '-')} is given twice")
        overrides[key] = _parse(name, key, value.strip())
    return Variant(name, overrides)


def get_comparison(name: str) -> Comparison:
    if name not in COMPARISONS:
        raise ValueError(f"unknown comparison preset {name!r}; known: {', '.join(COMPARISONS)}")
    return COMPARISONS[name]


def plan(
    comparison: Comparison | None,
    extra: Sequence[Variant] = (),
    common: dict[str, Any] | None = None,
    base_preset: str | None = None,
) -> tuple[RunConfig, list[tuple[Variant, RunConfig]]]:
    """The shared base config and each variant's full config, validated (an error in a
    variant's config names the variant).

    Order of precedence: run preset < comparison base < `common` (flags for every
    variant) < the variant's own overrides; `common` may not set what a variant sets.
    The number of variants is checked by `check_comparison`, after the configs and the
    report folder, so that a mistake in those is the error shown.
    """
    common = dict(common or {})
    variants = list(comparison.variants if comparison else ()) + list(extra)
    names = [v.name for v in variants]
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        raise ValueError(f"two variants are named {dup[0]!r}; variant names must differ")
    for v in variants:
        data_keys = [k for k in v.overrides if FIELDS[k][0] == "data" and k not in TOKENIZATION]
        if data_keys:
            raise ValueError(
                f"variant {v.name}: variants share the corpus; set {data_keys[0]} for all "
                f"instead (a variant may set {', '.join(sorted(TOKENIZATION))})"
            )
        clash = sorted(set(v.overrides) & set(common))
        if clash:
            raise FieldError(clash[0], f"is what variant {v.name} changes; drop it or the variant")
    preset = base_preset if base_preset is not None else (comparison and comparison.base_preset)
    base = apply(
        apply(preset_config(preset or None), comparison.base if comparison else {}), common
    )
    base = base.validate()
    return base, [(v, _variant_config(base, v)) for v in variants]


def _variant_config(base: RunConfig, v: Variant) -> RunConfig:
    """`base` with the variant's overrides, validated; an error names the variant."""
    try:
        return apply(base, v.overrides).validate()
    except FieldError as e:
        raise e.within(f"variant {v.name}") from None
    except ValueError as e:
        raise ValueError(f"variant {v.name}: {e}") from None


def variant_spec(v: Variant) -> str:
    """The `--variant` text that makes `v` again."""
    return (
        v.name
        + (":" if v.overrides else "")
        + ",".join(f"{k.replace('_', '-')}={show(x)}" for k, x in v.overrides.items())
    )


def show(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(str(x) for x in value)
    return str(value)


def _parse(variant: str, key: str, text: str) -> Any:
    try:
        return parse_value(key, text)
    except FieldError as e:
        raise e.within(f"variant {variant}") from None
