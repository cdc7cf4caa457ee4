"""Issue 16, cache section: the probes that broke the cache, as regression tests."""

from __future__ import annotations

import asyncio
import contextlib
import os
import resource
import socket
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pymemcache.client.base import Client
from pymemcache.client.hash import HashClient

from resilience.cache import AsyncReplicatedCache, ReplicatedCache
from resilience.circuit import OUTCOMES, State
from resilience.errors import CacheClientError, ConfigError, InvalidKeyError
from tests.support import free_port

from .conftest import Cluster

pytestmark = pytest.mark.integration


def make(cluster: Cluster, **kw: Any) -> ReplicatedCache:
    kw.setdefault("local_zone", "a")
    kw.setdefault("name", "hard")
    return ReplicatedCache(cluster.spec, **kw)


def raw(cluster: Cluster, zone: str) -> HashClient:
    return HashClient(cluster.spec[zone], default_noreply=False, timeout=1, allow_unicode_keys=True)


# -- file descriptors past 1024 ---------------------------------------------------------


@contextlib.contextmanager
def many_fds(n: int) -> Iterator[None]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < n + 256:
        resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, n + 1024), hard))
    fds = [os.open(os.devnull, os.O_RDONLY) for _ in range(n)]
    try:
        yield
    finally:
        for fd in fds:
            os.close(fd)
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))


@pytest.mark.parametrize("policy", ["local", "quorum"])
def test_writes_with_sockets_past_fd_1024(cluster: Cluster, policy: str) -> None:
    with many_fds(1100):
        c = make(cluster, write_policy=policy)
        for i in range(50):
            assert c.set(f"k{i}", i).ok
        node = next(iter(c._zones["b"].nodes.values()))
        deadline = time.monotonic() + 5  # zone b may still be answering on a write worker
        while not node._idle and time.monotonic() < deadline:
            time.sleep(0.01)
        sock = node._idle[0].sock
        assert sock.fileno() >= 1024
        c.close()
        assert all(c.dependency(z).permits.in_use == 0 for z in "abc")
        assert c.in_flight() == {"a": 0, "b": 0, "c": 0}
        assert c.stats.write_failures == {"a": 0, "b": 0, "c": 0}
        assert raw(cluster, "c").get("k49") == b"49"


# -- one deadline for a whole call --------------------------------------------------------


