"""Multi-process training: two real CPU processes with gloo on loopback.

One module fixture spawns the two ranks once; they run every distributed
scenario in turn and leave their findings in files that the tests read.
"""

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp

from helpers import tiny_config, write_corpus
from lstmlm import storage as ckpt
from lstmlm.config import ModelConfig, RunConfig, TrainConfig, replace
from lstmlm.data.dataset import load_dataset
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.training import distributed, resume_run, start_run

WORLD = 2
EVAL_BATCHES = (5, 1)  # 5 columns: 2 + 3 per rank; 1 column: rank 1 scores nothing
# Scored on the train split: columns are at least 64 tokens, and valid has ~90.


def awd_config(corpus: Path, **train_kw) -> RunConfig:
    """Dropouts, weight drop (functional_call under DDP), tying, variable BPTT, AR/TAR, Adam."""
    base = tiny_config(
        corpus,
        device="cpu",
        variable_bptt=True,
        alpha=1.0,
        beta=1.0,
        optimizer="adam",
        lr=0.02,
        **train_kw,
    )
    model = ModelConfig(
        emb_size=16,
        hidden_sizes=(16, 16),
        dropout_e=0.05,
        dropout_i=0.1,
        dropout_h=0.1,
        dropout_o=0.1,
        wdrop=0.2,
        tie_weights=True,
    )
    return RunConfig(base.data, model, base.train)


def plain_config(corpus: Path, batch_size: int, **train_kw) -> RunConfig:
    """No dropout: W processes with batch B take the steps of one process with batch W*B."""
    base = tiny_config(corpus, device="cpu", batch_size=batch_size, **train_kw)
    return RunConfig(base.data, replace(base.model, dropout=0.0), base.train)


def _worker(rank: int, port: int, root: str) -> None:
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(WORLD),
    )
    torch.set_num_threads(1)
    import lstmlm.training.runs as train_mod

    hashes: list[str] = []

    class Recording(train_mod.Trainer):
        def train_step(self, x, y):
            loss = super().train_step(x, y)
            flat = torch.cat([p.detach().reshape(-1) for p in self.model.parameters()])
            hashes.append(hashlib.sha256(flat.numpy().tobytes()).hexdigest())
            return loss

    train_mod.Trainer = Recording
    distributed.init("cpu")
    out = Path(root)
    corpus = out / "corpus.txt"

    # Replicas stay identical; the loss falls. Also the uninterrupted run for resume.
    start_run(awd_config(corpus, epochs=3), out / "full")
    (out / f"hashes.{rank}.json").write_text(json.dumps(hashes))
    # Resume exactness: stopped mid-epoch 1, then resumed to the end.
    start_run(awd_config(corpus, epochs=3, max_steps=7), out / "cut")
    resume_run(out / "cut", {"max_steps": None})
    # Same steps as one process with twice the batch.
    start_run(plain_config(corpus, 4, epochs=1, max_steps=10), out / "plain")
    # Sharded evaluation of a trained model.
    model, _, _ = ckpt.load_run(out / "full")
    data = load_dataset(awd_config(corpus).data)
    ppl = [distributed.evaluate(model, data.train, b, 7).to_dict() for b in EVAL_BATCHES]
    if rank == 0:
        (out / "eval.json").write_text(json.dumps(ppl))
    distributed.shutdown()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def ddp(tmp_path_factory) -> Path:
    # The port is free when _free_port returns, but another process can take it before
    # rank 0 listens on it; a failed first try gets one more, with a fresh port and folder.
    for attempt in (1, 2):
        root = tmp_path_factory.mktemp("ddp")
        write_corpus(root / "corpus.txt")
        try:
            _run_workers(root)
            return root
        except mp.ProcessRaisedException as e:
            if attempt == 2:
                raise
            print(f"distributed workers failed, trying once more: {str(e).splitlines()[-1]}")
    raise AssertionError("unreachable")


def _run_workers(root: Path) -> None:
    ctx = mp.start_processes(
        _worker, args=(_free_port(), str(root)), nprocs=WORLD, join=False, start_method="spawn"
    )
    deadline = time.monotonic() + 150
    while not ctx.join(timeout=1):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.terminate()
            pytest.fail("distributed workers did not finish in time (deadlock?)")


def _tensors(path: Path) -> dict[str, torch.Tensor]:
    return ckpt.load_tensors(path)[0]


