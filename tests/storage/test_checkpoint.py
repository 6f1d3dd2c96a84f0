import json
import pickle
import shutil

import pytest
import safetensors.torch
import torch

from helpers import tiny_config
from lstmlm import files
from lstmlm import storage as ckpt
from lstmlm.config import ModelConfig
from lstmlm.nn.model import LanguageModel
from lstmlm.storage.tensorfile import CHECKSUMS, read_header
from lstmlm.training import start_run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    from helpers import write_corpus

    d = tmp_path_factory.mktemp("ck")
    cfg = tiny_config(write_corpus(d / "c.txt"), epochs=1)
    start_run(cfg, d / "run")
    return d / "run"


def test_save_load_gives_same_logits(tmp_path):
    torch.manual_seed(0)
    cfg = ModelConfig(emb_size=8, hidden_size=8, num_layers=2, tie_weights=True)
    m = LanguageModel(cfg, 17).eval()
    ckpt.save_tensors(tmp_path / "m.safetensors", ckpt.model_tensors(m, "model."), {"x": 1})
    tensors, meta = ckpt.load_tensors(tmp_path / "m.safetensors")
    assert meta == {"x": 1}
    assert "model.decoder.weight" not in tensors  # tied: stored once
    m2 = LanguageModel(cfg, 17).eval()
    ckpt.load_model_tensors(m2, tensors, "model.")
    assert m2.decoder.weight is m2.embedding.weight
    x = torch.randint(0, 17, (6, 3))
    assert torch.equal(m(x).logits, m2(x).logits)


def test_load_run_rebuilds_the_trained_model(run):
    model, vocab, info = ckpt.load_run(run)
    assert not model.training
    assert info.level == "word"
    assert len(vocab) == model.vocab_size
    tensors, _ = ckpt.load_tensors(run / ckpt.BEST)
    assert torch.equal(tensors["model.embedding.weight"], model.embedding.weight)


def test_atomic_write_replaces_or_keeps(tmp_path):
    p = tmp_path / "f.json"
    files.atomic_write(p, "old")
    files.atomic_write(p, "new")
    assert p.read_text() == "new"
    assert [f.name for f in tmp_path.iterdir()] == ["f.json"]  # no temp files left


def test_truncated_checkpoint_is_a_one_line_error(run, tmp_path):
    bad = tmp_path / "best.safetensors"
    bad.write_bytes((run / ckpt.BEST).read_bytes()[:100])
    with pytest.raises(ValueError, match="not a readable lstmlm checkpoint") as e:
        ckpt.load_tensors(bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)


def test_pickle_payload_is_refused_and_never_runs(run, tmp_path):
    marker = tmp_path / "pwned"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    for name in (ckpt.BEST, ckpt.LAST):
        (run / "evil").mkdir(exist_ok=True)
        for f in (ckpt.CONFIG, ckpt.VOCAB):
            (run / "evil" / f).write_bytes((run / f).read_bytes())
        (run / "evil" / name).write_bytes(pickle.dumps(Evil()))
        with pytest.raises(ValueError, match="not a readable"):
            ckpt.load_run(run / "evil", which="best" if name == ckpt.BEST else "last")
        (run / "evil" / name).unlink()
    assert not marker.exists()


def test_weights_of_another_config_are_refused(run, tmp_path):
    tensors, _ = ckpt.load_tensors(run / ckpt.BEST)
    other = LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=1), 50)
    with pytest.raises(ValueError, match="shape"):
        ckpt.load_model_tensors(other, tensors, "model.")


def test_not_a_run_folder(tmp_path):
    with pytest.raises(ValueError, match="not an lstmlm run folder"):
        ckpt.load_run(tmp_path)
    with pytest.raises(ValueError, match="no such run folder"):
        ckpt.load_run(tmp_path / "missing")


