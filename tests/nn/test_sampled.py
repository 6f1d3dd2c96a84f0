"""Sampled softmax (nn/sampled.py): the full softmax when the sample covers the vocabulary,
the right inclusion probabilities otherwise, training only, exact evaluation."""

import json
import math

import pytest
import torch
import torch.nn.functional as F

from helpers import (
    assert_gradients_align,
    skip_without_bf16_kernels,
    tiny_config,
    write_corpus,
)
from lstmlm import storage as ckpt
from lstmlm.config import ModelConfig, replace
from lstmlm.data.batching import window
from lstmlm.data.dataset import load_dataset
from lstmlm.nn.model import LanguageModel
from lstmlm.nn.sampled import (
    draw_candidates,
    log_expected_count,
    log_uniform_probs,
    padded,
    sampled_nll,
)
from lstmlm.nn.tied import Mailbox, lookup
from lstmlm.training import Trainer, resume_run, start_run

V, D, N = 40, 8, 24


def test_log_uniform_proposal_sums_to_one_and_falls_with_rank():
    q = log_uniform_probs(V, torch.device("cpu"))
    assert math.isclose(q.sum().item(), 1.0, rel_tol=1e-12)
    assert bool((q[1:] < q[:-1]).all())


def test_a_sample_that_covers_the_vocabulary_is_the_full_softmax():
    torch.manual_seed(0)
    x, w, b = torch.randn(N, D, requires_grad=True), torch.randn(V, D), torch.randn(V)
    w.requires_grad_(True)
    t = torch.randint(0, V, (N,))
    samples = 100_000  # every id is drawn; its expected count is 1 (log 0)
    counts = log_expected_count(log_uniform_probs(V, x.device), samples)
    assert counts.abs().max().item() < 1e-6
    cand = draw_candidates(V, samples)
    assert cand.tolist() == list(range(V))
    got = sampled_nll(x, w, b, t, cand, counts)
    want = F.cross_entropy(x @ w.t() + b, t, reduction="none")
    torch.testing.assert_close(got, want, rtol=1e-5, atol=1e-5)
    g_got = torch.autograd.grad(got.sum(), (x, w))
    g_want = torch.autograd.grad(want.sum(), (x, w))
    for a, e in zip(g_got, g_want, strict=True):
        torch.testing.assert_close(a, e, rtol=1e-5, atol=1e-5)


def test_expected_counts_match_how_often_draws_include_each_id():
    gen = torch.Generator().manual_seed(1)
    samples, trials = 6, 20_000
    seen = torch.zeros(V)
    for _ in range(trials):
        seen[draw_candidates(V, samples, gen)] += 1
    want = log_expected_count(log_uniform_probs(V, torch.device("cpu")), samples).exp()
    # Binomial standard error at p ~ 0.05-0.9 over 20k trials is below 0.0036.
    assert (seen / trials - want).abs().max().item() < 0.015
    assert want[0] > 0.7 and want[-1] < 0.04  # the most and least frequent ids


def test_a_candidate_equal_to_the_target_is_not_counted_twice():
    x, w = torch.randn(2, D), torch.randn(V, D)
    t = torch.tensor([3, 7])
    zero = torch.zeros(V)  # no correction: the plain softmax over {target} + candidates
    cand = torch.tensor([3, 5])
    got = sampled_nll(x, w, None, t, cand, zero)
    s = x @ w.t()
    row0 = torch.logsumexp(s[0, [3, 5]], 0) - s[0, 3]  # 3 is the target: once
    row1 = torch.logsumexp(s[1, [7, 3, 5]], 0) - s[1, 7]
    torch.testing.assert_close(got, torch.stack([row0, row1]))


def test_padding_columns_change_nothing():
    torch.manual_seed(2)
    x, w, t = torch.randn(N, D), torch.randn(V, D), torch.randint(0, V, (N,))
    counts = log_expected_count(log_uniform_probs(V, x.device), 12)
    cand = draw_candidates(V, 12)
    wide, used = padded(cand, bucket=16)
    assert wide.numel() % 16 == 0 and used == cand.numel() < wide.numel()
    torch.testing.assert_close(
        sampled_nll(x, w, None, t, wide, counts, used=used),
        sampled_nll(x, w, None, t, cand, counts),
    )


