"""Finding real servers for integration tests; import as ``from tests.support import ...``."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time

import pytest

REQUIRE_SERVICES = os.environ.get("RESILIENCE_REQUIRE_SERVICES") == "1"


def missing_service(what: str) -> None:
    """Skip the test, or fail it when services are required."""
    if REQUIRE_SERVICES:
        pytest.fail(f"required service missing: {what}", pytrace=False)
    pytest.skip(f"service missing: {what}")


def find_binary(env: str, *names: str) -> str:
    """Path of a server binary from ``$env`` or PATH, or skip/fail."""
    path = os.environ.get(env)
    if path and os.access(path, os.X_OK):
        return path
    for name in names:
        found = shutil.which(name)
        if found:
            return found
    missing_service(f"{names[0]} (set {env} or install it; scripts/test does)")
    raise AssertionError("unreachable")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_listening(
    port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 5.0
) -> None:
    """Wait until ``proc`` accepts connections on 127.0.0.1:``port``, or skip/fail."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            return
        except OSError:
            if proc.poll() is not None:
                missing_service(f"{what} exited at start on port {port}")
            time.sleep(0.01)
    missing_service(f"{what} did not listen on port {port}")


def start_memcached(port: int, memory_mb: int = 32) -> subprocess.Popen[bytes]:
    """A real memcached on 127.0.0.1:``port``, listening when this returns."""
    binary = find_binary("RESILIENCE_MEMCACHED", "memcached")
    args = [binary, "-l", "127.0.0.1", "-p", str(port), "-U", "0", "-m", str(memory_mb), "-t", "1"]
    if os.geteuid() == 0:  # memcached refuses to run as root unless told which user to be
        args += ["-u", "root"]
    proc = subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wait_listening(port, proc, "memcached")
    return proc


def stop(proc: subprocess.Popen[bytes]) -> None:
    """Kill a server started by a fixture (SIGCONT first, in case a test stopped it)."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGCONT)
        proc.kill()
    proc.wait(5)
