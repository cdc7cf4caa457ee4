"""Serving /metrics with 200 dependencies, against prometheus-client keeping the same series itself.

Run: .venv/bin/python bench/web.py [--quick]

1. Render time: ``generate_latest`` over resilience's collector (reads the rolling windows at
   scrape time) vs. ``generate_latest`` over a registry holding the same number of series as
   prometheus-client's own Counters, Gauges and Histograms. Target: ours <= 2x the peer.
2. The same through HTTP: GET /metrics from the admin app served by ``serve_admin``.
3. Protected-call latency while /metrics is scraped back to back: sync calls on their own
   threads (sync service, admin app on its background thread) and async calls sharing the
   admin app's event loop. A scrape takes only the short per-window locks, so no call waits for
   a whole scrape: the max call latency stays below the scrape time.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)

from resilience import metrics as m
from resilience.circuit import LATENCY_BOUNDS, OUTCOMES, Registry, State
from resilience.testing import isolated_registry
from resilience.web import admin_app, serve_admin

N_DEPS = 200


def build_ours(reg: Registry) -> CollectorRegistry:
    for i in range(N_DEPS):
        dep = reg.dependency(f"dep-{i:03d}", isolation="semaphore")
        for _ in range(20):
            dep.call(lambda: None)
    preg = CollectorRegistry()
    preg.register(m.ResilienceCollector(reg))
    return preg


def build_peer() -> CollectorRegistry:
    """The same series, kept by prometheus-client's own metric objects."""
    # Our families carry no ``_created`` samples; without this the peer renders 23% more lines.
    disable_created_metrics()
    preg = CollectorRegistry()
    dep = ["dependency"]
    calls = Counter(m.CALLS, "Calls by outcome.", [*dep, "outcome"], registry=preg)
    duration = Histogram(m.CALL_DURATION, "Duration.", dep, buckets=LATENCY_BOUNDS, registry=preg)
    state = Gauge(m.CIRCUIT_STATE, "State.", [*dep, "state"], registry=preg)
    gauges = [
        Gauge(name, "g", dep, registry=preg)
        for name in (
            m.CIRCUIT_FAILURE_RATE,
            m.CIRCUIT_SLOW_CALL_RATE,
            m.POOL_ACTIVE,
            m.POOL_QUEUED,
            m.POOL_ABANDONED,
            m.CONCURRENT_CALLS,
        )
    ]
    counters = [Counter(name, "c", dep, registry=preg) for name in (m.CIRCUIT_OPENED, m.RETRIES)]
    limits = Gauge(m.LIMIT, "Limits.", [*dep, "limit"], registry=preg)
    for i in range(N_DEPS):
        name = f"dep-{i:03d}"
        for outcome in OUTCOMES:
            calls.labels(name, outcome).inc(3)
        for _ in range(20):
            duration.labels(name).observe(0.0003)
        for st in State:
            state.labels(name, st.value).set(1.0 if st is State.CLOSED else 0.0)
        for g in gauges:
            g.labels(name).set(0.0)
        for c in counters:
            c.labels(name).inc(0)
        for limit in (
            "timeout_seconds",
            "pool_size",
            "queue_size",
            "max_concurrent",
            "failure_rate",
        ):
            limits.labels(name, limit).set(1.0)
    return preg


def series(text: bytes) -> int:
    return sum(1 for line in text.splitlines() if line and not line.startswith(b"#"))


def median_time(fn: Callable[[], Any], repeats: int) -> float:
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def describe(label: str, lat: list[float]) -> str:
    return (
        f"{label:<34} n={len(lat):>6}  p50 {pct(lat, 0.5) * 1e6:8.1f} us  "
        f"p99 {pct(lat, 0.99) * 1e6:8.1f} us  max {max(lat) * 1e3:7.2f} ms"
    )


