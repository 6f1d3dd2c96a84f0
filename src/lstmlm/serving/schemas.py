"""The JSON bodies of the API: requests and responses, as pydantic models.

A generate request's sampling fields are `generation.SampleConfig`'s own (names,
defaults, help and bounds), made here from its fields, so the server, the CLI and the
Python API cannot drift apart; `sample_config` turns a request into the SampleConfig it
asks for. `precision` is the server's (`lstmlm serve --precision`) and `num_samples` is
one, so requests set neither.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, create_model

from lstmlm.generation.config import SampleConfig, bounds

MAX_STOPS = 8
MAX_STOP_CHARS = 100  # each stop string; checking them runs on every token
SERVER_SIDE = ("precision", "num_samples")  # not a request's to choose
DEFAULT_NEW_TOKENS = SampleConfig().max_new_tokens


def _encodable(text: str) -> str:
    """Text that UTF-8 can carry: JSON's \\ud800-style escapes can smuggle in lone
    surrogates, which no tokenizer or response can handle."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as e:
        raise ValueError(f"not valid Unicode (a lone surrogate at character {e.start})") from None
    return text


Text = Annotated[str, AfterValidator(_encodable)]
StopString = Annotated[
    str, StringConstraints(max_length=MAX_STOP_CHARS), AfterValidator(_encodable)
]


def _sample_fields() -> dict[str, Any]:
    """SampleConfig's fields as pydantic fields (the request's sampling options)."""
    out: dict[str, Any] = {}
    for f in dataclasses.fields(SampleConfig):
        if f.name in SERVER_SIDE:
            continue
        help_text = f.metadata.get("help", "")
        limits: dict[str, Any] = {k: v for k, v in bounds(f.name).items() if v != math.inf}
        if f.name == "stop":
            out[f.name] = (
                list[StopString] | None,
                Field(
                    None,
                    max_length=MAX_STOPS,
                    description=f"{help_text} (at most {MAX_STOPS}, {MAX_STOP_CHARS} "
                    "characters each)",
                ),
            )
        elif f.name == "max_new_tokens":
            description = f"{help_text} (default: {f.default}, or the server's cap if lower)"
            out[f.name] = (int | None, Field(None, description=description, **limits))
        elif f.name == "seed":
            description = "same seed, same text (default: random, returned in the response)"
            out[f.name] = (int | None, Field(None, description=description, **limits))
        else:
            out[f.name] = (f.type, Field(f.default, description=help_text, **limits))
    return out


GenerateRequest = create_model(
    "GenerateRequest",
    __config__=ConfigDict(extra="forbid"),
    model=(Text, Field(description="model id (see GET /v1/models)")),
    prompt=(Text, Field("", description="text to continue")),
    **_sample_fields(),
)


def sample_config(req: BaseModel, max_new_tokens: int, seed: int, precision: str) -> SampleConfig:
    """The SampleConfig a generate request asks for (not validated yet), with the server's
    `max_new_tokens` when the request gives none, the `seed` it will report, and its
    `precision`."""
    options = {k: v for k, v in req.model_dump().items() if k not in ("model", "prompt")}
    options["stop"] = tuple(s for s in (options.get("stop") or ()) if s)
    options.update(max_new_tokens=max_new_tokens, seed=seed, precision=precision)
    return SampleConfig(**options)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text = Field(description="model id (see GET /v1/models)")
    text: Text = Field(description="text to score; lines end with <eos> as in training")


class GenerateResponse(BaseModel):
    model: str
    prompt: str
    text: str = Field(description="continuation: prompt + text is the whole passage")
    tokens: int
    finish_reason: str = Field(description="length | stop | eos | cancelled")
    seed: int
    unknown: list[str] = Field(description="prompt tokens not in the vocabulary (read as <unk>)")
    seconds: float


class ScoreResponse(BaseModel):
    model: str
    tokens: int
    loss: float | None
    ppl: float | None
    bpc: float | None
    unknown: int