def tied(samples: int, cell: str = "fused") -> LanguageModel:
    torch.manual_seed(0)
    cfg = ModelConfig(
        emb_size=16, hidden_size=16, num_layers=1, tie_weights=True, cell=cell,
        sampled_softmax=samples,
    )  # fmt: skip
    return LanguageModel(cfg, 200)


@pytest.mark.parametrize("cell", ["fused", "manual"])
def test_only_training_samples_evaluation_is_exact(cell):
    model, full = tied(30, cell), tied(0, cell)
    x, y = torch.randint(0, 200, (6, 3)), torch.randint(0, 200, (6, 3))
    torch.manual_seed(5)
    sampled = model(x, None, y).loss
    exact = full(x, None, y).loss
    # Untrained, the full NLL is about log 200; the sampled loss sees a few dozen words.
    assert sampled.item() < exact.item() - 1.0
    model.eval(), full.eval()
    with torch.no_grad():
        torch.testing.assert_close(model(x, None, y).loss, full(x, None, y).loss)
    model.train()
    with torch.no_grad():  # no gradient wanted: exact too (nothing to save by sampling)
        torch.testing.assert_close(model(x, None, y).loss, full(x, None, y).loss)


def test_the_tied_weight_gets_its_gradient_from_both_ends():
    model = tied(30)
    x, y = torch.randint(0, 200, (6, 3)), torch.randint(0, 200, (6, 3))
    model(x, None, y).loss.backward()
    g = model.embedding.weight.grad
    assert g is not None
    rows = set(g.abs().sum(1).nonzero().flatten().tolist())
    # Rows of the input words (lookup) and of the targets (decoder) both have gradient.
    assert set(x.flatten().tolist()) <= rows and set(y.flatten().tolist()) <= rows


def test_the_mailbox_gives_autograd_s_tied_gradient():
    # The decoder leaves its rows in the mailbox and the lookup adds its own (nn/tied.py):
    # the same gradient as autograd's sum of the two, for x and for the tied weight.
    torch.manual_seed(4)
    w0, b = torch.randn(V, D), torch.randn(V)
    tokens, t = torch.randint(0, V, (N,)), torch.randint(0, V, (N,))
    cand, used = padded(torch.tensor([0, 2, 3, 5, 11, 17, 30]), bucket=8)
    counts = log_expected_count(log_uniform_probs(V, w0.device), 9)
    grads = []
    for box in (None, Mailbox()):
        w = w0.clone().requires_grad_(True)
        emb = F.embedding(tokens, w) if box is None else lookup(w, tokens, box)
        nll = sampled_nll(torch.tanh(emb), w, b, t, cand, counts, used=used, mailbox=box)
        (nll * torch.arange(N)).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[1], grads[0])
    assert grads[0][t].abs().sum() > 0 and grads[0][cand[:used]].abs().sum() > 0


@pytest.mark.parametrize(
    "kw, fragment",
    [
        (dict(sampled_softmax=-1), "sampled_softmax"),
        (dict(sampled_softmax=10, softmax="adaptive"), "--softmax full"),
    ],
)
def test_bad_options_are_value_errors(kw, fragment):
    with pytest.raises(ValueError, match=fragment):
        ModelConfig(**kw).validate()


@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_training_with_a_sampled_softmax_lowers_the_exact_loss(tmp_path, precision):
    corpus = write_corpus(tmp_path / "c.txt")
    cfg = tiny_config(corpus, precision=precision)
    cfg = replace(cfg, model=replace(cfg.model, tie_weights=True, sampled_softmax=8))
    (tmp_path / "r").mkdir()
    t = Trainer(tmp_path / "r", cfg, load_dataset(cfg.data))
    before = t.validate().loss
    for step in range(100):
        x, y = window(t.train_data, (step * 8) % (t.train_data.size(0) - 9), 8)
        t.train_step(x, y)
    assert t.step_ok
    after = t.validate().loss
    assert after < before - 0.5, (before, after)


def test_resume_with_a_sampled_softmax_is_exact(tmp_path):
    # The draws come from torch's generator, which checkpoints keep: a run stopped and
    # resumed ends with the same weights as one that never stopped.
    corpus = write_corpus(tmp_path / "c.txt")
    cfg = tiny_config(corpus, epochs=2)
    cfg = replace(cfg, model=replace(cfg.model, tie_weights=True, sampled_softmax=8))
    start_run(cfg, tmp_path / "full")
    start_run(replace(cfg, train=replace(cfg.train, max_steps=13)), tmp_path / "cut")
    resume_run(tmp_path / "cut", {"max_steps": None})
    full, _ = ckpt.load_tensors(tmp_path / "full" / ckpt.LAST)
    cut, _ = ckpt.load_tensors(tmp_path / "cut" / ckpt.LAST)
    for k in (k for k in full if k.startswith("model.")):
        assert torch.equal(full[k], cut[k]), k
    saved = json.loads((tmp_path / "full" / ckpt.CONFIG).read_text())
    assert saved["run"]["model"]["sampled_softmax"] == 8


