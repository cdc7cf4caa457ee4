"""Waiting on changes made by poller threads (flag integration tests)."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

WAIT = 10.0  # generous: the machine is shared; every wait ends as soon as its condition holds


def wait_for(condition: Callable[[], bool], timeout: float = WAIT) -> bool:
    """Poll ``condition`` until it holds (for state changed by another thread)."""
    deadline = time.monotonic() + timeout
    event = threading.Event()
    while time.monotonic() < deadline:
        if condition():
            return True
        event.wait(0.01)
    return condition()
