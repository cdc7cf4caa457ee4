"""A local backup file of a source's last good flags (as Unleash's SDKs keep one).

A process that starts while its store is unreachable serves the flags it last knew, marked
stale in the status, instead of every caller's default. Saves are coalesced on a daemon
thread (at most one write per ``min_interval``), so a burst of changes costs one write and
never delays the change itself. The file is replaced atomically (write, fsync, rename).
"""

from __future__ import annotations

import json
import logging
import os
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["Backup"]

log = logging.getLogger("resilience.flags")

DEFAULT_MIN_INTERVAL = 0.5


class Backup:
    """``load()`` the last saved state; ``save(snapshot)`` writes ``snapshot()`` soon after."""

    def __init__(self, path: str | os.PathLike[str], *, min_interval: float = DEFAULT_MIN_INTERVAL):
        self.path = Path(path)
        self.min_interval = min_interval
        self.saves = 0
        self.last_error: str | None = None
        self._snapshot: Callable[[], dict[str, Any]] | None = None
        self._wake = threading.Event()
        self._thread: threading.Thread | None = None
        self._stopping = False

    def load(self) -> dict[str, Any] | None:
        """The saved ``{"flags": {...}, "revision": n, "saved_at": t}``, or ``None``."""
        try:
            data = json.loads(self.path.read_bytes())
        except FileNotFoundError:
            return None
        except (OSError, ValueError, RecursionError) as exc:
            self.last_error = f"{self.path}: {type(exc).__name__}"
            log.warning("flag backup %s unreadable: %s", self.path, type(exc).__name__)
            return None
        if not isinstance(data, dict) or not isinstance(data.get("flags"), dict):
            self.last_error = f"{self.path}: not a flag backup"
            return None
        return data

    def save(self, snapshot: Callable[[], dict[str, Any]]) -> None:
        """Write ``snapshot()`` soon, on the writer thread (started on first use)."""
        self._snapshot = snapshot
        if self._thread is None or not self._thread.is_alive():
            self._stopping = False
            self._thread = threading.Thread(
                target=self._run, name=f"resilience-flags-backup-{self.path.name}", daemon=True
            )
            self._thread.start()
        self._wake.set()

    def _run(self) -> None:
        while not self._stopping:
            self._wake.wait()
            self._wake.clear()
            self.write_now()
            time.sleep(self.min_interval)  # coalesce: one write per interval at most

    def write_now(self) -> None:
        snapshot = self._snapshot
        if snapshot is None:
            return
        tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
        try:
            data = json.dumps(snapshot(), separators=(",", ":")).encode()
            self.path.parent.mkdir(parents=True, exist_ok=True)
            with tmp.open("wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, self.path)
            self.saves += 1
            self.last_error = None
        except (OSError, TypeError, ValueError) as exc:
            self.last_error = f"{self.path}: {type(exc).__name__}: {exc}"
            log.warning("flag backup %s not written: %s", self.path, exc)

    def stop(self) -> None:
        """Write what is pending, then stop the writer."""
        self._stopping = True
        thread, self._thread = self._thread, None
        if thread is not None:
            self._wake.set()
            thread.join(timeout=5)
            self.write_now()

    def after_fork(self) -> None:
        self._thread = None
        self._wake = threading.Event()
