"""How to sample: one frozen dataclass whose fields are the options of every caller.

`SampleConfig` holds the names, defaults and help of the sampling options once: the
Python API (`TextModel.generate(..., top_k=40)`), the CLI's `lstmlm generate` flags
(made from these fields, as `lstmlm train`'s are from the run config) and the server's
request schema all read them from here, so they cannot drift apart. `validate` raises
`FieldError`s named by field (`max_new_tokens must be positive, got 0`); the CLI shows
them with the flag's name.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from lstmlm.config import PRECISIONS, FieldError

# The longest prompt, in characters, that the API (hence the CLI and the server) reads.
MAX_PROMPT_CHARS = 10_000


def check_prompt(prompt: object) -> str:
    """`prompt` if it is a string of at most MAX_PROMPT_CHARS characters, else ValueError."""
    if not isinstance(prompt, str):
        raise ValueError(f"the prompt must be a string, got {type(prompt).__name__}")
    if len(prompt) > MAX_PROMPT_CHARS:
        raise ValueError(
            f"the prompt is longer than {MAX_PROMPT_CHARS:,} characters ({len(prompt):,})"
        )
    return prompt


def _f(default: Any, help: str, **kw: Any) -> Any:
    return field(default=default, metadata={"help": help, **kw})


@dataclass(frozen=True)
class SampleConfig:
    max_new_tokens: int = _f(100, "tokens to generate per sequence", ge=1)
    temperature: float = _f(1.0, "softmax temperature; 0 = greedy (argmax)", ge=0, lt=math.inf)
    top_k: int = _f(0, "sample from the k most likely tokens (0 = all)", ge=0)
    seed: int | None = _f(
        None, "same seed, same text (default: a random seed, reported)", ge=0, lt=2**63
    )
    num_return_sequences: int = _f(
        1,
        "sequences per prompt: samples made in parallel (seeds seed+i), or the best beams",
        ge=1,
        alias="num_samples",
    )
    top_p: float = _f(
        1.0, "nucleus: the smallest set of tokens with mass >= p (1 = off)", gt=0, le=1
    )
    top_k_decay: float = _f(
        1.0,
        "adjusted top-k: k_t = max(1, round(k * decay ** tokens_since_eos)) (1 = fixed k)",
        gt=0,
        le=1,
    )
    repetition_penalty: float = _f(
        1.0,
        "CTRL-style penalty on tokens already generated (1 = off, 1.2 is usual)",
        gt=0,
        lt=math.inf,
    )
    stop_strings: tuple[str, ...] = _f(
        (),
        "stop when the text contains one of these strings (cut there)",
        action="append",
        alias="stop",
    )
    stop_at_eos: bool = _f(False, "stop at the end of the line (the first <eos>)")
    min_new_tokens: int = _f(0, "no <eos> before this many new tokens", ge=0)
    precision: str = _f(
        "fp32",
        "bf16: each new token's recurrent and decoder matmuls in bfloat16, state in fp32 "
        "(about 2.7x faster than fp32 on CPU at 2x650; samples differ slightly from fp32 ones)",
        choices=PRECISIONS,
    )

    # Added later: after the older fields, which may be given by position.
    do_sample: bool = _f(True, "sample; --no-do-sample / false = greedy (argmax), as in HF")
    min_p: float = _f(
        0.0, "drop tokens less likely than min_p times the most likely one (0 = off)", ge=0, le=1
    )
    typical_p: float = _f(
        1.0,
        "locally typical sampling: the tokens whose surprisal is nearest the entropy, "
        "up to mass p (1 = off)",
        gt=0,
        le=1,
    )
    no_repeat_ngram_size: int = _f(
        0, "no n-gram of this size occurs twice (prompt included; 0 = off)", ge=0
    )
    num_beams: int = _f(
        1,
        "beam search with this many beams (1 = off; deterministic: the sampling options "
        "and the seed are not used)",
        ge=1,
    )
    length_penalty: float = _f(
        1.0,
        "beam search: a finished beam scores sum(log p) / length ** length_penalty",
        gt=-math.inf,
        lt=math.inf,
    )
    early_stopping: bool = _f(
        False,
        "beam search: stop once num_beams beams have finished (else: once no live beam "
        "can beat them, at its current length)",
    )
    output_scores: bool = _f(
        False, "return each new token with the model's log-probability of it (and bits)"
    )

    @property
    def greedy(self) -> bool:
        """Argmax at each step: do_sample off or temperature 0."""
        return not self.do_sample or self.temperature == 0

    def validate(self) -> SampleConfig:
        """FieldError for a value of the wrong type or outside its field's bounds."""
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            kind = {int: int, float: float}.get(_base_type(f.type))
            if kind is not None and not (value is None and "None" in str(f.type)):
                _check_type(f.name, value, kind)
                _check_bounds(f.name, value, f.metadata)
        if self.min_new_tokens > self.max_new_tokens:
            raise FieldError(
                "min_new_tokens",
                f"must be in [0, max_new_tokens {self.max_new_tokens}], got {self.min_new_tokens}",
            )
        if not isinstance(self.stop_strings, tuple | list) or any(
            not isinstance(s, str) or not s for s in self.stop_strings
        ):
            raise FieldError("stop_strings", "takes non-empty strings")
        for name in ("do_sample", "early_stopping", "stop_at_eos", "output_scores"):
            if not isinstance(getattr(self, name), bool):
                raise FieldError(name, f"must be true or false, got {getattr(self, name)!r}")
        if self.num_beams > 1 and self.num_return_sequences > self.num_beams:
            raise FieldError(
                "num_return_sequences",
                f"must be at most num_beams {self.num_beams} in beam search, "
                f"got {self.num_return_sequences}",
            )
        if self.precision not in PRECISIONS:
            raise FieldError("precision", f"must be fp32 or bf16, got {self.precision!r}")
        return self


