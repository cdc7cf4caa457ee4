"""A small etcd v3 client over etcd's JSON gateway (``/v3/kv/range``, ``/v3/kv/txn``, watch).

Standard library only (``http.client``, ``ssl``): no gRPC stack, no third-party client. Unary
calls fail over across the endpoints; a watch is one long HTTP response of newline-separated
JSON messages that ``WatchStream`` reads and another thread can cut (``close()``). Watches ask
etcd to require a leader (``Grpc-Metadata-hasleader``), so a member cut off from the cluster
cancels them instead of going quiet. User/password auth fetches a token and renews it when etcd
says it expired; the password and the token never appear in an error message.
"""

from __future__ import annotations

import base64
import contextlib
import http.client
import json
import socket
import ssl
import threading
import urllib.parse
from collections.abc import Iterator, Sequence
from typing import Any

from ..errors import ConfigError, FlagStoreError
from ._redact import Redactor, redact_url, url_secrets

__all__ = ["EtcdClient", "WatchStream", "b64", "prefix_end", "unb64"]

DEFAULT_TIMEOUT = 5.0
MAX_RESPONSE = 512 * 1024 * 1024  # the gateway's own limit is far below; this only bounds a bug
_UNAUTHENTICATED = 16
_RETRY_ELSEWHERE = {14, 4}  # unavailable (no leader, stopping), deadline exceeded


def b64(data: str | bytes) -> str:
    raw = data.encode() if isinstance(data, str) else data
    return base64.b64encode(raw).decode("ascii")


def unb64(text: str | None) -> bytes:
    return base64.b64decode(text or "")


def prefix_end(prefix: bytes) -> bytes:
    """The range end that covers every key starting with ``prefix``."""
    end = bytearray(prefix)
    for i in range(len(end) - 1, -1, -1):
        if end[i] < 0xFF:
            end[i] += 1
            return bytes(end[: i + 1])
    return b"\0"


class _Endpoint:
    def __init__(self, url: str) -> None:
        if "://" not in url:
            url = "http://" + url
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ConfigError(
                "endpoints", f"must be http(s)://host:port URLs, got {redact_url(url)}"
            )
        self.tls = parts.scheme == "https"
        self.host = parts.hostname
        self.port = parts.port or 2379
        self.name = f"{parts.scheme}://{self.host}:{self.port}"
        self.secrets = url_secrets(url)


class WatchStream:
    """One open watch: iterate for messages; ``close()`` from any thread ends the iteration."""

    def __init__(self, conn: http.client.HTTPConnection, resp: http.client.HTTPResponse) -> None:
        self._conn = conn
        self._resp = resp
        self._closed = False

    def __iter__(self) -> Iterator[dict[str, Any]]:
        while not self._closed:
            line = self._resp.readline(MAX_RESPONSE)
            if not line:
                return
            if line.strip():
                message = json.loads(line)
                if isinstance(message, dict):
                    yield message

    def close(self) -> None:
        self._closed = True
        sock = self._conn.sock
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)  # wakes a reader blocked in recv()
        self._conn.close()


