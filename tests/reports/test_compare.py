import json

import pytest

from helpers import write_corpus
from lstmlm.cli.main import main
from lstmlm.reports.compare import check_comparison
from lstmlm.reports.report import RESULTS, variant_curves
from lstmlm.reports.variants import (
    COMPARISONS,
    Variant,
    get_comparison,
    parse_variant,
    plan,
    variant_spec,
)
from lstmlm.storage.runs import read_run_files

PNG = b"\x89PNG\r\n\x1a\n"
TINY = [
    "--emb-size", "16", "--hidden-size", "16", "--num-layers", "1", "--epochs", "1",
    "--batch-size", "4", "--bptt", "8", "--log-every", "5", "--checkpoint-minutes", "0",
    "--seed", "3", "--quiet",
]  # fmt: skip


@pytest.fixture(scope="module")
def report(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("compare")
    corpus = write_corpus(tmp / "corpus.txt", n_lines=200)
    out = tmp / "report"
    argv = ["compare", "--train", str(corpus), "--out", str(out), *TINY]
    argv += ["--variant", "lstm:rnn=lstm", "--variant", "gru-fc:rnn=gru,fc-layers=1"]
    assert main(argv) == 0
    return out


def test_report_rows_match_each_runs_summary(report):
    md = (report / "report.md").read_text()
    results = json.loads((report / RESULTS).read_text())
    assert [v["name"] for v in results["variants"]] == ["lstm", "gru-fc"]
    table = [line for line in md.splitlines() if line.startswith("| ")]
    head = [c.strip() for c in table[0].split("|")[1:-1]]
    rows_in_order = table[1:]
    rows = {line.split("|")[2].strip(): line for line in rows_in_order}
    for v in results["variants"]:
        run = report / "runs" / v["name"]
        summary = json.loads((run / "summary.json").read_text())
        config = read_run_files(run)[0].config
        assert config.model.rnn == v["name"].removesuffix("-fc")
        assert v["valid_ppl"] == summary["valid_ppl"] and v["test_ppl"] == summary["test_ppl"]
        assert v["params"] == summary["params"] and v["epochs"] == summary["epochs"] == 1
        cells = dict(zip(head, (c.strip() for c in rows[v["name"]].split("|")[1:-1]), strict=True))
        assert cells["level"] == v["level"] == "word"
        assert cells["params"] == f"{summary['params']:,}"
        assert cells["valid ppl"] == f"{summary['valid_ppl']:.2f}"
        assert cells["test ppl"] == f"{summary['test_ppl']:.2f}"
        assert cells["valid bpc"] == f"{summary['valid_bpc']:.4f}"
        assert cells["test bpc"] == f"{summary['test_bpc']:.4f}"
        assert cells["test word ppl"] == f"{summary['test_word_ppl']:.2f}"
        assert cells["test <unk>"] == f"{summary['test_unk_share']:.2%}"
        assert cells["tokens/s"] == f"{summary['tokens_per_sec']:,.0f}"
    # ranked on validation bits per character, best first, in the table and results.json
    by_bpc = sorted(results["variants"], key=lambda v: v["valid_bpc"])
    assert results["ranked_by"] == "valid_bpc"
    assert results["ranking"] == [v["name"] for v in by_bpc]
    assert [rows_in_order[i].split("|")[2].strip() for i in (0, 1)] == results["ranking"]
    assert [rows_in_order[i].split("|")[1].strip() for i in (0, 1)] == ["1", "2"]
    gru = read_run_files(report / "runs/gru-fc")[0].config
    assert gru.model.rnn == "gru" and gru.model.fc_layers == 1 and gru.model.hidden_size == 16
    lstm = json.loads((report / "runs/lstm/summary.json").read_text())
    assert lstm["params"] != json.loads((report / "runs/gru-fc/summary.json").read_text())["params"]
    pytest.importorskip("matplotlib")
    assert (report / "valid_ppl.png").read_bytes()[:8] == PNG
    assert results["plot"] == "valid_ppl.png" and "![validation curves](valid_ppl.png)" in md
    assert "--variant gru-fc:rnn=gru,fc-layers=1" in results["command"]


def test_existing_runs_are_not_replaced_unless_asked(report, capsys):
    argv = ["compare", "--train", str(report.parent / "corpus.txt"), "--out", str(report), *TINY]
    argv += ["--variant", "lstm:rnn=lstm", "--variant", "gru-fc:rnn=gru,fc-layers=1"]
    before = (report / "runs/lstm/summary.json").read_text()
    assert main(argv) == 2
    assert "already holds a run" in capsys.readouterr().err
    assert main([*argv, "--reuse", "--json"]) == 0  # nothing retrained, the report rewritten
    printed = json.loads(capsys.readouterr().out)
    assert [v["wall_minutes"] for v in printed["variants"]] == [None, None]
    assert (report / "runs/lstm/summary.json").read_text() == before


def test_end_of_budget_validation_is_a_valid_point(report):
    results = json.loads((report / RESULTS).read_text())
    from lstmlm.reports.compare import VariantResult

    r = VariantResult(**{**results["variants"][0], "epochs": 0.5, "best_epoch": 0.5})
    c = variant_curves(r)
    assert c.name == "lstm"
    assert [p.epoch for p in c.valid] == [1, 0.5]  # the epoch record, then the end point
    assert c.valid[-1].loss == pytest.approx(json.loads(
        (report / "runs/lstm/summary.json").read_text())["valid_loss"])  # fmt: skip


def test_parse_variant():
    v = parse_variant("big:hidden-sizes=400+200,dropout_e=0.1,tie-weights=yes,max-minutes=none")
    assert v == Variant(
        "big", {"hidden_sizes": (400, 200), "dropout_e": 0.1, "tie_weights": True,
                "max_minutes": None}
    )  # fmt: skip
    assert parse_variant(variant_spec(v)) == v
    assert parse_variant("plain") == Variant("plain", {})


@pytest.mark.parametrize(
    "spec, message",
    [
        ("bad name:rnn=gru", "name it"),
        ("x:rnn", "not flag=value"),
        ("x:hidden=3", "unknown flag 'hidden'"),
        ("x:num-layers=two", "takes an integer"),
        ("x:tie-weights=maybe", "takes true or false"),
        ("x:rnn=gru,rnn=lstm", "given twice"),
    ],
)
def test_bad_variant_specs(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_variant(spec)


def test_plan_rules(corpus, tmp_path):
    common = {"train": str(corpus)}
    a, b = Variant("a", {"rnn": "lstm"}), Variant("b", {"rnn": "gru"})
    _, one = plan(None, [a], common)  # counted by check_comparison, after the folders
    with pytest.raises(ValueError, match="at least two"):
        check_comparison(one, tmp_path / "r")
    with pytest.raises(ValueError, match="nothing to compare"):
        check_comparison(plan(None, [], common)[1], tmp_path / "r")
    with pytest.raises(ValueError, match="named 'a'"):
        plan(None, [a, Variant("a", {})], common)
    with pytest.raises(ValueError, match="share the corpus; set lowercase for all"):
        plan(None, [a, Variant("c", {"lowercase": True})], common)
    with pytest.raises(ValueError, match="share the corpus; set train for all"):
        plan(None, [a, Variant("c", {"train": str(corpus)})], common)
    # how the text is cut into tokens may vary: each variant builds its own vocabulary
    _, levels = plan(None, [a, Variant("c", {"level": "bpe", "vocab_size": 300})], common)
    assert [(c.data.level, c.data.vocab_size) for _, c in levels] == [("word", None), ("bpe", 300)]
    with pytest.raises(ValueError, match="rnn is what variant a changes"):
        plan(None, [a, b], {**common, "rnn": "gru"})
    with pytest.raises(ValueError, match="^variant c: hidden_size must be"):
        plan(None, [a, Variant("c", {"hidden_size": 0})], common)
    with pytest.raises(ValueError, match="unknown comparison preset"):
        get_comparison("nope")
    base, configs = plan(get_comparison("compare-ptb"), [], {**common, "max_minutes": 2.0})
    assert [v.name for v, _ in configs] == ["lstm", "gru", "lstm-fc", "gru-fc"]
    for v, cfg in configs:
        m, t = cfg.model, cfg.train
        assert (m.emb_size, m.hidden_size, m.num_layers) == (650, 650, 2)
        assert (m.dropout, m.dropout_e, t.optimizer, t.lr) == (0.5, 0.1, "adam", 1e-3)
        assert m.rnn == v.name.split("-")[0] and m.fc_layers == int(v.name.endswith("-fc"))
        assert t.max_minutes == 2.0
    small, _ = plan(COMPARISONS["compare-ptb-small"], [], common)
    assert small.model.hidden_size == 200


def test_cli_errors_are_one_line(corpus, tmp_path, capsys):
    out = str(tmp_path / "r")
    assert main(["compare", "--train", str(corpus), "--out", out, "--variant", "a:nope=1"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("lstmlm: error: variant a: unknown flag") and err.count("\n") == 1
    assert main(["compare", "--train", str(corpus), "--out", out, "--preset", "nope"]) == 2
    assert "unknown comparison preset" in capsys.readouterr().err
    assert not (tmp_path / "r").exists()
    assert main(["compare", "--list"]) == 0
    assert "compare-ptb-small" in capsys.readouterr().out


def one_line_error(capsys) -> str:
    err = capsys.readouterr().err
    assert err.startswith("lstmlm: error: ") and err.count("\n") == 1, err
    return err


@pytest.mark.parametrize(
    "variants, message",
    [
        (["a:rnn=lstm", "x:softmax=adaptive"], "variant x: --cutoffs 2000 10000: every cutoff"),
        (["a", "b:batch-size=100000"], "variant b: training text has"),
        (["a", "b:dropout=1.5"], "variant b: --dropout must be in [0, 1)"),
    ],
)
def test_a_bad_variant_stops_the_comparison_before_anything_is_trained(
    tmp_path, capsys, variants, message
):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)  # 25 words: below the cutoffs
    out = tmp_path / "r"
    argv = ["compare", "--train", str(corpus), "--out", str(out), *TINY[:6], "--quiet"]
    assert main([*argv, *(f"--variant={v}" for v in variants)]) == 2
    assert message in one_line_error(capsys)
    assert not out.exists()  # variant a was neither trained nor given a folder


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--variant", "a:rnn=foo"], "variant a: --rnn must be one of"),
        (["--variant", "a", "--base-preset", "nope"], "unknown preset 'nope'"),
        (["--variant", "a", "--out", "FILE"], "FILE: exists and is not a folder"),
        (["--variant", "a:rnn=gru"], "a comparison needs at least two variants"),
    ],
)
def test_one_variant_shows_the_real_error_first(tmp_path, capsys, flags, message):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)
    flags = [str(corpus) if f == "FILE" else f for f in flags]
    argv = ["compare", "--train", str(corpus), "--out", str(tmp_path / "r"), *flags]
    assert main(argv) == 2
    assert message.replace("FILE", str(corpus)) in one_line_error(capsys)
    assert not (tmp_path / "r").exists()


