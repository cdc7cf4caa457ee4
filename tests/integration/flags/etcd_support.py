"""Real etcd servers for the flag tests: single nodes and 3-node clusters on loopback free ports.

Data directories live in /dev/shm when there is one: etcd fsyncs every write, and on a shared
disk that would make every test slow for no gain.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path

from resilience.errors import FlagStoreError
from resilience.flags._etcd_client import EtcdClient
from tests.support import find_binary, free_port, missing_service

# Loopback elections: fast, but not so tight that a loaded shared machine flaps.
HEARTBEAT_MS = 50
ELECTION_MS = 500


def _scratch() -> Path:
    base = "/dev/shm" if os.path.isdir("/dev/shm") and os.access("/dev/shm", os.W_OK) else None
    return Path(tempfile.mkdtemp(prefix="resilience-etcd-", dir=base))


class EtcdNode:
    """One etcd member: its ports, its data directory and its process."""

    def __init__(self, name: str, root: Path, tls: tuple[str, str] | None = None) -> None:
        self.name = name
        self.client_port = free_port()
        self.peer_port = free_port()
        self.data_dir = root / name
        self.tls = tls
        self.proc: subprocess.Popen[bytes] | None = None
        self.args: list[str] = []

    @property
    def url(self) -> str:
        scheme = "https" if self.tls else "http"
        return f"{scheme}://127.0.0.1:{self.client_port}"

    @property
    def peer_url(self) -> str:
        return f"http://127.0.0.1:{self.peer_port}"

    def configure(self, cluster: str, token: str, binary: str, extra: list[str]) -> None:
        self.args = [
            binary,
            "--name", self.name,
            "--data-dir", str(self.data_dir),
            "--listen-client-urls", self.url,
            "--advertise-client-urls", self.url,
            "--listen-peer-urls", self.peer_url,
            "--initial-advertise-peer-urls", self.peer_url,
            "--initial-cluster", cluster,
            "--initial-cluster-state", "new",
            "--initial-cluster-token", token,
            "--heartbeat-interval", str(HEARTBEAT_MS),
            "--election-timeout", str(ELECTION_MS),
            "--logger", "zap",
            "--log-level", "error",
            *extra,
        ]  # fmt: skip
        if self.tls:
            self.args += ["--cert-file", self.tls[0], "--key-file", self.tls[1]]

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGCONT)
            self.proc.kill()
            self.proc.wait(10)
        self.proc = None

    def listening(self) -> bool:
        try:
            socket.create_connection(("127.0.0.1", self.client_port), 0.2).close()
            return True
        except OSError:
            return False


class EtcdCluster:
    """``size`` members on loopback; ``client()`` talks to all of them."""

    def __init__(self, size: int = 1, *, tls: tuple[str, str] | None = None,
                 extra: list[str] | None = None) -> None:  # fmt: skip
        self.binary = find_binary("RESILIENCE_ETCD", "etcd")
        self.root = _scratch()
        self.nodes = [EtcdNode(f"n{i}", self.root, tls) for i in range(1, size + 1)]
        cluster = ",".join(f"{n.name}={n.peer_url}" for n in self.nodes)
        token = f"resilience-{os.getpid()}-{self.nodes[0].peer_port}"
        for node in self.nodes:
            node.configure(cluster, token, self.binary, extra or [])
        self.ca: str | None = None

    @property
    def endpoints(self) -> list[str]:
        return [n.url for n in self.nodes]

    def client(self, **options: object) -> EtcdClient:
        if self.ca is not None:
            options.setdefault("ca_file", self.ca)
        return EtcdClient(self.endpoints, timeout=2.0, **options)  # type: ignore[arg-type]

    def start(self, timeout: float = 30.0) -> None:
        for node in self.nodes:
            node.start()
        self.wait_healthy(timeout)

    def wait_healthy(self, timeout: float = 30.0, **options: object) -> None:
        """Until a linearizable read succeeds (there is a leader and a quorum)."""
        deadline = time.monotonic() + timeout
        client = self.client(**options)
        last: Exception | None = None
        while time.monotonic() < deadline:
            for node in self.nodes:
                if node.proc is not None and node.proc.poll() is not None:
                    missing_service(
                        f"etcd {node.name} exited at start (code {node.proc.returncode})"
                    )
            try:
                client.range(b"health-check")
                return
            except (FlagStoreError, OSError) as exc:
                last = exc
                time.sleep(0.05)
        missing_service(f"etcd cluster not healthy in {timeout}s: {last}")

    def leader(self) -> EtcdNode:
        client = self.client()
        for _ in range(200):
            for i, node in enumerate(self.nodes):
                if node.proc is None:
                    continue
                try:
                    status = client.member_status(i)
                except (FlagStoreError, OSError):
                    continue
                header = status.get("header", {})
                if status.get("leader") and status.get("leader") == header.get("member_id"):
                    return node
            time.sleep(0.05)
        raise AssertionError("no etcd leader")

    def stop(self) -> None:
        for node in self.nodes:
            node.kill()
        shutil.rmtree(self.root, ignore_errors=True)


@contextlib.contextmanager
def cluster(size: int = 1, **options: object) -> Iterator[EtcdCluster]:
    c = EtcdCluster(size, **options)  # type: ignore[arg-type]
    try:
        c.start()
        yield c
    finally:
        c.stop()


class CuttableProxy:
    """A TCP proxy on loopback that a test can cut (as a network partition would) and restore."""

    def __init__(self, target_port: int) -> None:
        self.target_port = target_port
        self.port = free_port()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.05)
        self._open: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.cut_off = False
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self.target_port), 2)
            except OSError:
                conn.close()
                continue
            upstream.settimeout(None)
            with self._lock:  # decided under the lock: no connection slips past a cut()
                if self.cut_off:
                    conn.close()
                    upstream.close()
                    continue
                self._open |= {conn, upstream}
            for a, b in ((conn, upstream), (upstream, conn)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    def _pipe(self, src: socket.socket, dst: socket.socket) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with self._lock:
                self._open -= {src, dst}
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
                s.close()

    def cut(self) -> None:
        """From its return on, no byte passes: open connections are shut, new ones refused."""
        with self._lock:
            self.cut_off = True
            for s in self._open:
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)
            self._open.clear()

    def restore(self) -> None:
        with self._lock:
            self.cut_off = False

    def close(self) -> None:
        self._stop.set()
        self.cut()
        self._server.close()
        self._thread.join(2)


def etcd_available() -> bool:
    return shutil.which("etcd") is not None or bool(os.environ.get("RESILIENCE_ETCD"))
