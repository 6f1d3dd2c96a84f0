"""Config files: what --print-config writes reads back to the same config."""

import json

import pytest

from lstmlm.config import RunConfig, preset_config, replace
from lstmlm.config.files import config_text, read_config_file


def test_printed_config_reads_back_to_the_same_config(tmp_path):
    cfg = preset_config("awd-ptb")
    cfg = RunConfig(
        replace(cfg.data, corpus="ptb"),
        replace(cfg.model, cutoffs=(100, 500)),
        cfg.train,
        "awd-ptb",
    )
    path = tmp_path / "c.yaml"
    path.write_text(config_text(cfg))
    back, fields = read_config_file(path)
    assert back == cfg
    assert {"corpus", "hidden_sizes", "lr", "variable_bptt"} <= fields


def test_a_partial_file_overrides_its_preset(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text("preset: small\nmodel:\n  hidden_size: 64\ntrain:\n  lr: 1e-3\n")
    cfg, fields = read_config_file(path)
    small = preset_config("small")
    assert cfg.model.hidden_size == 64 and cfg.model.emb_size == small.model.emb_size
    assert cfg.train.lr == 0.001 and isinstance(cfg.train.lr, float)  # YAML's "1e-3" is text
    assert cfg.train.clip == small.train.clip and cfg.preset == "small"
    assert fields == {"hidden_size", "lr"}


def test_json_and_a_run_folders_config_json(tmp_path):
    path = tmp_path / "c.json"
    path.write_text(json.dumps({"data": {"corpus": "ptb"}, "train": {"epochs": 3}}))
    cfg, _ = read_config_file(path)
    assert cfg.data.corpus == "ptb" and cfg.train.epochs == 3
    run = RunConfig(replace(RunConfig().data, corpus="ptb-char"))  # level left at "word"
    path.write_text(json.dumps({"run": run.to_dict(), "level": "symbols", "source": "x"}))
    cfg, fields = read_config_file(path)
    assert cfg.data.level == "symbols" and "level" in fields  # the level the run used


@pytest.mark.parametrize(
    "text, message",
    [
        ("- a\n- b\n", "a mapping with data/model/train"),
        ("model: 5\n", "section model must map"),
        ("optim:\n  lr: 1\n", "unknown section 'optim'"),
        ("model:\n  hiden_size: 5\n", "unknown config field 'hiden_size' in section model"),
        ("model:\n  lr: 5\n", "lr belongs in section train, not model"),
        ("train: {lr: [1\n", "cannot read it as YAML or JSON"),
        ("preset: nope\n", "unknown preset 'nope'"),
        ("preset: [1]\n", "preset must be a preset's name"),
        ("train:\n  epochs: many\n", "epochs takes an integer, got 'many'"),
    ],
)
def test_bad_files_are_one_line_errors_naming_the_file(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ValueError) as e:
        read_config_file(path)
    assert str(e.value).startswith(f"{path}: ") and message in str(e.value)
    assert "\n" not in str(e.value)


def test_a_missing_or_huge_file(tmp_path):
    with pytest.raises(ValueError, match="no such file"):
        read_config_file(tmp_path / "nope.yaml")
    big = tmp_path / "big.yaml"
    big.write_text("#" * (2 << 20))
    with pytest.raises(ValueError, match="not a config file"):
        read_config_file(big)
