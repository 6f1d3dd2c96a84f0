import asyncio

import pytest

from lstmlm.serving.limits import Admission, Busy, RateLimiter, ServerLimits


class Clock:
    def __init__(self):
        self.t = 0.0

    def __call__(self) -> float:
        return self.t


def test_token_bucket_allows_a_burst_then_refills_at_the_rate():
    clock = Clock()
    rl = RateLimiter(rate_per_minute=60, size=3, clock=clock)  # one token per second
    assert [rl.allow("a") for _ in range(3)] == [0.0, 0.0, 0.0]
    assert rl.allow("a") == pytest.approx(1.0)  # empty: wait a second
    assert rl.allow("b") == 0.0  # another client has its own bucket
    clock.t = 0.5
    assert rl.allow("a") == pytest.approx(0.5)
    clock.t = 2.0
    assert rl.allow("a") == 0.0 and rl.allow("a") == 0.0
    assert rl.allow("a") > 0
    clock.t = 1000.0
    assert [rl.allow("a") for _ in range(4)][-1] > 0  # refills to the bucket size, not beyond


def test_rate_zero_means_no_limit():
    rl = RateLimiter(0, 1)
    assert all(rl.allow("a") == 0.0 for _ in range(100))


def test_admission_bounds_running_and_waiting_jobs():
    async def scenario():
        adm = Admission(max_active=2, max_waiting=1, timeout=5)
        await adm.acquire()
        await adm.acquire()
        assert adm.active == 2
        waiter = asyncio.create_task(adm.acquire())
        await asyncio.sleep(0)
        assert adm.waiting == 1 and not waiter.done()
        with pytest.raises(Busy, match="2 jobs running and 1 waiting"):
            await adm.acquire()  # line full: refused at once
        adm.release()
        await asyncio.wait_for(waiter, 1)  # the waiter gets the freed slot
        assert adm.active == 2 and adm.waiting == 0

    asyncio.run(scenario())


def test_admission_wait_times_out():
    async def scenario():
        adm = Admission(max_active=1, max_waiting=4, timeout=0.05)
        await adm.acquire()
        with pytest.raises(Busy, match="no free slot"):
            await adm.acquire()
        assert adm.waiting == 0 and adm.active == 1

    asyncio.run(scenario())


def test_limits_are_validated():
    with pytest.raises(ValueError, match="max_concurrent"):
        ServerLimits(max_concurrent=0).validate()
    with pytest.raises(ValueError, match="max_prompt_chars"):
        ServerLimits(max_prompt_chars=0).validate()
    assert ServerLimits(rate=60).bucket_size == 10
    assert ServerLimits(rate=60, burst=3).bucket_size == 3
