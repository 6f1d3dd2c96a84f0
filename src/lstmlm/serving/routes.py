"""The routes of the server, over one `Server` that holds its models and limits.

Generation and scoring go through the models' `api.TextModel` (`stream`, `score`): the
server owns no sampling, streaming or scoring of its own. Model work runs in a thread
pool of `max_concurrent` threads behind an admission gate (a bounded waiting line) and a
per-client-IP token bucket, so the event loop stays free to answer.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import threading
import time
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Query, Request
from fastapi.responses import FileResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles

from lstmlm.config import FieldError
from lstmlm.generation import Completion, SampleConfig, draw_seed, joiner
from lstmlm.serving.errors import ApiError
from lstmlm.serving.limits import Admission, Busy, RateLimiter, ServerLimits
from lstmlm.serving.models import ServedModel, finite
from lstmlm.serving.schemas import (
    DEFAULT_NEW_TOKENS,
    ERROR_RESPONSES,
    MAX_PROMPTS,
    GenerateListResponse,
    GenerateRequest,
    GenerateResponse,
    ScoreRequest,
    ScoreResponse,
    SequenceOut,
    sample_config,
)
from lstmlm.storage.curves import choose_metric, read_curves

STATIC_DIR = Path(__file__).parent / "static"
DISCONNECT_POLL_S = 0.25  # how often POST /v1/generate checks that its client is still there


@dataclass
class Server:
    """What every route shares: the models, the limits and the thread pool's gates."""

    models: dict[str, ServedModel]
    limits: ServerLimits
    precision: str
    pool: ThreadPoolExecutor
    admission: Admission
    rater: RateLimiter

    def model(self, mid: str) -> ServedModel:
        m = self.models.get(mid)
        if m is None:
            raise ApiError(404, f"unknown model {mid!r}; GET /v1/models lists them")
        return m

    async def rate_limited(self, request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        wait = self.rater.allow(client)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit: {self.limits.rate:g} requests per minute; retry in {wait:.1f} s",
                {"Retry-After": str(math.ceil(wait))},
            )

    async def admit(self) -> None:
        try:
            await self.admission.acquire()
        except Busy as e:
            raise ApiError(503, str(e), {"Retry-After": "5"}) from None

    def prepare(self, req: Any) -> tuple[ServedModel, SampleConfig]:
        """The model and the validated SampleConfig of a generate request (413 for a
        prompt over the limit, 422 for a value the sampler refuses)."""
        m = self.model(req.model)
        cap = self.limits.max_prompt_chars
        prompts = prompt_list(req)
        if len(prompts) > MAX_PROMPTS:
            raise ApiError(422, f"{len(prompts)} prompts; a request takes at most {MAX_PROMPTS}")
        for p in prompts:
            if len(p) > cap:
                raise ApiError(
                    413, f"prompt has {len(p):,} characters; this server accepts at most {cap:,}"
                )
        n = req.max_new_tokens
        if n is None:
            n = min(DEFAULT_NEW_TOKENS, self.limits.max_new_tokens_limit)
        if n > self.limits.max_new_tokens_limit:
            raise ApiError(
                422,
                f"max_new_tokens is {n}; this server allows at most "
                f"{self.limits.max_new_tokens_limit}",
            )
        seed = req.seed if req.seed is not None else draw_seed()
        try:
            cfg = sample_config(req, n, seed, self.precision).validate()
        except FieldError as e:
            raise ApiError(422, f"invalid request: {e}") from None
        return m, cfg

    def unknown(self, m: ServedModel, prompt: str) -> list[str]:
        return sorted(set(m.text.unknown_tokens(prompt)))


