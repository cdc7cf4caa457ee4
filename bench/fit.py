"""Cost of FIT on a protected call, measured in one process.

Run: .venv/bin/python bench/fit.py [--quick]

Target (issue 5): a protect call with FIT enabled in the process but no recipe on the request
costs at most 1.05x the same call with FIT never enabled. Rounds alternate between the two
states so drift (CPU frequency, other processes) falls on both alike; each figure is the median
over rounds of the mean time per call. Also shown, for scale: the call under a recipe that does
not name the dependency, tag verification per request, and the peers' bare call costs.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import time
from collections.abc import Callable
from typing import Any

from resilience import fit, protect, request_scope
from resilience.fit import Recipe

SECRET = "bench-secret"


def per_call(fn: Callable[[], Any], n: int) -> float:
    t0 = time.perf_counter()
    for _ in range(n):
        fn()
    return (time.perf_counter() - t0) / n


def per_await(make: Callable[[], Any], n: int) -> float:
    async def go() -> float:
        t0 = time.perf_counter()
        for _ in range(n):
            await make()
        return (time.perf_counter() - t0) / n

    return asyncio.run(go())


def us(seconds: float) -> str:
    return f"{seconds * 1e6:8.3f} us"


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    opts = parser.parse_args()
    n = 20_000 if opts.quick else 100_000
    rounds = 5 if opts.quick else 11

    @protect("bench.sync", isolation="semaphore")
    def sync_call() -> int:
        return 1

    @protect("bench.async")
    async def async_call() -> int:
        return 1

    def bare() -> int:
        return 1

    other = Recipe.from_dict(
        {"name": "other", "faults": [{"dependency": "elsewhere", "error": True}]}
    )
    tag = fit.sign_tag(other, secret=SECRET)
    ok = True
    for label, measure in (
        ("sync protect (semaphore)", lambda: per_call(sync_call, n)),
        ("async protect", lambda: per_await(async_call, n)),
    ):
        measure()  # warm up
        never: list[float] = []
        enabled: list[float] = []
        for _ in range(rounds):
            fit.disable()
            never.append(measure())
            fit.enable(secret=SECRET)
            with request_scope():  # as under the middleware, for a request with no tag
                enabled.append(measure())
        fit.disable()
        a, b = statistics.median(never), statistics.median(enabled)
        ratio = b / a
        passed = ratio <= 1.05
        ok &= passed
        print(
            f"{label:<26} FIT never enabled {us(a)}   FIT enabled, no recipe {us(b)}   "
            f"ratio {ratio:5.3f}x (target <= 1.05x) {'ok' if passed else 'MISSED'}"
        )
        with fit.active(other):
            c = statistics.median(measure() for _ in range(max(3, rounds // 2)))
        print(f"{'':<26} under a recipe naming another dependency {us(c)} ({c / a:4.2f}x)")

    print(f"{'bare function call':<26} {us(per_call(bare, n))}")
    fit.enable(secret=SECRET)
    fresh = iter([fit.sign_tag(other, secret=SECRET) for _ in range(2_000)])
    first = per_call(lambda: fit.activate(next(fresh)), 2_000)
    print(f"{'tag verification, new tag':<26} {us(first)} (HMAC-SHA256, then the recipe parsed)")
    again = statistics.median(per_call(lambda: fit.activate(tag), n // 10) for _ in range(5))
    print(f"{'tag verification, seen':<26} {us(again)} (a run's tag, remembered once verified)")
    fit.disable()
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
