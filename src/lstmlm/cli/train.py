"""`lstmlm train`: train a model into a run folder, resume one, or run several processes."""

from __future__ import annotations

import argparse
import json
import logging
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lstmlm.cli.flags import add_config_flags, config_overrides, level_asked
from lstmlm.cli.progress import NUMBERS_HELP, ProgressReporter, format_summary
from lstmlm.config import RunConfig, apply, build, replace, split_sections
from lstmlm.config.files import config_text, read_config_file

if TYPE_CHECKING:
    from lstmlm.training.tb import Tee


def add_parser(sub: Any) -> None:
    t = sub.add_parser(
        "train",
        help="train a model into a run folder",
        description="Train a language model. Flags override the preset's values; the defaults "
        "shown are those used without --preset. The final valid and test lines (and "
        "summary.json) give ppl, bpc and word ppl (below).",
        epilog=NUMBERS_HELP,
    )
    t.add_argument(
        "--preset",
        help="named recipe (see `lstmlm presets`) (default: none: the defaults shown below)",
    )
    t.add_argument(
        "--config",
        metavar="FILE",
        help="start from a config file (YAML or JSON, as --print-config writes it, or a run's "
        "RUN/config.json); flags override it (default: none)",
    )
    t.add_argument(
        "--print-config",
        action="store_true",
        help="print the full config these flags make, as YAML that --config reads, and exit",
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
        help="also log to TensorBoard, in DIR; without DIR the same as --report-to "
        "tensorboard (RUN/tensorboard); needs tensorboard (default: off)",
    )
    add_config_flags(t)
    t.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from lstmlm.training import distributed, resume_run, start_run
    from lstmlm.training.allocator import keep_freed_memory

    if args.resume and args.out and Path(args.out).resolve() != Path(args.resume).resolve():
        raise ValueError("--resume continues RUN in its own folder; drop --out")
    if args.resume and (args.config or args.print_config):
        raise ValueError("--resume continues a run with its own config; drop --config")
    if args.tensorboard == "":  # --tensorboard without DIR: --report-to tensorboard
        named = vars(args).get("cfg.report_to", "none")
        setattr(args, "cfg.report_to", f"{named},tensorboard")
    if args.print_config:
        cfg, level = run_config(args)
        print(config_text(resolved(cfg, level)), end="")
        return 0
    if args.nproc is not None and args.nproc != 1:
        return launch_train(args)
    keep_freed_memory()  # no page faults for buffers freed and re-made every step
    main_rank = distributed.env_rank() == 0  # under torchrun only rank 0 reports and prints
    reporter: ProgressReporter | Tee = ProgressReporter(quiet=args.quiet or not main_rank)
    if args.tensorboard and main_rank:  # --tensorboard DIR (without DIR: --report-to)
        from lstmlm.training.tb import TensorBoardSink, tee

        reporter = tee(reporter, TensorBoardSink(args.tensorboard))
    if args.resume:
        o = split_sections(config_overrides(args))
        if o["data"] or o["model"] or args.preset:
            raise ValueError(
                "--resume continues a run with its own config; drop the data/model "
                "flags and --preset"
            )
        resume_run(args.resume, o["train"], on_event=reporter if main_rank else None)
        run_dir = Path(args.resume)
    else:
        if not args.out:
            raise ValueError("give --out RUN_DIR (or --resume RUN_DIR)")
        cfg, level = run_config(args)
        start_run(
            cfg,
            args.out,
            overwrite=args.overwrite,
            level=level,
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
        print(format_summary(summary, "valid"))
        print(format_summary(summary, "test"))
        print(f"run saved in {run_dir}")
    return 0


def run_config(args: argparse.Namespace) -> tuple[RunConfig, str | None]:
    """The config to train (a --config file's or a preset's, with the flags on top),
    validated, and the token level asked for (None: the named corpus's own)."""
    overrides = config_overrides(args)
    if not args.config:
        cfg = build(args.preset, overrides)
        return cfg, level_asked(args, cfg)
    if args.preset:
        raise ValueError("a --config file names its own preset (preset: NAME); drop --preset")
    base, fields = read_config_file(args.config)
    cfg = apply(base, overrides).validate()
    given = "level" in fields or "level" in overrides or cfg.data.corpus is None
    return cfg, cfg.data.level if given else None


def resolved(cfg: RunConfig, level: str | None) -> RunConfig:
    """`cfg` with the token level it trains at written in (a named corpus's own when
    none was asked for), so that the printed config trains the same run."""
    if level is None and cfg.data.corpus is not None:
        from lstmlm.data.corpora import get_spec

        level = get_spec(cfg.data.corpus).level
    return replace(cfg, data=replace(cfg.data, level=level or cfg.data.level))


def launch_train(args: argparse.Namespace) -> int:
    """`lstmlm train --nproc N ...`: run the same command in N processes through torchrun."""
    from lstmlm.training import check_model, check_resume, check_start, distributed

    if args.nproc < 1:
        raise ValueError(f"--nproc must be at least 1, got {args.nproc}")
    if distributed.env_world_size() > 1:
        raise ValueError("--nproc starts its own processes; drop it when running under torchrun")
    # Check here, so that a mistake is one line rather than a report from every process.
    if args.resume:
        check_resume(args.resume, args.nproc, split_sections(config_overrides(args))["train"])
    elif not args.out:
        raise ValueError("give --out RUN_DIR (or --resume RUN_DIR)")
    else:
        cfg, level = run_config(args)
        data = check_start(cfg, Path(args.out), args.overwrite, level, args.nproc)
        check_model(cfg, len(data.vocab))
    cores = os.cpu_count() or 1
    if args.nproc > cores:
        logging.getLogger("lstmlm").warning(
            "--nproc %d is more than this machine's %d CPU cores: the processes will share "
            "them and train slower than fewer would",
            args.nproc,
            cores,
        )
    return distributed.launch(args.nproc, without_option(args.argv, "--nproc"))


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
