"""``EtcdSource``: flags kept in etcd, one key per flag, watched, written with an audit trail.

Reading: one consistent (linearizable) read of every key under the prefix, then a watch from
the next revision; each change is applied as etcd reports it. A broken watch reconnects with
jittered exponential backoff to the next endpoint and resumes from the last revision seen, so
no change is lost; if that revision was compacted meanwhile, everything is read again. A
monitor thread checks every ``check_interval`` that the member behind the watch still answers a
linearizable read (it needs a leader); a failure cuts the watch so it moves to another member.

Writing: ``write`` / ``delete`` validate, then run one transaction that compares the key's
``mod_revision`` with the one read (compare-and-swap) and, if it still holds, changes the key
and appends an audit record under a sibling prefix (``/resilience/flags-audit/`` beside
``/resilience/flags/``). ``history(name)`` reads the records back.
"""

from __future__ import annotations

import json
import logging
import os
import random
import ssl
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any

from ..errors import ConfigError, FlagStoreError
from ._backup import Backup
from ._etcd_client import EtcdClient, WatchStream, prefix_end, unb64
from ._etcd_writes import EtcdWriter
from ._source import Feed, Source, Unreadable

__all__ = ["DEFAULT_ENDPOINT", "DEFAULT_PREFIX", "EtcdSource"]

log = logging.getLogger("resilience.flags")

DEFAULT_ENDPOINT = "http://127.0.0.1:2379"
DEFAULT_PREFIX = "/resilience/flags/"
DEFAULT_CHECK_INTERVAL = 5.0
DEFAULT_MIN_BACKOFF = 0.05
DEFAULT_MAX_BACKOFF = 5.0


class _Compacted(Exception):
    pass


def _revision(kv_or_header: dict[str, Any], field: str) -> int:
    return int(kv_or_header.get(field, 0) or 0)


