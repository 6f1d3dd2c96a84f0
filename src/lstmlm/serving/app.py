"""A small web server: a page to sample from trained models, and a JSON API beside it.

    GET  /                      the page (static HTML + JS + CSS from lstmlm/web/static)
    GET  /v1/models             model cards (level, size, valid/test scores, training time)
    GET  /v1/models/{id}/curves training curve points from RUN/metrics.jsonl
    POST /v1/generate           one continuation, as JSON
    POST /v1/stream             the same, streamed as server-sent events
    GET  /v1/generate/stream    the same with query parameters (for EventSource)
    POST /v1/score              perplexity (and bpc) of a text under a model
    GET  /docs                  OpenAPI documentation

Models are addressed by id (the run folder's name), never by a path from a
request. Model work runs in a thread pool of `max_concurrent` threads behind an
admission gate (a bounded waiting line) and a per-client-IP token bucket, so the
event loop stays free to answer. Needs `fastapi` and `uvicorn` (the `web` extra).
"""

from __future__ import annotations

import asyncio
import dataclasses
import ipaddress
import json
import math
import secrets
import threading
import time
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any

import torch
from fastapi import Depends, FastAPI, Query, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, StreamingResponse
from fastapi.staticfiles import StaticFiles
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints
from starlette.exceptions import HTTPException as StarletteHTTPException

from lstmlm import __version__
from lstmlm.api import TextModel
from lstmlm.config.schema import PRECISIONS
from lstmlm.data.tokenize import detokenize
from lstmlm.data.vocab import EOS
from lstmlm.evaluation.perplexity import evaluate
from lstmlm.generation.sampling import SampleConfig, sample_ids
from lstmlm.nn.model import LanguageModel
from lstmlm.reports.plot import choose_metric, read_curves
from lstmlm.serving.limits import Admission, Busy, RateLimiter, ServerLimits
from lstmlm.storage import checkpoint as ckpt

STATIC_DIR = Path(__file__).parent / "static"
SAMPLE_FIELDS = frozenset(f.name for f in dataclasses.fields(SampleConfig))
# Sent to SampleConfig only where this version has them (stop strings are cut here anyway).
OPTIONAL_SAMPLE_FIELDS = ("top_p", "repetition_penalty", "stop", "stop_at_eos")
DEFAULT_NEW_TOKENS = 100
MAX_STOPS = 8
MAX_STOP_CHARS = 100  # each stop string; checking them runs on every token
DISCONNECT_POLL_S = 0.25  # how often POST /v1/generate checks that its client is still there


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


# --- models --------------------------------------------------------------------------


@dataclass
class ServedModel:
    id: str
    run_dir: Path
    text: TextModel  # the model, its vocabulary and level, and how user text is read
    card: dict[str, Any] = field(default_factory=dict)


def load_models(runs: list[str | Path], which: str = "best") -> dict[str, ServedModel]:
    """Load every run folder once; its id is the folder's name (which must be unique)."""
    if not runs:
        raise ValueError("give at least one run folder to serve")
    models: dict[str, ServedModel] = {}
    for r in runs:
        run = Path(r)
        model, vocab, info = ckpt.load_run(run, which)
        mid = run.resolve().name
        if mid in models:
            raise ValueError(f"two runs are named {mid!r}; model ids are folder names")
        lm = TextModel(model, vocab, info.level, str(run), lowercase=info.config.data.lowercase)
        models[mid] = ServedModel(mid, run, lm, _card(mid, run, model, info))
    return models


def _card(mid: str, run: Path, model: LanguageModel, info: ckpt.RunInfo) -> dict[str, Any]:
    summary: dict[str, Any] = {}
    if (run / ckpt.SUMMARY).is_file():
        try:
            summary = json.loads((run / ckpt.SUMMARY).read_text("utf-8"))
        except (ValueError, UnicodeDecodeError):
            summary = {}
    cfg = info.config.to_dict()
    return _finite(
        {
            "id": mid,
            "level": info.level,
            "source": _public_source(info),
            "corpus": info.config.data.corpus,
            "preset": info.config.preset,
            "params": model.num_parameters(),
            "vocab_size": model.embedding.weight.size(0),
            "model": cfg.get("model", {}),
            "metric": choose_metric([info.level]),
            "summary": summary or None,
        }
    )


