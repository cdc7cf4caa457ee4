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
4. Many readers of the admin state: 500 concurrent GET /state, and 200 event-stream clients for
   a few seconds, against the admin app as it was before (every request and every stream client
   computed its own snapshot, reproduced here as ``per_reader_app``). The admin app computes one
   snapshot per tick and shares it: snapshots computed and CPU time per reader drop by about the
   number of readers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import threading
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import aiohttp
from aiohttp import web
from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    generate_latest,
)
from prometheus_client.parser import text_string_to_metric_families

from resilience import metrics as m
from resilience.circuit import Registry
from resilience.testing import isolated_registry
from resilience.web import admin_app, serve_admin, snapshot

N_DEPS = 200


def build_ours(reg: Registry) -> CollectorRegistry:
    for i in range(N_DEPS):
        dep = reg.dependency(f"dep-{i:03d}", isolation="semaphore")
        for _ in range(20):
            dep.call(lambda: None)
    preg = CollectorRegistry()
    preg.register(m.ResilienceCollector(reg))
    return preg


def build_peer(ours: CollectorRegistry) -> CollectorRegistry:
    """The same series as ours, kept by prometheus-client's own metric objects.

    Read from our exposition, so the peer always holds exactly the families and label sets we
    export, whatever the metric names are.
    """
    # Our families carry no ``_created`` samples; without this the peer renders 23% more lines.
    disable_created_metrics()
    preg = CollectorRegistry()
    text = generate_latest(ours).decode()
    for family in text_string_to_metric_families(text):
        samples = family.samples
        if not samples:
            continue
        labels = [k for k in samples[0].labels if k != "le"]
        if family.type == "histogram":
            bounds = sorted(
                {float(s.labels["le"]) for s in samples if s.name.endswith("_bucket")}
                - {float("inf")}
            )
            hist = Histogram(
                family.name, family.documentation, labels, buckets=bounds, registry=preg
            )
            for s in samples:
                if s.name.endswith("_count"):
                    child = hist.labels(*(s.labels[k] for k in labels))
                    for _ in range(int(s.value)):
                        child.observe(0.0003)
        elif family.type == "counter":
            counter = Counter(family.name, family.documentation, labels, registry=preg)
            for s in samples:
                counter.labels(*(s.labels[k] for k in labels)).inc(s.value)
        else:
            gauge = Gauge(family.name, family.documentation, labels, registry=preg)
            for s in samples:
                gauge.labels(*(s.labels[k] for k in labels)).set(s.value)
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