class Scraper:
    """GETs a URL back to back on its own thread and records how long each scrape took."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.times: list[float] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        for _ in range(10_000):  # bounded
            if self._stop.is_set():
                return
            t0 = time.perf_counter()
            with urllib.request.urlopen(self.url, timeout=10) as resp:
                resp.read()
            self.times.append(time.perf_counter() - t0)

    def start(self) -> Scraper:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join()

    def __enter__(self) -> Scraper:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


def sync_calls(reg: Registry, seconds: float) -> list[float]:
    dep = reg.dependency("dep-000")
    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        dep.call(lambda: None)
        lat.append(time.perf_counter() - t0)
        time.sleep(0.0005)  # a service making calls, not a tight loop fighting for the GIL
    return lat


async def async_calls(reg: Registry, seconds: float) -> list[float]:
    dep = reg.dependency("dep-001")

    async def work() -> None:
        return None

    lat = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        t0 = time.perf_counter()
        await dep.acall(work)
        lat.append(time.perf_counter() - t0)
        await asyncio.sleep(0.0005)
    return lat


async def async_section(reg: Registry, seconds: float) -> None:
    runner = web.AppRunner(admin_app(reg), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    url = f"http://127.0.0.1:{runner.addresses[0][1]}/metrics"
    try:
        quiet = await async_calls(reg, seconds)
        scraper = Scraper(url).start()
        busy = await async_calls(reg, seconds)
        # Joined off the loop: the scrape in flight needs this loop to finish.
        await asyncio.to_thread(scraper.stop)
        print(describe("async calls, no scrape", quiet))
        print(describe("async calls, same loop, scraping", busy))
        print(
            f"{'':34} scrapes {len(scraper.times)}, median {statistics.median(scraper.times) * 1e3:.1f} ms"
        )
        print(
            f"{'':34} max call {max(busy) * 1e3:.2f} ms vs median scrape "
            f"{statistics.median(scraper.times) * 1e3:.1f} ms: "
            f"{'never waited for a scrape' if max(busy) < statistics.median(scraper.times) else 'WAITED'}"
        )
    finally:
        await runner.cleanup()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 10 if args.quick else 40
    seconds = 1.0 if args.quick else 3.0

    with isolated_registry() as reg:
        ours = build_ours(reg)
        peer = build_peer()
        ours_n, peer_n = series(generate_latest(ours)), series(generate_latest(peer))
        t_ours = median_time(lambda: generate_latest(ours), repeats)
        t_peer = median_time(lambda: generate_latest(peer), repeats)
        print(f"/metrics render, {N_DEPS} dependencies (median of {repeats})")
        print(f"  resilience collector      {t_ours * 1e3:7.2f} ms   {ours_n} series")
        print(f"  prometheus-client objects {t_peer * 1e3:7.2f} ms   {peer_n} series")
        ratio = t_ours / t_peer
        print(f"  ratio ours/peer {ratio:.2f}x   target <= 2x: {'PASS' if ratio <= 2 else 'FAIL'}")

        with serve_admin(registry=reg, prometheus_registry=ours) as server:
            url = server.url + "metrics"

            def get() -> None:
                with urllib.request.urlopen(url, timeout=10) as resp:
                    resp.read()

            t_http = median_time(get, repeats)
            print(f"  GET /metrics over HTTP    {t_http * 1e3:7.2f} ms")
            print()
            print(
                f"protected-call latency while /metrics is scraped back to back ({seconds:.0f} s each)"
            )
            quiet = sync_calls(reg, seconds)
            with Scraper(url) as scraper:
                busy = sync_calls(reg, seconds)
            med = statistics.median(scraper.times)
            print(describe("sync calls, no scrape", quiet))
            print(describe("sync calls, admin thread scraping", busy))
            print(f"{'':34} scrapes {len(scraper.times)}, median {med * 1e3:.1f} ms")
            print(f"{'':34} (fewer calls fit: the scraping thread holds the GIL while it renders)")
            print(
                f"{'':34} max call {max(busy) * 1e3:.2f} ms vs median scrape {med * 1e3:.1f} ms: "
                f"{'never waited for a scrape' if max(busy) < med else 'WAITED'}"
            )
        asyncio.run(async_section(reg, seconds))


if __name__ == "__main__":
    main()
