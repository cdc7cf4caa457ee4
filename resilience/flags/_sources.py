"""Where flags come from: in-memory, environment, files and HTTP.

A source fetches and decodes; it hands a whole document (``{"flags": {...}}``) to its *feed*,
which validates it and either installs it or keeps the last good one. A source reports what went
wrong to the same feed (``kind``: read, parse, http, unreachable), so errors are counted and shown
in ``Flags.status()`` whatever the source.

Pollers are daemon threads. After ``os.fork()`` the child has no threads: ``Flags`` calls every
source's ``after_fork()``, which restarts its poller in the child.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import logging
import os
import random
import re
import threading
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, Protocol

import aiohttp

__all__ = ["EnvSource", "Feed", "FileSource", "HttpSource", "InMemorySource", "Source"]

log = logging.getLogger("resilience.flags")

DEFAULT_FILE_INTERVAL = 1.0
DEFAULT_HTTP_INTERVAL = 15.0
DEFAULT_HTTP_TIMEOUT = 5.0
DEFAULT_MAX_BACKOFF = 300.0
ENV_PREFIX = "RESILIENCE_FLAG_"


class Feed(Protocol):
    """What a source delivers to (implemented by ``Flags`` for each of its sources)."""

    def publish(self, document: Any) -> bool:
        """Validate and install a document; ``False`` when it was rejected (last good stays)."""

    def error(self, kind: str, message: str) -> None:
        """Report a failed fetch or decode; the last good state stays."""


class Source:
    """Base of every source: ``start(feed)`` loads once and starts polling when it polls."""

    name: str = "source"

    def __init__(self) -> None:
        self._feed: Feed | None = None

    def start(self, feed: Feed) -> None:
        self._feed = feed
        self.refresh()

    def refresh(self) -> bool:
        """Fetch now, on the caller's thread; ``True`` when a new document was installed."""
        return False

    def stop(self) -> None:
        """Stop polling (a no-op for sources that do not poll)."""

    def after_fork(self) -> None:
        """Restart what a fork left behind (called in the child)."""

    def _publish(self, document: Any) -> bool:
        return self._feed.publish(document) if self._feed is not None else False

    def _error(self, kind: str, message: str) -> None:
        log.warning("flag source %s: %s error: %s", self.name, kind, message)
        if self._feed is not None:
            self._feed.error(kind, message)


class InMemorySource(Source):
    """Flags held in memory, ``InMemorySource({"kill": {"on": False}})``; ``update()`` swaps them.

    Useful in tests and for flags computed by the application itself.
    """

    def __init__(self, flags: Mapping[str, Any] | None = None, *, name: str = "memory") -> None:
        super().__init__()
        self.name = name
        self._flags: Mapping[str, Any] = dict(flags or {})

    def refresh(self) -> bool:
        return self._publish({"flags": self._flags})

    def update(self, flags: Mapping[str, Any]) -> bool:
        """Replace every flag of this source; ``False`` (and nothing changes) when invalid."""
        if self._publish({"flags": dict(flags)}):
            self._flags = dict(flags)
            return True
        return False


def _env_value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return raw


class EnvSource(Source):
    """Flags from environment variables, read at start and on ``refresh()``.

    ``RESILIENCE_FLAG_KILL_RECOMMENDATIONS=true`` sets ``kill-recommendations``: after the
    prefix, the name is lower-cased, ``__`` becomes ``.`` and ``_`` becomes ``-``
    (``RESILIENCE_FLAG_RATINGS__TIMEOUT=0.5`` is ``ratings.timeout``). A value is read as JSON when
    it parses (``true``, ``0.5``, ``{"on": true, "rollout": 0.1}``), else as a string; a JSON
    object is a whole flag, a bool is a switch, anything else a value.
    """

    def __init__(
        self,
        prefix: str = ENV_PREFIX,
        *,
        environ: Mapping[str, str] | None = None,
        name: str = "env",
    ) -> None:
        super().__init__()
        self.name = name
        self.prefix = prefix
        self._environ = environ

    @staticmethod
    def flag_name(suffix: str) -> str:
        return suffix.lower().replace("__", ".").replace("_", "-")

    def refresh(self) -> bool:
        environ = os.environ if self._environ is None else self._environ
        flags: dict[str, Any] = {}
        for var, raw in sorted(environ.items()):
            if not var.startswith(self.prefix) or len(var) == len(self.prefix):
                continue
            value = _env_value(raw)
            if isinstance(value, dict):
                spec = value
            elif isinstance(value, bool):
                spec = {"on": value}
            else:
                spec = {"value": value}
            flags[self.flag_name(var[len(self.prefix) :])] = spec
        return self._publish({"flags": flags})


