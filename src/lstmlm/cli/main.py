"""`lstmlm` command line: the only place that prints."""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import types
import typing
from pathlib import Path
from typing import Any, NoReturn

from lstmlm import __version__
from lstmlm.config.presets import PRESETS, preset_config
from lstmlm.config.schema import (
    CELLS,
    PRECISIONS,
    DataConfig,
    ModelConfig,
    RunConfig,
    TrainConfig,
    replace,
)

SECTIONS = (("data", DataConfig), ("model", ModelConfig), ("train", TrainConfig))


class Parser(argparse.ArgumentParser):
    def error(self, message: str) -> NoReturn:  # one line, exit 2
        self.exit(2, f"{self.prog}: error: {message}\n")


def _scalar_type(tp: Any) -> tuple[Any, bool]:
    """(base type, is_tuple) of a field annotation like `int | None` or `tuple[float, ...]`."""
    if isinstance(tp, types.UnionType) or typing.get_origin(tp) is typing.Union:
        tp = next(a for a in typing.get_args(tp) if a is not type(None))
    if typing.get_origin(tp) is tuple:
        return typing.get_args(tp)[0], True
    return tp, False


def add_config_flags(p: argparse.ArgumentParser) -> None:
    for section, cls in SECTIONS:
        group = p.add_argument_group(f"{section} options")
        hints = typing.get_type_hints(cls)
        for f in dataclasses.fields(cls):
            flag = "--" + f.name.replace("_", "-")
            tp, is_tuple = _scalar_type(hints[f.name])
            kw: dict[str, Any] = {
                "dest": f"{section}.{f.name}",
                "default": argparse.SUPPRESS,
                "help": f.metadata.get("help", ""),
            }
            if f.default is not None and f.default is not dataclasses.MISSING:
                kw["help"] += f" (default: {f.default})"
            if tp is bool:
                kw["action"] = argparse.BooleanOptionalAction
            else:
                kw["type"] = tp
                if is_tuple:
                    kw["nargs"] = "+"
                if "choices" in f.metadata:
                    kw["choices"] = f.metadata["choices"]
                kw["metavar"] = (
                    f.name.split("_")[-1].upper() if "choices" not in f.metadata else None
                )
            group.add_argument(flag, **kw)