def add_page_routes(app: FastAPI, srv: Server) -> None:
    """The page, its static files, the model cards and their training curves."""

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/v1/models", summary="The models this server holds, with their cards")
    async def list_models() -> dict[str, Any]:
        sampling = GenerateRequest.model_fields.keys() - {"model", "prompt"}
        return {
            "models": [m.card for m in srv.models.values()],
            "sampling": sorted(sampling),
            "precision": srv.precision,
            "limits": {
                "max_prompt_chars": srv.limits.max_prompt_chars,
                "max_new_tokens": srv.limits.max_new_tokens_limit,
                "max_score_chars": srv.limits.max_score_chars,
            },
        }

    @app.get(
        "/v1/models/{model_id}/curves",
        summary="Training curve points of a model",
        dependencies=[Depends(srv.rate_limited)],
    )
    async def curves(model_id: str, max_points: Annotated[int, Query(ge=2, le=5000)] = 600) -> Any:
        # Reading metrics.jsonl is work like a generation: the same rate limit and the
        # same admission (slots, queue, 503), in the worker pool, off the event loop.
        m = srv.model(model_id)
        await srv.admit()
        try:
            loop = asyncio.get_running_loop()
            c = await loop.run_in_executor(srv.pool, read_curves, m.run_dir, max_points)
        finally:
            srv.admission.release()
        return finite(
            {
                "model": model_id,
                "level": c.level,
                "metric": choose_metric([c.level]),
                "train": [dataclasses.asdict(p) for p in c.train],
                "valid": [dataclasses.asdict(p) for p in c.valid],
            }
        )


def prompt_list(req: Any) -> list[str]:
    return req.prompt if isinstance(req.prompt, list) else [req.prompt]


def _with_joiner(prompt: str, level: str, c: Completion) -> SequenceOut:
    """A sequence as the API shows it: the space a word-level prompt needs before its
    continuation is part of the text (and of its first token's text)."""
    sep = joiner(prompt, level, c.text)
    scores = [dict(s) for s in c.token_scores]
    if scores and sep:
        scores[0]["text"] = sep + scores[0]["text"]
    return SequenceOut(
        text=sep + c.text,
        tokens=c.tokens,
        finish_reason=c.finish_reason,
        token_scores=finite(scores) if scores else None,
    )