def _decode(text: str, fmt: str) -> Any:
    if fmt == "json":
        return json.loads(text)
    if fmt == "toml":
        return tomllib.loads(text)
    try:
        import yaml
    except ImportError as exc:  # the optional extra is missing: say which one
        raise RuntimeError("YAML flag files need PyYAML: pip install 'resilience[yaml]'") from exc
    return yaml.load(text, Loader=_yaml_loader(yaml))


_YAML_LOADER: Any = None


def _yaml_loader(yaml: Any) -> Any:
    """PyYAML's SafeLoader with YAML 1.2 booleans: only true/false are bools.

    YAML 1.1 reads ``on``, ``off``, ``yes`` and ``no`` as booleans, so ``{on: true}`` (the flag
    format's own key) would become ``{True: True}``.
    """
    global _YAML_LOADER
    if _YAML_LOADER is None:

        class FlagLoader(yaml.SafeLoader):  # type: ignore[misc]
            pass

        FlagLoader.yaml_implicit_resolvers = {
            first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:bool"]
            for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
        }
        FlagLoader.add_implicit_resolver(
            "tag:yaml.org,2002:bool",
            re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"),
            list("tTfF"),
        )
        _YAML_LOADER = FlagLoader
    return _YAML_LOADER


_FORMATS = {".json": "json", ".toml": "toml", ".yaml": "yaml", ".yml": "yaml"}


class _Poller:
    """A daemon thread calling ``tick()`` every ``interval`` seconds until stopped; fork-aware."""

    def __init__(self, name: str, tick: Callable[[], float | None], interval: float) -> None:
        self._name = name
        self._tick = tick
        self.interval = interval
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
            except Exception:  # a poller must survive anything a tick does
                log.exception("flag poller %s failed", self._name)
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


