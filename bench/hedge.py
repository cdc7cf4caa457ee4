"""Hedged calls against a dependency with a slow tail, on simulated time (a run takes seconds).

Run: .venv/bin/python bench/hedge.py [--calls N] [--seed N]

The simulated dependency answers in 2 ms (+-10% lognormal jitter), except 1% of calls that take
100x longer (200 ms). 20 closed-loop callers make N calls in all, unhedged, then through
``run_hedged`` with ``Hedge()`` (adaptive delay: the p95 the dependency's rolling window reports,
the budget capping hedges at 10% of calls), then with a fixed 10 ms delay ("The Tail at Scale").
Then the same through the public API: the dependency is an ``async def`` decorated with
``protect(..., hedge=Hedge())`` (every attempt passes the breaker, the limit, the timeout and the
record; the delay is the dependency's own observed p95), on a registry reading the simulated
clock. Goals (issue 13): p99 and p99.9 of hedged calls <= 0.2x unhedged, extra calls <= 6% with
the adaptive delay.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _virtual_time

from resilience import Hedge, protect
from resilience.circuit import Registry
from resilience.circuit._hedge import HedgeThrottle, run_hedged
from resilience.circuit._window import RollingWindow

FAST = 0.002
SLOW = 0.200
SLOW_SHARE = 0.01
CALLERS = 20


async def scenario(
    hedge: Hedge | None, calls: int, seed: int
) -> tuple[list[float], int, dict[str, int]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    window = RollingWindow(10.0, 10, loop.time, None)
    throttle = HedgeThrottle(hedge) if hedge is not None else None
    latencies: list[float] = []
    attempts = 0
    events: dict[str, int] = {}
    p95: float | None = None

    async def dependency(n: int) -> str:
        nonlocal attempts
        attempts += 1
        slow = rng.random() < SLOW_SHARE
        await asyncio.sleep((SLOW if slow else FAST) * rng.lognormvariate(0, 0.1))
        return "ok"

    def event(name: str) -> None:
        events[name] = events.get(name, 0) + 1

    async def caller(count: int) -> None:
        nonlocal p95
        for i in range(count):
            start = loop.time()
            if throttle is None:
                await dependency(1)
            else:
                throttle.on_call(start)
                if i % 50 == 0:
                    p95 = window.snapshot().percentile(0.95)
                await run_hedged(
                    dependency,
                    delay=throttle.delay(p95),
                    max_attempts=throttle.config.max_attempts,
                    allow=lambda: throttle.try_hedge(loop.time()),
                    on_event=event,
                )
            now = loop.time()
            window.add_success(now - start, now)
            latencies.append(now - start)

    await asyncio.gather(*(caller(calls // CALLERS) for _ in range(CALLERS)))
    return latencies, attempts, events


async def through_protect(
    hedge: Hedge | None, calls: int, seed: int
) -> tuple[list[float], int, dict[str, int]]:
    loop = asyncio.get_running_loop()
    rng = random.Random(seed)
    reg = Registry(clock=loop.time)
    attempts = 0

    @protect("bench", registry=reg, hedge=hedge, timeout=5.0, max_concurrent=1000)
    async def dependency() -> str:
        nonlocal attempts
        attempts += 1
        slow = rng.random() < SLOW_SHARE
        await asyncio.sleep((SLOW if slow else FAST) * rng.lognormvariate(0, 0.1))
        return "ok"

    latencies: list[float] = []

    async def caller(count: int) -> None:
        for _ in range(count):
            start = loop.time()
            await dependency()
            latencies.append(loop.time() - start)

    await asyncio.gather(*(caller(calls // CALLERS) for _ in range(CALLERS)))
    return latencies, attempts, reg.dependency("bench").hedge_counts()


def pct(values: list[float], q: float) -> float:
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))]


def judge(
    label: str,
    hedge: Hedge,
    lat: list[float],
    attempts: int,
    events: dict[str, int],
    b99: float,
    b999: float,
) -> None:
    h99, h999 = pct(lat, 0.99), pct(lat, 0.999)
    extra = attempts / len(lat) - 1
    ok = h99 <= 0.2 * b99 and h999 <= 0.2 * b999 and (hedge.delay is not None or extra <= 0.06)
    print(
        f"  {label:<28} p50 {pct(lat, 0.5) * 1000:6.2f} ms  p99 {h99 * 1000:7.2f} ms  "
        f"p99.9 {h999 * 1000:7.2f} ms  calls/call {attempts / len(lat):.3f}"
    )
    print(
        f"  {'':<28} p99 {h99 / b99:.2f}x, p99.9 {h999 / b999:.2f}x of unhedged (goal <= 0.2x); "
        f"extra calls {extra:.1%}{' (goal <= 6%)' if hedge.delay is None else ''}; "
        f"events {dict(sorted(events.items()))}  {'ok' if ok else 'MISSED'}"
    )


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=40_000)
    parser.add_argument("--seed", type=int, default=1)
    opts = parser.parse_args()
    print(
        f"Hedging: {opts.calls} calls, {CALLERS} callers; dependency {FAST * 1000:g} ms, "
        f"{SLOW_SHARE:.0%} of calls {SLOW * 1000:g} ms (simulated time, seed {opts.seed})"
    )
    base, base_attempts, _ = _virtual_time.run(scenario(None, opts.calls, opts.seed))
    b99, b999 = pct(base, 0.99), pct(base, 0.999)
    print(
        f"  {'unhedged':<28} p50 {pct(base, 0.5) * 1000:6.2f} ms  p99 {b99 * 1000:7.2f} ms  "
        f"p99.9 {b999 * 1000:7.2f} ms  calls/call {base_attempts / len(base):.3f}"
    )
    rows = [
        ("Hedge() adaptive (p95)", Hedge(), scenario),
        ("Hedge(delay=0.01)", Hedge(delay=0.01), scenario),
    ]
    for label, hedge, run in rows:
        lat, attempts, events = _virtual_time.run(run(hedge, opts.calls, opts.seed))
        judge(label, hedge, lat, attempts, events, b99, b999)
    print("Through protect(...) (the public API, the whole pipeline per attempt):")
    base, base_attempts, _ = _virtual_time.run(through_protect(None, opts.calls, opts.seed))
    b99, b999 = pct(base, 0.99), pct(base, 0.999)
    print(
        f"  {'protect()':<28} p50 {pct(base, 0.5) * 1000:6.2f} ms  p99 {b99 * 1000:7.2f} ms  "
        f"p99.9 {b999 * 1000:7.2f} ms  calls/call {base_attempts / len(base):.3f}"
    )
    for label, hedge in (
        ("protect(hedge=Hedge())", Hedge()),
        ("protect(hedge=Hedge(delay=0.01))", Hedge(delay=0.01)),
    ):
        lat, attempts, events = _virtual_time.run(through_protect(hedge, opts.calls, opts.seed))
        judge(label, hedge, lat, attempts, events, b99, b999)
    return 0


if __name__ == "__main__":
    sys.exit(main())
