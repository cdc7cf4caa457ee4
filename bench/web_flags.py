"""A flag flipped through the admin routes, on a real etcd: what the HTTP face costs over the write.

Run: ``.venv/bin/python bench/web_flags.py`` (needs the ``etcd`` binary: scripts/test installs it;
``--quick`` for a short run). Starts its own etcd on loopback (data in /dev/shm) and N watching
processes, then over W writes each of:

1. ``flags.write_value`` called directly (the etcd transaction only);
2. ``POST /admin/flags/{name}`` through the admin app (``resilience.web``), served on loopback;
3. ``PUT /flags/{name}`` through ``flags_admin_app`` (the same core, another HTTP face);
4. ``POST ...?target=override`` (an override in this process, no etcd);

prints p50/p99 of the answer time, and for 1-3 the time until every watching process saw the
change. A route answers once its own process sees the write (so its answer shows it), which is
most of its extra cost over the bare write; the two HTTP faces share one core and should cost
the same.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from aiohttp import web
from flags_etcd import (  # type: ignore[import-not-found]
    Observer,
    free_port,
    pct,
    start_children,
    start_etcd,
    stop_children,
)

from resilience.circuit import Registry
from resilience.flags import EtcdSource, Flags, flags_admin_app
from resilience.web import admin_app, serve_admin

PREFIX = "/bench/web-flags/"
TOKEN = "bench"


def request(method: str, url: str, body: object) -> None:
    data = json.dumps(body).encode()
    headers = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json",
               "X-Resilience-Actor": "bench"}  # fmt: skip
    with urllib.request.urlopen(urllib.request.Request(url, data, headers, method=method)) as r:
        r.read()


def measure(
    label: str,
    key: str,
    write: Callable[[str, bool], None],
    writes: int,
    observer: Observer | None,
    n: int,
) -> None:
    answers: list[float] = []
    seen: list[float] = []
    for i in range(writes):
        name = f"{key}-{i % 10}"
        t0 = time.time()
        write(name, (i // 10) % 2 == 0)  # each write changes its flag: every process hears it
        answers.append(time.time() - t0)
        if observer is not None:
            times = observer.wait(name, n * (i // 10 + 1), 10.0)[-n:]
            seen.append(max(times) - t0)
    a50, a99 = pct(answers, 0.5) * 1e3, pct(answers, 0.99) * 1e3
    line = f"{label:30s} answer p50 {a50:6.1f} ms  p99 {a99:6.1f} ms"
    if seen:
        s50, s99 = pct(seen, 0.5) * 1e3, pct(seen, 0.99) * 1e3
        line += f"   all {n} procs saw it: p50 {s50:6.1f} ms  p99 {s99:6.1f} ms"
    print(line)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--procs", type=int, default=5)
    parser.add_argument("--writes", type=int, default=100)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.quick:
        args.procs, args.writes = 2, 20
    shm = "/dev/shm" if os.path.isdir("/dev/shm") else None
    root = Path(tempfile.mkdtemp(prefix="bench-web-flags-", dir=shm))
    proc, url = start_etcd(root)
    procs = start_children(args.procs, "etcd", url, PREFIX)
    observer = Observer(procs)
    reg = Registry()
    flags = Flags(EtcdSource([url], PREFIX), registry=reg)
    flags.ready(10)
    outer = web.Application()
    outer.add_subapp("/flags", flags_admin_app(flags, token=TOKEN))
    outer.add_subapp("/admin", admin_app(reg, flags=flags, token=TOKEN))
    try:
        with serve_admin(port=free_port(), app=outer) as server:
            base = server.url.rstrip("/")
            print(f"# a flag write, etcd {url}, {args.procs} watching processes, {args.writes} writes, "
                  f"{os.cpu_count()} cores")  # fmt: skip

            def direct(name: str, on: bool) -> None:
                flags.write(name, {"on": on}, actor="bench")

            def admin(name: str, on: bool) -> None:
                request("POST", f"{base}/admin/flags/{name}", {"value": on, "create": True})

            def flags_app(name: str, on: bool) -> None:
                request("PUT", f"{base}/flags/{name}", {"value": on, "create": True})

            def override(name: str, on: bool) -> None:
                path = f"{base}/admin/flags/{name}?target=override"
                request("POST", path, {"value": on, "create": True})

            n, w = args.procs, args.writes
            measure("flags.write (direct)", "direct", direct, w, observer, n)
            measure("POST /admin/flags (web)", "web", admin, w, observer, n)
            measure("PUT /flags (flags_admin_app)", "flags-app", flags_app, w, observer, n)
            measure("POST ?target=override", "override", override, w, None, n)
    finally:
        flags.close()
        stop_children(procs)
        proc.kill()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
