"""The JSON bodies of the API: requests and responses, as pydantic models.

A generate request's sampling fields are `generation.SampleConfig`'s own (names,
defaults, help and bounds), made here from its fields, so the server, the CLI and the
Python API cannot drift apart; `sample_config` turns a request into the SampleConfig it
asks for. `precision` is the server's (`lstmlm serve --precision`), so requests do not
set it; the older names `num_samples` and `stop` are accepted for `num_return_sequences`
and `stop_strings`. A request's `prompt` is one text or a list of them.

`ErrorBody` and `ERROR_RESPONSES` document the `{"error", "status"}` answers in the
OpenAPI schema.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Annotated, Any

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    create_model,
)

from lstmlm.generation.config import SampleConfig, bounds

MAX_STOPS = 8
MAX_STOP_CHARS = 100  # each stop string; checking them runs on every token
MAX_PROMPTS = 16  # prompts in one request
MAX_SEQUENCES = 16  # num_return_sequences and num_beams of one request
SERVER_SIDE = ("precision",)  # not a request's to choose
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
        limits: dict[str, Any] = {k: v for k, v in bounds(f.name).items() if math.isfinite(v)}
        alias = f.metadata.get("alias")
        names: dict[str, Any] = {"validation_alias": AliasChoices(f.name, alias)} if alias else {}
        if alias:
            help_text += f" (also accepted as {alias})"
        if f.name in ("num_return_sequences", "num_beams"):
            limits["le"] = MAX_SEQUENCES
        if f.name == "stop_strings":
            out[f.name] = (
                list[StopString] | None,
                Field(
                    None,
                    max_length=MAX_STOPS,
                    description=f"{help_text} (at most {MAX_STOPS}, {MAX_STOP_CHARS} "
                    "characters each)",
                    **names,
                ),
            )
        elif f.name == "max_new_tokens":
            description = f"{help_text} (default: {f.default}, or the server's cap if lower)"
            out[f.name] = (int | None, Field(None, description=description, **limits))
        elif f.name == "seed":
            description = "same seed, same text (default: random, returned in the response)"
            out[f.name] = (int | None, Field(None, description=description, **limits))
        else:
            field = Field(f.default, description=help_text, **limits, **names)
            out[f.name] = (f.type, field)
    return out


GenerateRequest = create_model(
    "GenerateRequest",
    __config__=ConfigDict(extra="forbid"),
    model=(Text, Field(description="model id (see GET /v1/models)")),
    prompt=(
        Text | list[Text],
        Field(
            "",
            description=f"text to continue, or a list of up to {MAX_PROMPTS} texts (then the "
            "answer has one result per prompt)",
        ),
    ),
    **_sample_fields(),
)


def sample_config(req: BaseModel, max_new_tokens: int, seed: int, precision: str) -> SampleConfig:
    """The SampleConfig a generate request asks for (not validated yet), with the server's
    `max_new_tokens` when the request gives none, the `seed` it will report, and its
    `precision`."""
    options = {k: v for k, v in req.model_dump().items() if k not in ("model", "prompt")}
    options["stop_strings"] = tuple(s for s in (options.get("stop_strings") or ()) if s)
    options.update(max_new_tokens=max_new_tokens, seed=seed, precision=precision)
    return SampleConfig(**options)


class ScoreRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text = Field(description="model id (see GET /v1/models)")
    text: Text = Field(description="text to score; lines end with <eos> as in training")
    return_token_logprobs: bool = Field(
        False, description="add each token's log-probability and surprisal (bits)"
    )


class TokenScore(BaseModel):
    token: str
    text: str = Field(description="what the token adds to the text (joined: the text)")
    logprob: float | None = Field(description="the model's log-probability of it (natural log)")
    bits: float | None = Field(description="its surprisal, -log2 p")


class SequenceOut(BaseModel):
    text: str
    tokens: int
    finish_reason: str = Field(description="length | stop | eos | cancelled")
    token_scores: list[TokenScore] | None = Field(None, description="with output_scores")


class GenerateResponse(BaseModel):
    model: str
    prompt: str
    text: str = Field(description="continuation: prompt + text is the whole passage")
    tokens: int
    finish_reason: str = Field(description="length | stop | eos | cancelled")
    seed: int
    unknown: list[str] = Field(description="prompt tokens not in the vocabulary (read as <unk>)")
    seconds: float
    token_scores: list[TokenScore] | None = Field(
        None, description="with output_scores: the text's tokens (the first sequence's)"
    )
    sequences: list[SequenceOut] = Field(
        description="every sequence (num_return_sequences), best beam or first sample first"
    )


class GenerateListResponse(BaseModel):
    results: list[GenerateResponse] = Field(description="one per prompt, in order")


class ScoreResponse(BaseModel):
    model: str
    tokens: int = Field(description="tokens scored, at the model's level")
    loss: float | None = Field(description="mean NLL per token, in nats")
    ppl: float | None = Field(description="perplexity per token: exp(loss)")
    bpc: float | None = Field(description="bits per character of the text: NLL / (chars ln 2)")
    word_ppl: float | None = Field(
        None, description="perplexity per whitespace-separated word: exp(NLL / words)"
    )
    chars: int = Field(0, description="characters of the text (as normalised)")
    words: int = Field(0, description="whitespace-separated words of the text")
    unknown: int
    token_logprobs: list[TokenScore] | None = Field(None, description="with return_token_logprobs")


class ErrorBody(BaseModel):
    """Every error the server answers with."""

    error: str = Field(description="what went wrong, in words")
    status: int = Field(description="the HTTP status code, repeated")


def _error(why: str) -> dict[str, Any]:
    return {"model": ErrorBody, "description": why}


# The error answers of the model routes, for the OpenAPI schema.
ERROR_RESPONSES: dict[int | str, dict[str, Any]] = {
    404: _error("unknown model id"),
    413: _error("prompt, text or request body over the server's limit"),
    415: _error("the body is not sent as application/json"),
    422: _error("invalid request: a field missing, unknown or out of its bounds"),
    429: _error("rate limit reached (see the Retry-After header)"),
    503: _error("the server is busy: its waiting line is full (see Retry-After)"),
}
