"""A deadline for a request's headers: a slow client cannot hold a connection open.

uvicorn's h11 protocol arms no timer while a request's headers arrive (its keep-alive
timer is cancelled by every byte received), so a client that trickles a header a byte at
a time keeps its socket, and 300 of them keep 300. `HeaderDeadline` gives each request
`seconds` from the connection (or the previous response) to the end of its headers, then
closes the connection. The body's pace is the body limit's and the admission's concern.
"""

from __future__ import annotations

import asyncio
from typing import Any

from uvicorn.protocols.http.h11_impl import H11Protocol


def header_deadline_protocol(seconds: float) -> type[H11Protocol]:
    """uvicorn's h11 protocol with a `seconds` deadline on each request's headers."""

    class HeaderDeadline(H11Protocol):
        _deadline: asyncio.TimerHandle | None = None
        _armed_for: Any = None  # the cycle that was current when the deadline was armed

        def _arm(self) -> None:
            self._disarm()
            self._armed_for = self.cycle
            self._deadline = self.loop.call_later(seconds, self._too_slow)

        def _disarm(self) -> None:
            if self._deadline is not None:
                self._deadline.cancel()
                self._deadline = None

        def _too_slow(self) -> None:
            self._deadline = None
            if self.cycle is self._armed_for and not self.transport.is_closing():
                self.transport.close()  # no new request began within the deadline

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            self._arm()

        def handle_events(self) -> None:
            super().handle_events()
            if self._deadline is not None and self.cycle is not self._armed_for:
                self._disarm()  # the headers are in: a request cycle has begun

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()  # the next request on this connection gets its own deadline

        def connection_lost(self, exc: Exception | None) -> None:
            self._disarm()
            super().connection_lost(exc)

    return HeaderDeadline