class EtcdSource(EtcdWriter, Source):
    """Flags from etcd: ``EtcdSource(["http://10.0.0.1:2379", ...], prefix="/resilience/flags/")``.

    Key ``prefix + name`` holds the JSON of one flag, the object found under ``"flags"`` in a
    flag file. A value that does not parse or validate keeps that flag's last good spec
    (logged, counted, shown in the status); a deleted key removes the flag.

    Args:
        endpoints: etcd client URLs (``https://`` for TLS); any member will do.
        username / password: etcd user auth; neither is ever logged.
        ca_file / cert_file / key_file / ssl_context: TLS settings for https endpoints.
        backup_path: a file holding the last good flags; read at start (served as stale
            until etcd answers) and rewritten after changes.
        check_interval: seconds between liveness checks of the watched member.
        audit_prefix: where write records go (default: the prefix's sibling ``...-audit/``).
    """

    writable = True

    def __init__(
        self,
        endpoints: Sequence[str] = (DEFAULT_ENDPOINT,),
        prefix: str = DEFAULT_PREFIX,
        *,
        username: str | None = None,
        password: str | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        timeout: float = 5.0,
        backup_path: str | os.PathLike[str] | None = None,
        check_interval: float = DEFAULT_CHECK_INTERVAL,
        min_backoff: float = DEFAULT_MIN_BACKOFF,
        max_backoff: float = DEFAULT_MAX_BACKOFF,
        audit_prefix: str | None = None,
        name: str | None = None,
        random: Callable[[], float] = random.random,
        wall: Callable[[], float] = time.time,
    ) -> None:
        super().__init__()
        if not isinstance(prefix, str) or not prefix:
            raise ConfigError("prefix", f"must be a non-empty string, got {prefix!r}")
        for field, value in (
            ("check_interval", check_interval),
            ("min_backoff", min_backoff),
            ("max_backoff", max_backoff),
        ):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
                raise ConfigError(field, f"must be seconds > 0, got {value!r}")
        self.client = EtcdClient(
            endpoints,
            username=username,
            password=password,
            ssl_context=ssl_context,
            ca_file=ca_file,
            cert_file=cert_file,
            key_file=key_file,
            timeout=timeout,
        )
        self._redact = self.client.redact
        self.prefix = prefix
        self.audit_prefix = audit_prefix or prefix.rstrip("/") + "-audit/"
        if self.audit_prefix.startswith(prefix):
            raise ConfigError("audit_prefix", "must not lie under the flags' prefix")
        self._key = prefix.encode()
        self._end = prefix_end(self._key)
        self.name = name or f"etcd:{prefix}"
        self.check_interval = float(check_interval)
        self.min_backoff = float(min_backoff)
        self.max_backoff = float(max_backoff)
        self._random = random
        self._wall = wall
        self.backup = None if backup_path is None else Backup(backup_path)
        self.revision: int | None = None  # the store revision the flags here reflect
        self.endpoint = 0
        self.connected = False
        self.reloads = 0
        self.reconnects = 0
        self.stale = False
        self._specs: dict[str, Any] = {}  # the good specs in force, for the backup
        self._seen = threading.Condition()
        self._stop = threading.Event()
        self._stream: WatchStream | None = None
        self._threads: list[threading.Thread] = []

    def __repr__(self) -> str:
        return f"EtcdSource({self.client!r}, prefix={self.prefix!r})"

    # -- lifecycle ------------------------------------------------------------------------

    def start(self, feed: Feed) -> None:
        # The backup (local) is served at once; etcd is read on the watcher thread, so an
        # unreachable cluster never holds up the caller. Flags.ready() waits when asked.
        self._feed = feed
        if self.backup is not None:
            saved = self.backup.load()
            if saved is not None:
                self.stale = True
                self._specs = dict(saved["flags"])
                feed.patch(saved["flags"], replace=True, stale=True)
        self._start_threads()

    def _start_threads(self) -> None:
        self._stop = threading.Event()
        self._threads = [
            threading.Thread(target=self._watch_loop, name=f"resilience-{self.name}", daemon=True),
            threading.Thread(
                target=self._monitor, name=f"resilience-{self.name}-check", daemon=True
            ),
        ]
        for thread in self._threads:
            thread.start()

    def stop(self) -> None:
        self._stop.set()
        stream = self._stream
        if stream is not None:
            stream.close()
        for thread in self._threads:
            if thread is not threading.current_thread():
                thread.join(timeout=self.client.timeout + 1)
        self._threads = []
        if self.backup is not None:
            self.backup.stop()

    def after_fork(self) -> None:
        was_running = bool(self._threads) and not self._stop.is_set()
        self.client.reset()
        self._stream = None
        self._seen = threading.Condition()
        if self.backup is not None:
            self.backup.after_fork()
        if was_running:
            self._start_threads()

    # -- reading --------------------------------------------------------------------------

    def _watch_loop(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                if self.revision is None or self.stale:
                    self._load()
                self._watch()
                failures = 0
            except _Compacted:
                self.reloads += 1
                self.revision = None  # read everything again, at once
                continue
            except Exception as exc:  # anything ends this attempt, never the loop
                if self._stop.is_set():
                    break
                failures += 1
                self._error("unreachable", self._describe(exc))
            finally:
                self.connected = False
                self._stream = None
            if self._stop.is_set():
                break
            self.endpoint = (self.endpoint + 1) % len(self.client.endpoints)
            self.reconnects += 1
            delay = min(self.min_backoff * 2 ** min(failures, 16), self.max_backoff)
            self._stop.wait(delay * (0.5 + 0.5 * self._random()))

    def _describe(self, exc: Exception) -> str:
        where = self.client.endpoints[self.endpoint].name
        return f"{where}: {type(exc).__name__}: {exc}"

    def _load(self) -> None:
        answer = self.client.range(self._key, self._end, endpoint=self.endpoint)
        revision = _revision(answer.get("header", {}), "revision")
        changes: dict[str, Any] = {}
        versions: dict[str, int] = {}
        for kv in answer.get("kvs", []):
            self._decode(kv, changes, versions)
        refused = self._deliver(changes, versions, replace=True)
        with self._seen:
            if self.backup is not None:  # the raw specs are kept only to be backed up
                specs = {n: s for n, s in changes.items() if n not in refused}
                specs.update({n: self._specs[n] for n in refused if n in self._specs})
                self._specs = specs
            self.stale = False
            self.revision = revision
            self._seen.notify_all()
        self._save()

    def _decode(
        self, kv: dict[str, Any], changes: dict[str, Any], versions: dict[str, int]
    ) -> None:
        name = unb64(kv.get("key")).decode("utf-8", "replace")[len(self.prefix) :]
        try:
            spec = json.loads(unb64(kv.get("value")))
        except (ValueError, RecursionError) as exc:
            spec = Unreadable(
                f"the value of {self.prefix}{name} is not JSON ({type(exc).__name__})"
            )
        changes[name] = spec
        versions[name] = _revision(kv, "mod_revision")

    def _deliver(
        self, changes: dict[str, Any], versions: dict[str, int], *, replace: bool
    ) -> frozenset[str]:
        if self._feed is None:
            return frozenset()
        return self._feed.patch(changes, versions=versions, replace=replace)

    def _watch(self) -> None:
        assert self.revision is not None
        stream = self.client.watch(self._key, self._end, self.revision + 1, self.endpoint)
        self._stream = stream
        if self._stop.is_set():
            stream.close()
            return
        for message in stream:
            if "error" in message:
                raise FlagStoreError(self._redact(str(message["error"])))
            result = message.get("result", {})
            if result.get("canceled"):
                if _revision(result, "compact_revision"):
                    raise _Compacted()
                reason = str(result.get("cancel_reason", "canceled"))
                if "auth" in reason or "token" in reason:
                    self.client.forget_token()
                raise FlagStoreError(f"watch canceled: {self._redact(reason)}")
            if result.get("created"):
                self.connected = True
                self._ok()
            events = result.get("events")
            if events:
                self._apply(events)
        if not self._stop.is_set():
            raise FlagStoreError("the watch stream ended")

    def _apply(self, events: list[dict[str, Any]]) -> None:
        changes: dict[str, Any] = {}
        versions: dict[str, int] = {}
        last = self.revision or 0
        for event in events:
            kv = event.get("kv", {})
            last = max(last, _revision(kv, "mod_revision"))
            if event.get("type") == "DELETE":
                name = unb64(kv.get("key")).decode("utf-8", "replace")[len(self.prefix) :]
                changes[name] = None
            else:
                self._decode(kv, changes, versions)
        refused = self._deliver(changes, versions, replace=False)
        with self._seen:
            for name, spec in changes.items() if self.backup is not None else ():
                if spec is None:
                    self._specs.pop(name, None)
                elif name not in refused:
                    self._specs[name] = spec
            self.revision = last
            self._seen.notify_all()
        self._save()

    def _monitor(self) -> None:
        while not self._stop.wait(self.check_interval):
            if not self.connected:
                continue
            try:
                self.client.range(self._key, self._end, count_only=True, endpoint=self.endpoint)
            except Exception as exc:  # the member behind the watch is gone or has no leader
                self._error("unreachable", self._describe(exc))
                stream = self._stream
                if stream is not None:
                    stream.close()
            else:
                self._ok()

    def _save(self) -> None:
        if self.backup is not None:
            self.backup.save(self._snapshot)

    def _snapshot(self) -> dict[str, Any]:
        with self._seen:
            return {"flags": dict(self._specs), "revision": self.revision, "saved_at": self._wall()}

    def wait_revision(self, revision: int, timeout: float) -> bool:
        """Wait until the flags here reflect store revision ``revision``; ``False`` on timeout."""
        with self._seen:
            return self._seen.wait_for(
                lambda: self.revision is not None and self.revision >= revision and not self.stale,
                timeout,
            )

    def status(self) -> dict[str, Any]:
        backup = self.backup
        return {
            "prefix": self.prefix,
            "endpoint": self.client.endpoints[self.endpoint].name,
            "connected": self.connected,
            "revision": self.revision,
            "reloads": self.reloads,
            "reconnects": self.reconnects,
            "backup": None if backup is None else str(backup.path),
            "backup_error": None if backup is None else backup.last_error,
        }
