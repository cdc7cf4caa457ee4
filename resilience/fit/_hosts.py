"""Which hosts a request's FIT tag may travel to (``fit.enable(propagate_to=...)``).

A tag is a bearer credential until it expires: whoever receives it can replay it. The client
integrations forward it only to hosts the operator allows. By default that is the service's own
network: loopback and the private address ranges, and ``localhost``. A host name is matched as
written in the URL, never resolved (no DNS lookup on the request path), so internal names such
as ``ratings`` or ``*.svc.cluster.local`` must be listed to receive tags.
"""

from __future__ import annotations

import ipaddress
import threading
import urllib.parse
from collections.abc import Iterable

from ..errors import ConfigError

__all__ = ["PRIVATE_NETWORKS", "HostPolicy"]

PRIVATE_NETWORKS: tuple[str, ...] = (
    "127.0.0.0/8",
    "::1/128",
    "10.0.0.0/8",
    "172.16.0.0/12",
    "192.168.0.0/16",
    "fc00::/7",
    "localhost",
    "*.localhost",
)
# Hosts remembered per policy: a service talks to few hosts, but a hostile redirect chain could
# name many, so the memo is bounded.
_MEMO_SIZE = 1024
_Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def _host(value: str) -> str:
    """The bare host of a URL or ``host[:port]``, lower-case, without IPv6 brackets."""
    host = value.strip()
    if "://" in host:
        try:
            return (urllib.parse.urlsplit(host).hostname or "").rstrip(".")
        except ValueError:
            return ""
    host = host.split("/", 1)[0].rsplit("@", 1)[-1]
    if host.startswith("["):
        host = host[1 : host.find("]")] if "]" in host else host[1:]
    elif host.count(":") == 1:
        host = host.split(":", 1)[0]
    return host.rstrip(".").lower()


class HostPolicy:
    """Decides whether a host may receive the tag; entries are validated once.

    Entries: ``"*"`` (every host), an address or network (``"10.0.0.0/8"``, ``"::1"``), an
    exact host name (``"ratings"``), or a suffix pattern (``"*.svc.cluster.local"``).
    """

    __slots__ = ("_any", "_lock", "_memo", "_names", "_networks", "_suffixes", "entries")

    def __init__(self, entries: Iterable[str] = PRIVATE_NETWORKS) -> None:
        if isinstance(entries, str):
            raise ConfigError("propagate_to", "must be a list of hosts or networks, not a str")
        self.entries = tuple(entries)
        self._any = False
        self._networks: list[_Network] = []
        self._names: set[str] = set()
        self._suffixes: list[str] = []
        for entry in self.entries:
            self._add(entry)
        self._memo: dict[str, bool] = {}
        self._lock = threading.Lock()

    def _add(self, entry: object) -> None:
        if not isinstance(entry, str) or not entry.strip():
            raise ConfigError("propagate_to", f"entries must be non-empty strings, got {entry!r}")
        text = entry.strip().lower()
        if text == "*":
            self._any = True
            return
        if text.startswith("*."):
            suffix = text[1:]
            if "*" in suffix or len(suffix) < 2:
                raise ConfigError("propagate_to", f"bad host pattern {entry!r}")
            self._suffixes.append(suffix)
            return
        try:
            self._networks.append(ipaddress.ip_network(text.strip("[]"), strict=False))
            return
        except ValueError:
            pass
        if "*" in text or "/" in text or " " in text:
            raise ConfigError(
                "propagate_to",
                f"{entry!r} is neither an address, a network, a host name nor '*.suffix'",
            )
        self._names.add(text.rstrip("."))

    def allows(self, url_or_host: str | None) -> bool:
        """Whether a request to this URL or host may carry the tag."""
        if self._any:
            return True
        if not url_or_host:
            return False
        host = _host(url_or_host)
        found = self._memo.get(host)
        if found is None:
            found = self._decide(host)
            with self._lock:
                if len(self._memo) >= _MEMO_SIZE:
                    self._memo.clear()
                self._memo[host] = found
        return found

    def _decide(self, host: str) -> bool:
        try:
            address = ipaddress.ip_address(host.split("%", 1)[0])
        except ValueError:
            return host in self._names or any(host.endswith(s) for s in self._suffixes)
        if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
            address = address.ipv4_mapped
        return any(address in network for network in self._networks)
