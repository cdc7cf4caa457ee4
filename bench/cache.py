"""The replicated cache against raw pymemcache, on real memcached processes on loopback.

Run: .venv/bin/python bench/cache.py [--quick]

Starts 3 zones x 2 memcached servers on free ports, then measures, in one process:
- local-zone get (hit) throughput: ReplicatedCache vs a raw pymemcache HashClient on that zone
  (target: ours >= 0.9x);
- 3-zone set with write_policy="all" (and the default) vs one raw set (target: <= 1.5x),
  beside writing the three zones one after another with raw clients, and beside the floor: the
  same request on plain sockets, sent to the three zones and then read, with no library;
- with the local zone stalled (SIGSTOP): how long its breaker takes to open behind heavy
  healthy traffic (target: < 1 s), then get p99 vs a healthy cache's p99 measured in
  interleaved blocks (target: <= 2x) and misses for keys written before the stall (target: 0).

Latencies are compared in interleaved blocks: the machine is shared and its load drifts.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import socket
import statistics
import sys
import time
from collections.abc import Callable
from typing import Any

from pymemcache.client.hash import HashClient

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
from resilience.cache import ReplicatedCache
from resilience.circuit import State

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from _common import free_port, start_memcached


def throughput(fn: Callable[[], Any], n: int, repeats: int) -> float:
    for _ in range(min(n, 1000)):
        fn()
    rates = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        rates.append(n / (time.perf_counter() - t0))
    return statistics.median(rates)


def latencies(fn: Callable[[], Any], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t0 = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t0)
    out.sort()
    return out


def pct(sorted_values: list[float], q: float) -> float:
    return sorted_values[min(len(sorted_values) - 1, int(q * len(sorted_values)))]


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISSED"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    # the circuit logs a warning when the stalled zone's breaker opens: on stdout, on its own
    # line, in order with the figures (stderr's lastResort handler would land mid-line)
    logging.basicConfig(
        stream=sys.stdout, level=logging.WARNING, format="  [log] %(name)s: %(message)s"
    )
    n, repeats = (2000, 3) if args.quick else (10000, 5)
    print("load average at start: " + " ".join(f"{x:.2f}" for x in os.getloadavg()))

    ports = {z: [free_port(), free_port()] for z in "abc"}
    procs = {z: [start_memcached(p) for p in ps] for z, ps in ports.items()}
    spec = {z: [f"127.0.0.1:{p}" for p in ps] for z, ps in ports.items()}
    try:
        raw = {
            z: HashClient(s, use_pooling=True, default_noreply=False, timeout=1)
            for z, s in spec.items()
        }
        cache = ReplicatedCache(
            spec, name="bench", local_zone="a", timeout=0.05, open_duration=60.0, write_policy="all"
        )
        value = b"v" * 100
        cache.set("bench:key", value)
        raw["a"].set("bench:raw", value)

        print("== local-zone get (hit), single thread ==")
        # interleaved rounds, the ratio taken per round: load drifts on a shared machine
        rounds = [
            (
                throughput(lambda: raw["a"].get("bench:raw"), n // repeats, 1),
                throughput(lambda: cache.get("bench:key"), n // repeats, 1),
            )
            for _ in range(repeats * 3)
        ]
        raw_rate = statistics.median(r for r, _ in rounds)
        our_rate = statistics.median(o for _, o in rounds)
        ratio = statistics.median(o / r for r, o in rounds)
        print(f"raw HashClient   {raw_rate:10.0f} gets/s")
        print(
            f"ReplicatedCache  {our_rate:10.0f} gets/s   ratio {ratio:.2f}x  (target >= 0.9x) {verdict(ratio >= 0.9)}"
        )

        print("== set, 3 zones ==")
        m = n // 2
        # the floor: the same bytes on plain sockets to the server holding the key in each
        # zone, sent to all three and then read (no library at all): the round trips alone
        payload = b"set bench:key 0 900 %d\r\n%s\r\n" % (len(value), value)
        socks = []
        for z in "abc":
            sock = socket.create_connection(cache._zones[z].node(b"bench:key").address)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            socks.append(sock)

        def plain(conns: list[socket.socket]) -> None:
            for sock in conns:
                sock.sendall(payload)
            for sock in conns:
                reply = b""
                while not reply.endswith(b"\r\n"):
                    reply += sock.recv(64)

        default = ReplicatedCache(spec, name="bench-default", local_zone="a", timeout=0.05)
        series: dict[str, Callable[[], Any]] = {
            "one plain-socket set (a round trip)": lambda: plain(socks[:1]),
            "3 plain sockets, pipelined (floor)": lambda: plain(socks),
            "one raw set (pymemcache)": lambda: raw["a"].set("bench:raw", value),
            "3 raw sets, sequential": lambda: [raw[z].set("bench:raw", value) for z in "abc"],
            "ReplicatedCache.set, 'all'": lambda: cache.set("bench:key", value),
            "ReplicatedCache.set, default": lambda: default.set("bench:key", value),
        }
        # measured in interleaved blocks: on a shared machine the load (and so a round trip's
        # cost) drifts between seconds, and a ratio must compare like with like
        taken: dict[str, list[float]] = {label: [] for label in series}
        for _ in range(m // 100):
            for label, fn in series.items():
                taken[label] += latencies(fn, 100)
        for values in taken.values():
            values.sort()
        one = pct(taken["one raw set (pymemcache)"], 0.5)
        one_p10 = pct(taken["one raw set (pymemcache)"], 0.1)
        print(f"{'':38s} {'median':>8s} {'p10':>8s}   ratio to one raw set (median, p10)")
        for label, values in taken.items():
            med, p10 = pct(values, 0.5), pct(values, 0.1)
            print(
                f"{label:38s} {med * 1e6:6.1f}us {p10 * 1e6:6.1f}us   {med / one:.2f}x  {p10 / one_p10:.2f}x"
            )
        ours = pct(taken["ReplicatedCache.set, 'all'"], 0.5) / one
        print(
            f"3-zone set, 'all': {ours:.2f}x one raw set  (target <= 1.5x) {verdict(ours <= 1.5)}"
        )
        for sock in socks:
            sock.close()
        default.close()

        print("== local zone stalled (SIGSTOP) ==")
        keys = [f"stall:{i}" for i in range(200)]
        cache.set_many({k: k for k in keys})
        # a healthy twin (local zone c) is read in blocks interleaved with the stalled cache,
        # so both p99s see the same machine load; the stalled cache's own p99 from before
        # the stall is printed beside it
        twin = ReplicatedCache(spec, name="twin", local_zone="c", timeout=0.05)
        before = latencies(lambda: cache.get(keys[0]), m)  # heavy healthy traffic first
        for p in procs["a"]:
            p.send_signal(signal.SIGSTOP)
        t0 = time.perf_counter()
        while cache.dependency("a").state is not State.OPEN:
            cache.get(keys[0])
        opened_after = time.perf_counter() - t0
        misses = sum(1 for k in keys if cache.get(k) != k)
        healthy: list[float] = []
        stalled: list[float] = []
        for _ in range(m // 100):
            healthy += latencies(lambda: twin.get(keys[1]), 100)
            stalled += latencies(lambda: cache.get(keys[1]), 100)
        healthy.sort()
        stalled.sort()
        hp99, sp99 = pct(healthy, 0.99), pct(stalled, 0.99)
        print(
            f"breaker opened after     {opened_after * 1e3:8.1f} ms   (target < 1000 ms) {verdict(opened_after < 1.0)}"
        )
        print(
            f"before the stall p50/p99 {pct(before, 0.5) * 1e6:8.1f} / {pct(before, 0.99) * 1e6:8.1f} us"
        )
        print(
            f"healthy get p50/p99      {pct(healthy, 0.5) * 1e6:8.1f} / {hp99 * 1e6:8.1f} us   (twin cache, interleaved)"
        )
        print(
            f"stalled get p50/p99      {pct(stalled, 0.5) * 1e6:8.1f} / {sp99 * 1e6:8.1f} us   p99 ratio {sp99 / hp99:.2f}x  (target <= 2x) {verdict(sp99 / hp99 <= 2)}"
        )
        print(
            f"misses for keys written before the stall: {misses} of {len(keys)}  (target 0) {verdict(misses == 0)}"
        )
        twin.close()
        for p in procs["a"]:
            p.send_signal(signal.SIGCONT)
        cache.close()
        print("load average at end:   " + " ".join(f"{x:.2f}" for x in os.getloadavg()))
    finally:
        for ps in procs.values():
            for p in ps:
                p.send_signal(signal.SIGCONT)
                p.kill()
                p.wait()


if __name__ == "__main__":
    main()
