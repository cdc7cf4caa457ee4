"""Rate limit: accuracy of TokenBucket, and its per-call cost beside aiolimiter and limits.

Run: .venv/bin/python bench/rate_limit.py [--quick]

1. Accuracy: RateLimit(1000) offered 10,000 calls/s for 10 s on a simulated clock (ours), and
   aiolimiter's AsyncLimiter(1000, 1) offered the same on a virtual-time event loop. Goal:
   admitted within 1% of the rate once the initial burst (one period's worth) is spent.
2. Cost per call of one non-blocking "take a permit" (a limit high enough that every call is
   admitted), median over repeats:
   - sync: ``TokenBucket.try_take(time.monotonic())`` vs limits' ``hit()`` (fixed window,
     moving window and sliding window counter, in-memory storage);
   - asyncio: ``await TokenBucket.take_async()`` vs aiolimiter
     (``has_capacity()`` then ``await acquire()``, the non-blocking use).
   Goal: cheaper than both peers.
3. The same through the public API, ``protect(..., rate_limit=RateLimit(...))``: accuracy of the
   calls that ran at 1,000/s offered 10,000/s for 10 s (on a registry reading a fake clock), and
   what the rate-limit step adds to a protected call (with vs without ``rate_limit``: the step,
   plus leaving the decorator's closed-circuit fast path), beside the peers' cost alone.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _virtual_time

from resilience import RateLimit, RateLimitedError, protect
from resilience.circuit import Registry
from resilience.circuit._ratelimit import TokenBucket
from resilience.testing import FakeClock

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_call_async, per_call_sync, us

warnings.filterwarnings("ignore", category=DeprecationWarning)

RATE = 1000
OFFERED = 10_000
SECONDS = 10


def accuracy_ours() -> tuple[int, int]:
    now = [0.0]
    bucket = TokenBucket(RateLimit(RATE), lambda: now[0])
    admitted = burst = 0
    while bucket.try_take(0.0) == 0.0:
        burst += 1
    for i in range(1, OFFERED * SECONDS + 1):
        if bucket.try_take(i / OFFERED) == 0.0:
            admitted += 1
    return burst, admitted


def accuracy_aiolimiter() -> tuple[int, int]:
    from aiolimiter import AsyncLimiter

    async def run() -> tuple[int, int]:
        loop = asyncio.get_running_loop()
        limiter = AsyncLimiter(RATE, 1)
        burst = admitted = 0
        while limiter.has_capacity():
            await limiter.acquire()
            burst += 1
        start = loop.time()
        for i in range(1, OFFERED * SECONDS + 1):
            await asyncio.sleep(start + i / OFFERED - loop.time())
            if limiter.has_capacity():
                await limiter.acquire()
                admitted += 1
        return burst, admitted

    return _virtual_time.run(run())


def accuracy_protect() -> tuple[int, int]:
    clock = FakeClock(0.0)
    reg = Registry(clock=clock)
    ran = [0]

    @protect("bench", registry=reg, isolation="semaphore", rate_limit=RateLimit(RATE))
    def call() -> None:
        ran[0] += 1

    burst = 0
    try:
        while True:
            call()
            burst += 1
    except RateLimitedError:
        pass
    ran[0] = 0
    for _ in range(OFFERED * SECONDS):
        clock.advance(1 / OFFERED)
        with contextlib.suppress(RateLimitedError):
            call()
    return burst, ran[0]


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    opts = parser.parse_args()
    n = 20_000 if opts.quick else 100_000
    repeats = 5 if opts.quick else 9

    print(f"Accuracy: {RATE}/s offered {OFFERED}/s for {SECONDS} s (simulated time)")
    expected = RATE * SECONDS
    for label, (burst, admitted) in (
        ("TokenBucket (ours)", accuracy_ours()),
        ("aiolimiter AsyncLimiter", accuracy_aiolimiter()),
        ("protect(rate_limit=...)", accuracy_protect()),
    ):
        error = (admitted - expected) / expected
        print(
            f"  {label:<26} burst {burst:>5}, then {admitted:>6} admitted in {SECONDS} s "
            f"({admitted / SECONDS:8.1f}/s, {error:+.3%}; goal within 1%: "
            f"{'ok' if abs(error) <= 0.01 else 'MISSED'})"
        )

    from aiolimiter import AsyncLimiter
    from limits import parse, storage, strategies

    huge = 10**12
    bucket = TokenBucket(RateLimit(huge))
    monotonic = time.monotonic
    try_take = bucket.try_take

    def ours_sync() -> float:
        return try_take(monotonic())

    item = parse(f"{huge}/second")
    peers_sync: list[tuple[str, Callable[[], Any]]] = []
    for name, cls in (
        ("limits fixed window", strategies.FixedWindowRateLimiter),
        ("limits moving window", strategies.MovingWindowRateLimiter),
        ("limits sliding window counter", strategies.SlidingWindowCounterRateLimiter),
    ):
        limiter = cls(storage.MemoryStorage())
        peers_sync.append((name, lambda limiter=limiter: limiter.hit(item, "dependency")))

    print(f"\nPer call, every call admitted (median of {repeats} x {n}):")
    ours = per_call_sync(ours_sync, n, repeats)
    print(f"  {'TokenBucket.try_take (ours)':<36} {us(ours)}")
    ok = True
    for name, fn in peers_sync:
        peer = per_call_sync(fn, n, repeats)
        ok &= ours < peer
        print(f"  {name:<36} {us(peer)}   ours / peer {ours / peer:5.2f}x")

    async_bucket = TokenBucket(RateLimit(huge))
    take_async = async_bucket.take_async
    ours_async = per_call_async(take_async, n, repeats)
    aio = AsyncLimiter(huge, 1)

    async def aio_take() -> None:
        if aio.has_capacity():
            await aio.acquire()

    peer_async = per_call_async(aio_take, n, repeats)
    ok &= ours_async < peer_async
    print(f"  {'await TokenBucket.take_async (ours)':<36} {us(ours_async)}")
    print(
        f"  {'aiolimiter has_capacity + acquire':<36} {us(peer_async)}   ours / peer "
        f"{ours_async / peer_async:5.2f}x"
    )
    print(f"  goal: cheaper than every peer: {'ok' if ok else 'MISSED'}")

    reg = Registry()

    def trivial() -> int:
        return 1

    async def atrivial() -> int:
        return 1

    plain = protect("plain", registry=reg, isolation="semaphore")(trivial)
    limited = protect("limited", registry=reg, isolation="semaphore", rate_limit=RateLimit(huge))(
        trivial
    )
    aplain = protect("aplain", registry=reg)(atrivial)
    alimited = protect("alimited", registry=reg, rate_limit=RateLimit(huge))(atrivial)
    t_plain = per_call_sync(plain, n, repeats)
    t_limited = per_call_sync(limited, n, repeats)
    t_aplain = per_call_async(aplain, n, repeats)
    t_alimited = per_call_async(alimited, n, repeats)
    cheapest_limits = min(per_call_sync(fn, n, repeats) for _, fn in peers_sync)
    print("\nThrough protect (semaphore isolation; a coroutine), every call admitted:")
    print(f"  {'protect()':<36} {us(t_plain)}")
    print(f"  {'protect(rate_limit=RateLimit(...))':<36} {us(t_limited)}")
    added = t_limited - t_plain
    print(
        f"  {'  what the rate-limit step adds':<36} {us(added)}   vs limits alone (cheapest) "
        f"{us(cheapest_limits)}: {added / cheapest_limits:5.2f}x"
    )
    print(f"  {'async protect()':<36} {us(t_aplain)}")
    print(f"  {'async protect(rate_limit=...)':<36} {us(t_alimited)}")
    a_added = t_alimited - t_aplain
    print(
        f"  {'  what the rate-limit step adds':<36} {us(a_added)}   vs aiolimiter alone "
        f"{us(peer_async)}: {a_added / peer_async:5.2f}x"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