def add_generate_routes(app: FastAPI, srv: Server) -> None:
    """POST /v1/generate (one JSON answer) and POST /v1/stream, its streamed form (SSE)."""
    limited = [Depends(srv.rate_limited)]

    @app.post(
        "/v1/generate",
        summary="Sample continuations of one prompt or of a list of them",
        response_model=GenerateResponse | GenerateListResponse,
        dependencies=limited,
        responses=ERROR_RESPONSES,
    )
    async def generate(req: GenerateRequest, request: Request) -> Any:
        m, cfg = srv.prepare(req)
        prompts = prompt_list(req)
        await srv.admit()
        cancel = threading.Event()
        results: list[tuple[list[Completion], float]] = []
        try:

            def work() -> None:
                for p in prompts:
                    t0 = time.monotonic()
                    done = m.text.complete(p, cfg, cancel=cancel)
                    results.append((done, time.monotonic() - t0))

            future = asyncio.get_running_loop().run_in_executor(srv.pool, work)
            # A client that hangs up stops its sampling (and frees its slot) within a poll.
            while not (await asyncio.wait({future}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():
                    cancel.set()
            await future
        finally:
            cancel.set()
            srv.admission.release()
        answers = []
        for p, (done, seconds) in zip(prompts, results, strict=True):
            seqs = [_with_joiner(p, m.text.level, c) for c in done]
            answers.append(
                GenerateResponse(
                    model=m.id,
                    prompt=p,
                    text=seqs[0].text,
                    tokens=seqs[0].tokens,
                    finish_reason=seqs[0].finish_reason,
                    seed=cfg.seed or 0,  # prepare gave it one
                    unknown=srv.unknown(m, p),
                    seconds=round(seconds, 4),
                    token_scores=seqs[0].token_scores,
                    sequences=seqs,
                )
            )
        if isinstance(req.prompt, list):
            return GenerateListResponse(results=answers)
        return answers[0]

    @app.post(
        "/v1/stream",
        summary="Sample one continuation, streamed (SSE)",
        description=(
            "Server-sent events: `start` {model, seed, unknown}, then `token` {text} "
            "pieces, then `done` {text, tokens, finish_reason, seconds, and token_scores "
            "with output_scores} (or `error` {error}). One prompt, one sequence; beam "
            "search sends its text as one piece at the end."
        ),
        dependencies=limited,
        response_class=StreamingResponse,
        responses={200: {"content": {"text/event-stream": {}}}, **ERROR_RESPONSES},
    )
    async def stream(req: GenerateRequest) -> StreamingResponse:
        return await _stream(srv, req)


async def _stream(srv: Server, req: Any) -> StreamingResponse:
    """One continuation as server-sent events, sampled in the pool; a client that leaves
    stops the sampling, and its slot is held until the thread is done."""
    m, cfg = srv.prepare(req)
    if isinstance(req.prompt, list) or cfg.num_return_sequences != 1:
        raise ApiError(
            422, "a stream makes one sequence of one prompt; use POST /v1/generate for more"
        )
    await srv.admit()
    loop = asyncio.get_running_loop()
    queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
    cancel = threading.Event()

    def put(kind: str, data: dict[str, Any]) -> None:
        try:
            loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
        except RuntimeError:  # the loop is gone (server shutting down)
            cancel.set()

    def work() -> None:
        done, t0, sep = Completion(), time.monotonic(), None
        try:
            for piece in m.text.stream(req.prompt, cfg, cancel=cancel, completion=done):
                if sep is None:  # the space between a word-level prompt and its continuation
                    sep = joiner(req.prompt, m.text.level, piece)
                    piece = sep + piece
                put("token", {"text": piece})
            seq = _with_joiner(req.prompt, m.text.level, done)
            seconds = round(time.monotonic() - t0, 4)
            end = {**seq.model_dump(exclude_none=True), "seconds": seconds}
            put("done", end)
        except Exception as e:  # reported to the client, never raised into the pool
            put("error", {"error": f"generation failed: {e}"})

    future = loop.run_in_executor(srv.pool, work)
    future.add_done_callback(lambda _: srv.admission.release())
    start = {"model": m.id, "seed": cfg.seed, "unknown": srv.unknown(m, req.prompt)}

    async def events() -> AsyncIterator[str]:
        try:
            yield _sse("start", start)
            while True:
                kind, data = await queue.get()
                yield _sse(kind, data)
                if kind in ("done", "error"):
                    break
        finally:
            cancel.set()  # the client left, or we are done: stop sampling

    return StreamingResponse(
        events(),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def add_score_route(app: FastAPI, srv: Server) -> None:
    @app.post(
        "/v1/score",
        summary="Perplexity, bits per character and per-word perplexity of a text",
        response_model=ScoreResponse,
        dependencies=[Depends(srv.rate_limited)],
        responses=ERROR_RESPONSES,
    )
    async def score(req: ScoreRequest) -> ScoreResponse:
        m = srv.model(req.model)
        if len(req.text) > srv.limits.max_score_chars:
            raise ApiError(
                413,
                f"text has {len(req.text):,} characters; this server scores at most "
                f"{srv.limits.max_score_chars:,}",
            )
        if not m.text.tokens(req.text):
            raise ApiError(422, "text has no tokens to score")
        await srv.admit()
        try:
            s = await asyncio.get_running_loop().run_in_executor(
                srv.pool, m.text.score, req.text, req.return_token_logprobs
            )
        finally:
            srv.admission.release()
        return ScoreResponse(
            model=m.id,
            tokens=s["tokens"],
            loss=finite(s["loss"]),
            ppl=finite(s["ppl"]),
            bpc=finite(s["bpc"]),
            word_ppl=finite(s["word_ppl"]),
            chars=s["chars"],
            words=s["words"],
            unknown=s["unknown"],
            token_logprobs=finite(s.get("token_logprobs")),
        )


def _drawn(seed: int | None) -> int:
    """The request's seed: `Server.prepare` draws one when the request has none."""
    assert seed is not None
    return seed


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(finite(data))}\n\n"
