"""A daemon thread that calls a tick every interval until stopped; survives anything a tick does.

After ``os.fork()`` the child has no threads: ``after_fork()`` restarts the poller there.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

__all__ = ["Poller"]

log = logging.getLogger("resilience.flags")


class Poller:
    """Calls ``tick()`` every ``interval`` seconds (or the delay a tick returns) until stopped."""

    def __init__(
        self,
        name: str,
        tick: Callable[[], float | None],
        interval: float,
        on_crash: Callable[[str], None] | None = None,
    ) -> None:
        self._name = name
        self._tick = tick
        self.interval = interval
        self._on_crash = on_crash
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        delay = self.interval
        while not self._stop.wait(delay):
            try:
                next_delay = self._tick()
            except Exception as exc:  # a poller must survive anything a tick does
                log.error("flag poller %s: tick failed: %s", self._name, type(exc).__name__)
                if self._on_crash is not None:
                    self._on_crash(f"{type(exc).__name__} in a poll")
                next_delay = None
            delay = self.interval if next_delay is None else next_delay

    def stop(self) -> None:
        self._stop.set()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=5)

    def after_fork(self) -> None:
        was_running = self._thread is not None
        self._stop = threading.Event()
        self._thread = None
        if was_running:
            self.start()