def _events(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / ckpt.METRICS).open()]


def test_replicas_hold_identical_weights_after_every_step(ddp):
    h0 = json.loads((ddp / "hashes.0.json").read_text())
    h1 = json.loads((ddp / "hashes.1.json").read_text())
    assert len(h0) > 30 and h0 == h1
    assert len(set(h0)) == len(h0)  # every step changed the weights


def test_loss_falls_and_only_rank_0_writes(ddp):
    events = _events(ddp / "full")
    assert [e["event"] for e in events].count("start") == 1  # one writer
    epochs = [e for e in events if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]
    assert epochs[-1]["train_loss"] < epochs[0]["train_loss"] - 0.5
    assert epochs[-1]["valid_loss"] < epochs[0]["valid_loss"]
    summary = json.loads((ddp / "full" / ckpt.SUMMARY).read_text())
    assert summary["valid_ppl"] < 10  # unigram ~18.5; one process with batch 8 gets ~5
    last = ckpt.load_tensors(ddp / "full" / ckpt.LAST)
    assert last[1]["trainer"]["world_size"] == WORLD
    keys = set(last[0])
    for r in range(WORLD):  # every rank's hidden (h, c) per layer and its RNG state
        assert {f"hidden.{r}.{i}.{j}" for i in (0, 1) for j in (0, 1)} <= keys
        assert f"rng.torch.{r}" in keys
    stray = [k for k in os.listdir(ddp / "full") if k.startswith(".") and k != ckpt.LOCK]
    assert not stray  # no temporary files left behind


def test_resume_with_two_processes_is_exact(ddp):
    for name in (ckpt.LAST, ckpt.BEST):
        full, cut = _tensors(ddp / "full" / name), _tensors(ddp / "cut" / name)
        assert full.keys() == cut.keys()
        for k in full:
            assert torch.equal(full[k], cut[k]), (name, k)
    events = [e["event"] for e in _events(ddp / "cut")]
    assert events.count("resume") == 1 and events.count("final") == 2


def test_two_processes_step_like_one_with_twice_the_batch(ddp, tmp_path):
    cfg = plain_config(ddp / "corpus.txt", 8, epochs=1, max_steps=10)
    start_run(cfg, tmp_path / "one")
    one, two = _tensors(tmp_path / "one" / ckpt.LAST), _tensors(ddp / "plain" / ckpt.LAST)
    weights = [k for k in one if k.startswith("model.")]
    assert weights
    for k in weights:
        assert torch.allclose(one[k], two[k], atol=2e-5, rtol=1e-4), k
    # Rank r's hidden state continues columns [4r, 4r+4) of the one-process batch of 8.
    for r in range(WORLD):
        for j in (0, 1):
            assert torch.allclose(
                two[f"hidden.{r}.0.{j}"], one[f"hidden.0.{j}"][:, 4 * r : 4 * r + 4], atol=2e-5
            )


def test_sharded_evaluation_equals_single_process(ddp):
    model, _, _ = ckpt.load_run(ddp / "full")
    data = load_dataset(awd_config(ddp / "corpus.txt").data)
    got = json.loads((ddp / "eval.json").read_text())
    assert got[0]["tokens"] == 5 * (data.train.numel() // 5 - 1)  # really 5 columns
    for b, d in zip(EVAL_BATCHES, got, strict=True):
        ref = evaluate(model, data.train, b, 7)
        assert d["tokens"] == ref.tokens
        assert d["ppl"] == pytest.approx(ref.ppl, rel=1e-5)


def test_resume_refuses_another_number_of_processes(ddp):
    with pytest.raises(ValueError, match="trained by 2 process"):
        resume_run(ddp / "full", {"epochs": 4})


# --- launching through the CLI -------------------------------------------------------------


def test_cli_nproc_relaunches_through_torchrun(tmp_path):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=150)
    run = tmp_path / "run"
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("WORLD_SIZE", None)
    cmd = [sys.executable, "-m", "lstmlm", "train", "--nproc", "2", "--train", str(corpus)]
    cmd += ["--out", str(run), "--emb-size", "8", "--hidden-size", "8", "--num-layers", "1"]
    cmd += ["--batch-size", "2", "--bptt", "8", "--epochs", "1", "--max-steps", "4"]
    cmd += ["--device", "cpu", "--json", "--quiet"]
    p = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=120)
    assert p.returncode == 0, p.stderr[-2000:]
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(lines) == 1  # rank 1 prints nothing
    assert json.loads(lines[0])["steps"] == 4
    last = ckpt.load_tensors(run / ckpt.LAST)
    assert last[1]["trainer"]["world_size"] == 2 and "hidden.1.0.0" in last[0]
    assert "--nproc" not in json.dumps(json.loads((run / ckpt.CONFIG).read_text()))