def explicit_overrides(args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {s: {} for s, _ in SECTIONS}
    for key, value in vars(args).items():
        if "." in key:
            section, name = key.split(".", 1)
            out[section][name] = tuple(value) if isinstance(value, list) else value
    return out


def build_config(args: argparse.Namespace) -> RunConfig:
    base = preset_config(args.preset)
    o = explicit_overrides(args)
    return RunConfig(
        data=replace(base.data, **o["data"]),
        model=replace(base.model, **o["model"]),
        train=replace(base.train, **o["train"]),
        preset=base.preset,
    ).validate()


# --- subcommands -----------------------------------------------------------------


def cmd_train(args: argparse.Namespace) -> int:
    from lstmlm.training import distributed
    from lstmlm.training import runs as train
    from lstmlm.training.allocator import keep_freed_memory

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError("--resume continues RUN in its own folder; drop --out")
    if args.nproc is not None and args.nproc != 1:
        return launch_train(args)
    keep_freed_memory()  # no page faults for buffers freed and re-made every step
    main_rank = distributed.env_rank() == 0  # under torchrun only rank 0 reports and prints
    reporter = ProgressReporter(quiet=args.quiet or not main_rank)
    if getattr(args, "tensorboard", None) is not None and main_rank:  # --tensorboard [DIR]
        from lstmlm.training.tb import TensorBoardSink, tee

        tb_dir = args.tensorboard or Path(args.resume or args.out or ".") / "tensorboard"
        reporter = tee(reporter, TensorBoardSink(tb_dir))
    if args.resume:
        o = explicit_overrides(args)
        if o["data"] or o["model"] or args.preset:
            raise ValueError(
                "--resume continues a run with its own config; drop the data/model "
                "flags and --preset"
            )
        result = train.resume_run(args.resume, o["train"], on_event=reporter if main_rank else None)
        run_dir = Path(args.resume)
    else:
        if not args.out:
            raise ValueError("give --out RUN_DIR (or --resume RUN_DIR)")
        cfg = build_config(args)
        result = train.start_run(
            cfg,
            args.out,
            overwrite=args.overwrite,
            level=_train_level(args, cfg),
            on_event=reporter if main_rank else None,
        )
        run_dir = Path(args.out)
    reporter.close()
    distributed.shutdown()
    if not main_rank:
        return 0
    summary = json.loads((run_dir / "summary.json").read_text())
    if args.json:
        print(json.dumps(summary))
    else:
        print(format_result("valid", result.valid.ppl, result.valid.bpc))
        print(format_result("test", result.test.ppl, result.test.bpc))
        print(f"run saved in {run_dir}")
    return 0


def launch_train(args: argparse.Namespace) -> int:
    """`lstmlm train --nproc N ...`: run the same command in N processes through torchrun."""
    from lstmlm.storage import checkpoint
    from lstmlm.training import distributed

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if distributed.env_world_size() > 1:
        raise ValueError("--nproc starts its own processes; drop it when running under torchrun")
    # Check here, so that a mistake is one line rather than a report from every process.
    if args.resume:
        checkpoint.read_run_files(args.resume)
    elif not args.out:
        raise ValueError("give --out RUN_DIR (or --resume RUN_DIR)")
    else:
        from lstmlm.training import runs as train

        cfg = build_config(args)
        level = _train_level(args, cfg)
        data = train.check_start(cfg, Path(args.out), args.overwrite, level, args.nproc)
        train.check_model(cfg, len(data.vocab))
    return distributed.launch(args.nproc, without_option(args.argv, "--nproc"))


def _train_level(args: argparse.Namespace, cfg: RunConfig) -> str | None:
    """The token level asked for: given by flag, or a user text's; None = the corpus's own."""
    given_level = "data.level" in vars(args)
    return cfg.data.level if (given_level or cfg.data.corpus is None) else None


def without_option(argv: list[str], flag: str) -> list[str]:
    """argv less `FLAG VALUE` and `FLAG=VALUE`."""
    out: list[str] = []
    skip = False
    for a in argv:
        if skip:
            skip = False
        elif a == flag:
            skip = True
        elif not a.startswith(flag + "="):
            out.append(a)
    return out


def cmd_finetune(args: argparse.Namespace) -> int:
    from lstmlm.training import runs as train

    reporter = ProgressReporter(quiet=args.quiet)
    out = args.out or str(Path(args.run).with_name(Path(args.run).name + "-finetune"))
    result = train.finetune_run(
        args.run,
        out,
        epochs=args.epochs,
        lr=args.lr,
        max_minutes=args.max_minutes,
        overwrite=args.overwrite,
        on_event=reporter,
    )
    reporter.close()
    if args.json:
        print(json.dumps(json.loads((Path(out) / "summary.json").read_text())))
    else:
        print(format_result("valid", result.valid.ppl, result.valid.bpc))
        print(format_result("test", result.test.ppl, result.test.bpc))
        print(f"run saved in {out}")
    return 0


def format_result(split: str, ppl: float, bpc: float | None) -> str:
    line = f"{split:5s} ppl {ppl:9.2f}"
    if bpc is not None:
        line += f"   bpc {bpc:.4f}"
    return line


def cmd_evaluate(args: argparse.Namespace) -> int:
    from lstmlm.data.dataset import encode_ids
    from lstmlm.data.readers import read_text
    from lstmlm.evaluation import perplexity as evaluate
    from lstmlm.storage import checkpoint

    if args.cache and args.dynamic:
        raise ValueError("--cache and --dynamic do not combine; pick one")
    if args.per_token and (args.cache or args.search or args.dynamic):
        raise ValueError("--per-token works with plain evaluation only")
    for flag, value in (("--batch-size", args.batch_size), ("--bptt", args.bptt)):
        if value is not None and value < 1:
            raise ValueError(f"{flag} must be a positive integer, got {value}")
    model, vocab, info = checkpoint.load_run(args.run, args.which, args.device, args.cell)
    if args.batch_size is None:  # as the run evaluated itself, so summary.json reproduces
        args.batch_size = info.config.train.eval_batch_size
    if args.precision is None:
        args.precision = info.config.train.precision
    datasets: list[Any] = []

    def dataset() -> Any:
        if not datasets:
            from lstmlm.data.dataset import load_dataset
            from lstmlm.training.runs import text_changed

            datasets.append(load_dataset(info.config.data, level=info.level, vocab=vocab))
            changed = text_changed(info, datasets[0])
            if changed:
                print(f"lstmlm: warning: {args.run}: {changed}", file=sys.stderr)
        return datasets[0]

    if args.file:
        text = read_text(args.file, lowercase=info.config.data.lowercase)
        ids = encode_ids(vocab, text, info.level)
        split = args.file
    else:
        ids = getattr(dataset(), args.split)
        split = args.split
    bar = ProgressReporter(quiet=args.quiet or args.json)
    d: dict[str, Any] = {"split": split}
    plain = None
    if args.cache or args.search:
        from lstmlm.evaluation.cache import CacheConfig, cache_evaluate, cache_search

        if args.search:
            found = cache_search(
                model,
                dataset().valid,
                info.level,
                args.cache_window,
                batch_size=args.batch_size,
                bptt=args.bptt,
                precision=args.precision,
                progress=bar.eval_progress,
            )
            bar.close()
            ccfg = found.best
            best_loss = min(g[2] for g in found.grid)
            d["search"] = {
                "split": "valid",
                "plain_ppl": found.plain.ppl,
                "best_ppl": evaluate.result(
                    best_loss * found.plain.tokens, found.plain.tokens, info.level
                ).ppl,
                "grid": [
                    {"lambda": lam, "theta": th, "loss": loss} for lam, th, loss in found.grid
                ],
            }
        else:
            ccfg = CacheConfig(args.cache_window, args.cache_lambda, args.cache_theta)
        cached = cache_evaluate(
            model,
            ids,
            info.level,
            ccfg,
            args.batch_size,
            args.bptt,
            args.precision,
            bar.eval_progress,
        )
        res, plain = cached.cached, cached.plain
        d.update(
            method="cache", cache_window=ccfg.window, cache_lambda=ccfg.lam, cache_theta=ccfg.theta
        )
    elif args.dynamic:
        from lstmlm.evaluation.dynamic import DynamicConfig, dynamic_evaluate

        dcfg = DynamicConfig(
            args.dyn_method,
            args.dyn_lr,
            args.dyn_decay,
            args.dyn_bptt,
            args.dyn_batch_size,
            stats_batches=args.dyn_stats_batches,
        )
        dcfg.validate()
        stats = None
        if dcfg.method == "rms" and dcfg.stats_batches > 0:
            n = dcfg.stats_batches * dcfg.bptt * dcfg.batch_size + 1
            stats = dataset().train[:n]
        dyn = dynamic_evaluate(
            model, ids, info.level, dcfg, stats, args.precision, bar.eval_progress
        )
        res, plain = dyn.dynamic, dyn.plain
        d.update(
            method="dynamic",
            dyn_method=dcfg.method,
            dyn_lr=dcfg.lr,
            dyn_decay=dcfg.decay,
            dyn_bptt=dcfg.bptt,
            dyn_batch_size=dcfg.batch_size,
        )
    elif args.per_token:
        nll = evaluate.token_nlls(model, ids, args.bptt, args.precision)  # batch 1, text order
        res = evaluate.result(nll.double().sum().item(), nll.numel(), info.level)
        lines = (
            json.dumps({"token": vocab.itos[t], "nll": x}, ensure_ascii=False)
            for t, x in zip(ids[1:].tolist(), nll.tolist(), strict=True)
        )
        with open(args.per_token, "w", encoding="utf-8") as f:
            f.writelines(line + "\n" for line in lines)
        d["per_token"] = args.per_token
    else:
        res = evaluate.evaluate(
            model,
            ids,
            info.level,
            args.batch_size,
            args.bptt,
            args.precision,
            progress=bar.eval_progress,
        )
    bar.close()
    d = {"split": split, **res.to_dict(), **{k: v for k, v in d.items() if k != "split"}}
    if plain is not None:
        d.update(plain_loss=plain.loss, plain_ppl=plain.ppl, plain_bpc=plain.bpc)
    if args.json:
        print(json.dumps(d))
    else:
        if "search" in d:
            print(
                f"cache search on valid: lambda {d['cache_lambda']}, theta {d['cache_theta']} "
                f"(valid ppl {d['search']['best_ppl']:.2f}, plain {d['search']['plain_ppl']:.2f})"
            )
        line = format_result(split, res.ppl, res.bpc)
        if plain is not None:
            line += f"   (plain ppl {plain.ppl:.2f})"
        print(line + f"   ({res.tokens} tokens)")
    return 0


MAX_PROMPT_CHARS = 10_000  # generate --prompt


def cmd_generate(args: argparse.Namespace) -> int:
    from lstmlm.api import load
    from lstmlm.generation.sampling import SampleConfig, generate, stream

    scfg = SampleConfig(
        max_new_tokens=args.max_new_tokens,
        temperature=args.temperature,
        top_k=args.top_k,
        seed=args.seed,
        num_samples=args.num_samples,
        top_p=args.top_p,
        top_k_decay=args.top_k_decay,
        repetition_penalty=args.repetition_penalty,
        stop=tuple(args.stop or ()),
        stop_at_eos=args.stop_at_eos,
        min_new_tokens=args.min_new_tokens,
        precision=args.precision,
    )
    scfg.validate()
    if args.stream and args.num_samples != 1:
        raise ValueError("--stream prints one sample; drop --num-samples")
    if len(args.prompt) > MAX_PROMPT_CHARS:
        raise ValueError(f"--prompt is longer than {MAX_PROMPT_CHARS:,} characters")
    lm = load(args.run, args.which, args.device)
    prompt = lm.normalize(args.prompt)  # as the run's training text was read
    _, unknown = lm.encode(args.prompt)
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:10])
        print(
            f"lstmlm: warning: {len(unknown)} prompt token(s) not in the vocabulary, "
            f"read as <unk>: {shown}",
            file=sys.stderr,
        )
    sep = (
        " " if lm.level == "word" and args.prompt and not args.prompt.endswith(("\n", " ")) else ""
    )
    if args.stream:
        print(args.prompt, end="", flush=True)
        first = True
        for piece in stream(lm.model, lm.vocab, lm.level, prompt, scfg):
            if first and not piece.startswith("\n"):
                piece = sep + piece
            first = False
            print(piece, end="", flush=True)
        print()
        return 0
    texts = generate(lm.model, lm.vocab, lm.level, prompt, scfg)
    for i, text in enumerate(texts):
        if len(texts) > 1:
            print(f"--- sample {i + 1} ---")
        print(args.prompt + (sep if text and not text.startswith("\n") else "") + text)
    return 0


