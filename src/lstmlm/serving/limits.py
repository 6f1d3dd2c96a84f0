"""Request limits for the web server: admission (concurrency + queue) and per-client rate.

Both are plain asyncio / arithmetic objects with no web framework in them, so the
server stays a thin layer and the rules can be tested on their own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from lstmlm.config import FieldError
from lstmlm.generation.config import MAX_PROMPT_CHARS


@dataclass(frozen=True)
class ServerLimits:
    max_prompt_chars: int = field(
        default=MAX_PROMPT_CHARS,
        metadata={"help": f"longest prompt accepted, in characters (at most {MAX_PROMPT_CHARS:,})"},
    )
    max_new_tokens_limit: int = field(
        default=500, metadata={"help": "largest max_new_tokens a request may ask for"}
    )
    max_score_chars: int = field(
        default=20_000, metadata={"help": "longest text /v1/score accepts, in characters"}
    )
    max_concurrent: int = field(default=2, metadata={"help": "model jobs running at once"})
    max_queue: int = field(
        default=8, metadata={"help": "jobs waiting for a free slot before 503 (0 = no waiting)"}
    )
    queue_timeout: float = field(
        default=60.0, metadata={"help": "seconds a job may wait for a slot before 503"}
    )
    header_timeout: float = field(
        default=10.0,
        metadata={
            "help": "seconds a client has to send a request's headers before the "
            "connection is closed (slow clients cannot hold sockets)"
        },
    )
    rate: float = field(
        default=60.0, metadata={"help": "model requests per minute per client IP (0 = no limit)"}
    )
    burst: int | None = field(
        default=None, metadata={"help": "requests a client may make at once (default: rate/6)"}
    )

    def validate(self) -> ServerLimits:
        for name in ("max_prompt_chars", "max_new_tokens_limit", "max_score_chars"):
            if getattr(self, name) < 1:
                raise FieldError(name, f"must be positive, got {getattr(self, name)}")
        if self.max_prompt_chars > MAX_PROMPT_CHARS:
            raise FieldError(
                "max_prompt_chars",
                f"is at most {MAX_PROMPT_CHARS:,} (what the model API reads), got "
                f"{self.max_prompt_chars:,}",
            )
        if self.max_concurrent < 1:
            raise FieldError("max_concurrent", f"must be positive, got {self.max_concurrent}")
        if self.max_queue < 0:
            raise FieldError("max_queue", f"must be >= 0, got {self.max_queue}")
        if not (0 < self.header_timeout < float("inf")):
            raise FieldError("header_timeout", f"must be positive, got {self.header_timeout}")
        if not (self.rate >= 0):
            raise FieldError("rate", f"must be >= 0, got {self.rate}")
        if self.burst is not None and self.burst < 1:
            raise FieldError("burst", f"must be positive, got {self.burst}")
        return self

    @property
    def bucket_size(self) -> float:
        if self.burst is not None:
            return float(self.burst)
        return max(1.0, self.rate / 6)  # ten seconds' worth


class Busy(Exception):
    """Every slot is taken and the waiting line is full (or the wait timed out)."""


class Admission:
    """At most `max_active` jobs at once; at most `max_waiting` more wait in line.

    `acquire` raises `Busy` at once when the line is full, or after `timeout`
    seconds of waiting. Every successful `acquire` needs one `release`.
    """

    def __init__(self, max_active: int, max_waiting: int, timeout: float = 60.0):
        self.max_active = max_active
        self.max_waiting = max_waiting
        self.timeout = timeout
        self.active = 0
        self.waiting = 0
        self._sem = asyncio.Semaphore(max_active)

    async def acquire(self) -> None:
        if self._sem.locked() and self.waiting >= self.max_waiting:
            raise Busy(f"server busy: {self.active} jobs running and {self.waiting} waiting")
        self.waiting += 1
        try:
            await asyncio.wait_for(self._sem.acquire(), self.timeout)
        except TimeoutError:
            raise Busy(f"server busy: no free slot within {self.timeout:g} s") from None
        finally:
            self.waiting -= 1
        self.active += 1

    def release(self) -> None:
        self.active -= 1
        self._sem.release()


class RateLimiter:
    """A token bucket per client key: `rate` requests per minute, bursts up to `size`.

    `allow(key)` takes one token and returns 0.0, or returns the seconds until a
    token is free (and takes none). Idle full buckets are forgotten, so the table
    stays small.
    """

    def __init__(
        self, rate_per_minute: float, size: float, clock: Callable[[], float] = time.monotonic
    ):
        self.per_sec = rate_per_minute / 60.0
        self.size = size
        self.clock = clock
        self._buckets: dict[str, tuple[float, float]] = {}  # key -> (tokens, last time)

    def allow(self, key: str) -> float:
        if self.per_sec <= 0:
            return 0.0
        now = self.clock()
        tokens, last = self._buckets.get(key, (self.size, now))
        tokens = min(self.size, tokens + (now - last) * self.per_sec)
        if tokens >= 1.0:
            self._buckets[key] = (tokens - 1.0, now)
            wait = 0.0
        else:
            self._buckets[key] = (tokens, now)
            wait = (1.0 - tokens) / self.per_sec
        if len(self._buckets) > 10_000:
            self._forget_full(now)
        return wait

    def _forget_full(self, now: float) -> None:
        full = [
            k
            for k, (t, last) in self._buckets.items()
            if t + (now - last) * self.per_sec >= self.size
        ]
        for k in full:
            del self._buckets[k]
