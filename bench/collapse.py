"""Request collapsing: 1,000 concurrent single-key loads, collapsed vs one call per key.

Run: .venv/bin/python bench/collapse.py

A simulated backend answers a call in 5 ms plus 10 us per key asked (a batch of 100 keys takes
6 ms). 1,000 callers each load one key at the same time:

- one call per key: a protected call per key (max_concurrent / pool sized for the load);
- collapsed: ``@collapse(window=0.01, max_batch=100)``, each caller ``one(key)``.

Reported: calls reaching the backend, and the wall time until every caller has its value, for
asyncio (1,000 tasks) and for threads (1,000 loads on 200 threads).
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from resilience.circuit import Policy, Registry, protect
from resilience.circuit._collapse import collapse

LOADS = 1000
THREADS = 200


def cost(keys: int) -> float:
    return 0.005 + 0.00001 * keys


def bench_async() -> tuple[tuple[int, float], tuple[int, float]]:
    reg = Registry()
    # first, so that ``reg`` is not empty: protect(registry=...) treats an empty one as None
    reg.dependency("users", Policy(max_concurrent=LOADS, timeout=10))
    calls = {"single": 0, "batch": 0}

    @protect("users-one", policy=Policy(max_concurrent=LOADS, timeout=10), registry=reg)
    async def load_one(key: int) -> str:
        calls["single"] += 1
        await asyncio.sleep(cost(1))
        return f"user{key}"

    @collapse("users", window=0.01, max_batch=100, registry=reg)
    async def load_many(keys: list[int]) -> Mapping[int, str]:
        calls["batch"] += 1
        await asyncio.sleep(cost(len(keys)))
        return {k: f"user{k}" for k in keys}

    async def run() -> tuple[tuple[int, float], tuple[int, float]]:
        t0 = time.perf_counter()
        single = await asyncio.gather(*(load_one(k) for k in range(LOADS)))
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = await asyncio.gather(*(load_many.one(k) for k in range(LOADS)))
        t_batch = time.perf_counter() - t0
        assert single == batched
        return (calls["single"], t_single), (calls["batch"], t_batch)

    return asyncio.run(run())


def bench_threads() -> tuple[tuple[int, float], tuple[int, float]]:
    reg = Registry()
    reg.dependency("users", Policy(pool_size=THREADS, queue_size=LOADS, timeout=10))
    calls = {"single": 0, "batch": 0}

    @protect(
        "users-one",
        policy=Policy(pool_size=THREADS, queue_size=LOADS, timeout=10),
        registry=reg,
    )
    def load_one(key: int) -> str:
        calls["single"] += 1
        time.sleep(cost(1))
        return f"user{key}"

    @collapse("users", window=0.01, max_batch=100, registry=reg)
    def load_many(keys: list[int]) -> Mapping[int, str]:
        calls["batch"] += 1
        time.sleep(cost(len(keys)))
        return {k: f"user{k}" for k in keys}

    with ThreadPoolExecutor(THREADS) as pool:
        list(pool.map(lambda k: k, range(THREADS)))  # start the threads
        load_one(0)
        calls["single"] = 0
        t0 = time.perf_counter()
        single = list(pool.map(load_one, range(LOADS)))
        t_single = time.perf_counter() - t0
        t0 = time.perf_counter()
        batched = list(pool.map(load_many.one, range(LOADS)))
        t_batch = time.perf_counter() - t0
    assert single == batched
    return (calls["single"], t_single), (calls["batch"], t_batch)


def main() -> int:
    print(f"{LOADS} concurrent single-key loads; backend: 5 ms + 10 us per key")
    print(f"  {'':<44} {'backend calls':>13} {'total time':>11}")
    for label, ((n1, t1), (n2, t2)) in (
        ("asyncio (1,000 tasks)", bench_async()),
        (f"threads ({THREADS} threads)", bench_threads()),
    ):
        print(f"  {label + ', one call per key':<34} {n1:>13} {t1 * 1000:8.1f} ms")
        print(
            f"  {label + ', collapsed':<34} {n2:>13} {t2 * 1000:8.1f} ms   "
            f"{n1 / n2:.0f}x fewer calls, time {t2 / t1:.2f}x"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
