"""Train several configurations on one corpus under one budget, then report.

Every variant (see variants.py) trains with `training.start_run` into REPORT/runs/NAME;
then REPORT gets results.json, report.md and valid_ppl.png (see report.py). Everything
that can stop a comparison is checked before any variant trains.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from lstmlm.config import FieldError, RunConfig
from lstmlm.reports import report
from lstmlm.reports.report import CompareResult, VariantResult
from lstmlm.reports.variants import Variant
from lstmlm.storage.layout import SUMMARY
from lstmlm.storage.runs import is_run_dir, read_run_files, run_files_in
from lstmlm.training import absolute_paths, check_batch_size, check_model, check_start, start_run

EventFn = Callable[[str, dict[str, Any]], None]


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
    once per tokenization: variants of one level and vocabulary settings share it)
    against each variant's batch size, and each variant's model against its vocabulary
    (built on the meta device: no weights). Returns, per variant, whether it is to be
    trained (False: a finished run kept by `reuse`)."""
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
    # The first variant of each tokenization checks the text as training will (reads it
    # and builds its vocabulary); the others of that tokenization are checked against
    # the same tokens. Only the sizes are kept, not the tokens.
    sizes: dict[tuple[Any, ...], tuple[int, int]] = {}
    for v, cfg in pending:
        lv = variant_level(v, cfg, level)
        key = (lv, cfg.data.min_freq, cfg.data.max_vocab, cfg.data.vocab_size)
        if key not in sizes:
            try:
                data = check_start(cfg, runs / v.name, overwrite, lv)
            except FieldError as e:
                raise (e.within(f"variant {v.name}") if sizes else e) from None
            except ValueError as e:  # the first: the text's own error, as a run gives it
                raise (ValueError(f"variant {v.name}: {e}") if sizes else e) from None
            sizes[key] = (len(data.vocab), data.train.numel())
            del data
        _check_variant(v, cfg, *sizes[key])
    return todo


def variant_level(v: Variant, cfg: RunConfig, level: str | None) -> str | None:
    """The level variant `v` trains at: its own when it sets one (`level=bpe`), else the
    comparison's (None: the named corpus's own)."""
    return cfg.data.level if "level" in v.overrides else level


def _needs_training(cfg: RunConfig, run: Path, overwrite: bool, reuse: bool) -> bool:
    """False for a finished run of the same config kept by `reuse`; True for a run to
    train; ValueError for a folder the run may not (or cannot) be written to."""
    if run.exists() and not run.is_dir():
        raise ValueError(f"{run}: exists and is not a folder; move it or choose another --out")
    done = (run / SUMMARY).is_file()
    if reuse and done:
        # A run stores its text paths absolute (older runs as given).
        if read_run_files(run)[0].config not in (absolute_paths(cfg), cfg):
            raise ValueError(f"{run}: holds a run with another config; use --overwrite")
        return False
    if overwrite:
        return True
    if is_run_dir(run):
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
    try:
        check_batch_size(cfg.train.batch_size, train_tokens)
        check_model(cfg, vocab_size)
    except FieldError as e:
        raise e.within(f"variant {v.name}") from None
    except ValueError as e:
        raise ValueError(f"variant {v.name}: {e}") from None


# --- running ------------------------------------------------------------------------------


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
            lv = variant_level(v, cfg, level)
            start_run(cfg, run, overwrite=overwrite, level=lv, on_event=on_event)
            wall[v.name] = (time.monotonic() - t0) / 60
    results = [_variant_result(v, runs / v.name, wall.get(v.name)) for v, _ in configs]
    info, _ = read_run_files(runs / configs[0][0].name)
    return report.write_report(
        out_dir,
        base,
        results,
        info.source,
        name=name,
        description=description,
        command=command,
    )


def _variant_result(v: Variant, run: Path, wall_minutes: float | None) -> VariantResult:
    """A variant's row from its run's summary.json (an older run's may lack the numbers
    of the raw text: bpc at a word level, word_ppl, the <unk> share; those are None)."""
    s = json.loads((run / SUMMARY).read_text("utf-8"))
    info, vocab = read_run_files(run)
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
        level=info.level,
        vocab_size=len(vocab),
        valid_word_ppl=s.get("valid_word_ppl"),
        test_word_ppl=s.get("test_word_ppl"),
        valid_unk_share=s.get("valid_unk_share"),
        test_unk_share=s.get("test_unk_share"),
    )