def test_load_model_file_reads_the_weights_into_the_model_itself(run, tmp_path):
    model, _, info = ckpt.load_run(run)
    fresh = LanguageModel(info.config.model, model.vocab_size)
    before = {k: v.data_ptr() for k, v in fresh.state_dict().items()}
    versions = {k: v._version for k, v in fresh.state_dict().items()}
    ckpt.load_model_file(fresh, run / ckpt.BEST)
    for k, v in fresh.state_dict().items():
        assert torch.equal(v, model.state_dict()[k]), k
        assert v.data_ptr() == before[k]  # filled in place, no new tensors
        # ...and seen as changed, as an in-place op would be: copies kept per version
        # (nn/manual/shadows.py: the bf16 packed weights) are made again
        assert v._version > versions[k], k
    if info.config.model.tie_weights:
        assert fresh.decoder.weight is fresh.embedding.weight


def test_load_model_file_refuses_a_torn_or_foreign_file(run, tmp_path):
    model, _, info = ckpt.load_run(run)
    bad = tmp_path / "best.safetensors"
    bad.write_bytes((run / ckpt.BEST).read_bytes()[:-100])
    with pytest.raises(ValueError, match="not a readable lstmlm checkpoint") as e:
        ckpt.load_model_file(model, bad)
    assert "\n" not in str(e.value) and str(bad) in str(e.value)
    other = LanguageModel(ModelConfig(emb_size=8, hidden_size=8, num_layers=1), 50)
    with pytest.raises(ValueError, match="shape"):
        ckpt.load_model_file(other, run / ckpt.BEST)
    bad.write_bytes(b"\x00" * 3)
    with pytest.raises(ValueError, match="not a readable"):
        ckpt.load_model_file(model, bad)


def _copy_run(run, dest):
    dest.mkdir()
    for name in (ckpt.CONFIG, ckpt.VOCAB, ckpt.BEST, ckpt.LAST):
        shutil.copy(run / name, dest / name)
    return dest


def _xor_every_7th_byte_of_the_last_2kb(path):
    data = bytearray(path.read_bytes())
    for i in range(len(data) - 2048, len(data), 7):
        data[i] ^= 0xFF
    path.write_bytes(bytes(data))


def test_damaged_weights_are_refused_by_every_loader(run, tmp_path):
    copy = _copy_run(run, tmp_path / "copy")
    best = copy / ckpt.BEST
    with open(best, "rb") as f:
        header, metadata, start = read_header(f)
    assert set(json.loads(metadata[CHECKSUMS])) == set(header)  # every tensor has one
    data = bytearray(best.read_bytes())
    data[start + header["model.embedding.weight"]["data_offsets"][0] + 9] ^= 0x01  # one bit
    best.write_bytes(bytes(data))
    model, _, _ = ckpt.load_run(run)
    msg = "damaged checkpoint: tensor model.embedding.weight fails its checksum; load last"
    for load in (
        lambda: ckpt.load_tensors(best),
        lambda: ckpt.load_model_file(model, best),  # read straight into the parameters
        lambda: ckpt.load_run(copy),
    ):
        with pytest.raises(ValueError, match=msg) as e:
            load()
        assert "\n" not in str(e.value) and str(e.value).startswith(f"{best}: ")
    ckpt.load_run(copy, which="last")  # the advice holds: last.safetensors is intact
    _xor_every_7th_byte_of_the_last_2kb(copy / ckpt.LAST)  # the damage seen in the field
    with pytest.raises(ValueError, match=r"tensor \S+ fails its checksum; load best.safetensors"):
        ckpt.load_tensors(copy / ckpt.LAST)  # what --resume reads


def test_checkpoint_written_without_checksums_still_loads(run, tmp_path):
    old = _copy_run(run, tmp_path / "old")
    tensors, meta = ckpt.load_tensors(run / ckpt.BEST)
    # A file as written before checksums: the same tensors and metadata, no CRC table.
    safetensors.torch.save_file(tensors, str(old / ckpt.BEST), {"lstmlm": json.dumps(meta)})
    with open(old / ckpt.BEST, "rb") as f:
        assert CHECKSUMS not in read_header(f)[1]
    got, got_meta = ckpt.load_tensors(old / ckpt.BEST)
    assert got_meta == meta and got.keys() == tensors.keys()
    assert all(torch.equal(got[k], t) for k, t in tensors.items())
    model, _, _ = ckpt.load_run(old)  # read_into path
    fresh, _, _ = ckpt.load_run(run)
    for k, v in model.state_dict().items():
        assert torch.equal(v, fresh.state_dict()[k]), k
