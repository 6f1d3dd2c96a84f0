"""The logging sinks a run's `report_to` names: TensorBoard, Weights & Biases, MLflow.

    with reporting(cfg.train.report_to, run_dir, on_event) as on_event:
        ...  # the trainer calls on_event(kind, data); each sink gets every event

Each sink records the "start" event's run config as hyper-parameters and the numbers
`events.scalars` names (train loss, ppl, bpc, lr, gradient norm; valid loss, ppl, bpc;
the final scores) against the optimizer step. A sink's package is imported when the
sink is made, so a missing one is a one-line error before any work; the remote run is
opened at the first event, so a run that fails its checks opens none.

Where they write is theirs to say: Weights & Biases reads WANDB_MODE (offline: no
network), WANDB_DIR and WANDB_PROJECT (default "lstmlm"); MLflow reads
MLFLOW_TRACKING_URI (e.g. file:///tmp/mlruns) and MLFLOW_EXPERIMENT_NAME (default
"lstmlm"). The run is named after the run folder.
"""

from __future__ import annotations

import contextlib
import importlib
import os
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from lstmlm.config import FieldError
from lstmlm.config.bounds import report_names
from lstmlm.training.events import EventSink, params, scalars, tee
from lstmlm.training.tb import TensorBoardSink

EventFn = Callable[[str, dict[str, Any]], None]
TB_FOLDER = "tensorboard"  # RUN/tensorboard


def _package(module: str, sink: str, pip: str) -> Any:
    """`module` imported, or a FieldError saying how to install it."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise FieldError(
            "report_to", f"{sink} needs the {pip} package: pip install {pip}"
        ) from None


class WandbSink:
    """Trainer events -> a Weights & Biases run (config, then metrics by step)."""

    def __init__(self, name: str):
        self.wandb = _package("wandb", "wandb", "wandb")
        self.name = name
        self.run: Any = None

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if self.run is None:
            self.run = self.wandb.init(
                project=os.environ.get("WANDB_PROJECT", "lstmlm"),
                name=self.name,
                config=params(d) if kind == "start" else None,
                settings=self.wandb.Settings(silent=True, console="off"),
            )
        elif kind == "start":
            self.run.config.update(params(d), allow_val_change=True)
        step, values = scalars(kind, d)
        if values:
            self.run.log(values, step=step)
        if kind == "final":
            for k, v in values.items():
                self.run.summary[k] = v

    def close(self) -> None:
        if self.run is not None:
            self.run.finish()
            self.run = None


class MlflowSink:
    """Trainer events -> an MLflow run (params, then metrics by step)."""

    def __init__(self, name: str):
        self.tracking = _package("mlflow.tracking", "mlflow", "mlflow-skinny")
        self.entities = _package("mlflow.entities", "mlflow", "mlflow-skinny")
        self.name = name
        self.client: Any = None
        self.run_id: str | None = None
        self.finished = False

    def _open(self) -> None:
        uri = os.environ.get("MLFLOW_TRACKING_URI", "./mlruns")
        experiment = os.environ.get("MLFLOW_EXPERIMENT_NAME", "lstmlm")
        try:
            self.client = self.tracking.MlflowClient(uri)
            found = self.client.get_experiment_by_name(experiment)
            exp_id = found.experiment_id if found else self.client.create_experiment(experiment)
            self.run_id = self.client.create_run(exp_id, run_name=self.name).info.run_id
        except Exception as e:  # MlflowException, OSError, ... : one line, not a traceback
            self.client = None
            first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
            raise ValueError(f"MLflow: cannot open a run at {uri}: {first}") from None

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if self.client is None:
            self._open()
        now = int(time.time() * 1000)
        batch: dict[str, list[Any]] = {"metrics": [], "params": []}
        if kind == "start":
            Param = self.entities.Param
            batch["params"] = [Param(k, str(v)) for k, v in params(d).items()]
        step, values = scalars(kind, d)
        Metric = self.entities.Metric
        batch["metrics"] = [Metric(k, v, now, step) for k, v in values.items()]
        if batch["metrics"] or batch["params"]:
            self.client.log_batch(self.run_id, **batch)
        self.finished = self.finished or kind == "final"

    def close(self) -> None:
        if self.client is not None and self.run_id is not None:
            self.client.set_terminated(self.run_id, "FINISHED" if self.finished else "KILLED")
        self.client = self.run_id = None


def make_sinks(report_to: str, run_dir: Path) -> list[EventSink]:
    """The sinks `report_to` names, for a run in `run_dir`; FieldError when a package is
    missing."""
    made: list[EventSink] = []
    for name in report_names(report_to):
        if name == "tensorboard":
            made.append(TensorBoardSink(run_dir / TB_FOLDER))
        elif name == "wandb":
            made.append(WandbSink(run_dir.name))
        else:
            made.append(MlflowSink(run_dir.name))
    return made


@contextlib.contextmanager
def reporting(report_to: str, run_dir: Path, on_event: EventFn | None) -> Iterator[EventFn | None]:
    """`on_event` and the sinks `report_to` names, as one event function; the sinks are
    closed (their runs finished) when the block ends, however it ends."""
    sinks = make_sinks(report_to, run_dir)
    if not sinks:
        yield on_event
        return
    both = tee(*([on_event] if on_event is not None else []), *sinks)
    try:
        yield both
    finally:
        tee(*sinks).close()