@pytest.mark.parametrize("bias", [True, False])
def test_bf16_kernel_path_matches_fp32_on_the_same_rounded_operands(bias):
    # The C path (GEMM with the corrections as its bias, sampled_xent, the backward's two
    # products) against the torch path in fp32 on bf16-rounded operands, with accidental
    # hits, padding columns and odd sizes (partial blocks of 80 rows and 16 columns).
    skip_without_bf16_kernels()
    g = torch.Generator().manual_seed(6)
    v, d, n = 300, 40, 2 * 80 + 3
    x = torch.randn(n, d, generator=g).bfloat16().float().requires_grad_()
    w = torch.randn(v, d, generator=g).bfloat16().float().requires_grad_()
    b = (torch.randn(v, generator=g) * 0.1).requires_grad_() if bias else None
    cand, used = padded(draw_candidates(v, 120, g), bucket=80)
    assert used < cand.numel()
    t = torch.randint(0, v, (n,), generator=g)
    t[:9] = cand[:9]  # accidental hits
    counts = log_expected_count(log_uniform_probs(v, x.device), 120)
    ours = sampled_nll(x, w, b, t, cand, counts, torch.bfloat16, used)
    assert ours.grad_fn is not None and "SampledXent" in type(ours.grad_fn).__name__
    theirs = sampled_nll(x, w, b, t, cand, counts, torch.float32, used)
    torch.testing.assert_close(ours, theirs, atol=0.05, rtol=0.01)
    assert_gradients_align(ours, theirs, [x, w] + ([b] if bias else []))


def test_bf16_kernel_path_leaves_the_tied_gradient_in_the_mailbox():
    skip_without_bf16_kernels()
    torch.manual_seed(7)
    w0, tokens, t = torch.randn(V, D), torch.randint(0, V, (N,)), torch.randint(0, V, (N,))
    cand = torch.tensor([0, 1, 4, 9, 13, 21])
    counts = log_expected_count(log_uniform_probs(V, w0.device), 8)
    grads = []
    for box in (None, Mailbox()):
        w = w0.clone().requires_grad_(True)
        emb = F.embedding(tokens, w) if box is None else lookup(w, tokens, box)
        sampled_nll(emb, w, None, t, cand, counts, torch.bfloat16, mailbox=box).sum().backward()
        grads.append(w.grad)
    torch.testing.assert_close(grads[1], grads[0])


def test_the_sampled_kernel_scores_rows_like_the_formula():
    skip_without_bf16_kernels()
    from lstmlm.nn.manual import bf16_gemm

    g = torch.Generator().manual_seed(8)
    n, m, used = 7, 37, 30
    scores = (torch.randn(n, m, generator=g) * 3).bfloat16()
    extra, hit = torch.randn(n, generator=g) * 3, torch.tensor([-1, 0, 29, -1, 5, 5, -1])
    masked = scores.float()
    masked[:, used:] = -math.inf
    masked[hit >= 0, hit[hit >= 0]] = -math.inf
    row = torch.cat((extra[:, None], masked), 1).requires_grad_()
    want = torch.logsumexp(row, 1) - row[:, 0]
    (d_row,) = torch.autograd.grad(want.sum(), row)
    nll, d_extra, _ = bf16_gemm.sampled_xent(scores, hit, extra, used)
    torch.testing.assert_close(nll, want.detach())
    torch.testing.assert_close(d_extra, d_row[:, 0])
    torch.testing.assert_close(scores.float(), d_row[:, 1:], atol=2e-3, rtol=1e-2)
    assert (scores[:, used:] == 0).all() and scores[1, 0] == 0 and scores[2, 29] == 0
    with pytest.raises(ValueError, match="hit"):
        bf16_gemm.sampled_xent(scores, torch.full((n,), used), extra, used)
    with pytest.raises(ValueError, match="used"):
        bf16_gemm.sampled_xent(scores, hit, extra, m + 1)
