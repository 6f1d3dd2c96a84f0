"""The models a server holds: each run folder loaded once, behind its id and card.

A model's id is its run folder's name; requests address models by id, never by a path.
The card (level, size, scores, corpus) is what `GET /v1/models` shows; it names no
folder of the server's.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lstmlm.api import TextModel
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.curves import choose_metric
from lstmlm.storage.layout import SUMMARY
from lstmlm.storage.runs import RunInfo, load_run


@dataclass
class ServedModel:
    id: str
    run_dir: Path
    text: TextModel  # the model, its vocabulary and level, and how user text is read
    card: dict[str, Any] = field(default_factory=dict)


def load_models(runs: list[str | Path], which: str = "best") -> dict[str, ServedModel]:
    """Load every run folder once; its id is the folder's name (which must be unique)."""
    if not runs:
        raise ValueError("give at least one run folder to serve")
    models: dict[str, ServedModel] = {}
    for r in runs:
        run = Path(r)
        model, vocab, info = load_run(run, which)
        mid = run.resolve().name
        if mid in models:
            raise ValueError(f"two runs are named {mid!r}; model ids are folder names")
        lm = TextModel(model, vocab, info.level, str(run), lowercase=info.config.data.lowercase)
        models[mid] = ServedModel(mid, run, lm, _card(mid, run, model, info))
    return models


def _card(mid: str, run: Path, model: LanguageModel, info: RunInfo) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if (run / SUMMARY).is_file():
        try:
            summary = json.loads((run / SUMMARY).read_text("utf-8"))
        except (ValueError, UnicodeDecodeError):
            summary = {}
    cfg = info.config.to_dict()
    return finite(
        {
            "id": mid,
            "level": info.level,
            "source": _public_source(info),
            "corpus": info.config.data.corpus,
            "preset": info.config.preset,
            "params": model.num_parameters(),
            "vocab_size": model.embedding.weight.size(0),
            "model": cfg.get("model", {}),
            "metric": choose_metric([info.level]),
            "summary": summary or None,
        }
    )


def _public_source(info: RunInfo) -> str:
    """Where the run's text came from, without the server's folders: the corpus name, or
    the file's name."""
    return info.config.data.corpus or Path(info.source).name


def finite(x: Any) -> Any:
    """inf/nan are not JSON: send them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [finite(v) for v in x]
    return x