def _public_source(info: ckpt.RunInfo) -> str:
    """Where the run's text came from, without the server's folders: the corpus name, or
    the file's name."""
    return info.config.data.corpus or Path(info.source).name


def _finite(x: Any) -> Any:
    """inf/nan are not JSON: send them as null."""
    if isinstance(x, float) and not math.isfinite(x):
        return None
    if isinstance(x, dict):
        return {k: _finite(v) for k, v in x.items()}
    if isinstance(x, list | tuple):
        return [_finite(v) for v in x]
    return x


# --- requests ------------------------------------------------------------------------


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


class GenerateRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    model: Text = Field(description="model id (see GET /v1/models)")
    prompt: Text = Field("", description="text to continue")
    max_new_tokens: int | None = Field(
        None, ge=1, description="tokens to sample (default: 100, or the server's cap if lower)"
    )
    temperature: float = Field(1.0, ge=0, description="0 = greedy (argmax)")
    top_k: int = Field(0, ge=0, description="sample from the k most likely tokens (0 = all)")
    top_p: float | None = Field(None, gt=0, le=1, description="nucleus sampling, if supported")
    repetition_penalty: float | None = Field(None, gt=0, description="if supported")
    stop: list[StopString] | None = Field(
        None,
        max_length=MAX_STOPS,
        description=f"end the text before the first of these strings ({MAX_STOP_CHARS} "
        "characters each at most)",
    )
    stop_at_eos: bool | None = Field(None, description="end at the first line end, if supported")
    seed: int | None = Field(
        None, ge=0, lt=2**63, description="same seed, same text (default: random, returned)"
    )


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


# --- sampling as text ------------------------------------------------------------------


@dataclass
class Completion:
    text: str = ""  # continuation, with the joining space for word level
    tokens: int = 0
    finish_reason: str = "length"
    seconds: float = 0.0


def joiner(prompt: str, level: str, first: str) -> str:
    """The space between a word-level prompt and its continuation, when one is needed."""
    needs = level == "word" and prompt and not prompt.endswith((" ", "\n", "\t"))
    return " " if needs and first and not first.startswith("\n") else ""


def stream_completion(
    m: ServedModel,
    prompt: str,
    cfg: SampleConfig,
    stop: tuple[str, ...] = (),
    cancel: threading.Event | None = None,
    result: Completion | None = None,
) -> Iterator[str]:
    """Yield pieces of the continuation as tokens are sampled; fill `result` at the end.

    Pieces never take back text: an end of the text that could still grow into a stop
    string is held until it is clear that it does not.
    """
    res = result if result is not None else Completion()
    t0 = time.monotonic()
    lm = m.text
    ids, _ = lm.encode(prompt)
    at_eos = bool(getattr(cfg, "stop_at_eos", False))
    new: list[int] = []
    text, sent, sep = "", "", None
    with torch.inference_mode():
        for tok in sample_ids(lm.model, ids, cfg):  # (num_samples,) ids per step
            if cancel is not None and cancel.is_set():
                res.finish_reason = "cancelled"
                break
            t = int(tok[0])
            if at_eos and t == lm.vocab.eos_id:
                res.finish_reason = "eos"
                break
            new.append(t)
            body = detokenize(lm.vocab.decode(new), lm.level)
            if sep is None:
                sep = joiner(prompt, lm.level, body)
            text = sep + body
            cut = min((i for i in (text.find(s) for s in stop) if i >= 0), default=-1)
            if cut >= 0:
                text = text[:cut]
                res.finish_reason = "stop"
                break
            ready = len(text) - held_back(text, stop)
            if ready > len(sent) and text.startswith(sent):
                yield text[len(sent) : ready]
                sent = text[:ready]
    if res.finish_reason != "cancelled" and len(text) > len(sent) and text.startswith(sent):
        yield text[len(sent) :]
    res.text, res.tokens, res.seconds = text, len(new), time.monotonic() - t0


def held_back(text: str, stops: tuple[str, ...]) -> int:
    """Length of the longest end of `text` that is the beginning of a stop string."""
    best = 0
    for s in stops:
        for k in range(min(len(s) - 1, len(text)), best, -1):
            if s.startswith(text[-k:]):
                best = k
                break
    return best


