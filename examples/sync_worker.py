"""The same protections in a plain threaded program: no asyncio, as in Flask, Django or scripts.

A pool of worker threads prices orders. Each price comes from a pricing HTTP service (stdlib
``http.server`` on loopback) through ``protect`` (thread-pool bulkhead, timeout, retry,
fallback), is cached in a ``ReplicatedCache`` over two memcached zones, and a flag can switch
live pricing off. A FIT recipe, activated in-process with ``fit.active``, fails pricing for a
while: the experiment's circuit opens (real traffic's stays closed) and the cached or list price
is served.

Run: ``.venv/bin/python -m examples.sync_worker`` (memcached must be installed; scripts/demo
or scripts/test install it).
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import threading
from concurrent.futures import ThreadPoolExecutor
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.request import urlopen

import tenacity

from examples.movies.procs import Missing, Processes
from resilience import Retry, State, fit, protect, registry, request_scope
from resilience.cache import ReplicatedCache
from resilience.flags import Flags, InMemorySource

LIST_PRICE = 10.0


class Pricing(BaseHTTPRequestHandler):
    hits = 0

    def do_GET(self) -> None:
        Pricing.hits += 1
        sku = self.path.rsplit("/", 1)[-1]
        body = json.dumps({"sku": sku, "price": 7.5 + len(sku)}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: Any) -> None:
        pass


def main() -> int:
    logging.basicConfig(level=logging.ERROR)
    procs = Processes()
    server = ThreadingHTTPServer(("127.0.0.1", 0), Pricing)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_port}"
    try:
        zones = {z: [f"127.0.0.1:{procs.memcached(z)}"] for z in ("a", "b")}
    except Missing as exc:
        print(f"sync_worker: {exc}", file=sys.stderr)
        return 3
    cache = ReplicatedCache(zones, name="prices", timeout=0.1)
    flags = Flags(InMemorySource({"live-pricing": {"on": True}}))

    def cached_or_list(sku: str) -> float:
        value = cache.get(f"price:{sku}")
        return float(value) if value is not None else LIST_PRICE

    @protect("pricing", timeout=0.5, pool_size=4, queue_size=8, min_calls=5,
             retry=Retry(attempts=2, wait=tenacity.wait_fixed(0.01), on=(ConnectionError,)),
             fallback=cached_or_list)  # fmt: skip
    def live_price(sku: str) -> float:
        with urlopen(f"{base}/price/{sku}", timeout=2) as resp:
            return float(json.loads(resp.read())["price"])

    @flags.switch("live-pricing", off=cached_or_list)
    def price(sku: str) -> float:
        value = live_price(sku)
        cache.set(f"price:{sku}", str(value))
        return value

    def job(order: int, recipe: fit.Recipe | None = None) -> float:
        # One request scope per job (it dedups cache reads within the job); a recipe, when
        # given, applies to every protected call and cache operation the job makes.
        with request_scope(), fit.active(recipe) if recipe else contextlib.nullcontext():
            return price(f"sku{order % 5}")

    results: dict[str, Any] = {}
    try:
        with ThreadPoolExecutor(8) as workers:
            results["normal"] = list(workers.map(job, range(40)))
            results["hits_normal"] = hits = Pricing.hits
            recipe = fit.Recipe.from_dict(
                {"name": "pricing-down", "faults": [{"dependency": "pricing", "error": True}]}
            )
            results["pricing_down"] = list(workers.map(lambda o: job(o, recipe), range(40)))
            results["hits_during_outage"] = Pricing.hits - hits
            flags.set("live-pricing", False)
            hits = Pricing.hits
            results["switched_off"] = list(workers.map(job, range(20)))
            results["hits_while_off"] = Pricing.hits - hits
        pricing = registry().dependency("pricing")
        # The injected failures opened the experiment's own circuit; real traffic's stayed shut.
        seen = pricing.experiment_state("pricing-down")
        state = f"{seen.value if seen else 'forgotten'} for the experiment, {pricing.state.value}"
        state += " for real traffic"
        ok = (
            seen is State.OPEN
            and pricing.state is State.CLOSED
            and results["hits_normal"] == 40
            and LIST_PRICE not in results["normal"]
            and results["normal"] == results["pricing_down"]  # served from the cache, same prices
            and results["hits_during_outage"] == 0
            and results["hits_while_off"] == 0
        )
        print(f"priced 40 orders live; 40 with pricing failed by FIT (circuit {state}, "
              f"{results['hits_during_outage']} requests reached pricing, prices from the cache); "
              f"20 with live pricing switched off ({results['hits_while_off']} requests): "
              f"{'OK' if ok else 'UNEXPECTED'}")  # fmt: skip
        return 0 if ok else 1
    finally:
        cache.close()
        flags.close()
        server.shutdown()
        procs.stop_all()


if __name__ == "__main__":
    sys.exit(main())