class TrickleProxy:
    """Forwards to memcached at once, but sends its replies back one byte every ``delay``."""

    def __init__(self, upstream: int, delay: float = 0.002) -> None:
        self.upstream = upstream
        self.delay = delay
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.stopped = threading.Event()
        self.socks: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while not self.stopped.is_set():
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            server = socket.create_connection(("127.0.0.1", self.upstream))
            self.socks += [client, server]
            threading.Thread(target=self._pipe, args=(client, server, 0), daemon=True).start()
            threading.Thread(
                target=self._pipe, args=(server, client, self.delay), daemon=True
            ).start()

    def _pipe(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while not self.stopped.is_set():
                data = src.recv(65536)
                if not data:
                    return
                if not delay:
                    dst.sendall(data)
                    continue
                for i in range(len(data)):
                    if self.stopped.is_set():
                        return
                    dst.sendall(data[i : i + 1])
                    time.sleep(delay)
        except OSError:
            return

    def close(self) -> None:
        self.stopped.set()
        self.listener.close()
        for s in self.socks:
            with contextlib.suppress(OSError):
                s.close()


@pytest.fixture
def trickle(cluster: Cluster) -> Iterator[TrickleProxy]:
    proxy = TrickleProxy(cluster.servers["a"][0].port)
    try:
        yield proxy
    finally:
        proxy.close()


def test_sync_trickling_reply_cannot_hold_a_caller_past_its_timeout(
    cluster: Cluster, trickle: TrickleProxy
) -> None:
    Client(("127.0.0.1", cluster.servers["a"][0].port)).set("big", b"x" * 2048)
    c = ReplicatedCache({"a": [f"127.0.0.1:{trickle.port}"]}, name="trickle", timeout=0.05)
    for _ in range(2):
        t0 = time.monotonic()
        assert c.get("big") is None  # the reply never completes in time: a miss
        assert time.monotonic() - t0 < 0.25
    assert c.dependency("a").window.totals().count(OUTCOMES.index("timeout")) == 2
    c.close()


async def test_async_trickling_reply_cannot_hold_a_caller_past_its_timeout(
    cluster: Cluster, trickle: TrickleProxy
) -> None:
    Client(("127.0.0.1", cluster.servers["a"][0].port)).set("big", b"x" * 2048)
    c = AsyncReplicatedCache({"a": [f"127.0.0.1:{trickle.port}"]}, name="trickle", timeout=0.05)
    t0 = time.monotonic()
    assert await c.get("big") is None
    assert time.monotonic() - t0 < 0.25
    await c.aclose()


# -- CLIENT_ERROR is the caller's ----------------------------------------------------------


def test_client_error_is_the_callers_error_not_the_zones(cluster: Cluster) -> None:
    c = make(cluster)
    c.set("word", "abc")
    before = cluster.servers["a"][0].stats()["total_connections"]
    for _ in range(10):
        with pytest.raises(CacheClientError) as info:
            c.incr("word")
        assert info.value.key == "word" and "non-numeric" in info.value.reason
    assert all(c.dependency(z).state is State.CLOSED for z in "abc")
    failures = c.dependency("a").window.totals().count(OUTCOMES.index("failure"))
    assert failures == 0
    assert c.status()["zones"]["a"]["client_errors"] == 10
    assert c.get("word") == "abc"  # the same connection, still in step
    after = sum(s.stats()["total_connections"] for s in cluster.servers["a"][:1])
    assert after - before <= 1
    with pytest.raises(ValueError, match="2\\*\\*64"):
        c.incr("word", 2**64)
    c.close()


async def test_async_client_error_is_the_callers(cluster: Cluster) -> None:
    c = AsyncReplicatedCache(cluster.spec, name="hard", local_zone="a")
    await c.set("word", "abc")
    for _ in range(5):
        with pytest.raises(CacheClientError):
            await c.decr("word")
    assert all(c.dependency(z).state is State.CLOSED for z in "abc")
    assert await c.get("word") == "abc"
    await c.aclose()


# -- key placement: pymemcache HashClient's ------------------------------------------------

KEY_TEXT = st.text(
    alphabet=st.characters(blacklist_categories=("Cc", "Cs", "Zs", "Zl", "Zp")),
    min_size=1,
    max_size=40,
).filter(lambda k: len(k.encode()) <= 250 and not any(ch.isspace() for ch in k))


@given(key=KEY_TEXT)
def test_str_keys_land_where_hashclient_puts_them(key: str) -> None:
    servers = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211", "10.0.0.4:11211"]
    c = ReplicatedCache({"a": servers}, name="placement")
    hc = HashClient(servers, allow_unicode_keys=True)
    ours = c._zones["a"].node(c._core.key(key))
    theirs = hc._get_client(key)
    assert "%s:%s" % ours.address == "%s:%s" % theirs.server  # noqa: UP031


@given(key=st.binary(min_size=1, max_size=40))
def test_non_utf8_bytes_keys_land_where_hashclient_puts_them(key: bytes) -> None:
    key = bytes(b if b > 0x20 and b != 0x7F else 0x80 for b in key)
    try:
        key.decode("utf-8")
        utf8 = True
    except UnicodeDecodeError:
        utf8 = False
    servers = ["10.0.0.1:11211", "10.0.0.2:11211", "10.0.0.3:11211"]
    c = ReplicatedCache({"a": servers}, name="placement")
    hc = HashClient(servers, allow_unicode_keys=True)
    ours = c._zones["a"].node(c._core.key(key))
    expected = hc._get_client(key.decode() if utf8 else key)  # UTF-8 bytes: as the equal str
    assert "%s:%s" % ours.address == "%s:%s" % expected.server  # noqa: UP031


def test_hashclient_reads_what_the_cache_wrote(cluster: Cluster) -> None:
    c = make(cluster)
    keys = [f"user:{i}" for i in range(50)] + ["ünï:cödé", "日本:1", "emoji:🙂"]
    c.set_many({k: k for k in keys})
    hc = raw(cluster, "b")
    assert {k: hc.get(k) for k in keys} == {k: k.encode() for k in keys}
    c.close()


# -- hashed keys live in their own namespace ----------------------------------------------


def test_hashed_keys_cannot_be_reached_by_a_literal_key(cluster: Cluster) -> None:
    c = make(cluster, hash_long_keys=True)
    long_key = "x" * 300
    c.set(long_key, "hashed")
    import hashlib

    digest = hashlib.sha256(long_key.encode()).hexdigest()
    assert c.get(f"sha256:{digest}") is None  # the old, reachable form
    with pytest.raises(InvalidKeyError, match="reserved"):
        c.get(b"\xffsha256:" + digest.encode())
    c.set(f"sha256:{digest}", "literal")
    assert c.get(long_key) == "hashed"
    c.close()


# -- undecodable values are misses, the batch survives --------------------------------------


def test_undecodable_value_falls_back_and_never_fails_get_many(cluster: Cluster) -> None:
    c = make(cluster, read_repair=False)
    c.set_many({"bad": {"v": 1}, "good": {"v": 2}})
    raw(cluster, "a").set("bad", b"{nope", flags=32)  # another client: JSON's flag, not JSON
    assert c.get("bad") == {"v": 1}  # zone b's good copy
    assert c.get_many(["bad", "good", "absent"]) == {"bad": {"v": 1}, "good": {"v": 2}}
    assert c.status()["zones"]["a"]["undecodable"] == 2
    assert c.dependency("a").state is State.CLOSED
    c.close()


# -- catch-up: what a zone missed is deleted there when it is back ---------------------------


def test_zone_that_missed_writes_is_caught_up_and_never_read_stale(cluster: Cluster) -> None:
    c = make(cluster, local_zone="c")
    c.set("k", "old")
    c.dependency("c").force_open()
    assert c.set("k", "new").degraded
    assert c.status()["zones"]["c"]["catch_up"]["pending"] == 1
    c.dependency("c").reset()  # zone c is back, still holding the stale "old"
    assert raw(cluster, "c").get("k") == b"old"
    assert c.get("k") == "new"  # zone c is not asked for a key it missed
    deadline = time.monotonic() + 5  # a successful call to c replays what it missed, on a
    while c.status()["zones"]["c"]["catch_up"]["pending"] and time.monotonic() < deadline:
        c.set("other", 1)  # worker, once the key has settled (about a second)
        time.sleep(0.05)
    assert c.status()["zones"]["c"]["catch_up"]["replayed"] == 1
    assert raw(cluster, "c").get("k") is None
    c.close()


def test_catch_up_queue_is_bounded_and_counts_overflow(cluster: Cluster) -> None:
    c = make(cluster, catch_up_size=10)
    c.dependency("b").force_open()
    c.set_many({f"k{i}": i for i in range(25)})
    status = c.status()["zones"]["b"]["catch_up"]
    assert status["pending"] == 10 and status["overflow"] == 15 and status["queued"] == 25
    c.close()


# -- names ----------------------------------------------------------------------------------


def test_one_name_two_zone_sets_is_a_config_error(cluster: Cluster) -> None:
    c = make(cluster, name="users")
    twin = make(cluster, name="users")  # same zones: they share breakers, fine
    with pytest.raises(ConfigError) as info:
        ReplicatedCache({"a": [f"127.0.0.1:{free_port()}"]}, name="users")
    assert info.value.field == "name"
    c.close()
    twin.close()
    other = ReplicatedCache({"a": [f"127.0.0.1:{free_port()}"]}, name="users")  # freed by close
    other.close()


def test_asyncio_parity_on_a_real_server(cluster: Cluster) -> None:
    async def run() -> Any:
        c = AsyncReplicatedCache(cluster.spec, name="hard", local_zone="a")
        await c.set("k", "v")
        got = await c.get("k")
        await c.aclose()
        return got

    assert asyncio.run(run()) == "v"