class EtcdClient:
    """Unary calls and watches against a list of endpoints (the first that answers).

    Args:
        endpoints: ``http://host:port`` or ``https://host:port`` (default port 2379).
        username / password: etcd's user auth (a token is fetched and renewed).
        ssl_context: for https endpoints (else one from ``ca_file`` / ``cert_file`` /
            ``key_file``, or the system's trust store).
        timeout: seconds for a connection and each unary call.
    """

    def __init__(
        self,
        endpoints: Sequence[str],
        *,
        username: str | None = None,
        password: str | None = None,
        ssl_context: ssl.SSLContext | None = None,
        ca_file: str | None = None,
        cert_file: str | None = None,
        key_file: str | None = None,
        timeout: float = DEFAULT_TIMEOUT,
    ) -> None:
        if isinstance(endpoints, str) or not endpoints:
            raise ConfigError("endpoints", "must be a non-empty list of URLs")
        self.endpoints = [_Endpoint(e) for e in endpoints]
        if (username is None) != (password is None):
            raise ConfigError("username", "username and password go together")
        if isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0:
            raise ConfigError("timeout", f"must be seconds > 0, got {timeout!r}")
        self.username = username
        self._password = password
        self.timeout = float(timeout)
        self.redact = Redactor([s for e in self.endpoints for s in e.secrets])
        if password:
            self.redact.add(password)
        if ssl_context is None and any(e.tls for e in self.endpoints):
            ssl_context = ssl.create_default_context(cafile=ca_file)
            if cert_file is not None:
                ssl_context.load_cert_chain(cert_file, key_file)
        self._ssl = ssl_context
        self._token: str | None = None
        self._lock = threading.Lock()
        self._idle: dict[int, list[http.client.HTTPConnection]] = {}
        self.preferred = 0

    def __repr__(self) -> str:
        names = ", ".join(e.name for e in self.endpoints)
        user = "" if self.username is None else f", user={self.username!r}"
        return f"EtcdClient([{names}]{user})"

    # -- connections ----------------------------------------------------------------------

    def _connect(self, index: int, timeout: float | None) -> http.client.HTTPConnection:
        ep = self.endpoints[index]
        conn: http.client.HTTPConnection
        if ep.tls:
            conn = http.client.HTTPSConnection(ep.host, ep.port, timeout=timeout, context=self._ssl)
        else:
            conn = http.client.HTTPConnection(ep.host, ep.port, timeout=timeout)
        return conn

    def _take(self, index: int) -> tuple[http.client.HTTPConnection, bool]:
        """A connection to endpoint ``index``, and whether it is a reused (pooled) one."""
        with self._lock:
            idle = self._idle.get(index)
            if idle:
                return idle.pop(), True
        return self._connect(index, self.timeout), False

    def _give(self, index: int, conn: http.client.HTTPConnection) -> None:
        with self._lock:
            idle = self._idle.setdefault(index, [])
            if len(idle) < 4:
                idle.append(conn)
                return
        conn.close()

    def reset(self) -> None:
        """Forget pooled connections (after a fork they belong to the parent)."""
        with self._lock:
            self._idle = {}

    def _headers(self, watch: bool = False) -> dict[str, str]:
        headers = {"Content-Type": "application/json"}
        if self._token is not None:
            headers["Authorization"] = self._token
        if watch:
            headers["Grpc-Metadata-hasleader"] = "true"
        return headers

    def _post(self, index: int, path: str, body: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        payload = json.dumps(body)
        while True:
            conn, reused = self._take(index)
            try:
                conn.request("POST", path, payload, self._headers())
                resp = conn.getresponse()
                data = resp.read(MAX_RESPONSE)
            except (OSError, http.client.HTTPException):
                conn.close()
                if reused:  # the server closed an idle connection: try another (CAS keeps a
                    # resent transaction from applying twice)
                    continue
                raise
            except BaseException:
                conn.close()
                raise
            break
        self._give(index, conn)
        try:
            decoded = json.loads(data) if data else {}
        except ValueError as exc:
            raise FlagStoreError(f"etcd answered {resp.status} with no JSON") from exc
        return resp.status, decoded if isinstance(decoded, dict) else {}

    # -- auth -----------------------------------------------------------------------------

    def _authenticate(self, index: int) -> None:
        if self.username is None:
            return
        status, body = self._post(
            index, "/v3/auth/authenticate", {"name": self.username, "password": self._password}
        )
        token = body.get("token")
        if status != 200 or not isinstance(token, str):
            raise FlagStoreError(
                f"etcd auth as {self.username!r} failed: {self.redact(str(body.get('error')))}"
            )
        self._token = token
        self.redact.add(token)

    # -- unary calls ----------------------------------------------------------------------

    def call(
        self, path: str, body: dict[str, Any], *, endpoint: int | None = None
    ) -> dict[str, Any]:
        """POST ``body`` to ``path`` on the preferred endpoint, then the others in turn."""
        order = (
            [endpoint]
            if endpoint is not None
            else [(self.preferred + i) % len(self.endpoints) for i in range(len(self.endpoints))]
        )
        problems: list[str] = []
        for index in order:
            name = self.endpoints[index].name
            try:
                if self.username is not None and self._token is None:
                    self._authenticate(index)
                status, answer = self._post(index, path, body)
                if status == 401 or answer.get("code") == _UNAUTHENTICATED:
                    self._token = None
                    self._authenticate(index)
                    status, answer = self._post(index, path, body)
            except (OSError, http.client.HTTPException) as exc:
                problems.append(f"{name}: {type(exc).__name__}: {self.redact(str(exc))}")
                continue
            if status == 200:
                self.preferred = index
                return answer
            message = self.redact(str(answer.get("error") or answer.get("message") or status))
            if answer.get("code") in _RETRY_ELSEWHERE or status >= 500:
                problems.append(f"{name}: {message}")
                continue
            raise FlagStoreError(f"etcd {path} at {name}: {message}")
        raise FlagStoreError(f"etcd {path}: no endpoint answered ({'; '.join(problems)})")

    def range(
        self,
        key: bytes,
        range_end: bytes | None = None,
        *,
        count_only: bool = False,
        sort_descending: bool = False,
        limit: int | None = None,
        endpoint: int | None = None,
    ) -> dict[str, Any]:
        """A linearizable read of ``key`` (or ``[key, range_end)``)."""
        body: dict[str, Any] = {"key": b64(key)}
        if range_end is not None:
            body["range_end"] = b64(range_end)
        if count_only:
            body["count_only"] = True
        if sort_descending:
            body["sort_order"] = "DESCEND"
            body["sort_target"] = "CREATE"
        if limit is not None:
            body["limit"] = limit
        return self.call("/v3/kv/range", body, endpoint=endpoint)

    def txn(
        self,
        compare: list[dict[str, Any]],
        success: list[dict[str, Any]],
        failure: list[dict[str, Any]],
    ) -> dict[str, Any]:
        return self.call("/v3/kv/txn", {"compare": compare, "success": success, "failure": failure})

    def compact(self, revision: int) -> dict[str, Any]:
        return self.call("/v3/kv/compaction", {"revision": str(revision), "physical": True})

    def member_status(self, endpoint: int) -> dict[str, Any]:
        """``/v3/maintenance/status`` of one member (its id, the leader's id, its revision)."""
        return self.call("/v3/maintenance/status", {}, endpoint=endpoint)

    # -- watch ----------------------------------------------------------------------------

    def watch(
        self, key: bytes, range_end: bytes, start_revision: int, endpoint: int
    ) -> WatchStream:
        """Open a watch of ``[key, range_end)`` from ``start_revision`` on one endpoint."""
        if self.username is not None and self._token is None:
            self._authenticate(endpoint)
        conn = self._connect(endpoint, self.timeout)
        try:
            body = {
                "create_request": {
                    "key": b64(key),
                    "range_end": b64(range_end),
                    "start_revision": str(start_revision),
                }
            }
            conn.request("POST", "/v3/watch", json.dumps(body), self._headers(watch=True))
            resp = conn.getresponse()
            if resp.status != 200:
                text = resp.read(64 * 1024).decode("utf-8", "replace")
                if resp.status == 401:
                    self._token = None
                raise FlagStoreError(f"etcd watch: HTTP {resp.status}: {self.redact(text)}")
            sock = conn.sock
            if sock is not None:
                sock.settimeout(None)  # a quiet watch is normal; liveness is checked elsewhere
                _keepalive(sock)
        except BaseException:
            conn.close()
            raise
        return WatchStream(conn, resp)

    def forget_token(self) -> None:
        self._token = None


def _keepalive(sock: socket.socket) -> None:
    """Probe an idle watch connection so a peer that vanished is noticed in about 20 s."""
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_KEEPALIVE, 1)
    for name, value in (("TCP_KEEPIDLE", 10), ("TCP_KEEPINTVL", 5), ("TCP_KEEPCNT", 2)):
        option = getattr(socket, name, None)
        if option is not None:
            sock.setsockopt(socket.IPPROTO_TCP, option, value)