def cmd_presets(args: argparse.Namespace) -> int:
    for name, p in PRESETS.items():
        print(f"{name:17s} {p.description}")
    return 0


def cmd_download(args: argparse.Namespace) -> int:
    from lstmlm.data.corpora import download_corpus

    bar = ProgressReporter(quiet=args.quiet)
    paths = download_corpus(args.corpus, args.data_dir, progress=bar.bytes_progress)
    bar.close()
    for split, path in paths.items():
        print(f"{split}: {path}")
    return 0


def cmd_serve(args: argparse.Namespace) -> int:
    try:
        import uvicorn

        from lstmlm.serving.app import create_app, is_loopback, uvicorn_config
    except ImportError as e:
        raise ValueError(
            f"lstmlm serve needs fastapi and uvicorn ({e.name} is missing): "
            "pip install 'lstmlm[web]'"
        ) from None
    from lstmlm.serving.limits import ServerLimits

    limits = ServerLimits(
        max_prompt_chars=args.max_prompt_chars,
        max_new_tokens_limit=args.max_new_tokens_limit,
        max_score_chars=args.max_score_chars,
        max_concurrent=args.max_concurrent,
        max_queue=args.max_queue,
        rate=args.rate,
        burst=args.burst,
    ).validate()
    app = create_app(args.runs, limits, args.which, args.precision)
    host = args.host.strip("[]")  # an IPv6 address may come in brackets, as in a URL
    _check_can_listen(host, args.port)
    if not is_loopback(host):
        print(
            f"lstmlm: warning: listening on {args.host}: other machines can reach this "
            "server, and it has no authentication",
            file=sys.stderr,
        )
    shown = "localhost" if is_loopback(host) else host
    if ":" in shown:
        shown = f"[{shown}]"  # an IPv6 address in a URL
    print(
        f"serving {', '.join(app.state.models)} at http://{shown}:{args.port}/ (docs: /docs)",
        file=sys.stderr,
    )
    uvicorn.Server(uvicorn_config(app, host, args.port, args.log_level)).run()
    return 0