def median_times(fns: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median time of each function, run in turns: load that comes and goes on a shared machine
    falls on all of them alike instead of on whichever ran during it."""
    for fn in fns:
        fn()
    times: list[list[float]] = [[] for _ in fns]
    for _ in range(repeats):
        for fn, out in zip(fns, times, strict=True):
            t0 = time.perf_counter()
            fn()
            out.append(time.perf_counter() - t0)
    return [statistics.median(t) for t in times]


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


class CountingCache:
    """A cache whose status() counts the snapshots computed (one status() per snapshot)."""

    name = "sessions"

    def __init__(self) -> None:
        self.calls = 0

    def status(self) -> dict[str, Any]:
        self.calls += 1
        return {"zones": {z: {"state": "closed", "hit_ratio": 0.9, "errors": 0} for z in "abc"}}


def per_reader_app(reg: Registry, caches: list[CountingCache], interval: float) -> web.Application:
    """The admin routes as they were: each /state request and each stream client computed its
    own snapshot (and serialised it) on every request or tick."""

    async def state(request: web.Request) -> web.StreamResponse:
        return web.json_response(snapshot(reg, caches))

    async def stream(request: web.Request) -> web.StreamResponse:
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        try:
            await resp.prepare(request)
            while True:
                body = json.dumps(snapshot(reg, caches), separators=(",", ":"))
                await resp.write(f"event: state\ndata: {body}\n\n".encode())
                await asyncio.sleep(interval)
        except ConnectionError:
            return resp

    app = web.Application()
    app.router.add_get("/state", state)
    app.router.add_get("/stream", stream)
    return app


async def many_state_requests(base: str, n: int) -> float:
    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            async with session.get(base + "state") as resp:
                await resp.read()

        t0 = time.perf_counter()
        await asyncio.gather(*(one() for _ in range(n)))
        return time.perf_counter() - t0


async def many_stream_clients(base: str, n: int, seconds: float) -> int:
    """How many state messages ``n`` clients received in ``seconds``, all together."""
    connector = aiohttp.TCPConnector(limit=0)
    mark = b"event: state\n"
    received = 0
    async with aiohttp.ClientSession(connector=connector) as session:

        async def one() -> None:
            nonlocal received
            async with session.get(base + "stream") as resp:
                tail = b""
                async for chunk in resp.content.iter_any():
                    data = tail + chunk
                    received += data.count(mark)
                    tail = data[-(len(mark) - 1) :]

        tasks = [asyncio.create_task(one()) for _ in range(n)]
        await asyncio.sleep(seconds)
        for t in tasks:
            t.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
    return received


def readers_section(reg: Registry, quick: bool) -> None:
    requests, clients = 500, 200
    seconds = 2.0 if quick else 4.0
    interval = 0.5
    print()
    print(
        f"many readers of the admin state, {N_DEPS} dependencies: {requests} concurrent GET "
        f"/state, then {clients} stream clients for {seconds:.0f} s (interval {interval} s)"
    )
    rows = []
    for label, make in (
        ("per reader (before)", lambda c: per_reader_app(reg, c, interval)),
        (
            "shared per tick (now)",
            lambda c: admin_app(
                reg, caches=c, interval=interval, max_stream_clients=clients + requests
            ),
        ),
    ):
        cache = CountingCache()
        with serve_admin(app=make([cache])) as server:
            asyncio.run(many_state_requests(server.url, 20))  # warm up
            time.sleep(interval)  # what the warm-up computed is stale now
            cache.calls = 0
            cpu0 = time.process_time()
            wall = asyncio.run(many_state_requests(server.url, requests))
            state_cpu, state_snaps = time.process_time() - cpu0, cache.calls
            cache.calls = 0
            cpu0 = time.process_time()
            received = asyncio.run(many_stream_clients(server.url, clients, seconds))
            stream_cpu, stream_snaps = time.process_time() - cpu0, cache.calls
        rows.append((label, wall, state_cpu, state_snaps, stream_cpu, stream_snaps, received))
        due = clients * seconds / interval
        print(
            f"  {label:<22} /state: {wall * 1e3:6.0f} ms wall, {state_cpu * 1e3:5.0f} ms CPU, "
            f"{state_snaps:3d} snapshots | streams: {stream_cpu:4.2f} s CPU, "
            f"{stream_snaps:4d} snapshots, {received:4d} of ~{due:.0f} messages delivered"
        )
    before, now = rows
    print(
        f"  now/before: /state wall {now[1] / before[1]:.2f}x, CPU {now[2] / before[2]:.2f}x; "
        f"streams CPU per message delivered "
        f"{(now[4] / max(now[6], 1)) / (before[4] / max(before[6], 1)):.2f}x"
    )
    print("  (CPU is the whole process: the clients reading the bytes are in it too)")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    repeats = 10 if args.quick else 40
    seconds = 1.0 if args.quick else 3.0

    with isolated_registry() as reg:
        ours = build_ours(reg)
        peer = build_peer(ours)
        ours_n, peer_n = series(generate_latest(ours)), series(generate_latest(peer))
        t_ours, t_peer = median_times(
            [lambda: generate_latest(ours), lambda: generate_latest(peer)], repeats
        )
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
        readers_section(reg, args.quick)


if __name__ == "__main__":
    main()