def test_a_later_variants_unusable_folder_is_found_before_training(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)
    out = tmp_path / "r"
    (out / "runs" / "c").mkdir(parents=True)
    (out / "runs" / "b").write_text("not a folder")
    (out / "runs" / "c" / "metrics.jsonl").write_text("")  # a run's file, not a run
    argv = ["compare", "--train", str(corpus), "--out", str(out), *TINY[:6], "--quiet"]
    assert main([*argv, "--variant", "a", "--variant", "b:rnn=gru"]) == 2
    assert f"{out / 'runs' / 'b'}: exists and is not a folder" in one_line_error(capsys)
    assert main([*argv, "--variant", "a", "--variant", "c:rnn=gru"]) == 2
    assert "holds metrics.jsonl, which a run would replace" in one_line_error(capsys)
    assert not (out / "runs" / "a").exists()


def test_reuse_finds_runs_of_a_relative_text_path(tmp_path, capsys, monkeypatch):
    write_corpus(tmp_path / "corpus.txt", n_lines=40)
    monkeypatch.chdir(tmp_path)  # runs store the text's absolute path; the flag gave it relative
    argv = ["compare", "--train", "corpus.txt", "--out", "r", *TINY, "--max-steps", "2"]
    argv += ["--variant", "a", "--variant", "b:rnn=gru"]
    assert main(argv) == 0
    summary = (tmp_path / "r/runs/a/summary.json").read_text()
    assert main([*argv, "--reuse", "--json"]) == 0, capsys.readouterr().err
    printed = json.loads(capsys.readouterr().out.splitlines()[-1])
    assert [v["wall_minutes"] for v in printed["variants"]] == [None, None]
    assert (tmp_path / "r/runs/a/summary.json").read_text() == summary


