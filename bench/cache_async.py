"""The async cache against aiomcache and emcache on one real memcached, side by side.

Run: .venv/bin/python bench/cache_async.py [--quick]

Starts one memcached on a free port and, at 1, 10, 100 and 1,000 concurrent tasks, measures
gets of present keys per second, counting only correct answers (a miss or a wrong value is
reported, never counted): AsyncReplicatedCache (one zone, batching on: gets of one loop turn
share a multi-get), the same without batching, aiomcache, and emcache without and with its
autobatching. Each client gets up to 64 connections (our max_concurrent default).

Targets (issue 13/17): at 100 tasks ours >= 2x aiomcache and >= emcache; 0 misses everywhere.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import aiomcache
import emcache

from resilience.cache import AsyncReplicatedCache

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import free_port, start_memcached

KEYS = [f"bench:{i}" for i in range(200)]
VALUE = b"v" * 100  # bytes: stored with flags 0, which every client reads as is
POOL = 64


Get = Callable[[str], Awaitable[Any]]


async def run(get: Get, tasks: int, total: int) -> tuple[float, int, int]:
    """(correct answers per second, misses, wrong answers) for ``total`` gets over ``tasks``.

    A get that raises (a peer's own timeout, say) is a wrong answer: counted, never fatal."""
    per_task = max(1, total // tasks)
    misses = wrong = correct = 0

    async def worker(i: int) -> None:
        nonlocal misses, wrong, correct
        for j in range(per_task):
            try:
                got = await get(KEYS[(i * 7 + j) % len(KEYS)])
            except Exception:  # a failed get is reported as a wrong answer, never fatal
                wrong += 1
                continue
            if got is None:
                misses += 1
            elif got != VALUE:
                wrong += 1
            else:
                correct += 1

    t0 = time.perf_counter()
    await asyncio.gather(*(worker(i) for i in range(tasks)))
    return correct / (time.perf_counter() - t0), misses, wrong


async def clients(port: int) -> dict[str, tuple[Get, Callable[[], Awaitable[None]]]]:
    spec = {"a": [f"127.0.0.1:{port}"]}
    ours = AsyncReplicatedCache(spec, name="bench", timeout=0.5)
    plain = AsyncReplicatedCache(spec, name="bench-unbatched", timeout=0.5, batch_window=None)
    aio = aiomcache.Client("127.0.0.1", port, pool_size=POOL)
    addr = [emcache.MemcachedHostAddress("127.0.0.1", port)]
    em = await emcache.create_client(addr, max_connections=POOL, timeout=0.5)
    emb = await emcache.create_client(addr, max_connections=POOL, timeout=0.5, autobatching=True)
    await ours.set_many(dict.fromkeys(KEYS, VALUE))

    async def aio_get(key: str) -> Any:
        return await aio.get(key.encode())

    def em_get(client: Any) -> Get:
        async def get(key: str) -> Any:
            item = await client.get(key.encode())
            return None if item is None else item.value

        return get

    async def ours_close() -> None:
        await ours.aclose()

    async def plain_close() -> None:
        await plain.aclose()

    async def aio_close() -> None:
        await aio.close()

    async def em_close() -> None:
        await em.close()

    async def emb_close() -> None:
        await emb.close()

    return {
        "resilience (batched)": (ours.get, ours_close),
        "resilience (unbatched)": (plain.get, plain_close),
        "aiomcache": (aio_get, aio_close),
        "emcache": (em_get(em), em_close),
        "emcache (autobatching)": (em_get(emb), emb_close),
    }


async def main_async(quick: bool) -> None:
    port = free_port()
    proc = start_memcached(port)
    try:
        peers = await clients(port)
        total = 4000 if quick else 20000
        repeats = 1 if quick else 3
        for get, _ in peers.values():  # warm every pool up
            await run(get, 100, 2000)
        print(f"gets of present keys, correct answers per second (median of {repeats})")
        for tasks in (1, 10, 100, 1000):
            n = total if tasks > 1 else total // 4
            print(f"== {tasks} concurrent tasks ==", flush=True)
            results: dict[str, tuple[float, int, int]] = {}
            for name, (get, _) in peers.items():
                runs = [await run(get, tasks, n) for _ in range(repeats)]
                rate = statistics.median(r[0] for r in runs)
                results[name] = (rate, sum(r[1] for r in runs), sum(r[2] for r in runs))
            ours = results["resilience (batched)"][0]
            for name, (rate, misses, wrong) in results.items():
                print(
                    f"  {name:24s} {rate:10.0f} ops/s   ours/this {ours / rate:5.2f}x   "
                    f"misses {misses}  wrong or raised {wrong}"
                )
            if tasks == 100:
                aio, em = results["aiomcache"][0], results["emcache"][0]
                emb = results["emcache (autobatching)"][0]
                print(
                    f"  target at 100 tasks: >= 2x aiomcache: {ours / aio:.2f}x "
                    f"{'ok' if ours >= 2 * aio else 'MISSED'}; >= emcache: {ours / em:.2f}x "
                    f"{'ok' if ours >= em else 'MISSED'} (autobatching {ours / emb:.2f}x)"
                )
        for _, close in peers.values():
            await close()
    finally:
        proc.kill()
        proc.wait()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    asyncio.run(main_async(args.quick))


if __name__ == "__main__":
    main()
