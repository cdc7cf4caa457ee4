"""Starting and stopping the demo's real processes: memcached zones, Toxiproxy, downstreams."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


class Missing(RuntimeError):
    """A program the demo needs is not installed; the message says how to get it."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 15.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} at start")
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on 127.0.0.1:{port} within {timeout}s")


def find(env: str, name: str, *extra: Path) -> str:
    path = os.environ.get(env)
    if path and os.access(path, os.X_OK):
        return path
    for candidate in extra:
        if os.access(candidate, os.X_OK):
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise Missing(f"{name} not found: run scripts/demo (it installs it) or set {env}")


class Processes:
    """Every process the demo started, stopped in reverse order by ``stop_all``."""

    def __init__(self) -> None:
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.ports: dict[str, int] = {}

    def start(self, name: str, args: list[str], port: int) -> int:
        proc = subprocess.Popen(
            args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=ROOT,
            start_new_session=True,  # Ctrl-C in the terminal reaches the demo, which stops them
        )  # fmt: skip
        self.procs[name], self.ports[name] = proc, port
        wait_port(port, proc, name)
        return port

    def memcached(self, zone: str, port: int | None = None) -> int:
        binary = find("RESILIENCE_MEMCACHED", "memcached")
        port = port or free_port()
        args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", "32", "-t", "1"]
        if os.geteuid() == 0:  # memcached refuses root unless told which user to run as
            args += ["-u", "root"]
        return self.start(f"memcached-{zone}", args, port)

    def toxiproxy(self) -> int:
        binary = find("RESILIENCE_TOXIPROXY", "toxiproxy-server",
                      ROOT / ".tools" / "bin" / "toxiproxy-server")  # fmt: skip
        port = free_port()
        return self.start("toxiproxy", [binary, "-host", "127.0.0.1", "-port", str(port)], port)

    def downstream(self, name: str) -> int:
        port = free_port()
        args = [sys.executable, "-m", "examples.movies.downstream", name, str(port)]
        return self.start(name, args, port)

    def kill(self, name: str) -> None:
        proc = self.procs.pop(name)
        proc.send_signal(signal.SIGKILL)
        proc.wait(10)

    def stop_all(self) -> None:
        for name in reversed(list(self.procs)):
            proc = self.procs.pop(name)
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(5)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
