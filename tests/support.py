"""Finding real servers for integration tests; import as ``from tests.support import ...``."""

from __future__ import annotations

import os
import shutil
import socket

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