class FileSource(Source):
    """Flags from a YAML, JSON or TOML file, reloaded when it changes (``watch=True``).

    The file is polled every ``interval`` seconds: a new inode, size or mtime makes it read
    again, and a new content digest makes it published. Rewrites in place and atomic renames are
    both seen. A missing, unreadable or unparsable file is reported; the last good flags stay.

    Args:
        format: ``"json"``, ``"yaml"`` or ``"toml"``; by default from the file's suffix.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        watch: bool = True,
        interval: float = DEFAULT_FILE_INTERVAL,
        format: str | None = None,
    ) -> None:
        super().__init__()
        self.path = Path(path)
        fmt = format or _FORMATS.get(self.path.suffix.lower())
        if fmt not in ("json", "yaml", "toml"):
            from ..errors import ConfigError

            raise ConfigError("format", f"cannot tell the format of {self.path}; pass format=")
        self.format = fmt
        self.name = f"file:{self.path}"
        self.watch = watch
        self._stat: tuple[int, int, int] | None = None
        self._digest: bytes | None = None
        self._lock = threading.Lock()
        self._poller = _Poller(f"resilience-flags-{self.path.name}", self._tick, interval)

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
                if self._stat != (-1, -1, -1):  # report a missing file once, not every tick
                    self._stat = (-1, -1, -1)
                    self._error("read", f"{self.path}: {exc.strerror or exc}")
                return False
            key = (st.st_ino, st.st_size, st.st_mtime_ns)
            if key == self._stat:
                return False
            self._stat = key
            try:
                data = self.path.read_bytes()
            except OSError as exc:
                self._error("read", f"{self.path}: {exc.strerror or exc}")
                return False
            digest = hashlib.blake2b(data, digest_size=16).digest()
            if digest == self._digest:
                return False
            try:
                document = _decode(data.decode("utf-8"), self.format)
            except Exception as exc:  # json, yaml and toml each raise their own errors
                self._error("parse", f"{self.path}: {exc}")
                return False
            if self._publish(document):
                self._digest = digest
                return True
            return False

    def stop(self) -> None:
        self._poller.stop()

    def after_fork(self) -> None:
        self._lock = threading.Lock()
        self._poller.after_fork()


class HttpSource(Source):
    """Flags polled over HTTP (aiohttp) with ETag; exponential backoff while it fails.

    Every ``interval`` seconds a GET with ``If-None-Match`` asks for the document: 200 installs
    it (when valid), 304 confirms the state is current, anything else is an error. After ``n``
    consecutive failures the next poll waits ``min(interval * 2**n, max_backoff)``, jittered down
    by up to 20 % so a fleet does not retry in step. The poller runs its own event loop in a
    daemon thread, so it works the same under threads and asyncio.

    Args:
        headers: sent with every request (an ``Authorization`` header, say).
        random: returns a float in [0, 1); drives the jitter (tests pass a fixed one).
    """

    def __init__(
        self,
        url: str,
        *,
        interval: float = DEFAULT_HTTP_INTERVAL,
        timeout: float = DEFAULT_HTTP_TIMEOUT,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        headers: Mapping[str, str] | None = None,
        random: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        self.url = url
        self.name = f"http:{url}"
        self.interval = interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.headers = dict(headers or {})
        self._random = random
        self.etag: str | None = None
        self.failures = 0
        self.not_modified = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def next_delay(self) -> float:
        """Seconds until the next poll, given the consecutive failures so far."""
        if self.failures == 0:
            return self.interval
        base = min(self.interval * 2 ** min(self.failures, 30), self.max_backoff)
        return float(base * (1.0 - 0.2 * self._random()))

    def start(self, feed: Feed) -> None:
        # No fetch on the caller's thread: a slow server must not delay start-up. The poller's
        # first request goes out at once; Flags.ready() waits for it when asked.
        self._feed = feed
        self._start_thread()

    def _start_thread(self) -> None:
        self._stopping = False
        self._thread = threading.Thread(
            target=self._thread_main, name=f"resilience-flags-{self.url}", daemon=True
        )
        self._thread.start()

    def _thread_main(self) -> None:
        asyncio.run(self._poll_forever())

    async def _poll_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                await self.poll(session)
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.next_delay())
                self._wake.clear()

    async def poll(self, session: aiohttp.ClientSession) -> bool:
        """One conditional GET; ``True`` when a new document was installed."""
        headers = dict(self.headers)
        if self.etag is not None:
            headers["If-None-Match"] = self.etag
        try:
            async with session.get(
                self.url, headers=headers, timeout=aiohttp.ClientTimeout(total=self.timeout)
            ) as resp:
                if resp.status == 304:
                    self.failures = 0
                    self.not_modified += 1
                    return False
                if resp.status != 200:
                    self.failures += 1
                    self._error("http", f"{self.url}: HTTP {resp.status}")
                    return False
                body = await resp.read()
                etag = resp.headers.get("ETag")
        except (aiohttp.ClientError, TimeoutError, OSError) as exc:
            self.failures += 1
            self._error("unreachable", f"{self.url}: {exc!r}")
            return False
        try:
            document = json.loads(body)
        except ValueError as exc:
            self.failures += 1
            self._error("parse", f"{self.url}: {exc}")
            return False
        if not self._publish(document):
            self.failures += 1
            return False
        self.failures = 0
        self.etag = etag
        return True

    def refresh(self) -> bool:
        """Poll now from the caller's thread (its own event loop; not from a running loop)."""

        async def once() -> bool:
            async with aiohttp.ClientSession() as session:
                return await self.poll(session)

        return asyncio.run(once())

    def wake(self) -> None:
        """Make the poller ask now instead of at its next tick."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            loop.call_soon_threadsafe(wake.set)

    def stop(self) -> None:
        self._stopping = True
        self.wake()
        thread, self._thread = self._thread, None
        if thread is not None and thread is not threading.current_thread():
            thread.join(timeout=self.timeout + 1)

    def after_fork(self) -> None:
        # The parent's loop and session belong to a thread that does not exist here.
        was_running = self._thread is not None and not self._stopping
        self._loop = self._wake = None
        self._thread = None
        if was_running:
            self._start_thread()
