"""Compare several configurations trained on one corpus under one budget.

A comparison is a base `RunConfig` plus named variants, each a few field
overrides (`rnn=gru`, `fc_layers=1`). Every variant trains with
`train.start_run` into REPORT/runs/NAME; then REPORT gets

- results.json: one record per variant (params, valid/test ppl or bpc, tokens/s,
  minutes, epochs) and the settings they shared,
- report.md: the same as a Markdown table,
- valid_ppl.png: validation perplexity (bits per char at character level)
  against epochs and training minutes, training curves faint behind.

The variants may not change the data (one corpus, one vocabulary); flags given
to every variant may not set a field a variant sets (the comparison would then
compare nothing).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import time
import types
import typing
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlm.config.presets import preset_config
from lstmlm.config.schema import DataConfig, ModelConfig, RunConfig, TrainConfig, replace
from lstmlm.reports.plot import Curves, Point, read_curves
from lstmlm.storage import checkpoint as ckpt

EventFn = Callable[[str, dict[str, Any]], None]
SECTIONS: tuple[tuple[str, type], ...] = (
    ("data", DataConfig),
    ("model", ModelConfig),
    ("train", TrainConfig),
)
RESULTS, REPORT_MD, PLOT = "results.json", "report.md", "valid_ppl.png"
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")


@dataclass(frozen=True)
class Variant:
    name: str
    overrides: dict[str, Any] = field(default_factory=dict)  # field name -> value (any section)

    def label(self) -> str:
        """`rnn=gru, fc_layers=1` (or `base` when it changes nothing)."""
        return ", ".join(f"{k}={_show(v)}" for k, v in self.overrides.items()) or "base"


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


# --- building configs ----------------------------------------------------------------


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


def _parse_value(name: str, text: str, tp: Any) -> Any:
    """One value of a `flag=value` pair, typed like the config field."""
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
            raise ValueError(f"{name}: give values joined by '+', e.g. {name}=400+200")
        return tuple(_parse_value(name, p, inner) for p in parts)
    if tp is bool:
        low = text.lower()
        if low in ("true", "yes", "1", "on"):
            return True
        if low in ("false", "no", "0", "off"):
            return False
        raise ValueError(f"{name}: {text!r} is not true or false")
    try:
        return tp(text)
    except ValueError:
        raise ValueError(f"{name}: {text!r} is not a valid {tp.__name__}") from None


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
        overrides[key] = _parse_value(key.replace("_", "-"), value.strip(), FIELDS[key][1])
    return Variant(name, overrides)


def split_sections(overrides: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """{field: value} -> {"data": {...}, "model": {...}, "train": {...}}."""
    out: dict[str, dict[str, Any]] = {s: {} for s, _ in SECTIONS}
    for key, value in overrides.items():
        if key not in FIELDS:
            raise ValueError(f"unknown config field {key!r}")
        out[FIELDS[key][0]][key] = value
    return out


def apply(cfg: RunConfig, overrides: dict[str, Any]) -> RunConfig:
    """`cfg` with field overrides from any section."""
    o = split_sections(overrides)
    return RunConfig(
        data=replace(cfg.data, **o["data"]),
        model=replace(cfg.model, **o["model"]),
        train=replace(cfg.train, **o["train"]),
        preset=cfg.preset,
    )


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
        data_keys = [k for k in v.overrides if FIELDS[k][0] == "data"]
        if data_keys:
            raise ValueError(
                f"variant {v.name}: variants share the corpus; set {data_keys[0]} for all instead"
            )
        clash = sorted(set(v.overrides) & set(common))
        if clash:
            raise ValueError(
                f"--{clash[0].replace('_', '-')} is what variant {v.name} changes; drop the flag "
                "or the variant"
            )
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
    except ValueError as e:
        raise ValueError(f"variant {v.name}: {e}") from None


def check_comparison(
    configs: Sequence[tuple[Variant, RunConfig]],
    out_dir: str | Path,
    *,
    level: str | None = None,
    overwrite: bool = False,
    reuse: bool = False,
) -> list[bool]:
    """Every check that can stop a comparison, before anything is trained or written:
    the report folder, the number of variants, each variant's run folder, the text (read
    once) against each variant's batch size, and each variant's model against the
    vocabulary (built on the meta device: no weights). Returns, per variant, whether it
    is to be trained (False: a finished run kept by `reuse`)."""
    from lstmlm.training.runs import check_start

    out = Path(out_dir)
    runs = out / "runs"
    for folder in (out, runs):
        if folder.exists() and not folder.is_dir():
            raise ValueError(f"{folder}: exists and is not a folder; choose another --out")
    if not configs:
        raise ValueError("nothing to compare: give --preset NAME or --variant NAME:flag=value")
    if len(configs) < 2:
        raise ValueError("a comparison needs at least two variants")
    todo = [_needs_training(cfg, runs / v.name, overwrite, reuse) for v, cfg in configs]
    pending = [(v, cfg) for (v, cfg), t in zip(configs, todo, strict=True) if t]
    if pending:
        # The first variant's run checks the text as training will (and reads it); the
        # variants share it, so the rest are checked against the same tokens.
        data = check_start(pending[0][1], runs / pending[0][0].name, overwrite, level)
        for v, cfg in pending:
            _check_variant(v, cfg, len(data.vocab), data.train.numel())
    return todo


def _needs_training(cfg: RunConfig, run: Path, overwrite: bool, reuse: bool) -> bool:
    """False for a finished run of the same config kept by `reuse`; True for a run to
    train; ValueError for a folder the run may not (or cannot) be written to."""
    from lstmlm.training.runs import absolute_paths, run_files_in

    if run.exists() and not run.is_dir():
        raise ValueError(f"{run}: exists and is not a folder; move it or choose another --out")
    done = (run / ckpt.SUMMARY).is_file()
    if reuse and done:
        # A run stores its text paths absolute (older runs as given).
        if ckpt.read_run_files(run)[0].config not in (absolute_paths(cfg), cfg):
            raise ValueError(f"{run}: holds a run with another config; use --overwrite")
        return False
    if overwrite:
        return True
    if ckpt.is_run_dir(run):
        raise ValueError(
            f"{run}: already holds a run; use --overwrite to retrain"
            + (" or --reuse to keep finished variants" if done else "")
        )
    taken = run_files_in(run)
    if taken:
        raise ValueError(f"{run}: holds {taken[0]}, which a run would replace; use --overwrite")
    return True


def _check_variant(v: Variant, cfg: RunConfig, vocab_size: int, train_tokens: int) -> None:
    """The checks of one variant that need the text: batch size and model (on meta)."""
    from lstmlm.training.runs import check_batch_size, check_model

    try:
        check_batch_size(cfg.train.batch_size, train_tokens)
        check_model(cfg, vocab_size)
    except ValueError as e:
        raise ValueError(f"variant {v.name}: {e}") from None


# --- running ----------------------------------------------------------------------------


@dataclass(frozen=True)
class VariantResult:
    name: str
    overrides: dict[str, Any]
    run_dir: str
    params: int
    valid_ppl: float
    test_ppl: float
    valid_bpc: float | None
    test_bpc: float | None
    tokens_per_sec: float
    minutes: float  # training time (evaluation not counted)
    wall_minutes: float | None  # training + evaluation, as this comparison saw it (None: reused)
    epochs: float
    best_epoch: float
    stopped: str


@dataclass(frozen=True)
class CompareResult:
    out_dir: Path
    level: str
    source: str
    variants: list[VariantResult]
    report: Path
    plot: Path | None  # None when matplotlib is missing (or no run has a record)
    results: Path


def run_comparison(
    base: RunConfig,
    configs: Sequence[tuple[Variant, RunConfig]],
    out_dir: str | Path,
    *,
    name: str | None = None,
    description: str = "",
    command: str | None = None,
    level: str | None = None,
    overwrite: bool = False,
    reuse: bool = False,
    on_event: EventFn | None = None,
) -> CompareResult:
    """Train each variant into OUT/runs/NAME, one after the other, then write the report.

    Everything `check_comparison` checks is checked first: a variant that cannot train
    stops the comparison before any variant is trained or any folder written.

    `on_event` gets the trainer's events, and ("variant", {index, total, name, label,
    run_dir, reused}) before each variant. `reuse` keeps finished runs (summary.json
    present) whose config is the variant's own; `overwrite` retrains them.
    """
    from lstmlm.training.runs import start_run

    emit = on_event or (lambda kind, d: None)
    runs = Path(out_dir) / "runs"
    todo = check_comparison(configs, out_dir, level=level, overwrite=overwrite, reuse=reuse)
    wall: dict[str, float] = {}
    for i, ((v, cfg), train_it) in enumerate(zip(configs, todo, strict=True)):
        run = runs / v.name
        emit(
            "variant",
            {
                "index": i + 1,
                "total": len(configs),
                "name": v.name,
                "label": v.label(),
                "run_dir": str(run),
                "reused": not train_it,
            },
        )
        if train_it:
            t0 = time.monotonic()
            start_run(cfg, run, overwrite=overwrite, level=level, on_event=on_event)
            wall[v.name] = (time.monotonic() - t0) / 60
    results = [_variant_result(v, runs / v.name, wall.get(v.name)) for v, _ in configs]
    info, _ = ckpt.read_run_files(runs / configs[0][0].name)
    return write_report(
        out_dir,
        base,
        results,
        info.level,
        info.source,
        name=name,
        description=description,
        command=command,
    )


def _variant_result(v: Variant, run: Path, wall_minutes: float | None) -> VariantResult:
    s = json.loads((run / ckpt.SUMMARY).read_text("utf-8"))
    return VariantResult(
        name=v.name,
        overrides=dict(v.overrides),
        run_dir=str(run),
        params=s["params"],
        valid_ppl=s["valid_ppl"],
        test_ppl=s["test_ppl"],
        valid_bpc=s.get("valid_bpc"),
        test_bpc=s.get("test_bpc"),
        tokens_per_sec=s["tokens_per_sec"],
        minutes=s["seconds"] / 60,
        wall_minutes=wall_minutes,
        epochs=s["epochs"],
        best_epoch=s["best_epoch"],
        stopped=s["stopped"],
    )


# --- the report --------------------------------------------------------------------------


def write_report(
    out_dir: str | Path,
    base: RunConfig,
    results: list[VariantResult],
    level: str,
    source: str,
    *,
    name: str | None = None,
    description: str = "",
    command: str | None = None,
) -> CompareResult:
    """results.json, report.md and (with matplotlib) valid_ppl.png in `out_dir`."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    plot = _plot(out / PLOT, results, name)
    record = {
        "comparison": name,
        "description": description,
        "command": command,
        "level": level,
        "source": source,
        "base_config": base.to_dict(),
        "variants": [dataclasses.asdict(r) for r in results],
        "plot": plot.name if plot else None,
    }
    ckpt.atomic_write(out / RESULTS, json.dumps(record, indent=2, allow_nan=True) + "\n")
    md = format_report(base, results, level, source, name, description, command, plot)
    ckpt.atomic_write(out / REPORT_MD, md)
    return CompareResult(out, level, source, results, out / REPORT_MD, plot, out / RESULTS)


