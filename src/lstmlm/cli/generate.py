"""`lstmlm generate`: continue a prompt with text sampled from a run's model.

The sampling flags are made from `generation.SampleConfig`'s fields (the same names,
defaults and help as the Python API's options and the server's request fields).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from lstmlm.cli.flags import add_dataclass_flags, add_device_flag, add_which_flag, given
from lstmlm.generation.config import MAX_PROMPT_CHARS, SampleConfig, check_prompt

ESCAPES = {"\\n": "\n", "\\t": "\t", "\\\\": "\\"}


def add_parser(sub: Any) -> None:
    g = sub.add_parser(
        "generate",
        help="sample text from a trained model",
        description="Continue a prompt with text sampled from a trained model.",
    )
    g.add_argument("run", help="run folder")
    g.add_argument(
        "--prompt",
        action="append",
        help=f"text to continue (words or characters), at most {MAX_PROMPT_CHARS:,} characters; "
        "repeat for several prompts, each continued in turn (default: none: start from the "
        "beginning of a line)",
    )
    stop_help = {"stop_strings": "; repeat for several; \\n and \\t are a newline and a tab"}
    add_dataclass_flags(
        g.add_argument_group("sampling options"), SampleConfig, "sample", more_help=stop_help
    )
    g.add_argument("--stream", action="store_true", help="print tokens as they are made")
    add_which_flag(g)
    add_device_flag(g)
    g.set_defaults(func=run)


def unescape(text: str) -> str:
    """`\\n`, `\\t` and `\\\\` typed in a flag's value as a newline, a tab and a backslash."""
    out, i = [], 0
    while i < len(text):
        pair = text[i : i + 2]
        if pair in ESCAPES:
            out.append(ESCAPES[pair])
            i += 2
        else:
            out.append(text[i])
            i += 1
    return "".join(out)


def run(args: argparse.Namespace) -> int:
    from lstmlm.api import load
    from lstmlm.generation import Completion, draw_seed, joiner

    prompts = args.prompt or [""]
    for prompt in prompts:
        check_prompt(prompt)  # before the model is loaded
    options = given(args, "sample")
    options["stop_strings"] = tuple(unescape(s) for s in options.get("stop_strings", ()))
    chosen = "seed" not in options
    if chosen:
        options["seed"] = draw_seed()
    cfg = SampleConfig(**options).validate()
    if args.stream and (cfg.num_return_sequences != 1 or len(prompts) > 1):
        raise ValueError("--stream prints one sequence of one prompt")
    lm = load(args.run, args.which, args.device)
    for prompt in prompts:
        warn_unknown(lm.unknown_tokens(prompt))
    if chosen:
        print(f"lstmlm: seed {cfg.seed} (--seed {cfg.seed} makes this text again)", file=sys.stderr)
    if args.stream:
        prompt = prompts[0]
        print(prompt, end="", flush=True)
        first, streamed = True, Completion()
        for piece in lm.stream(prompt, cfg, completion=streamed):
            print((joiner(prompt, lm.level, piece) if first else "") + piece, end="", flush=True)
            first = False
        print()
        if cfg.output_scores:
            print_scores(streamed.token_scores)
        return 0
    for n, prompt in enumerate(prompts):
        if len(prompts) > 1:
            print(f"=== prompt {n + 1} ===")
        done = lm.complete(prompt, cfg)
        for i, c in enumerate(done):
            if len(done) > 1:
                print(f"--- sample {i + 1} ---")
            print(prompt + joiner(prompt, lm.level, c.text) + c.text)
            if cfg.output_scores:
                print_scores(c.token_scores)
    return 0


def warn_unknown(unknown: list[str]) -> None:
    if unknown:
        shown = ", ".join(sorted(set(unknown))[:10])
        print(
            f"lstmlm: warning: {len(unknown)} prompt token(s) not in the vocabulary, "
            f"read as <unk>: {shown}",
            file=sys.stderr,
        )


def print_scores(scores: list[dict[str, Any]]) -> None:
    """One line per token: its log-probability, its surprisal in bits, the token."""
    print("logprob\tbits\ttoken")
    for s in scores:
        print(f"{s['logprob']:.4f}\t{s['bits']:.3f}\t{s['token']}")