# Older names that still work (the API's options, the CLI's flags, the server's fields).
ALIASES = {
    f.metadata["alias"]: f.name for f in dataclasses.fields(SampleConfig) if "alias" in f.metadata
}


def resolve_aliases(options: Mapping[str, Any]) -> dict[str, Any]:
    """`options` with every alias (num_samples, stop) under its field's name; ValueError
    when both names are given."""
    out = dict(options)
    for old, new in ALIASES.items():
        if old in out:
            if new in out:
                raise ValueError(f"give {new} or its alias {old}, not both")
            out[new] = out.pop(old)
    return out


BOUNDS = ("ge", "gt", "le", "lt")  # field metadata: the bounds of a number


def bounds(name: str) -> dict[str, float]:
    """The bounds of field `name` ({"ge": 0, ...}), for callers that check them too (the
    server's request schema)."""
    meta = next(f.metadata for f in dataclasses.fields(SampleConfig) if f.name == name)
    return {k: meta[k] for k in BOUNDS if k in meta}


def _base_type(tp: object) -> Any:
    """int for "int" and "int | None", float for "float"; the type itself otherwise."""
    text = str(tp)
    return {"int": int, "int | None": int, "float": float}.get(text, tp)


def _check_bounds(name: str, value: float, meta: Mapping[str, Any]) -> None:
    ge, gt, le, lt = (meta.get(k) for k in BOUNDS)
    ok = (
        (ge is None or value >= ge)
        and (gt is None or value > gt)
        and (le is None or value <= le)
        and (lt is None or value < lt)
    )
    if ok:
        return
    low = f"[{_show(ge)}" if ge is not None else f"({_show(gt)}" if gt is not None else None
    high = f"{_show(le)}]" if le is not None else f"{_show(lt)})" if lt != math.inf else None
    if low and high and (le is not None or lt is not None):
        rule = f"in {low}, {high}"
    elif ge == 1 and isinstance(value, int):
        rule = "positive"
    else:
        rule = f">= {ge}" if ge is not None else f"> {gt}"
    raise FieldError(name, f"must be {rule}, got {value}")


def _show(bound: float | None) -> str:
    return "2**63" if bound == 2**63 else str(bound)


def _check_type(name: str, value: object, kind: type) -> None:
    """FieldError unless `value` is an int (kind int) or a real number (kind float)."""
    ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
    if not ok or isinstance(value, bool):
        what = "an integer" if kind is int else "a number"
        raise FieldError(name, f"must be {what}, got {value!r}")