def _check_can_listen(host: str, port: int) -> None:
    """ValueError with the reason when `host:port` cannot be listened on (taken, no such
    address), so that the error is one line before the server says it is serving."""
    import socket

    try:
        infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError as e:
        raise ValueError(f"--host {host}: cannot resolve it ({e.strerror or e})") from None
    family, kind, proto, _, addr = infos[0]
    with socket.socket(family, kind, proto) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # as uvicorn does
        try:
            sock.bind(addr)
        except OSError as e:
            raise ValueError(f"cannot listen on {host} port {port}: {e.strerror or e}") from None


def _port(text: str) -> int:
    """argparse type: a TCP port number, 1 to 65535."""
    try:
        port = int(text)
    except ValueError:
        port = -1
    if not 1 <= port <= 65535:
        raise argparse.ArgumentTypeError(f"a port is a number from 1 to 65535, got {text!r}")
    return port


def cmd_plot(args: argparse.Namespace) -> int:
    from lstmlm.reports.plot import plot_runs

    out = plot_runs(args.runs, args.output, metric=args.metric, title=args.title)
    print(f"wrote {out}")
    return 0


def cmd_compare(args: argparse.Namespace) -> int:
    from lstmlm.reports import compare

    if args.list:
        for name, c in compare.COMPARISONS.items():
            print(f"{name:18s} {c.description}")
            print(f"{'':18s} variants: {'; '.join(compare.variant_spec(v) for v in c.variants)}")
        return 0
    if not args.out:
        raise ValueError("give --out REPORT_DIR")
    comparison = compare.get_comparison(args.preset) if args.preset else None
    extra = [compare.parse_variant(s) for s in args.variant or ()]
    o = explicit_overrides(args)
    common = {**o["data"], **o["model"], **o["train"]}
    base, configs = compare.plan(comparison, extra, common, args.base_preset)
    given_level = "data.level" in vars(args)
    level = base.data.level if (given_level or base.data.corpus is None) else None
    command = " ".join(
        ["lstmlm compare"]
        + ([f"--preset {args.preset}"] if args.preset else [])
        + ([f"--base-preset {args.base_preset}"] if args.base_preset else [])
        + [f"--variant {compare.variant_spec(v)}" for v in extra]
        + compare.overrides_to_flags(common)
        + [f"--out {args.out}"]
    )
    reporter = ProgressReporter(quiet=args.quiet)

    def on_event(kind: str, d: dict[str, Any]) -> None:
        if kind == "variant":
            reporter.close()
            if not args.quiet:
                what = "reusing finished run" if d["reused"] else "training"
                print(
                    f"=== variant {d['index']}/{d['total']}: {d['name']} ({d['label']}), "
                    f"{what} in {d['run_dir']} ===",
                    file=sys.stderr,
                )
        else:
            reporter(kind, d)

    result = compare.run_comparison(
        base,
        configs,
        args.out,
        name=args.preset,
        description=comparison.description if comparison else "",
        command=command,
        level=level,
        overwrite=args.overwrite,
        reuse=args.reuse,
        on_event=on_event,
    )
    reporter.close()
    if args.json:
        print(json.dumps(json.loads(result.results.read_text("utf-8"))))
    else:
        print(compare.format_table(result.variants, result.level), end="")
        print(f"report in {result.report}" + (f", plot {result.plot}" if result.plot else ""))
    return 0


# --- progress ----------------------------------------------------------------------


