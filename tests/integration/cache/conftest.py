"""Three zones of two real memcached processes each, on free loopback ports."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator

import pytest
from pymemcache.client.base import Client

from tests.support import find_binary, free_port, start_memcached, stop

ZONE_NAMES = ("a", "b", "c")


class Server:
    def __init__(self, binary: str, port: int) -> None:
        self.binary = binary
        self.port = port
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        self.proc = start_memcached(self.port, memory_mb=64)

    def stop(self) -> None:
        if self.proc is not None:
            stop(self.proc)

    @property
    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stats(self) -> dict[str, int]:
        with_client = Client(("127.0.0.1", self.port), timeout=2)
        try:
            raw = with_client.stats()
        finally:
            with_client.close()
        return {k.decode() if isinstance(k, bytes) else k: v for k, v in raw.items()}


class Cluster:
    """zones a, b, c x 2 servers; kill, stall (SIGSTOP) and resume a zone; read counters."""

    def __init__(self, binary: str) -> None:
        self.servers = {z: [Server(binary, free_port()) for _ in range(2)] for z in ZONE_NAMES}
        self.stalled: set[str] = set()

    @property
    def spec(self) -> dict[str, list[str]]:
        return {z: [f"127.0.0.1:{s.port}" for s in ss] for z, ss in self.servers.items()}

    def start(self) -> None:
        for ss in self.servers.values():
            for s in ss:
                if not s.alive:
                    s.start()

    def kill(self, zone: str) -> None:
        for s in self.servers[zone]:
            s.stop()

    def stall(self, zone: str) -> None:
        self.stalled.add(zone)
        for s in self.servers[zone]:
            assert s.proc is not None
            s.proc.send_signal(signal.SIGSTOP)

    def resume(self, zone: str) -> None:
        self.stalled.discard(zone)
        for s in self.servers[zone]:
            if s.proc is not None:
                s.proc.send_signal(signal.SIGCONT)

    def flush(self) -> None:
        for ss in self.servers.values():
            for s in ss:
                c = Client(("127.0.0.1", s.port), timeout=2)
                c.flush_all(noreply=False)
                c.close()

    def counter(self, zone: str, name: str) -> int:
        return sum(int(s.stats()[name]) for s in self.servers[zone])

    def counters(self, name: str) -> dict[str, int]:
        return {z: self.counter(z, name) for z in ZONE_NAMES}

    def stop(self) -> None:
        for ss in self.servers.values():
            for s in ss:
                s.stop()


@pytest.fixture(scope="session")
def cluster_session() -> Iterator[Cluster]:
    binary = find_binary("RESILIENCE_MEMCACHED", "memcached")
    cluster = Cluster(binary)
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.stop()


@pytest.fixture
def cluster(cluster_session: Cluster) -> Iterator[Cluster]:
    """The running cluster, every zone up and empty; zones stalled by a test are resumed."""
    cluster_session.start()
    cluster_session.flush()
    try:
        yield cluster_session
    finally:
        for zone in list(cluster_session.stalled):
            cluster_session.resume(zone)
