"""Weights & Biases and MLflow sinks, in their offline modes (no network)."""

import json
import sys

import pytest

from helpers import tiny_config, write_corpus
from lstmlm.cli.main import main
from lstmlm.config import FieldError, replace
from lstmlm.training import start_run
from lstmlm.training.sinks import make_sinks

PARAMS = ("model.hidden_size", "train.lr", "data.train")
METRICS = ("train/loss", "train/lr", "train/grad_norm", "valid/ppl", "final/test_ppl")


def records(run):
    return [json.loads(line) for line in (run / "metrics.jsonl").open()]


def char_config(tmp_path, report_to):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=80)
    cfg = tiny_config(corpus, epochs=2, report_to=report_to)
    return replace(cfg, data=replace(cfg.data, level="char"))


def test_mlflow_run_holds_params_and_metrics(tmp_path, monkeypatch):
    pytest.importorskip("mlflow.tracking", reason="needs mlflow-skinny: pip install lstmlm[mlflow]")
    from mlflow.tracking import MlflowClient

    uri = (tmp_path / "mlruns").as_uri()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 prefers a database
    run = tmp_path / "run"
    start_run(char_config(tmp_path, "mlflow"), run)
    client = MlflowClient(uri)
    (found,) = client.search_runs([client.get_experiment_by_name("lstmlm").experiment_id])
    assert found.info.run_name == "run" and found.info.status == "FINISHED"
    assert found.data.params["model.hidden_size"] == "16"
    assert found.data.params["train.lr"] == "5.0"
    assert found.data.params["data.level"] == "char"
    logged = records(run)
    epochs = [r for r in logged if r["event"] == "epoch"]
    history = client.get_metric_history(found.info.run_id, "valid/ppl")
    assert [m.step for m in history] == [r["step"] for r in epochs]
    assert [m.value for m in history] == pytest.approx([r["valid_ppl"] for r in epochs])
    progress = [r for r in logged if r["event"] == "progress"]
    norms = client.get_metric_history(found.info.run_id, "train/grad_norm")
    assert [m.value for m in norms] == pytest.approx([r["grad_norm"] for r in progress])
    bpc = client.get_metric_history(found.info.run_id, "train/bpc")
    assert [m.value for m in bpc] == pytest.approx([r["train_bpc"] for r in progress])
    for key in METRICS + ("valid/bpc", "final/valid_bpc"):
        assert key in found.data.metrics, key


def test_wandb_offline_run_files_hold_the_logged_keys(tmp_path, monkeypatch):
    pytest.importorskip("wandb", reason="needs wandb (pip install lstmlm[wandb])")
    monkeypatch.setenv("WANDB_MODE", "offline")
    monkeypatch.setenv("WANDB_DIR", str(tmp_path / "wb"))
    monkeypatch.setenv("WANDB_SILENT", "true")
    run = tmp_path / "run"
    start_run(char_config(tmp_path, "wandb"), run)
    import wandb

    wandb.teardown()  # the service process writes the run file; wait for it to end
    (offline,) = (tmp_path / "wb" / "wandb").glob("offline-run-*")
    (log,) = offline.glob("*.wandb")
    data = log.read_bytes()
    for key in METRICS + PARAMS + ("train/bpc", "valid/bpc"):
        assert key.encode() in data, key
    final = next(r for r in records(run) if r["event"] == "final")
    assert repr(final["test_ppl"]).encode()[:8] in data  # the final score's value


def test_missing_package_is_one_line_before_any_work(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "wandb", None)
    monkeypatch.setitem(sys.modules, "mlflow.tracking", None)
    with pytest.raises(FieldError, match="report_to wandb needs the wandb package: pip"):
        make_sinks("wandb", tmp_path)
    with pytest.raises(FieldError, match="mlflow needs the mlflow-skinny package"):
        make_sinks("tensorboard,mlflow", tmp_path)
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)
    argv = ["train", "--train", str(corpus), "--out", str(tmp_path / "r"), "--report-to", "wandb"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--report-to wandb needs the wandb package" in err
    assert not (tmp_path / "r").exists()


def test_report_to_names_are_checked(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)
    argv = ["train", "--train", str(corpus), "--out", str(tmp_path / "r"), "--report-to", "comet"]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "--report-to must be one of tensorboard, wandb, mlflow, got 'comet'" in err
    assert make_sinks("none", tmp_path) == [] and make_sinks(" , none", tmp_path) == []