def test_levels_compare_on_one_text_ranked_by_bits_per_character(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=120)
    out = tmp_path / "r"
    argv = ["compare", "--train", str(corpus), "--out", str(out), *TINY, "--max-steps", "4"]
    argv += ["--variant=w:level=word", "--variant=c:level=char"]
    argv += ["--variant=b:level=bpe,vocab-size=300"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    results = json.loads((out / RESULTS).read_text())
    variants = {v["name"]: v for v in results["variants"]}
    for name, level in (("w", "word"), ("c", "char"), ("b", "bpe")):
        info, vocab = read_run_files(out / "runs" / name)
        assert info.level == variants[name]["level"] == level  # each its own level ...
        assert variants[name]["vocab_size"] == len(vocab)  # ... and its own vocabulary
        summary = json.loads((out / "runs" / name / "summary.json").read_text())
        assert variants[name]["valid_bpc"] == summary["valid_bpc"]
    assert (out / "runs/b/tokenizer.json").is_file() and not (
        out / "runs/w/tokenizer.json"
    ).exists()
    words, chars = (read_run_files(out / "runs" / n)[1].stoi for n in ("w", "c"))
    assert "cat" in words and "cat" not in chars and "c" in chars and "c" not in words
    # one text: the same characters and words in every variant's denominators
    texts = [json.loads((out / "runs" / n / "summary.json").read_text())["text"] for n in variants]
    assert all(t["valid"]["chars"] == texts[0]["valid"]["chars"] for t in texts)
    assert results["ranked_by"] == "valid_bpc" and results["level"] == "word, char, bpe"
    assert results["ranking"] == sorted(variants, key=lambda n: variants[n]["valid_bpc"])
    md = (out / "report.md").read_text()
    ranked_rows = [line.split("|")[2].strip() for line in md.splitlines() if line[:3] == "| 1"]
    assert ranked_rows == results["ranking"][:1]
    assert "Ranked by validation bits per character" in md
    assert printed.index(f"| {results['ranking'][0]} |") < printed.index(
        f"| {results['ranking'][-1]} |"
    )


def test_each_tokenization_is_checked_before_anything_trains(tmp_path, capsys):
    corpus = write_corpus(tmp_path / "corpus.txt", n_lines=40)
    out = tmp_path / "r"
    argv = ["compare", "--train", str(corpus), "--out", str(out), *TINY[:6], "--quiet"]
    argv += ["--variant=a", "--variant=rare:min-freq=100000"]
    assert main(argv) == 2
    assert "variant rare: the vocabulary has only <eos> and <unk>" in one_line_error(capsys)
    assert not out.exists()


def test_ranking_of_older_runs_without_bpc():
    from lstmlm.reports.report import VariantResult, format_table, rank_key, ranked

    def row(name, level, ppl, bpc=None):
        return VariantResult(
            name, {}, "", 10, ppl, ppl, bpc, bpc, 1.0, 1.0, None, 1.0, 1.0, "steps", level
        )

    new = [row("a", "word", 90.0, 1.9), row("b", "char", 3.0, 1.6)]
    assert rank_key(new) == "valid_bpc" and [r.name for r in ranked(new)] == ["b", "a"]
    old = [row("a", "word", 90.0), row("b", "word", 80.0, 1.2)]  # "a" has no bpc
    assert rank_key(old) == "valid_ppl" and [r.name for r in ranked(old)] == ["b", "a"]
    mixed = [row("a", "word", 90.0), row("b", "char", 3.0, 1.6)]
    assert rank_key(mixed) is None and [r.name for r in ranked(mixed)] == ["a", "b"]
    assert "| - | a | word |" in format_table(mixed)  # shown, not ranked
