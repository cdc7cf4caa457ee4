"""An asyncio event loop on virtual time, for simulations in bench/ (not part of the library).

``loop.time()`` is a number this loop moves itself: when every task is waiting on a timer, the
loop jumps to the next timer instead of sleeping. A simulated minute of timers and sleeps runs
in the time it takes to execute its callbacks. Only timers advance time: a task waiting on real
IO or another thread would wait for real, as usual.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class _VirtualSelector:
    def __init__(self, loop: VirtualTimeLoop, real: selectors.BaseSelector) -> None:
        self._loop = loop
        self._real = real

    def select(self, timeout: float | None = None) -> list[Any]:
        if timeout is None:  # nothing scheduled: only another thread can wake us
            return self._real.select(None)
        events = self._real.select(0)
        if not events and timeout > 0:
            self._loop.virtual_now += timeout
        return events

    def __getattr__(self, name: str) -> Any:
        return getattr(self._real, name)


class VirtualTimeLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        super().__init__()
        self.virtual_now = 0.0
        self._selector = _VirtualSelector(self, self._selector)  # type: ignore[has-type]

    def time(self) -> float:
        return self.virtual_now


def run(coro: Coroutine[Any, Any, T]) -> T:
    """``asyncio.run`` on a fresh virtual-time loop."""
    loop = VirtualTimeLoop()
    try:
        return loop.run_until_complete(coro)
    finally:
        loop.close()
