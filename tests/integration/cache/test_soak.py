"""Issue 16, "keep it that way": a randomized chaos soak, CI-sized (about 20 s).

Threads on a ``ReplicatedCache`` and tasks on an ``AsyncReplicatedCache`` of the same name (twins:
they share breakers, catch-up queues and the fence of writes in flight) read and write their own
keys and each other's while zones are stalled (SIGSTOP), killed and restarted, and slowed or cut
through Toxiproxy toxics. Every read must return the key's own value, never another key's. A
worker reading its own key (it is the key's only writer) must see its last acknowledged write, a
later attempt, or a miss: exactly the README's guarantee ("What a read returns"). At the end every
permit and ticket is back. A failure prints the seed; ``RESILIENCE_SOAK_SEED`` replays its faults
and each worker's choices (thread and loop timing still vary).

The guarantee has one window no client can close: a write given up on (timed out) that the
server applies more than a second later and after the zone answered again. The faults here stay
out of it, so the check needs no allowance for it: a SIGSTOPped memcached applies its buffered
writes as it resumes, before the half-open trial that lets the zone's delete be replayed can
succeed; Toxiproxy's ``timeout`` and ``reset_peer`` toxics drop what they hold (the ``timeout``
toxic closes its connections when removed); ``latency`` delays by 120 ms; a killed memcached
comes back empty.
"""

from __future__ import annotations

import asyncio
import os
import random
import signal
import subprocess
import threading
import time
import urllib.request
from collections.abc import Iterator
from typing import Any

import pytest

from resilience.cache import AsyncReplicatedCache, ReplicatedCache
from resilience.errors import CacheError
from resilience.fit import ToxiproxyClient
from resilience.fit._recipe import ToxicSpec
from tests.support import find_binary, free_port

from .conftest import Server

pytestmark = pytest.mark.integration

ZONES = ("a", "b", "c")
SOAK_SECONDS = 16.0


class Owner:
    """What one worker wrote to its keys: versions acknowledged and attempted."""

    def __init__(self, name: str, keys: int) -> None:
        self.keys = [f"{name}:{i}" for i in range(keys)]
        self.acked = dict.fromkeys(self.keys, 0)
        self.tried = dict.fromkeys(self.keys, 0)
        self.version = 0
        self.problems: list[str] = []

    def next(self, key: str) -> int:
        self.version += 1
        self.tried[key] = self.version
        return self.version

    def check(self, key: str, got: Any, own: bool) -> None:
        if got is None:
            return
        name, _, version = str(got).partition("|")
        if name != key:
            self.problems.append(f"read {key!r}, got another key's value {got!r}")
        elif own and not self.acked[key] <= int(version) <= self.tried[key]:
            self.problems.append(
                f"{key}: got v{version}, acked v{self.acked[key]}, tried v{self.tried[key]}"
            )


