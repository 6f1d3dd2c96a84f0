import json
import math

import pytest

from helpers import tiny_config
from lstmlm import storage as ckpt
from lstmlm.config import TrainConfig
from lstmlm.training import start_run
from lstmlm.training.schedule import cosine_factor, run_progress


def test_cosine_factor_runs_from_one_to_final():
    assert cosine_factor(0.0, 0.1) == pytest.approx(1.0)
    assert cosine_factor(0.5, 0.1) == pytest.approx(0.55)
    assert cosine_factor(1.0, 0.1) == pytest.approx(0.1)
    values = [cosine_factor(p / 10, 0.0) for p in range(11)]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))


def test_progress_is_the_first_limit_reached():
    # 2 of 10 epochs, 30 of 100 steps, 3 of 6 minutes: the clock is furthest along.
    assert run_progress(180.0, 30, 2.0, 6.0, 100, 10) == pytest.approx(0.5)
    assert run_progress(0.0, 30, 2.0, None, 100, 10) == pytest.approx(0.3)
    assert run_progress(0.0, 0, 2.0, None, None, 10) == pytest.approx(0.2)
    assert run_progress(999.0, 0, 0.0, 1.0, None, 10) == 1.0


def test_cosine_schedule_anneals_the_optimizer_lr_over_max_steps(corpus, tmp_path):
    cfg = tiny_config(
        corpus, epochs=50, max_steps=40, lr=2.0, log_every=1, lr_schedule="cosine", lr_final=0.1
    )
    start_run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS).open()]
    lrs = [r["lr"] for r in records if r["event"] == "progress"]
    assert len(lrs) == 40
    # Step k (1-based) ran with progress (k - 1) / 40.
    for k, lr in enumerate(lrs):
        assert lr == pytest.approx(2.0 * cosine_factor(k / 40, 0.1))
    assert all(a > b for a, b in zip(lrs, lrs[1:], strict=False))
    assert math.isclose(lrs[-1], 2.0 * cosine_factor(39 / 40, 0.1))


def test_an_epoch_line_shows_the_annealed_lr(corpus, tmp_path):
    # The lr its last step ran with, not the base lr (it said lr 20 at a run's end).
    cfg = tiny_config(corpus, epochs=3, lr=2.0, log_every=1, lr_schedule="cosine", lr_final=0.1)
    start_run(cfg, tmp_path / "run")
    records = [json.loads(line) for line in (tmp_path / "run" / ckpt.METRICS).open()]
    last_lr, shown = None, []
    for r in records:
        if r["event"] == "progress":
            last_lr = r["lr"]
        elif r["event"] == "epoch":
            assert r["lr"] == pytest.approx(last_lr)
            shown.append(r["lr"])
    assert len(shown) == 3 and all(a > b for a, b in zip(shown, shown[1:], strict=False))
    assert shown[-1] == pytest.approx(2.0 * 0.1, rel=0.1)


def test_lr_final_out_of_range_is_refused():
    with pytest.raises(ValueError, match="lr_final"):
        TrainConfig(lr_final=1.5).validate()
