"""A small web server: a page to sample from trained models, and a JSON API beside it.

    GET  /                      the page (static HTML + JS + CSS from serving/static)
    GET  /v1/models             model cards (level, size, valid/test scores, training time)
    GET  /v1/models/{id}/curves training curve points from RUN/metrics.jsonl
    POST /v1/generate           continuations of one prompt or of a list, as JSON
    POST /v1/stream             one continuation, streamed as server-sent events
    POST /v1/score              perplexity (and bpc) of a text, per token on request
    GET  /docs                  OpenAPI documentation (Swagger UI, served locally; /redoc too)

Models are addressed by id (the run folder's name), never by a path from a request.
The routes (routes.py) delegate all model work to `api.TextModel`. Needs `fastapi` and
`uvicorn` (the `web` extra).
"""

from __future__ import annotations

import ipaddress
from collections.abc import AsyncIterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi_offline import FastAPIOffline

from lstmlm import __version__
from lstmlm.config import PRECISIONS, FieldError
from lstmlm.serving.body import BodyLimit
from lstmlm.serving.errors import add_error_handlers
from lstmlm.serving.limits import Admission, RateLimiter, ServerLimits
from lstmlm.serving.models import ServedModel, load_models
from lstmlm.serving.routes import Server, add_generate_routes, add_page_routes, add_score_route


def create_app(
    runs: list[str | Path] | dict[str, ServedModel],
    limits: ServerLimits | None = None,
    which: str = "best",
    precision: str = "fp32",
) -> FastAPI:
    """The FastAPI app serving `runs` (run folders, or models already loaded).

    precision: the sampler's per-token matmuls, "fp32" or "bf16" (bf16 weight copies,
    about 2.7x faster on CPU; see `nn.step`).
    """
    if precision not in PRECISIONS:
        raise FieldError("precision", f"must be fp32 or bf16, got {precision!r}")
    limits = (limits or ServerLimits()).validate()
    models = runs if isinstance(runs, dict) else load_models(runs, which)
    pool = ThreadPoolExecutor(max_workers=limits.max_concurrent, thread_name_prefix="lstmlm")
    admission = Admission(limits.max_concurrent, limits.max_queue, limits.queue_timeout)
    srv = Server(
        models, limits, precision, pool, admission, RateLimiter(limits.rate, limits.bucket_size)
    )

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        pool.shutdown(wait=False, cancel_futures=True)

    # The API docs (/docs, /redoc) from files served here, not from a CDN: they work
    # on a machine without internet.
    app = FastAPIOffline(
        title="lstmlm",
        version=__version__,
        description="Sample from and score trained LSTM/GRU language models.",
        lifespan=lifespan,
    )
    app.state.models = models
    app.state.limits = limits
    app.state.admission = admission
    add_error_handlers(app)
    # JSON may spell each character as escapes: 12 bytes for one outside the BMP (an
    # emoji is a surrogate pair, \ud83d\ude00, as Python's json.dumps writes by default).
    longest = max(limits.max_prompt_chars, limits.max_score_chars)
    app.add_middleware(BodyLimit, max_body=JSON_BYTES_PER_CHAR * longest + 16_384)
    add_page_routes(app, srv)
    add_generate_routes(app, srv)
    add_score_route(app, srv)
    return app


JSON_BYTES_PER_CHAR = 12


def uvicorn_config(
    app: FastAPI, host: str = "127.0.0.1", port: int = 8000, log_level: str = "info"
) -> Any:
    """The uvicorn settings `lstmlm serve` runs `app` with (a `uvicorn.Config`)."""
    import uvicorn

    from lstmlm.serving.timeouts import header_deadline_protocol

    # (an app wrapped in other ASGI middleware has no state: the default deadline)
    limits = getattr(getattr(app, "state", None), "limits", None) or ServerLimits()
    # proxy_headers off: a client's X-Forwarded-For must not choose the address that the
    # rate limit counts it under (uvicorn trusts that header from 127.0.0.1 by default).
    return uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level=log_level,
        proxy_headers=False,
        lifespan="on",
        http=header_deadline_protocol(limits.header_timeout),
    )


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