@pytest.fixture
def chaos_env() -> Iterator[tuple[dict[str, Server], ToxiproxyClient, dict[str, str]]]:
    binary = find_binary("RESILIENCE_MEMCACHED", "memcached")
    toxi_bin = find_binary("RESILIENCE_TOXIPROXY", "toxiproxy-server")
    api = free_port()
    toxi = subprocess.Popen(
        [toxi_bin, "-host", "127.0.0.1", "-port", str(api)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    servers = {z: Server(binary, free_port()) for z in ZONES}
    try:
        for s in servers.values():
            s.start()
        url = f"http://127.0.0.1:{api}"
        deadline = time.monotonic() + 10
        while True:
            try:
                urllib.request.urlopen(url + "/version", timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        client = ToxiproxyClient(url, timeout=2.0)
        listen = {}
        for z, s in servers.items():
            port = free_port()
            client.create_proxy(f"mc_{z}", f"127.0.0.1:{port}", f"127.0.0.1:{s.port}")
            listen[z] = f"127.0.0.1:{port}"
        yield servers, client, listen
    finally:
        for s in servers.values():
            s.stop()
        toxi.terminate()
        toxi.wait(5)


def soak_seed() -> int:
    """The run's seed: ``RESILIENCE_SOAK_SEED`` replays a run (its faults and each worker's
    choices; thread and loop timing still vary), else a fresh one, printed on failure."""
    given = os.environ.get("RESILIENCE_SOAK_SEED")
    return int(given) if given else random.SystemRandom().randrange(2**32)


def sync_worker(
    cache: ReplicatedCache, me: Owner, others: list[Owner], stop: threading.Event, seed: int
) -> None:
    rng = random.Random(f"{seed}:{me.keys[0]}")
    while not stop.is_set():
        key = rng.choice(me.keys)
        roll = rng.random()
        try:
            if roll < 0.35:
                version = me.next(key)
                if cache.set(key, f"{key}|{version}").ok:
                    me.acked[key] = version
            elif roll < 0.4:
                version = me.next(key)
                if cache.delete(key).ok:
                    me.acked[key] = version
            elif roll < 0.85:
                me.check(key, cache.get(key), own=True)
            else:
                other = rng.choice(others)
                keys = rng.sample(other.keys, 3)
                for k, v in cache.get_many(keys).items():
                    me.check(k, v, own=False)
        except CacheError:
            pass  # a write that missed its policy: not acknowledged


async def async_worker(
    cache: AsyncReplicatedCache, me: Owner, others: list[Owner], stop: threading.Event, seed: int
) -> None:
    rng = random.Random(f"{seed}:{me.keys[0]}")
    while not stop.is_set():
        key = rng.choice(me.keys)
        roll = rng.random()
        try:
            if roll < 0.3:
                version = me.next(key)
                if (await cache.set(key, f"{key}|{version}")).ok:
                    me.acked[key] = version
            elif roll < 0.8:
                me.check(key, await cache.get(key), own=True)
            else:
                other = rng.choice(others)
                k = rng.choice(other.keys)
                me.check(k, await cache.get(k), own=False)
        except CacheError:
            pass
        await asyncio.sleep(0)


def chaos(servers: dict[str, Server], toxi: ToxiproxyClient, seed: int, until: float) -> list[str]:
    """Faults one after another until ``until``; returns what was done."""
    rng = random.Random(seed)
    done = []
    while time.monotonic() < until - 2.5:
        zone = rng.choice(ZONES)
        fault = rng.choice(["stall", "kill", "latency", "timeout", "reset"])
        proc = servers[zone].proc
        assert proc is not None
        if fault == "stall":
            proc.send_signal(signal.SIGSTOP)
            time.sleep(rng.uniform(0.3, 1.2))
            proc.send_signal(signal.SIGCONT)
        elif fault == "kill":
            servers[zone].stop()
            time.sleep(rng.uniform(0.1, 0.6))
            servers[zone].start()
        else:
            attrs = {
                "latency": {"latency": 120},
                "timeout": {"timeout": 0},
                "reset": {"timeout": 0},
            }
            kind = {"latency": "latency", "timeout": "timeout", "reset": "reset_peer"}[fault]
            spec = ToxicSpec(proxy=f"mc_{zone}", type=kind, attributes=attrs[fault], name="soak")
            toxi.add_toxic(spec)
            time.sleep(rng.uniform(0.3, 1.0))
            toxi.remove_toxic(f"mc_{zone}", "soak")
        done.append(f"{fault}:{zone}")
        time.sleep(rng.uniform(0.2, 0.6))
    return done


def test_chaos_soak_reads_only_acknowledged_values_and_returns_every_permit(
    chaos_env: tuple[dict[str, Server], ToxiproxyClient, dict[str, str]],
) -> None:
    servers, toxi, listen = chaos_env
    seed = soak_seed()
    spec = {z: [listen[z]] for z in ZONES}
    options: dict[str, Any] = {"timeout": 0.05, "open_duration": 0.4, "acquire_timeout": 0.3}
    sync_cache = ReplicatedCache(spec, name="soak", local_zone="a", **options)
    owners = [Owner(f"t{i}", 12) for i in range(4)] + [Owner(f"a{i}", 6) for i in range(24)]
    stop = threading.Event()
    async_cache_box: list[AsyncReplicatedCache] = []

    def async_side() -> None:
        async def main() -> None:
            # the same name: twins share zone breakers and what each zone missed
            cache = AsyncReplicatedCache(spec, name="soak", local_zone="b", **options)
            async_cache_box.append(cache)
            await asyncio.gather(*(async_worker(cache, o, owners, stop, seed) for o in owners[4:]))
            await cache.aclose()

        asyncio.run(main())

    threads = [
        threading.Thread(target=sync_worker, args=(sync_cache, o, owners, stop, seed))
        for o in owners[:4]
    ]
    threads.append(threading.Thread(target=async_side))
    for t in threads:
        t.start()
    try:
        done = chaos(servers, toxi, seed, until=time.monotonic() + SOAK_SECONDS)
    finally:
        stop.set()
        for t in threads:
            t.join(30)
    sync_cache.close()
    problems = [p for o in owners for p in o.problems]
    replay = f"replay with RESILIENCE_SOAK_SEED={seed}"
    assert problems == [], (replay, done, problems[:10])
    assert all(o.version > 5 for o in owners), (replay, [o.version for o in owners])
    for cache in (sync_cache, *async_cache_box):
        assert cache.in_flight() == dict.fromkeys(ZONES, 0)
        for z in ZONES:
            assert cache.dependency(z).permits.in_use == 0, (cache.name, z)
            assert not cache._zones[z].tickets, (cache.name, z)
    assert len(async_cache_box) == 1
