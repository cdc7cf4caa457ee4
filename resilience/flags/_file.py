"""Flags from a YAML, JSON or TOML file, reloaded when it changes."""

from __future__ import annotations

import hashlib
import os
import threading
from pathlib import Path
from typing import Any

from ..errors import ConfigError
from ._decode import DEFAULT_MAX_BYTES, DecodeError, check_size, decode
from ._poller import Poller
from ._source import Feed, Source

__all__ = ["DEFAULT_FILE_INTERVAL", "FileSource"]

DEFAULT_FILE_INTERVAL = 1.0
_FORMATS = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}
_MISSING = (-1, -1, -1)


class FileSource(Source):
    """Flags from a YAML, JSON or TOML file, reloaded when it changes (``watch=True``).

    The file is polled every ``interval`` seconds: a new inode, size or mtime makes it read
    again, and a new content digest makes it published. Rewrites in place and atomic renames are
    both seen. A missing, unreadable, oversized or unparsable file is reported; the last good
    flags stay. Each poll that finds the file readable counts as a good check (freshness).

    Args:
        format: ``"json"``, ``"yaml"`` or ``"toml"``; by default from the file's suffix.
        max_bytes: a larger file is refused (``too_large``) without being read.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        watch: bool = True,
        interval: float = DEFAULT_FILE_INTERVAL,
        format: str | None = None,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        fmt = format or _FORMATS.get(self.path.suffix.lower())
        if fmt not in ("json", "yaml", "toml"):
            raise ConfigError("format", f"cannot tell the format of {self.path}; pass format=")
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError("max_bytes", f"must be an int >= 1, got {max_bytes!r}")
        self.format = fmt
        self.max_bytes = max_bytes
        self.name = f"file:{self.path}"
        self.watch = watch
        self._stat: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._lock = threading.Lock()
        self._poller = Poller(
            f"resilience-flags-{self.path.name}",
            self._tick,
            interval,
            on_crash=lambda why: self._error("stopped", why),
        )

    def start(self, feed: Feed) -> None:
        super().start(feed)
        if self.watch:
            self._poller.start()

    def _tick(self) -> None:
        self.refresh()

    def refresh(self) -> bool:
        # One reader at a time: the poller and an explicit refresh() must not interleave.
        with self._lock:
            try:
                st = os.stat(self.path)
            except OSError as exc:
                if self._stat != _MISSING:  # report a missing file once, not every tick
                    self._stat = _MISSING
                    self._error("read", f"{self.path}: {exc.strerror or exc}")
                return False
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if key == self._stat:
                self._ok()
                return False
            self._stat = key
            try:
                check_size(st.st_size, self.max_bytes, str(self.path))
                with self.path.open("rb") as f:
                    data = f.read(self.max_bytes + 1)
                check_size(len(data), self.max_bytes, str(self.path))
            except DecodeError as exc:
                self._error(exc.kind, str(exc))
                return False
            except OSError as exc:
                self._error("read", f"{self.path}: {exc.strerror or exc}")
                return False
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest == self._digest:
                self._ok()
                return False
            try:
                document = decode(data, self.format, str(self.path))
            except DecodeError as exc:
                self._error(exc.kind, str(exc))
                return False
            self._digest = digest
            return self._publish(document)

    def status(self) -> dict[str, Any]:
        return {"watching": self._poller.running} if self.watch else {}

    def stop(self) -> None:
        self._poller.stop()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._poller.after_fork()
