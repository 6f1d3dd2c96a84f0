"""Every error the server sends is JSON: `{"error": message, "status": code}`.

`ApiError` is raised by the routes; `add_error_handlers` makes FastAPI's and Starlette's
own errors (unknown route, bad JSON, failed validation, anything unexpected) take the
same shape.
"""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException


class ApiError(Exception):
    def __init__(self, status: int, message: str, headers: dict[str, str] | None = None):
        super().__init__(message)
        self.status = status
        self.message = message
        self.headers = headers


def error_response(
    status: int, message: str, headers: dict[str, str] | None = None, detail: Any = None
) -> JSONResponse:
    body: dict[str, Any] = {"error": message, "status": status}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status, headers=headers)


def add_error_handlers(app: FastAPI) -> None:
    """Answer every error of `app` as `{"error", "status"}` JSON."""

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError) -> JSONResponse:
        return error_response(exc.status, exc.message, exc.headers)

    @app.exception_handler(StarletteHTTPException)
    async def _http_error(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        msg = str(exc.detail)
        if exc.status_code == 400 and msg == "There was an error parsing the body":
            msg = "request body could not be read as JSON (it must be UTF-8 text)"
        return error_response(exc.status_code, msg, getattr(exc, "headers", None))

    @app.exception_handler(Exception)
    async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
        # Still logged with its traceback by the server; the client gets JSON, not text.
        return error_response(
            500, f"internal error ({type(exc).__name__}); the server log has details"
        )

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError) -> JSONResponse:
        return _validation_error(request, exc)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    """415 for a body that is not sent as JSON, else 422 naming the first problem."""
    errs = exc.errors()
    first = errs[0] if errs else {}
    content_type = request.headers.get("content-type", "").split(";")[0].strip()
    body_is_whole = tuple(first.get("loc", ())) == ("body",)
    if body_is_whole and request.method == "POST" and content_type != "application/json":
        return error_response(
            415, "send the request body as JSON, with Content-Type: application/json"
        )
    if first.get("type") == "json_invalid":
        why = (first.get("ctx") or {}).get("error", "")
        msg = f"request body is not valid JSON{': ' + str(why) if why else ''}"
    else:
        where = ".".join(str(p) for p in first.get("loc", ()) if p not in ("body", "query"))
        what = first.get("msg", "bad input")
        msg = f"invalid request: {where + ': ' if where else ''}{what}"
    brief = [{k: v for k, v in e.items() if k not in ("input", "url")} for e in errs]
    return error_response(422, msg, detail=jsonable_encoder(brief, custom_encoder={Exception: str}))
