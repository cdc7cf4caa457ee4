"""Counters of one cache, read at scrape time and by ``status()``."""

from __future__ import annotations

import threading

__all__ = ["CacheStats"]


class CacheStats:
    """Per-zone request counts and the events worth alerting on (thread-safe)."""

    def __init__(self, zones: tuple[str, ...]) -> None:
        self._lock = threading.Lock()
        # (zone, op, result) -> count; result is hit, miss, error, undecodable (reads) or
        # ok, error, client_error (writes)
        self.requests: dict[tuple[str, str, str], int] = {}
        self.remote_hits = dict.fromkeys(zones, 0)
        self.read_repairs = dict.fromkeys(zones, 0)
        self.write_failures = dict.fromkeys(zones, 0)
        # calls that gave up waiting for a zone permit or a connection (the client's own limit)
        self.acquire_timeouts = dict.fromkeys(zones, 0)
        self.degraded_writes = 0  # writes that met their policy with a zone failing
        self.dedup_hits = 0
        self.singleflight_shares = 0
        self.batched_gets = 0  # gets that shared a multi-get with others
        self.batches = 0

    def count(self, zone: str, op: str, result: str, n: int = 1) -> None:
        key = (zone, op, result)
        with self._lock:
            self.requests[key] = self.requests.get(key, 0) + n

    def remote_hit(self, zone: str, n: int = 1) -> None:
        with self._lock:
            self.remote_hits[zone] += n

    def repaired(self, zone: str, n: int = 1) -> None:
        with self._lock:
            self.read_repairs[zone] += n

    def write_failed(self, zone: str) -> None:
        with self._lock:
            self.write_failures[zone] += 1

    def acquire_timeout(self, zone: str) -> None:
        with self._lock:
            self.acquire_timeouts[zone] += 1

    def degraded(self) -> None:
        with self._lock:
            self.degraded_writes += 1

    def batch(self, keys: int) -> None:
        with self._lock:
            self.batches += 1
            self.batched_gets += keys

    def dedup(self, shared: bool, n: int = 1) -> None:
        with self._lock:
            if shared:
                self.singleflight_shares += n
            else:
                self.dedup_hits += n

    def zone_counts(self, zone: str) -> dict[str, int]:
        """Reads (hits, misses, errors, undecodable) and writes (ok, failed) of one zone."""
        out = {
            "hits": 0,
            "misses": 0,
            "read_errors": 0,
            "undecodable": 0,
            "writes": 0,
            "write_errors": 0,
            "client_errors": 0,
        }
        reads = {"hit": "hits", "miss": "misses", "undecodable": "undecodable"}
        with self._lock:
            items = list(self.requests.items())
        for (z, op, result), n in items:
            if z != zone or op == "repair":
                continue
            if result == "client_error":
                out["client_errors"] += n
            elif op.startswith("get"):
                out[reads.get(result, "read_errors")] += n
            else:
                out["writes" if result == "ok" else "write_errors"] += n
        return out

    def after_fork(self) -> None:
        self._lock = threading.Lock()