class ProgressReporter:
    """Turns trainer events into a tqdm bar on stderr and one line per epoch.

    The epoch bar moves on "progress" events (every --log-every steps); at the end of an
    epoch, or of a run stopped mid-epoch (--max-steps, --max-minutes, Ctrl-C), it is moved
    to the last step the trainer reported, so a short run does not end at "0/N".
    """

    # Evaluation reports positions along each of its parallel columns, not tokens: the bar
    # shows the share done and the time left, not a count or a rate that would read as
    # tokens (and understate the throughput by the batch size).
    EVAL_FORMAT = "{desc}: {percentage:3.0f}%|{bar}| [{elapsed}<{remaining}]"

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self.bar: Any = None
        self.step: int | None = None  # the trainer's last reported (global) step
        self._anchor: tuple[int, int] | None = None  # (bar position, step) in this epoch

    def _new_bar(self, **kw: Any) -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(file=sys.stderr, dynamic_ncols=True, disable=self.quiet, **kw)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None
        self._anchor = None

    def _move_to_step(self, step: int) -> None:
        """Put the epoch bar where `step` is: a step and a window of the epoch go together."""
        if self.bar is not None and self._anchor is not None:
            done, at = self._anchor
            self.bar.n = min(max(done + step - at, 0), self.bar.total)

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "start":
            self.step = 0  # a new run, or a fine-tuning one, starts counting afresh
            if not self.quiet:
                print(
                    f"training on {d['source']}: {d['train_tokens']:,} tokens, vocab "
                    f"{d['vocab_size']:,}, {d['params']:,} parameters",
                    file=sys.stderr,
                )
        elif kind == "epoch_start":
            self._new_bar(
                total=d["steps"], initial=d["done"], desc=f"epoch {d['epoch']}", unit="step"
            )
            self._anchor = (d["done"], self.step) if self.step is not None else None
        elif kind == "progress" and self.bar is not None:
            self.bar.n = d["done"]
            self._anchor = (d["done"], d["step"])
            self.bar.set_postfix(
                loss=f"{d['train_loss']:.3f}",
                ppl=f"{d['train_ppl']:.1f}",
                lr=f"{d['lr']:.3g}",
                tok_s=f"{d['tokens_per_sec']:,.0f}",
                refresh=False,
            )
            self.bar.refresh()
        elif kind == "epoch":
            if self.bar is not None:
                self.bar.n = self.bar.total  # every window of the epoch is done
            self.close()
            if not self.quiet:
                extra = f" bpc {d['valid_bpc']:.4f}" if d.get("valid_bpc") is not None else ""
                print(
                    f"epoch {d['epoch']:3d} | train ppl {d['train_ppl']:8.2f} | valid ppl "
                    f"{d['valid_ppl']:8.2f}{extra} | lr {d['lr']:.4g} | "
                    f"{d['tokens_per_sec']:,.0f} tok/s | {d['elapsed'] / 60:.1f} min",
                    file=sys.stderr,
                )
        elif kind == "sample" and not self.quiet:
            print(f"--- sample, temperature {d['temperature']} ---\n{d['text']}", file=sys.stderr)
        elif kind == "final_eval":  # stopped mid-epoch, the bar is still open
            self._move_to_step(d.get("step", 0))
            self.close()
            if not self.quiet:
                print("evaluating the best model on valid and test ...", file=sys.stderr)
        elif kind in ("interrupted", "diverged"):  # the run ends with an error line next
            self._move_to_step(d["step"])
            self.close()
        elif kind == "resume" and not self.quiet:
            print(f"resuming at epoch {d['epoch']}, step {d['step']}", file=sys.stderr)
        elif kind == "stop_requested":  # always: the user asked and waits for an answer
            print(
                "\nstopping after this step and saving it (Ctrl-C again to quit at once, "
                "losing what the last checkpoint does not hold)",
                file=sys.stderr,
            )
        if "step" in d:
            self.step = d["step"]

    def eval_progress(self, done: int, total: int) -> None:
        if self.quiet:
            return
        if self.bar is None:
            self._new_bar(total=total, desc="evaluating", bar_format=self.EVAL_FORMAT, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def bytes_progress(self, done: int, total: int | None) -> None:
        if self.quiet:
            return
        if self.bar is None or (total and self.bar.total != total):
            self._new_bar(total=total, desc="downloading", unit="B", unit_scale=True)
        self.bar.n = done
        self.bar.refresh()


# --- parser --------------------------------------------------------------------


def add_which_flag(p: argparse.ArgumentParser) -> None:
    """--which: the run's checkpoint to load (evaluate, generate, serve)."""
    p.add_argument(
        "--which",
        choices=("best", "last"),
        default="best",
        help="checkpoint: best (lowest validation loss) or last (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    # Every option says what it does; one whose default a user needs to know ends with
    # "(default: ...)", from %(default)s where the value itself is the answer.
    p = Parser(prog="lstmlm", description="Train, evaluate and sample LSTM/GRU language models.")
    p.add_argument("--version", action="version", version=f"lstmlm {__version__}")
    sub = p.add_subparsers(dest="command", required=True, parser_class=Parser)

    t = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a language model. Flags override the preset's values; the defaults "
        "shown are those used without --preset.",
    )
    t.add_argument(
        "--preset",
        help="named recipe (see `lstmlm presets`) (default: none: the defaults shown below)",
    )
    t.add_argument("--out", help="run folder to create (required unless --resume)")
    t.add_argument(
        "--resume",
        metavar="RUN",
        help="continue the run in this folder exactly where it stopped; only budget and "
        "logging flags (--epochs, --max-minutes, ...) may change",
    )
    t.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    t.add_argument("--json", action="store_true", help="print a final JSON summary line")
    t.add_argument(
        "--quiet", action="store_true", help="no progress bar or per-epoch lines on stderr"
    )
    t.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train in N processes (DistributedDataParallel: gloo on CPU, nccl on GPUs) by "
        "re-running this command through torchrun; --batch-size is per process (default: 1)",
    )
    t.add_argument(
        "--tensorboard",
        nargs="?",
        const="",
        default=None,
        metavar="DIR",
        help="also log to TensorBoard, in DIR (RUN/tensorboard when no DIR is given); needs "
        "tensorboard (default: off)",
    )
    add_config_flags(t)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser(
        "evaluate",
        help="perplexity / bits per char of a trained model",
        description="Score a split of the run's corpus, or a text file, with a trained model: "
        "plain, with a neural cache (--cache, --search) or with dynamic evaluation "
        "(--dynamic).",
    )
    e.add_argument("run", help="run folder")
    e.add_argument(
        "--split",
        choices=("valid", "test", "train"),
        default="test",
        help="split of the run's corpus to score (default: %(default)s)",
    )
    e.add_argument("--file", help="evaluate this text file instead of a split")
    add_which_flag(e)
    e.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help="parallel columns; each starts from a zero state, so the ppl moves slightly "
        "with it (default: the run's --eval-batch-size, as its summary.json used)",
    )
    e.add_argument(
        "--bptt",
        type=int,
        default=100,
        help="window length; state carries across windows (default: %(default)s)",
    )
    e.add_argument(
        "--precision",
        choices=PRECISIONS,
        default=None,
        help="bf16: bfloat16 autocast (on CPU nn.LSTM and the decoder run in bf16, about 1.8x "
        "faster, ppl within ~0.1%%; softmax and loss stay fp32) (default: the run's --precision)",
    )
    e.add_argument(
        "--cell",
        choices=CELLS,
        default=None,
        help="rebuild the recurrent layers as fused (nn.LSTM/nn.GRU) or manual (lstmlm's "
        "hand-written ones) from the same weights; an LSTM evaluates alike either way (both "
        "use torch's fused kernel without gradients), a GRU faster as manual on CPU (its C "
        "kernels: about 1.25x at 2x650) (default: the run's)",
    )
    e.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)"
    )
    e.add_argument("--json", action="store_true", help="print one JSON object (no progress bar)")
    e.add_argument("--quiet", action="store_true", help="no progress bar")
    e.add_argument(
        "--per-token",
        metavar="OUT.jsonl",
        help='write {"token", "nll"} per scored token, in text order (batch size 1)',
    )
    ec = e.add_argument_group("neural cache (Grave et al. 2017)")
    ec.add_argument("--cache", action="store_true", help="mix in a cache of recent hidden states")
    ec.add_argument(
        "--cache-window",
        type=int,
        default=500,
        help="positions remembered (also with --search) (default: %(default)s)",
    )
    ec.add_argument(
        "--cache-lambda",
        type=float,
        default=0.1,
        help="weight of the cache (default: %(default)s)",
    )
    ec.add_argument(
        "--cache-theta",
        type=float,
        default=1.0,
        help="scale of the dot products (default: %(default)s)",
    )
    ec.add_argument(
        "--search",
        action="store_true",
        help="grid-search lambda and theta on the valid split, then evaluate with the best",
    )
    ed = e.add_argument_group("dynamic evaluation (Krause et al. 2018)")
    ed.add_argument(
        "--dynamic", action="store_true", help="adapt a copy of the weights while scoring"
    )
    ed.add_argument(
        "--dyn-method",
        choices=("sgd", "rms"),
        default="sgd",
        help="update rule: sgd = plain gradient steps; rms = steps scaled by the gradients' "
        "RMS (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-lr",
        type=float,
        default=1e-3,
        help="learning rate of the updates (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-decay",
        type=float,
        default=0.0,
        help="decay toward the trained weights per step (default: %(default)s)",
    )
    ed.add_argument(
        "--dyn-bptt", type=int, default=10, help="segment length (tokens) (default: %(default)s)"
    )
    ed.add_argument(
        "--dyn-batch-size", type=int, default=1, help="parallel columns (default: %(default)s)"
    )
    ed.add_argument(
        "--dyn-stats-batches",
        type=int,
        default=100,
        help="rms: training segments for the gradient statistics (0 = running mean "
        "over the evaluated text) (default: %(default)s)",
    )
    e.set_defaults(func=cmd_evaluate)

    g = sub.add_parser(
        "generate",
        help="sample text from a trained model",
        description="Continue a prompt with text sampled from a trained model.",
    )
    g.add_argument("run", help="run folder")
    g.add_argument(
        "--prompt",
        default="",
        help=f"text to continue (words or characters), at most {MAX_PROMPT_CHARS:,} characters "
        "(default: none: start from the beginning of a line)",
    )
    g.add_argument(
        "--max-new-tokens",
        type=int,
        default=50,
        help="tokens to generate per sample (default: %(default)s)",
    )
    g.add_argument(
        "--min-new-tokens",
        type=int,
        default=0,
        help="no <eos> before this many (default: %(default)s)",
    )
    g.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: each new token's recurrent and decoder matmuls in bfloat16, state in "
        "fp32 (about 2.7x faster than fp32 on CPU at 2x650; the samples differ slightly from "
        "fp32 ones) (default: %(default)s)",
    )
    g.add_argument(
        "--temperature",
        type=float,
        default=1.0,
        help="softmax temperature; 0 = greedy (argmax) (default: %(default)s)",
    )
    g.add_argument(
        "--top-k",
        type=int,
        default=0,
        help="sample from the k most likely (0 = all) (default: %(default)s)",
    )
    g.add_argument(
        "--top-k-decay",
        type=float,
        default=1.0,
        help="adjusted top-k: k_t = max(1, round(k * decay ** tokens_since_eos)) "
        "(1 = fixed k) (default: %(default)s)",
    )
    g.add_argument(
        "--top-p",
        type=float,
        default=1.0,
        help="nucleus: smallest set with mass >= p (1 = off) (default: %(default)s)",
    )
    g.add_argument(
        "--repetition-penalty",
        type=float,
        default=1.0,
        help="CTRL-style penalty on tokens already generated (1 = off, 1.2 is usual) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--stop",
        action="append",
        metavar="TEXT",
        help="stop when the text contains TEXT (cut there); repeat for several",
    )
    g.add_argument("--stop-at-eos", action="store_true", help="stop at the end of the line")
    g.add_argument(
        "--seed",
        type=int,
        default=None,
        help="same seed, same text (default: a random seed each time)",
    )
    g.add_argument(
        "--num-samples",
        type=int,
        default=1,
        help="samples made in parallel (seeds seed+i) (default: %(default)s)",
    )
    g.add_argument("--stream", action="store_true", help="print tokens as they are made")
    add_which_flag(g)
    g.add_argument(
        "--device", default="cpu", help="cpu, cuda, cuda:N or auto (default: %(default)s)"
    )
    g.set_defaults(func=cmd_generate)

    ft = sub.add_parser(
        "finetune",
        help="AWD-LSTM fine-tuning: continue a run's best weights with averaged SGD",
        description="Train a run's best model on with averaged SGD from the start, into a new "
        "run folder, until validation stalls (--nonmono of the run) or --epochs.",
    )
    ft.add_argument("run", help="run folder to fine-tune")
    ft.add_argument("--out", help="new run folder (default: RUN-finetune)")
    ft.add_argument("--epochs", type=int, help="at most this many epochs (default: the run's)")
    ft.add_argument("--lr", type=float, help="learning rate (default: the run's)")
    ft.add_argument(
        "--max-minutes",
        type=float,
        help="stop after this many minutes (default: the run's --max-minutes)",
    )
    ft.add_argument("--overwrite", action="store_true", help="replace a run already in --out")
    ft.add_argument("--json", action="store_true", help="print a final JSON summary line")
    ft.add_argument(
        "--quiet", action="store_true", help="no progress bar or per-epoch lines on stderr"
    )
    ft.set_defaults(func=cmd_finetune)

    pr = sub.add_parser(
        "presets",
        help="list the named recipes",
        description="List the named training recipes for `lstmlm train --preset NAME` "
        "(also `lstmlm compare --base-preset NAME`). A preset sets data, model and training "
        "flags; flags given with it override its values. Comparison presets: "
        "`lstmlm compare --list`.",
    )
    pr.set_defaults(func=cmd_presets)

    d = sub.add_parser(
        "download",
        help="download a named corpus, checking its sha256",
        description="Download a named corpus into DATA_DIR/CORPUS/ and check every file's "
        "sha256; files already there with the right checksum are kept, and a failed download "
        "leaves nothing behind. Environment: LSTMLM_MIRROR=URL tries each file first at "
        "URL/CORPUS/FILE (e.g. URL/ptb/train.txt; file:// works too), then at the built-in "
        "URLs.",
    )
    d.add_argument("corpus", help="ptb, ptb-char, wikitext-2 or tinyshakespeare")
    d.add_argument(
        "--data-dir",
        default="data",
        help="where to put it (default: ./data, where `lstmlm train --corpus` looks too)",
    )
    d.add_argument("--quiet", action="store_true", help="no progress bar")
    d.set_defaults(func=cmd_download)

    sv = sub.add_parser(
        "serve",
        help="web page and JSON API to sample from trained models",
        description="Serve a page to play with models, and a JSON API (/docs). Model ids are "
        "the run folders' names.",
    )
    sv.add_argument("runs", nargs="+", metavar="RUN", help="run folders to serve")
    sv.add_argument(
        "--host",
        default="127.0.0.1",
        help="address to listen on (default: %(default)s, loopback: this machine only; any "
        "other address is reachable from other machines, with a warning: the server has no "
        "authentication)",
    )
    sv.add_argument("--port", type=_port, default=8000, help="TCP port (default: %(default)s)")
    add_which_flag(sv)
    sv.add_argument(
        "--precision",
        choices=PRECISIONS,
        default="fp32",
        help="bf16: sample with bfloat16 copies of the weights (about 2.7x faster on CPU; "
        "samples differ slightly from fp32 ones) (default: %(default)s)",
    )
    sv.add_argument(
        "--max-prompt-chars",
        type=int,
        default=2000,
        help="longest prompt, in characters; longer: HTTP 413 (default: %(default)s)",
    )
    sv.add_argument(
        "--max-new-tokens-limit",
        type=int,
        default=500,
        help="largest max_new_tokens a request may ask for; more: HTTP 422 (default: %(default)s)",
    )
    sv.add_argument(
        "--max-score-chars",
        type=int,
        default=20_000,
        help="longest text /v1/score accepts, in characters; longer: HTTP 413 "
        "(default: %(default)s)",
    )
    sv.add_argument(
        "--max-concurrent",
        type=int,
        default=2,
        help="model jobs running at once (default: %(default)s)",
    )
    sv.add_argument(
        "--max-queue",
        type=int,
        default=8,
        help="jobs that may wait for a slot, then HTTP 503 (default: %(default)s)",
    )
    sv.add_argument(
        "--rate",
        type=float,
        default=60,
        help="model requests per minute per client, then HTTP 429 (0 = off) (default: %(default)s)",
    )
    sv.add_argument(
        "--burst", type=int, default=None, help="requests at once per client (default: rate/6)"
    )
    sv.add_argument(
        "--log-level",
        choices=("critical", "error", "warning", "info", "debug"),
        default="info",
        help="server log level (default: %(default)s)",
    )
    sv.set_defaults(func=cmd_serve)

    pl = sub.add_parser(
        "plot",
        help="draw training curves of runs into an image",
        description="Draw the training (lines) and validation (markers) curves of runs, "
        "against epochs and minutes, into one image.",
    )
    pl.add_argument("runs", nargs="+", metavar="RUN", help="run folders")
    pl.add_argument(
        "-o",
        "--output",
        default="curves.png",
        help="image file (.png, .svg, .pdf) (default: %(default)s)",
    )
    pl.add_argument(
        "--metric",
        choices=("auto", "ppl", "bpc"),
        default="auto",
        help="auto: bpc when every run is character-level, else ppl; bpc is for character "
        "runs only, and word and character runs cannot share one plot (default: %(default)s)",
    )
    pl.add_argument("--title", help="figure title (default: none)")
    pl.set_defaults(func=cmd_plot)

    cp = sub.add_parser(
        "compare",
        help="train several variants on one corpus under one budget; write a report",
        description="Train each variant (a comparison preset's, and --variant ones) into "
        "OUT/runs/NAME, then write OUT/report.md, OUT/results.json and OUT/valid_ppl.png. "
        "Config flags apply to every variant; their defaults shown are those used without "
        "a preset.",
    )
    cp.add_argument("--preset", help="comparison preset (see --list)")
    cp.add_argument(
        "--variant",
        action="append",
        metavar="NAME:FLAG=VALUE,...",
        help="an extra variant: a name and config overrides, e.g. gru2:rnn=gru,hidden-size=300 "
        "(tuples join values with '+'); repeat for several",
    )
    cp.add_argument(
        "--base-preset",
        help="run preset the shared config starts from (see `lstmlm presets`) (default: the "
        "comparison preset's, else none)",
    )
    cp.add_argument("--out", help="report folder to write (required unless --list)")
    cp.add_argument("--overwrite", action="store_true", help="retrain variants already in --out")
    cp.add_argument(
        "--reuse", action="store_true", help="keep finished runs of the same config in --out"
    )
    cp.add_argument("--list", action="store_true", help="list the comparison presets and exit")
    cp.add_argument("--json", action="store_true", help="print results.json as one line")
    cp.add_argument("--quiet", action="store_true", help="no progress output")
    add_config_flags(cp)
    cp.set_defaults(func=cmd_compare)
    return p


def _show_library_warnings() -> None:
    """The library logs (never prints); the command shows its warnings as one line each."""
    logger = logging.getLogger("lstmlm")
    if not logger.handlers:
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("lstmlm: warning: %(message)s"))
        logger.addHandler(handler)
        logger.setLevel(logging.WARNING)


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    _show_library_warnings()
    args.argv = list(argv) if argv is not None else sys.argv[1:]  # train --nproc re-runs it
    try:
        return args.func(args)
    except ValueError as e:
        print(f"lstmlm: error: {e}", file=sys.stderr)
        return 2
    except OSError as e:
        where = f"{e.filename}: " if e.filename else ""
        print(f"lstmlm: error: {where}{e.strerror or e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as e:
        from lstmlm.training.interrupt import TrainingInterrupted

        if isinstance(e, TrainingInterrupted):
            print(
                f"lstmlm: interrupted at step {e.step}; saved {e.run_dir / 'last.safetensors'}; "
                f"continue with: lstmlm train --resume {e.run_dir}",
                file=sys.stderr,
            )
        else:
            print("lstmlm: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