def test_launch_command_is_torchrun():
    cmd = distributed.launch_command(3, ["train", "--out", "r"])
    assert cmd[1:] == [
        "-m",
        "lstmlm.training.torchrun",  # torch.distributed.run, without a traceback on SIGTERM
        "--standalone",
        "--nproc-per-node=3",
        "-m",
        "lstmlm",
        "train",
        "--out",
        "r",
    ]


# --- single-process pieces -------------------------------------------------------------------


def test_shards_are_contiguous_pieces_of_the_stream():
    from lstmlm.data.batching import batchify

    ids = torch.arange(48)
    columns = batchify(ids, 2 * 3)  # (8, 6)
    for r in range(2):
        mine = distributed.shard_columns(columns, r, 2)  # (8, 3)
        assert torch.equal(mine, batchify(ids[r * 24 : (r + 1) * 24], 3))
    with pytest.raises(ValueError, match="split evenly"):
        distributed.shard_columns(columns, 0, 4)


def test_shards_of_a_mapped_stream_are_disjoint_views_of_it(tmp_path):
    """Each rank's columns view its own contiguous part of the memory-mapped token file:
    nothing is copied, and no two ranks touch the same ids."""
    import numpy as np

    from lstmlm.data.batching import batchify
    from lstmlm.data.tokenfile import TokenWriter, open_tokens

    with (tmp_path / "t.tokens").open("wb") as f:
        w = TokenWriter(f, 1000)
        for split in ("train", "valid", "test"):
            w.add(split, np.arange(1000 if split == "train" else 3) % 1000)
        w.close({})
    ids = open_tokens(tmp_path / "t.tokens").tensor("train")  # (1000,) uint16, mapped
    columns = batchify(ids, 2 * 3)  # (166, 6)
    spans = []
    for r in range(2):
        mine = distributed.shard_columns(columns, r, 2)  # (166, 3)
        assert mine.data_ptr() == ids.data_ptr() + mine.storage_offset() * ids.element_size()
        assert mine.untyped_storage().data_ptr() == ids.untyped_storage().data_ptr()
        assert mine.stride() == (1, 166)  # column j is ids[j*L : (j+1)*L]
        spans.append((mine.storage_offset(), mine.storage_offset() + mine.numel()))
        assert torch.equal(mine.long(), batchify(ids[r * 498 : (r + 1) * 498], 3).long())
    assert spans == [(0, 498), (498, 996)]  # contiguous, disjoint


def test_device_flag_is_checked():
    with pytest.raises(ValueError, match="device"):
        TrainConfig(device="gpu").validate()
    assert distributed.resolve_device("cpu") == torch.device("cpu")
    if not torch.cuda.is_available():
        assert distributed.resolve_device("auto") == torch.device("cpu")
        with pytest.raises(ValueError, match="CUDA is not available"):
            distributed.resolve_device("cuda")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU message")
def test_cli_device_cuda_without_gpu_is_one_line_error(corpus, tmp_path, capsys):
    from lstmlm.cli.main import main

    rc = main(["train", "--train", str(corpus), "--out", str(tmp_path / "r"), "--device", "cuda"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and err.startswith("lstmlm: error: --device cuda") and "\n" not in err
    assert not (tmp_path / "r").exists()


def test_load_run_and_evaluate_accept_a_device(corpus, tmp_path, capsys):
    from lstmlm.cli.main import main

    start_run(tiny_config(corpus, epochs=1, max_steps=3), tmp_path / "r")
    model, _, _ = ckpt.load_run(tmp_path / "r", device="auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert model.embedding.weight.device.type == expected
    assert main(["evaluate", str(tmp_path / "r"), "--device", "cpu", "--json", "--quiet"]) == 0
    assert json.loads(capsys.readouterr().out)["ppl"] > 1
    assert main(["generate", str(tmp_path / "r"), "--device", "cpu", "--seed", "1"]) == 0
