"""Bits per character and per-word perplexity equal hand computations at every level.

One tiny text is trained on at each level (word, char, symbols, bpe, unigram). Its
validation split, "the cat sat\\non a mat\\n", has 21 characters and 6 words whatever the
level; the tokens are 8 at the word level (6 words, 2 line ends), 21 at the char and
symbols levels, and what the run's own tokenizer makes of it at bpe and unigram. Two
checks: the training summary against its own per-token loss, and `lstmlm evaluate` of a
model whose NLL is known exactly (all weights zero: every token costs ln V).
"""

import json
import math

import pytest
import torch

from helpers import tiny_config
from lstmlm.cli.main import main
from lstmlm.config import DataConfig, RunConfig
from lstmlm.storage import checkpoint as ckpt
from lstmlm.storage.layout import BEST, SUMMARY
from lstmlm.storage.runs import load_run
from lstmlm.training import start_run

LEVELS = ("word", "char", "symbols", "bpe", "unigram")
VALID = "the cat sat\non a mat\n"
CHARS, WORDS = 21, 6
TRAIN_LINES = ["the cat sat on the mat", "a dog sat on a log", "the dog saw a cat"]


def symbols(text: str) -> str:
    """`text` as PTB-char files write it: "t h e _ c a t"."""
    return "".join(
        " ".join("_" if c == " " else c for c in line) + "\n" for line in text.splitlines()
    )


def write_texts(folder, level):
    train = "\n".join(TRAIN_LINES * 20) + "\n"
    texts = {"train": train, "valid": VALID, "test": "a cat saw the dog\n"}
    paths = {}
    for split, text in texts.items():
        paths[split] = folder / f"{split}.txt"
        paths[split].write_text(symbols(text) if level == "symbols" else text, encoding="utf-8")
    return paths


def valid_tokens(run, level):
    """The valid split's tokens, counted by hand, or by the run's own tokenizer."""
    if level == "word":
        return WORDS + 2
    if level in ("char", "symbols"):
        return CHARS
    _, vocab, _ = load_run(run)
    return vocab.encode_text(VALID).numel()


@pytest.fixture(scope="module", params=LEVELS)
def run(request, tmp_path_factory):
    level = request.param
    tmp = tmp_path_factory.mktemp(level)
    paths = write_texts(tmp, level)
    cfg = tiny_config(paths["train"], epochs=1, max_steps=3)
    data = DataConfig(
        train=str(paths["train"]), valid=str(paths["valid"]), test=str(paths["test"]),
        level=level, vocab_size=260 if level in ("bpe", "unigram") else None,
    )  # fmt: skip
    start_run(RunConfig(data, cfg.model, cfg.train), tmp / "run")
    return tmp / "run", level


def test_summary_numbers_are_the_loss_over_the_texts_counts(run):
    run, level = run
    s = json.loads((run / SUMMARY).read_text())
    n = valid_tokens(run, level)
    assert s["text"]["valid"] == {"chars": CHARS, "words": WORDS, "tokens": n}
    total = s["valid_loss"] * n  # nats: the mean per scored token times the tokens
    assert s["valid_bpc"] == pytest.approx(total / (CHARS * math.log(2)), rel=1e-9)
    assert s["valid_word_ppl"] == pytest.approx(math.exp(total / WORDS), rel=1e-9)
    assert s["valid_ppl"] == pytest.approx(math.exp(s["valid_loss"]), rel=1e-9)
    assert s["level"] == level and s["valid_unk_share"] == 0.0


def test_evaluate_of_a_uniform_model_is_exact(run, capsys):
    """All weights zero: every next token has probability 1/V, so the NLL per token is
    ln V, the text's total NLL is tokens x ln V, and the numbers follow by hand."""
    run, level = run
    model, vocab, _ = load_run(run)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
    ckpt.save_tensors(run / BEST, ckpt.model_tensors(model, "model."), {"epoch": 1})
    assert main(["evaluate", str(run), "--split", "valid", "--json"]) == 0
    d = json.loads(capsys.readouterr().out)
    v, n = len(vocab), valid_tokens(run, level)
    assert d["loss"] == pytest.approx(math.log(v), rel=1e-6)
    assert (d["chars"], d["words"]) == (CHARS, WORDS)
    assert d["bpc"] == pytest.approx(n * math.log2(v) / CHARS, rel=1e-6)
    assert d["word_ppl"] == pytest.approx(v ** (n / WORDS), rel=1e-6)
    # --file counts the file's own text: the same numbers for the same text
    valid = run.parent / "valid.txt"
    assert main(["evaluate", str(run), "--file", str(valid), "--json"]) == 0
    f = json.loads(capsys.readouterr().out)
    assert (f["chars"], f["words"], f["bpc"]) == (CHARS, WORDS, d["bpc"])
    # the text line shows the same numbers
    assert main(["evaluate", str(run), "--split", "valid", "--quiet"]) == 0
    line = capsys.readouterr().out
    assert f"bpc {d['bpc']:.4f}" in line and f"word ppl {d['word_ppl']:.2f}" in line
    assert ("<unk> 0.00%" in line) == (level == "word")
