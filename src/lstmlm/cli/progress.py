"""Progress on stderr: trainer events as a tqdm bar and one line per epoch; evaluation
and download bars."""

from __future__ import annotations

import math
import sys
from typing import Any

from lstmlm.data.dataset import UNK_WARN_SHARE

# The epilog of `train`, `evaluate` and `compare --help`: what their numbers mean.
NUMBERS_HELP = (
    "Numbers: ppl is perplexity per token, a token being the run's level (a word, a "
    "character, a bpe/unigram piece): it compares runs of one level and vocabulary only. "
    "bpc is bits per character of the raw text, total NLL / (characters x ln 2), and word "
    "ppl the perplexity per whitespace-separated word, exp(total NLL / words), where total "
    "NLL = mean NLL per scored token x the text's tokens: these two compare runs of any "
    "level on one text. <unk> is the share of unknown tokens (word level): the spelling of "
    "an unknown word costs nothing in bpc, so a word run with many scores better than it is."
)


def format_result(
    split: str,
    ppl: float,
    bpc: float | None = None,
    word_ppl: float | None = None,
    unk: float | None = None,
) -> str:
    """One line of results: the perplexity per token, then the raw text's bits per
    character and per-word perplexity, and the share of `<unk>` among the tokens (`unk`,
    given where it hides cost: a word run's bpc leaves out spelling its unknown words)."""
    line = f"{split:5s} ppl {ppl:9.2f}"
    if bpc is not None:
        line += f"   bpc {bpc:.4f}"
    if word_ppl is not None:
        line += f"   word ppl {word_ppl:.2f}"
    if unk is not None:
        line += f"   <unk> {unk:.2%}"
    return line


def format_summary(summary: dict[str, Any], split: str) -> str:
    """`format_result` of a split of a run's summary.json; the `<unk>` share shown at the
    word level, or at any level where there is some."""
    unk = summary.get(f"{split}_unk_share")
    if unk is not None and summary.get("level") != "word" and not unk:
        unk = None
    return format_result(
        split,
        summary[f"{split}_ppl"],
        summary.get(f"{split}_bpc"),
        summary.get(f"{split}_word_ppl"),
        unk,
    )


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
        self.budget: tuple[int, float | None] = (0, None)  # (epoch bar total, --max-minutes)
        self.train_label = "train ppl"  # "sampled train ppl" under --sampled-softmax

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

    def _unk_lines(self, d: dict[str, Any]) -> None:
        """The share of <unk> in train and valid; a warning (even when quiet) above 5%."""
        if "unk_valid" not in d:
            return
        if not self.quiet:
            print(
                f"vocabulary {d['vocab_size']:,} tokens; <unk> is {d['unk_train']:.1%} of "
                f"train and {d['unk_valid']:.1%} of valid",
                file=sys.stderr,
            )
        if d["unk_valid"] > UNK_WARN_SHARE:
            print(
                f"warning: {d['unk_valid']:.1%} of the valid tokens are <unk> (over "
                f"{UNK_WARN_SHARE:.0%}); --level bpe has no unknown tokens",
                file=sys.stderr,
            )

    def __call__(self, kind: str, d: dict[str, Any]) -> None:
        if kind == "start":
            self.step = 0  # a new run, or a fine-tuning one, starts counting afresh
            samples = d.get("config", {}).get("model", {}).get("sampled_softmax", 0)
            self.train_label = "sampled train ppl" if samples else "train ppl"
            if not self.quiet:
                print(
                    f"training on {d['source']}: {d['train_tokens']:,} tokens, vocab "
                    f"{d['vocab_size']:,}, {d['params']:,} parameters",
                    file=sys.stderr,
                )
                if samples:
                    print(
                        f"--sampled-softmax {samples}: the train loss and ppl shown are the "
                        "sampled softmax's (below the model's own); valid and test are exact",
                        file=sys.stderr,
                    )
            self._unk_lines(d)
        elif kind == "epoch_start":
            total = d["steps"]
            if d.get("max_steps") is not None:  # the run stops within this epoch
                total = min(total, d["done"] + max(d["max_steps"] - d.get("step", 0), 0))
            self.budget = (total, d.get("max_minutes"))
            self._new_bar(total=total, initial=d["done"], desc=f"epoch {d['epoch']}", unit="step")
            step = d.get("step", self.step)
            self._anchor = None if step is None else (d["done"], step)
        elif kind == "progress" and self.bar is not None:
            self.bar.n = d["done"]
            self._anchor = (d["done"], d["step"])
            self._fit_time_budget(d)
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
                    f"epoch {d['epoch']:3d} | {self.train_label} {d['train_ppl']:8.2f} | valid ppl "
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

    def _fit_time_budget(self, d: dict[str, Any]) -> None:
        """With --max-minutes, end the bar (and its ETA) at the step the budget reaches, at
        the run's pace so far."""
        total, max_minutes = self.budget
        if max_minutes is None or not d.get("step") or not d.get("elapsed"):
            return
        left = max(max_minutes * 60 - d["elapsed"], 0.0) / (d["elapsed"] / d["step"])
        self.bar.total = min(total, d["done"] + math.ceil(left))

    def eval_progress(self, done: int, total: int) -> None:
        """An evaluation pass at position `done` of `total`; a new pass (a cache search,
        then the evaluation) gets a new bar."""
        if self.quiet:
            return
        if self.bar is not None and (done < self.bar.n or total != self.bar.total):
            self.close()
        if self.bar is None:
            self._new_bar(total=total, desc="evaluating", bar_format=self.EVAL_FORMAT, leave=False)
        self.bar.n = done
        self.bar.refresh()

    def bytes_progress(self, done: int, total: int | None, desc: str = "downloading") -> None:
        if self.quiet:
            return
        if self.bar is None or (total and self.bar.total != total) or self.bar.desc != desc:
            self._new_bar(total=total, desc=desc, unit="B", unit_scale=True)
        self.bar.n = done
        self.bar.refresh()
