"""Per-call overhead of a protected call against its peers, measured in one process.

Run: .venv/bin/python bench/circuit_overhead.py [--quick]

Each figure is the median over several repeats of the mean time per call on a trivial function
(closed circuit, success path). Ratios are ours / peer's; the issue's targets are printed beside
them.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import sys
import threading
import time
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import tenacity

from resilience import Policy, Retry, protect, registry

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import per_call_async, per_call_sync, us

warnings.filterwarnings("ignore", category=DeprecationWarning)


def line(label: str, ours: float, peer_label: str, peer: float, target: float) -> bool:
    ratio = ours / peer
    ok = ratio <= target
    print(
        f"  {label:<34} {us(ours)}   {peer_label:<34} {us(peer)}   "
        f"ratio {ratio:5.2f}x (target <= {target}x) {'ok' if ok else 'MISSED'}"
    )
    return ok


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true", help="fewer iterations")
    opts = parser.parse_args()
    n = 20_000 if opts.quick else 100_000
    repeats = 5 if opts.quick else 9
    results: list[bool] = []

    import aiobreaker
    import circuitbreaker
    import pybreaker

    def trivial(x: int) -> int:
        return x

    async def atrivial(x: int) -> int:
        return x

    print("sync, semaphore isolation (closed circuit, success)")
    ours_sem = protect("bench.sem", isolation="semaphore", max_concurrent=64)(trivial)
    pyb = pybreaker.CircuitBreaker(fail_max=5, reset_timeout=60)
    pyb_fn = pyb(trivial)
    cb_fn = circuitbreaker.circuit(failure_threshold=5, recovery_timeout=30)(trivial)
    bare = per_call_sync(lambda: trivial(1), n, repeats)
    t_ours = per_call_sync(lambda: ours_sem(1), n, repeats)
    t_pyb = per_call_sync(lambda: pyb_fn(1), n, repeats)
    t_cb = per_call_sync(lambda: cb_fn(1), n, repeats)
    import wrapt

    wrapped = wrapt.FunctionWrapper(trivial, lambda w, i, a, k: w(*a, **k))
    t_wrapt = per_call_sync(lambda: wrapped(1), n, repeats)
    print(
        f"  bare call {us(bare)}   wrapt.FunctionWrapper alone {us(t_wrapt)} (why plain functions get a closure)"
    )
    results.append(line("resilience (semaphore)", t_ours, "pybreaker", t_pyb, 0.6))
    results.append(line("resilience (semaphore)", t_ours, "circuitbreaker", t_cb, 1.2))

    print("async, timeout enforced")
    ours_async = protect("bench.async", timeout=1.0, max_concurrent=64)(atrivial)
    aio = aiobreaker.CircuitBreaker(fail_max=5)

    @aio
    async def aio_fn(x: int) -> int:
        return x

    sem = asyncio.Semaphore(64)

    async def sem_timeout(x: int) -> int:
        async with sem, asyncio.timeout(1.0):
            return await atrivial(x)

    from purgatory import AsyncCircuitBreakerFactory

    purgatory_breakers = AsyncCircuitBreakerFactory(default_threshold=5, default_ttl=30)

    @purgatory_breakers("bench")
    async def purgatory_fn(x: int) -> int:
        return x

    t_ours_a = per_call_async(lambda: ours_async(1), n, repeats)
    t_sem = per_call_async(lambda: sem_timeout(1), n, repeats)
    t_aio = per_call_async(lambda: aio_fn(1), n, repeats)
    t_pur = per_call_async(lambda: purgatory_fn(1), n, repeats)
    results.append(line("resilience (async)", t_ours_a, "Semaphore + asyncio.timeout", t_sem, 0.6))
    results.append(line("resilience (async)", t_ours_a, "aiobreaker (no timeout)", t_aio, 1.2))
    print(f"  (purgatory, no timeout: {us(t_pur)}, ratio {t_ours_a / t_pur:.2f}x; no target)")

    print("sync, thread-pool isolation")
    ours_pool = protect("bench.pool", pool_size=4, queue_size=64)(trivial)
    tpe = ThreadPoolExecutor(max_workers=4)
    pn = max(2000, n // 10)
    t_pool = per_call_sync(lambda: ours_pool(1), pn, repeats)
    t_tpe = per_call_sync(lambda: tpe.submit(trivial, 1).result(), pn, repeats)
    results.append(
        line("resilience (thread pool)", t_pool, "ThreadPoolExecutor submit+result", t_tpe, 1.15)
    )
    tpe.shutdown()

    print("retry configured, no failure")
    ours_retry = protect(
        "bench.retry",
        isolation="semaphore",
        max_concurrent=64,
        retry=Retry(attempts=3, wait=tenacity.wait_none()),
    )(trivial)
    ten = tenacity.retry(stop=tenacity.stop_after_attempt(3), wait=tenacity.wait_none())(trivial)
    t_r = per_call_sync(lambda: ours_retry(1), n, repeats)
    t_t = per_call_sync(lambda: ten(1), max(2000, n // 5), repeats)
    results.append(line("resilience (retry=3)", t_r, "tenacity.retry", t_t, 0.15))

    print("retry and deadline configured, no failure")
    ours_deadline = protect(
        "bench.deadline",
        isolation="semaphore",
        max_concurrent=64,
        deadline=5.0,
        retry=Retry(attempts=3, wait=tenacity.wait_none()),
    )(trivial)
    ten_deadline = tenacity.retry(
        stop=tenacity.stop_after_attempt(3) | tenacity.stop_after_delay(5.0),
        wait=tenacity.wait_none(),
    )(trivial)
    t_rd = per_call_sync(lambda: ours_deadline(1), max(2000, n // 5), repeats)
    t_td = per_call_sync(lambda: ten_deadline(1), max(2000, n // 5), repeats)
    results.append(
        line("resilience (retry + deadline)", t_rd, "tenacity stop_after_delay", t_td, 0.3)
    )

    print("one failure, then a successful retry")

    def flaky_factory() -> Callable[[int], int]:
        state = [0]

        def flaky(x: int) -> int:
            state[0] += 1
            if state[0] % 2:
                raise ConnectionError("every other call")
            return x

        return flaky

    # budget=None: every other call retried is 50% retries, past any retry budget (the default
    # one would rightly stop them); this row measures what a retry costs, as tenacity's does.
    ours_flaky = protect(
        "bench.flaky",
        isolation="semaphore",
        max_concurrent=64,
        min_calls=10**9,
        retry=Retry(attempts=3, wait=tenacity.wait_none(), budget=None),
    )(flaky_factory())
    ten_flaky = tenacity.retry(
        stop=tenacity.stop_after_attempt(3),
        wait=tenacity.wait_none(),
        retry=tenacity.retry_if_exception_type(ConnectionError),
    )(flaky_factory())
    fn_ = max(2000, n // 10)
    t_of = per_call_sync(lambda: ours_flaky(1), fn_, repeats)
    t_tf = per_call_sync(lambda: ten_flaky(1), fn_, repeats)
    results.append(line("resilience (retried once)", t_of, "tenacity (retried once)", t_tf, 0.5))

    print("a sync function awaited from a coroutine, in a pool of 4")
    dep_pool = registry().dependency("bench.acall", pool_size=4, queue_size=64, timeout=1.0)
    executor = ThreadPoolExecutor(max_workers=4)

    async def via_executor(x: int) -> int:
        return await asyncio.get_running_loop().run_in_executor(executor, trivial, x)

    an = max(1000, n // 20)
    t_ac = per_call_async(lambda: dep_pool.acall(trivial, 1), an, repeats)
    t_ex = per_call_async(lambda: via_executor(1), an, repeats)
    results.append(
        line(
            "resilience Dependency.acall(sync)",
            t_ac,
            "loop.run_in_executor (no timeout)",
            t_ex,
            1.2,
        )
    )
    executor.shutdown()

    print("16 threads x 10 calls of 20 ms through one breaker")

    def slow() -> None:
        time.sleep(0.02)

    def wall(call: Callable[[], Any]) -> float:
        def worker() -> None:
            for _ in range(10):
                call()

        threads = [threading.Thread(target=worker) for _ in range(16)]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        return time.perf_counter() - t0

    ours_slow = protect(
        "bench.slow", policy=Policy(isolation="semaphore", max_concurrent=16, timeout=5)
    )(slow)
    pyb_slow = pybreaker.CircuitBreaker(fail_max=5)(slow)
    base = statistics.median(wall(slow) for _ in range(3))
    t_os = statistics.median(wall(ours_slow) for _ in range(3))
    t_ps = wall(pyb_slow)
    print(f"  no breaker {base:.3f} s   pybreaker {t_ps:.3f} s ({t_ps / base:.1f}x)")
    results.append(line("resilience (semaphore, 16 threads)", t_os, "no breaker", base, 1.1))

    print(f"\n{sum(results)}/{len(results)} targets met")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
