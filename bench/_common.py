"""What every benchmark script shares: per-call timing, free loopback ports, a memcached.

Imported as ``_common`` (each script puts ``bench/`` on ``sys.path``); not part of the package.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import subprocess
import time
from collections.abc import Awaitable, Callable
from typing import Any

__all__ = ["free_port", "per_call_async", "per_call_sync", "start_memcached", "us"]


def per_call_sync(fn: Callable[[], Any], n: int, repeats: int) -> float:
    """Median seconds per call of ``fn`` over ``repeats`` runs of ``n`` calls, after a warm-up."""
    for _ in range(min(n, 2000)):
        fn()
    results = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        results.append((time.perf_counter() - t0) / n)
    return statistics.median(results)


def per_call_async(make: Callable[[], Awaitable[Any]], n: int, repeats: int) -> float:
    """:func:`per_call_sync` for a coroutine factory, awaited one at a time on a fresh loop."""

    async def run() -> float:
        for _ in range(min(n, 2000)):
            await make()
        results = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            for _ in range(n):
                await make()
            results.append((time.perf_counter() - t0) / n)
        return statistics.median(results)

    return asyncio.run(run())


def us(seconds: float) -> str:
    """Seconds as right-aligned microseconds."""
    return f"{seconds * 1e6:8.3f} us"


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start_memcached(port: int, *, memory_mb: int = 64) -> subprocess.Popen[bytes]:
    """A memcached (one worker thread, no UDP) on 127.0.0.1:``port``, answering when returned."""
    cmd = ["memcached", "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mb)]
    cmd += ["-t", "1"]
    if os.geteuid() == 0:
        cmd += ["-u", "root"]
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    for _ in range(500):
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return proc
        except OSError:
            time.sleep(0.01)
    proc.kill()
    raise RuntimeError(f"memcached did not start on {port}")
