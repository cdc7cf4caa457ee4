"""Fleet-wide flags on etcd, measured: propagation to many processes, evaluation cost, 10k flags.

Run: ``.venv/bin/python bench/flags_etcd.py`` (needs the ``etcd`` binary: scripts/test installs
it). Starts its own etcd on loopback (data in /dev/shm) and its own processes; prints:

1. propagation: a write until each of N processes' ``on_change`` fired, p50/p99 over W writes,
   and the same for ``HttpSource`` polling (measured at a short interval, then stated at its
   default interval, since a poll's delay is uniform over the interval);
2. evaluation cost of ``enabled()`` with an EtcdSource attached vs a FileSource (ratio);
3. startup time and memory of a process with 10,000 flags, etcd vs a file.

Options: ``--procs 20 --writes 200`` (the issue's figures), ``--quick`` for a short run.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import timeit
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from resilience.circuit import Registry
from resilience.flags import EtcdSource, FileSource, Flags, HttpSource
from resilience.flags._etcd_client import EtcdClient, b64
from resilience.flags._http import DEFAULT_HTTP_INTERVAL

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port

PREFIX = "/bench/flags/"


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


# -- child processes ------------------------------------------------------------------------


def child(kind: str, target: str, extra: str) -> None:
    """A process holding one Flags; prints ``ready`` then ``<name> <wall time>`` per change."""
    lock = threading.Lock()
    if kind == "etcd":
        source: Any = EtcdSource([target], extra)
    else:
        source = HttpSource(target, interval=float(extra))
    flags = Flags(source, registry=Registry())

    def changed(change: Any) -> None:
        now = time.time()
        with lock:
            sys.stdout.write(f"{change.name} {now}\n")
            sys.stdout.flush()

    flags.on_change(None, changed)
    flags.ready(60)
    deadline = time.monotonic() + 60
    while kind == "etcd" and not source.connected and time.monotonic() < deadline:
        time.sleep(0.01)  # measure from a live watch, not from its start-up
    sys.stdout.write("ready\n")
    sys.stdout.flush()
    sys.stdin.read()
    flags.close()


def start_children(n: int, *args: str) -> list[subprocess.Popen[str]]:
    cmd = [sys.executable, __file__, "--child", *args]
    procs = [
        subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, bufsize=1)
        for _ in range(n)
    ]
    for p in procs:
        assert p.stdout is not None
        while p.stdout.readline().strip() != "ready":
            pass
    return procs


def stop_children(procs: list[subprocess.Popen[str]]) -> None:
    for p in procs:
        assert p.stdin is not None
        p.stdin.close()
    for p in procs:
        p.wait(30)


class Observer:
    """Collects ``<name> <time>`` lines from every child on reader threads."""

    def __init__(self, procs: list[subprocess.Popen[str]]) -> None:
        self.seen: dict[str, list[float]] = {}
        self.cond = threading.Condition()
        for p in procs:
            threading.Thread(target=self._read, args=(p,), daemon=True).start()

    def _read(self, p: subprocess.Popen[str]) -> None:
        assert p.stdout is not None
        for line in p.stdout:
            name, _, when = line.strip().partition(" ")
            with self.cond:
                self.seen.setdefault(name, []).append(float(when))
                self.cond.notify_all()

    def wait(self, name: str, n: int, timeout: float) -> list[float]:
        with self.cond:
            self.cond.wait_for(lambda: len(self.seen.get(name, ())) >= n, timeout)
            return list(self.seen.get(name, ()))


# -- etcd ---------------------------------------------------------------------------------


def start_etcd(root: Path) -> tuple[subprocess.Popen[bytes], str]:
    binary = os.environ.get("RESILIENCE_ETCD") or shutil.which("etcd") or "/usr/bin/etcd"
    port, peer = free_port(), free_port()
    url, peer_url = f"http://127.0.0.1:{port}", f"http://127.0.0.1:{peer}"
    proc = subprocess.Popen(
        [binary, "--data-dir", str(root / "etcd"), "--listen-client-urls", url,
         "--advertise-client-urls", url, "--listen-peer-urls", peer_url,
         "--initial-advertise-peer-urls", peer_url, "--initial-cluster", f"default={peer_url}",
         "--log-level", "error", "--logger", "zap", "--quota-backend-bytes", str(2**31)],
        stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )  # fmt: skip
    client = EtcdClient([url], timeout=2.0)
    for _ in range(300):
        try:
            client.range(b"x")
            return proc, url
        except Exception:
            time.sleep(0.05)
    raise SystemExit("etcd did not start")


def propagation_etcd(url: str, procs_n: int, writes: int) -> list[float]:
    procs = start_children(procs_n, "etcd", url, PREFIX)
    observer = Observer(procs)
    writer = EtcdSource([url], PREFIX)
    lags: list[float] = []
    try:
        for i in range(writes):
            name = f"prop-{i}"
            t0 = time.time()
            writer.write(name, {"on": True}, actor="bench")
            times = observer.wait(name, procs_n, 10.0)
            lags += [t - t0 for t in times]
    finally:
        stop_children(procs)
    return lags


def propagation_http(procs_n: int, writes: int, interval: float) -> list[float]:
    from aiohttp import web

    state = {"doc": json.dumps({"flags": {}}), "version": 0}

    async def serve(request: web.Request) -> web.Response:
        etag = f'"{state["version"]}"'
        if request.headers.get("If-None-Match") == etag:
            return web.Response(status=304, headers={"ETag": etag})
        return web.Response(text=str(state["doc"]), headers={"ETag": etag})

    port = free_port()
    loop = asyncio.new_event_loop()

    async def run_server() -> None:
        app = web.Application()
        app.router.add_get("/flags", serve)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()

    threading.Thread(target=loop.run_forever, daemon=True).start()
    asyncio.run_coroutine_threadsafe(run_server(), loop).result(10)
    procs = start_children(procs_n, "http", f"http://127.0.0.1:{port}/flags", str(interval))
    observer = Observer(procs)
    lags: list[float] = []
    flags: dict[str, Any] = {}
    rng = random.Random(7)
    try:
        for i in range(writes):
            time.sleep(rng.uniform(0, interval))  # a write lands anywhere in the poll cycle
            name = f"prop-{i}"
            flags[name] = {"on": True}
            t0 = time.time()
            state["doc"], state["version"] = json.dumps({"flags": flags}), i + 1
            times = observer.wait(name, procs_n, interval * 3 + 5)
            lags += [t - t0 for t in times]
    finally:
        stop_children(procs)
    return lags


# -- evaluation and 10k flags -------------------------------------------------------------


def evaluation(url: str, root: Path) -> tuple[float, float]:
    EtcdSource([url], "/bench/eval/").write("kill", {"on": False}, actor="bench")
    path = root / "eval.json"
    path.write_text(json.dumps({"flags": {"kill": {"on": False}}}))
    with_etcd = Flags(EtcdSource([url], "/bench/eval/"), registry=Registry())
    with_file = Flags(FileSource(path), registry=Registry())
    assert with_etcd.ready(10) and with_file.ready(10)
    n = 1_000_000
    try:
        etcd_ns = min(timeit.repeat(lambda: with_etcd.enabled("kill"), number=n, repeat=5)) / n
        file_ns = min(timeit.repeat(lambda: with_file.enabled("kill"), number=n, repeat=5)) / n
    finally:
        with_etcd.close()
        with_file.close()
    return etcd_ns * 1e9, file_ns * 1e9


def load_10k(url: str, root: Path, n: int) -> dict[str, Any]:
    client = EtcdClient([url], timeout=10.0)
    prefix = "/bench/10k/"
    specs = {f"flag-{i:05d}": {"on": i % 2 == 0, "rollout": 0.5} for i in range(n)}
    items = list(specs.items())
    for start in range(0, n, 100):  # etcd takes up to 128 operations per transaction
        ops = [{"request_put": {"key": b64(prefix + k), "value": b64(json.dumps(v))}}
               for k, v in items[start:start + 100]]  # fmt: skip
        client.txn([], ops, [])
    path = root / "10k.json"
    path.write_text(json.dumps({"flags": specs}))
    out: dict[str, Any] = {}
    for kind, target in (("etcd", url), ("file", str(path))):
        make = (f"Flags(EtcdSource([{target!r}], {prefix!r}))" if kind == "etcd"
                else f"Flags(FileSource({target!r}))")  # fmt: skip
        code = (
            "import sys,time,tracemalloc\n"
            "from resilience.flags import Flags, EtcdSource, FileSource\n"
            "trace = sys.argv[1] == 'memory'\n"
            "if trace: tracemalloc.start()\n"
            "t0=time.perf_counter()\n"
            f"f={make}\n"
            f"assert f.ready(60) and len(f.names())=={n}\n"
            "t=time.perf_counter()-t0\n"
            "time.sleep(0.5)  # let the first read's response be freed\n"
            "now, peak = tracemalloc.get_traced_memory()\n"
            "print(f'{now/2**20} {peak/2**20}' if trace else t)\n"
            "f.close()\n"
        )
        measured = []
        for what in ("time", "memory"):
            result = subprocess.run([sys.executable, "-c", code, what], capture_output=True,
                                    text=True, cwd=Path(__file__).resolve().parents[1],
                                    timeout=300)  # fmt: skip
            if result.returncode != 0:
                raise SystemExit(result.stderr)
            measured += [float(v) for v in result.stdout.split()]
        out[kind] = tuple(measured)
    return out


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--child", nargs=3, metavar=("KIND", "TARGET", "EXTRA"))
    parser.add_argument("--procs", type=int, default=20)
    parser.add_argument("--writes", type=int, default=200)
    parser.add_argument("--flags", type=int, default=10_000)
    parser.add_argument("--http-interval", type=float, default=0.5)
    parser.add_argument("--http-writes", type=int, default=20)
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    if args.quick:
        args.procs, args.writes, args.flags, args.http_writes = 4, 20, 1000, 5
    root = Path(
        tempfile.mkdtemp(
            prefix="bench-etcd-", dir="/dev/shm" if os.path.isdir("/dev/shm") else None
        )
    )
    proc, url = start_etcd(root)
    try:
        print(f"# fleet-wide flags: etcd {url}, {os.cpu_count()} cores")
        lags = propagation_etcd(url, args.procs, args.writes)
        e50, e99 = pct(lags, 0.5) * 1000, pct(lags, 0.99) * 1000
        print(f"propagation etcd watch      {args.procs} procs x {args.writes} writes: "
              f"p50 {e50:7.1f} ms  p99 {e99:7.1f} ms  (goal p99 <= 100 ms)")  # fmt: skip
        hl = propagation_http(args.procs, args.http_writes, args.http_interval)
        h50, h99 = pct(hl, 0.5) * 1000, pct(hl, 0.99) * 1000
        scale = DEFAULT_HTTP_INTERVAL / args.http_interval
        print(f"propagation HttpSource @{args.http_interval}s {args.procs} procs x {args.http_writes} writes: "
              f"p50 {h50:7.1f} ms  p99 {h99:7.1f} ms")  # fmt: skip
        print(f"  at its default interval ({DEFAULT_HTTP_INTERVAL:.0f} s), scaled: p50 ~{h50 * scale / 1000:.1f} s  "
              f"p99 ~{h99 * scale / 1000:.1f} s   -> etcd is {h50 * scale / e50:,.0f}x faster at p50")  # fmt: skip
        etcd_ns, file_ns = evaluation(url, root)
        print(f"enabled() with EtcdSource {etcd_ns:6.1f} ns   with FileSource {file_ns:6.1f} ns   "
              f"ratio {etcd_ns / file_ns:4.2f}")  # fmt: skip
        big = load_10k(url, root, args.flags)
        for kind, (seconds, mb, peak) in big.items():
            print(f"{args.flags:,} flags from {kind:4s}: ready in {seconds * 1000:7.0f} ms, "
                  f"{mb:5.1f} MB held, {peak:5.1f} MB peak (tracemalloc)")  # fmt: skip
    finally:
        proc.kill()
        proc.wait(10)
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
