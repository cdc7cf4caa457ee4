"""Helpers for testing code that uses resilience: a fake clock, forced circuits, a clean registry.

```python
from resilience import testing

def test_page_survives_ratings_outage():
    with testing.isolated_registry(), testing.forced("ratings", "open"):
        assert render_page(1).status == 200
```
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from typing import Literal

from .circuit import Registry, State, registry, set_registry

__all__ = ["FakeClock", "fake_clock", "forced", "isolated_registry", "reset"]


class FakeClock:
    """A clock that moves only when told: ``clock()`` reads it, ``clock.advance(s)`` moves it."""

    def __init__(self, start: float = 1000.0) -> None:
        self._now = start
        self._lock = threading.Lock()

    def __call__(self) -> float:
        return self._now

    def advance(self, seconds: float) -> float:
        if seconds < 0:
            raise ValueError("a clock moves forward only")
        with self._lock:
            self._now += seconds
            return self._now


@contextlib.contextmanager
def fake_clock(start: float = 1000.0, reg: Registry | None = None) -> Iterator[FakeClock]:
    """Make every dependency of the registry read a :class:`FakeClock` for the block.

    The library's own waits (retry back-off, waiting for a rate-limit token) advance the fake
    clock instead of sleeping, so a test of retries and deadlines runs in no time.
    """
    reg = registry() if reg is None else reg  # an empty Registry is falsy: never ``or``
    clock = FakeClock(start)
    previous, previous_sleep = reg.clock, reg.sleep
    reg.set_clock(clock, clock.advance)
    try:
        yield clock
    finally:
        reg.set_clock(previous, previous_sleep)


@contextlib.contextmanager
def forced(
    name: str, state: Literal["open", "closed"], reg: Registry | None = None
) -> Iterator[None]:
    """Force dependency ``name`` open or closed for the block, then reset it."""
    if state not in ("open", "closed"):
        raise ValueError(f"state must be 'open' or 'closed', got {state!r}")
    dep = (registry() if reg is None else reg).dependency(name)
    if state == "open":
        dep.force_open()
    else:
        dep.force_closed()
    try:
        yield
    finally:
        if dep.state in (State.FORCED_OPEN, State.FORCED_CLOSED):
            dep.reset()


@contextlib.contextmanager
def isolated_registry() -> Iterator[Registry]:
    """A fresh default registry for the block; the previous one comes back after it."""
    fresh = Registry()
    old = set_registry(fresh)
    try:
        yield fresh
    finally:
        set_registry(old)


def reset(reg: Registry | None = None) -> None:
    """Close every circuit and clear every window of the registry (between tests)."""
    (registry() if reg is None else reg).reset()