def format_table(results: list[VariantResult], level: str) -> str:
    """The Markdown table of the report."""
    char = level in ("char", "symbols")
    metric = ("valid bpc", "test bpc") if char else ("valid ppl", "test ppl")
    head = ["variant", "changes", "params", *metric, "tokens/s", "train min", "wall min", "epochs"]
    rows = ["| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * 7) + "|"]
    for r in results:
        v, t = (r.valid_bpc, r.test_bpc) if char else (r.valid_ppl, r.test_ppl)
        cells = [
            r.name,
            ", ".join(f"{k}={_show(x)}" for k, x in r.overrides.items()) or "-",
            f"{r.params:,}",
            _num(v, 4 if char else 2),
            _num(t, 4 if char else 2),
            f"{r.tokens_per_sec:,.0f}",
            f"{r.minutes:.1f}",
            f"{r.wall_minutes:.1f}" if r.wall_minutes is not None else "-",
            f"{r.epochs:.2f}",
        ]
        rows.append("| " + " | ".join(cells) + " |")
    return "\n".join(rows) + "\n"


def format_report(
    base: RunConfig,
    results: list[VariantResult],
    level: str,
    source: str,
    name: str | None,
    description: str,
    command: str | None,
    plot: Path | None,
) -> str:
    m, t = base.model, base.train
    budget = [f"at most {t.epochs} epochs"]
    if t.max_minutes is not None:
        budget.append(f"{t.max_minutes:g} training minutes")
    if t.max_steps is not None:
        budget.append(f"{t.max_steps} steps")
    lines = [f"# Comparison{': ' + name if name else ''}", ""]
    if description:
        lines += [description, ""]
    lines += [
        f"- corpus: {source} ({level} level)",
        f"- shared: {shared_settings(base, {k for r in results for k in r.overrides})}",
        f"- budget per variant: {', '.join(budget)} (then the best checkpoint is evaluated)",
        f"- seed {t.seed} for every variant; precision {t.precision}; cell {m.cell}",
    ]
    if command:
        lines.append(f"- command: `{command}`")
    lines += ["", format_table(results, level)]
    lines += [
        "Perplexities are of the best checkpoint (lowest validation loss, checked at epoch ends "
        "and when the budget ran out). tokens/s and train min count training steps only; wall "
        "min adds evaluation. Timings depend on the machine and its load.",
        "",
    ]
    if plot is not None:
        lines += [f"![validation curves]({plot.name})", ""]
    return "\n".join(lines)


def shared_settings(cfg: RunConfig, varied: set[str] | frozenset[str] = frozenset()) -> str:
    """One line with the base settings that matter, leaving out the `varied` fields."""
    m, t = cfg.model, cfg.train
    parts = [] if "rnn" in varied else [m.rnn]
    if not varied & {"hidden_size", "num_layers", "hidden_sizes"}:
        parts.append("hidden " + "/".join(str(h) for h in m.layer_sizes))
    values = {**dataclasses.asdict(m), **dataclasses.asdict(t)}
    shown = ("emb_size", "dropout", "dropout_e", "dropout_i", "dropout_h", "dropout_o", "wdrop")
    shown += ("fc_layers", "tie_weights", "optimizer", "lr", "clip", "bptt", "batch_size")
    for key in (*shown, "lr_schedule", "alpha", "beta", "weight_decay"):
        value = values[key]
        if key in varied or (key not in ("emb_size", "dropout", "lr", "bptt") and not value):
            continue  # what the variants change, and regularizers that are off
        parts.append(key if value is True else f"{key} {_show(value)}")
    return ", ".join(parts)


def _plot(path: Path, results: list[VariantResult], title: str | None) -> Path | None:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return None
    from lstmlm.reports.plot import plot_curves

    # A run stopped before any record has no curve; its row in the table still counts.
    curves = [c for c in map(variant_curves, results) if c.train or c.valid]
    if not curves:
        return None
    label = "bits per char" if curves[0].level in ("char", "symbols") else "perplexity"
    head = f"{title}: " if title else ""
    return plot_curves(
        curves, path, title=f"{head}validation {label} (markers), training (faint lines)"
    )


def variant_curves(r: VariantResult) -> Curves:
    """A run's curves named after its variant, with the end-of-budget validation added.

    A run stopped by time or steps is validated once more when it stops; metrics.jsonl
    has no record of that check, but when it produced the best checkpoint the
    summary's validation loss is its result.
    """
    c = read_curves(r.run_dir)
    valid = list(c.valid)
    end_best = abs(r.best_epoch - r.epochs) < 1e-3
    if end_best and not any(abs(p.epoch - r.best_epoch) < 1e-3 for p in valid):
        valid.append(Point(r.epochs, r.minutes, math.log(r.valid_ppl)))
    return dataclasses.replace(c, name=r.name, valid=valid)


def overrides_to_flags(overrides: dict[str, Any]) -> list[str]:
    """{field: value} -> the train flags that set them (for the report's command line)."""
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


def variant_spec(v: Variant) -> str:
    """The `--variant` text that makes `v` again."""
    return (
        v.name
        + (":" if v.overrides else "")
        + ",".join(f"{k.replace('_', '-')}={_show(x)}" for k, x in v.overrides.items())
    )


def _show(value: Any) -> str:
    if isinstance(value, tuple):
        return "+".join(str(x) for x in value)
    return str(value)


def _num(x: float | None, digits: int) -> str:
    if x is None:
        return "-"
    return f"{x:.{digits}f}" if math.isfinite(x) else str(x)