# --- the app ---------------------------------------------------------------------------


def create_app(
    runs: list[str | Path] | dict[str, ServedModel],
    limits: ServerLimits | None = None,
    which: str = "best",
    precision: str = "fp32",
) -> FastAPI:
    """The FastAPI app serving `runs` (run folders, or models already loaded).

    precision: the sampler's per-token matmuls, "fp32" or "bf16" (bf16 weight copies,
    about 2.7x faster on CPU; see ``generate.step_fn``).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"--precision must be fp32 or bf16, got {precision!r}")
    limits = (limits or ServerLimits()).validate()
    models = runs if isinstance(runs, dict) else load_models(runs, which)
    pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="lstmlm")
    admission = Admission(limits.max_concurrent, limits.max_queue, limits.queue_timeout)
    rater = RateLimiter(limits.rate, limits.bucket_size)
    max_body = 4 * max(limits.max_prompt_chars, limits.max_score_chars) + 16_384

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    app = FastAPI(
        title="lstmlm",
        version=__version__,
        description="Sample from and score trained LSTM/GRU language models.",
        lifespan=lifespan,
    )
    app.state.models = models
    app.state.limits = limits
    app.state.admission = admission

    # --- errors: always {"error": message, "status": code} ---

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return _error(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 400 and msg == "There was an error parsing the body":
            msg = "request body could not be read as JSON (it must be UTF-8 text)"
        return _error(exc.status_code, msg, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still logged with its traceback by the server; the client gets JSON, not text.
        return _error(500, f"internal error ({type(exc).__name__}); the server log has details")

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        errs = exc.errors()
        first = errs[0] if errs else {}
        content_type = request.headers.get("content-type", "").split(";")[0].strip()
        body_is_whole = tuple(first.get("loc", ())) == ("body",)
        if body_is_whole and request.method == "POST" and content_type != "application/json":
            return _error(415, "send the request body as JSON, with Content-Type: application/json")
        if first.get("type") == "json_invalid":
            why = (first.get("ctx") or {}).get("error", "")
            msg = f"request body is not valid JSON{': ' + str(why) if why else ''}"
        else:
            where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
            what = first.get("msg", "bad input")
            msg = f"invalid request: {where + ': ' if where else ''}{what}"
        brief = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in errs]
        return _error(422, msg, detail=jsonable_encoder(brief, custom_encoder={Exception: str}))

    app.add_middleware(BodyLimit, max_body=max_body)

    # --- helpers ---

    def get_model(mid: str) -> ServedModel:
        m = models.get(mid)
        if m is None:
            raise ApiError(404, f"unknown model {mid!r}; GET /v1/models lists them")
        return m

    async def rate_limited(request: Request) -> None:
        client = request.client.host if request.client else "unknown"
        wait = rater.allow(client)
        if wait > 0:
            raise ApiError(
                429,
                f"rate limit: {limits.rate:g} requests per minute; retry in {wait:.1f} s",
                {"Retry-After": str(math.ceil(wait))},
            )

    async def admit() -> None:
        try:
            await admission.acquire()
        except Busy as e:
            raise ApiError(503, str(e), {"Retry-After": "5"}) from None

    def prepare(req: GenerateRequest) -> tuple[ServedModel, SampleConfig, tuple[str, ...], int]:
        m = get_model(req.model)
        if len(req.prompt) > limits.max_prompt_chars:
            raise ApiError(
                413,
                f"prompt has {len(req.prompt):,} characters; this server accepts at most "
                f"{limits.max_prompt_chars:,}",
            )
        n = req.max_new_tokens
        if n is None:
            n = min(DEFAULT_NEW_TOKENS, limits.max_new_tokens_limit)
        if n > limits.max_new_tokens_limit:
            raise ApiError(
                422,
                f"max_new_tokens is {n}; this server allows at most {limits.max_new_tokens_limit}",
            )
        seed = req.seed if req.seed is not None else secrets.randbelow(2**31)
        kw: dict[str, Any] = {
            "max_new_tokens": n,
            "temperature": req.temperature,
            "top_k": req.top_k,
            "seed": seed,
            "precision": precision,
        }
        stop = tuple(s for s in (req.stop or []) if s)
        for name in OPTIONAL_SAMPLE_FIELDS:
            value = getattr(req, name)
            if value is None or (name == "stop" and not stop):
                continue
            if name in SAMPLE_FIELDS:
                kw[name] = stop if name == "stop" else value
            elif name != "stop":  # stop strings are cut here whatever the sampler does
                raise ApiError(422, f"{name} is not supported by this lstmlm version")
        try:
            cfg = SampleConfig(**kw)
            cfg.validate()
        except (ValueError, TypeError) as e:
            raise ApiError(422, str(e).replace("--", "").replace("-", "_")) from None
        return m, cfg, stop, seed

    # --- routes ---

    @app.api_route("/", methods=["GET", "HEAD"], include_in_schema=False)
    async def page() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")

    @app.get("/v1/models", summary="The models this server holds, with their cards")
    async def list_models() -> dict[str, Any]:
        return {
            "models": [m.card for m in models.values()],
            "sampling": sorted(
                n for n in OPTIONAL_SAMPLE_FIELDS if n in SAMPLE_FIELDS or n == "stop"
            ),
            "precision": precision,
            "limits": {
                "max_prompt_chars": limits.max_prompt_chars,
                "max_new_tokens": limits.max_new_tokens_limit,
                "max_score_chars": limits.max_score_chars,
            },
        }

    @app.get("/v1/models/{model_id}/curves", summary="Training curve points of a model")
    def curves(model_id: str, max_points: Annotated[int, Query(ge=2, le=5000)] = 600) -> Any:
        m = get_model(model_id)
        c = read_curves(m.run_dir, max_points)
        return _finite(
            {
                "model": model_id,
                "level": c.level,
                "metric": choose_metric([c.level]),
                "train": [dataclasses.asdict(p) for p in c.train],
                "valid": [dataclasses.asdict(p) for p in c.valid],
            }
        )

    @app.post(
        "/v1/generate",
        summary="Sample one continuation",
        response_model=GenerateResponse,
        dependencies=[Depends(rate_limited)],
    )
    async def generate(req: GenerateRequest, request: Request) -> GenerateResponse:
        m, cfg, stop, seed = prepare(req)
        await admit()
        cancel = threading.Event()
        try:
            res = Completion()

            def work() -> None:
                for _ in stream_completion(m, req.prompt, cfg, stop, cancel, res):
                    pass

            future = asyncio.get_running_loop().run_in_executor(pool, work)
            # A client that hangs up stops its sampling (and frees its slot) within a poll.
            while not (await asyncio.wait({future}, timeout=DISCONNECT_POLL_S))[0]:
                if await request.is_disconnected():
                    cancel.set()
            await future
        finally:
            cancel.set()
            admission.release()
        _, unknown = m.text.encode(req.prompt)
        return GenerateResponse(
            model=m.id,
            prompt=req.prompt,
            text=res.text,
            tokens=res.tokens,
            finish_reason=res.finish_reason,
            seed=seed,
            unknown=sorted(set(unknown)),
            seconds=round(res.seconds, 4),
        )

    async def stream(req: GenerateRequest) -> StreamingResponse:
        m, cfg, stop, seed = prepare(req)
        await admit()
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[tuple[str, dict[str, Any]]] = asyncio.Queue()
        cancel = threading.Event()
        res = Completion()

        def put(kind: str, data: dict[str, Any]) -> None:
            try:
                loop.call_soon_threadsafe(queue.put_nowait, (kind, data))
            except RuntimeError:  # the loop is gone (server shutting down)
                cancel.set()

        def work() -> None:
            try:
                for piece in stream_completion(m, req.prompt, cfg, stop, cancel, res):
                    put("token", {"text": piece})
                put(
                    "done",
                    {
                        "text": res.text,
                        "tokens": res.tokens,
                        "finish_reason": res.finish_reason,
                        "seconds": round(res.seconds, 4),
                    },
                )
            except Exception as e:  # reported to the client, never raised into the pool
                put("error", {"error": f"generation failed: {e}"})

        # The slot is held until the thread is done, whether or not the client stays.
        future = loop.run_in_executor(pool, work)
        future.add_done_callback(lambda _: admission.release())
        _, unknown = m.text.encode(req.prompt)
        start = {"model": m.id, "seed": seed, "unknown": sorted(set(unknown))}

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

    stream_doc = (
        "Server-sent events: `start` {model, seed, unknown}, then `token` {text} pieces, "
        "then `done` {text, tokens, finish_reason, seconds} (or `error` {error})."
    )

    @app.post(
        "/v1/stream",
        summary="Sample one continuation, streamed (SSE)",
        description=stream_doc,
        dependencies=[Depends(rate_limited)],
        response_class=StreamingResponse,
    )
    async def stream_post(req: GenerateRequest) -> StreamingResponse:
        return await stream(req)

    @app.get(
        "/v1/generate/stream",
        summary="Sample one continuation, streamed (SSE), parameters in the query",
        description=stream_doc,
        dependencies=[Depends(rate_limited)],
        response_class=StreamingResponse,
    )
    async def stream_get(req: Annotated[GenerateRequest, Query()]) -> StreamingResponse:
        return await stream(req)

    @app.post(
        "/v1/score",
        summary="Perplexity (and bits per character) of a text under a model",
        response_model=ScoreResponse,
        dependencies=[Depends(rate_limited)],
    )
    async def score(req: ScoreRequest) -> ScoreResponse:
        m = get_model(req.model)
        if len(req.text) > limits.max_score_chars:
            raise ApiError(
                413,
                f"text has {len(req.text):,} characters; this server scores at most "
                f"{limits.max_score_chars:,}",
            )
        lm = m.text
        tokens = lm.tokens(req.text)
        if not tokens:
            raise ApiError(422, "text has no tokens to score")
        ids = lm.vocab.encode([EOS, *tokens])  # scored as if after a line break
        unknown = sum(1 for t in tokens if t not in lm.vocab)
        await admit()
        try:
            res = await asyncio.get_running_loop().run_in_executor(
                pool,
                lambda: evaluate(lm.model, torch.tensor(ids, dtype=torch.long), lm.level, 1, 100),
            )
        finally:
            admission.release()
        return ScoreResponse(
            model=m.id,
            tokens=res.tokens,
            loss=_finite(res.loss),
            ppl=_finite(res.ppl),
            bpc=_finite(res.bpc),
            unknown=unknown,
        )

    return app


class BodyLimit:
    """Refuse a request whose body is over `max_body` bytes (413), reading at most that much.

    A declared Content-Length over the limit is refused before any byte is read. A body
    without one (chunked transfer) is read up to the limit, refused as soon as it passes
    it, and otherwise handed on whole.
    """

    def __init__(self, app: Any, max_body: int):
        self.app = app
        self.max_body = max_body

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = [v for k, v in scope.get("headers", ()) if k == b"content-length"]
        if declared and declared[0].isdigit():
            if int(declared[0]) > self.max_body:
                await self._refuse(scope, receive, send)
                return
            await self.app(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client left before its body was in
            chunks.append(message.get("body", b""))
            size += len(chunks[-1])
            if size > self.max_body:
                await self._refuse(scope, receive, send)
                return
            if not message.get("more_body", False):
                break
        whole: list[dict[str, Any]] = [{"type": "http.request", "body": b"".join(chunks)}]

        async def replay() -> dict[str, Any]:
            return whole.pop() if whole else await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Any, receive: Any, send: Any) -> None:
        response = _error(413, f"request body is over {self.max_body:,} bytes")
        await response(scope, receive, send)


def uvicorn_config(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> Any:
    """The uvicorn settings `lstmlm serve` runs `app` with (a `uvicorn.Config`)."""
    import uvicorn

    # proxy_headers off: a client's X-Forwarded-For must not choose the address that the
    # rate limit counts it under (uvicorn trusts that header from 127.0.0.1 by default).
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, proxy_headers=False, lifespan="on"
    )


def _error(
    status: int,
    message: str,
    headers: dict[str, str] | None = None,
    detail: Any = None,
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "status": status}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def _sse(event: str, data: dict[str, Any]) -> str:
    return f"event: {event}\ndata: {json.dumps(_finite(data))}\n\n"


def is_loopback(host: str) -> bool:
    """Whether `host` (a name or an address, IPv6 with or without brackets) is this machine
    only: `localhost` or a loopback address."""
    name = host.strip("[]").rstrip(".").lower()
    if name == "localhost":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False  # any other name may resolve to an outside address
