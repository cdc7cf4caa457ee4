"""Flags polled over HTTP with ETag, bounded in size, by a poller only ``stop()`` ends."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import threading
from collections.abc import Callable, Mapping
from typing import Any

import aiohttp

from ..errors import ConfigError
from ._decode import DEFAULT_MAX_BYTES, DecodeError, check_size, decode
from ._redact import redact_url, url_secrets
from ._source import Feed, Source

__all__ = ["DEFAULT_HTTP_INTERVAL", "HttpSource"]

log = logging.getLogger("resilience.flags")

DEFAULT_HTTP_INTERVAL = 15.0
DEFAULT_HTTP_TIMEOUT = 5.0
DEFAULT_MAX_BACKOFF = 300.0


class HttpSource(Source):
    """Flags polled over HTTP (aiohttp) with ETag; exponential backoff while it fails.

    Every ``interval`` seconds a GET with ``If-None-Match`` asks for the document: 200 installs
    it (when valid), 304 confirms the state is current, anything else is an error. After ``n``
    consecutive failures the next poll waits ``min(interval * 2**n, max_backoff)``, jittered down
    by up to 20 % so a fleet does not retry in step. The poller runs its own event loop in a
    daemon thread, so it works the same under threads and asyncio; no exception ends it (each
    is reported), and should its thread end anyway the status says ``running: false``.

    The source's name is its URL with credentials (``user:password@``, ``?token=``) masked;
    they never reach the status, logs or metric labels.

    Args:
        headers: sent with every request (an ``Authorization`` header, say); values are secret.
        max_bytes: a larger response is refused (``too_large``) and the last good state stays.
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
        max_bytes: int = DEFAULT_MAX_BYTES,
        random: Callable[[], float] = random.random,
    ) -> None:
        super().__init__()
        if isinstance(max_bytes, bool) or not isinstance(max_bytes, int) or max_bytes < 1:
            raise ConfigError("max_bytes", f"must be an int >= 1, got {max_bytes!r}")
        self.url = url
        self.safe_url = redact_url(url)
        self.name = f"http:{self.safe_url}"
        self._redact.add(*url_secrets(url), *(headers or {}).values())
        self.interval = interval
        self.timeout = timeout
        self.max_backoff = max_backoff
        self.max_bytes = max_bytes
        self.headers = dict(headers or {})
        self._random = random
        self.etag: str | None = None
        self.failures = 0
        self.not_modified = 0
        self.stopped_reason: str | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._wake: asyncio.Event | None = None
        self._thread: threading.Thread | None = None
        self._stopping = False

    def __repr__(self) -> str:
        return f"HttpSource({self.safe_url!r})"

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
        self.stopped_reason = None
        self._thread = threading.Thread(
            target=self._thread_main, name=f"resilience-flags-{self.safe_url}", daemon=True
        )
        self._thread.start()

    def _thread_main(self) -> None:
        while not self._stopping:
            try:
                asyncio.run(self._poll_forever())
            except Exception as exc:  # the loop itself failed: report, wait, start again
                self._error("stopped", f"poller restarted after {type(exc).__name__}")
                threading.Event().wait(min(self.next_delay(), self.max_backoff))
            except BaseException as exc:  # SystemExit and the like end this thread, as they
                # would anyway; the status says so instead of the thread vanishing silently
                self.stopped_reason = type(exc).__name__
                self._error("stopped", f"poller ended by {type(exc).__name__}")
                return

    async def _poll_forever(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        async with aiohttp.ClientSession() as session:
            while not self._stopping:
                try:
                    await self.poll(session)
                except Exception as exc:  # no exception may end the poller
                    self.failures += 1
                    self._error("poll", f"{type(exc).__name__}: {exc}")
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._wake.wait(), self.next_delay())
                self._wake.clear()

    async def poll(self, session: aiohttp.ClientSession) -> bool:
        """One conditional GET; ``True`` when a new document was installed in full."""
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
                    self._ok()
                    return False
                if resp.status != 200:
                    self.failures += 1
                    self._error("http", f"{self.safe_url}: HTTP {resp.status}")
                    return False
                if resp.content_length is not None:
                    check_size(resp.content_length, self.max_bytes, "the response")
                body = await resp.content.read(self.max_bytes + 1)
                check_size(len(body), self.max_bytes, "the response")
                etag = resp.headers.get("ETag")
        except DecodeError as exc:
            self.failures += 1
            self._error(exc.kind, f"{self.safe_url}: {exc}")
            return False
        except (aiohttp.ClientError, TimeoutError, OSError, ValueError) as exc:
            self.failures += 1
            self._error("unreachable", f"{self.safe_url}: {exc!r}")
            return False
        try:
            document = decode(body, "json", self.safe_url)
        except DecodeError as exc:
            self.failures += 1
            self._error(exc.kind, str(exc))
            return False
        installed = self._publish(document)
        self.failures = 0
        self.etag = etag
        return installed

    def refresh(self) -> bool:
        """Poll now from the caller's thread (its own event loop; not from a running loop)."""

        async def once() -> bool:
            async with aiohttp.ClientSession() as session:
                return await self.poll(session)

        return asyncio.run(once())

    def status(self) -> dict[str, Any]:
        running = self._thread is not None and self._thread.is_alive()
        out: dict[str, Any] = {"running": running, "failures": self.failures}
        if not running and self.stopped_reason is not None:
            out["stopped"] = self.stopped_reason
        return out

    def wake(self) -> None:
        """Make the poller ask now instead of at its next tick."""
        loop, wake = self._loop, self._wake
        if loop is not None and wake is not None and not loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
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
