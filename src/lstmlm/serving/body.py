"""A request body limit that holds for chunked bodies too (ASGI middleware)."""

from __future__ import annotations

from typing import Any

from lstmlm.serving.errors import error_response


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
        response = error_response(413, f"request body is over {self.max_body:,} bytes")
        await response(scope, receive, send)
