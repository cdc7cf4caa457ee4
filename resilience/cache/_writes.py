"""Writes across zones: when the write policy is met, and what the caller is told.

The drivers feed a :class:`Tally` with each zone's outcome as it arrives. Policies:

- ``"all_minus_1"`` (the default, EVCache's ALL_MINUS_1): done when every zone but one took the
  write, and the local zone has answered (so a caller reads its own write back from the local
  zone). One zone's loss is invisible to callers; it is still counted (``degraded_writes``,
  per-zone write failures) and reported in ``WriteResult.failed``.
- ``"all"``: every zone; ``"quorum"``: more than half; ``"local"``: the local zone.

A zone that failed a write queues the written keys for catch-up (see ``_catchup``), and so does
a zone that took it while another write of the same key, leaving another value, was overtaking
it (``_fence``): which one landed last there is unknown. A zone still writing when the caller
gets its answer is held (reads skip it for those keys) until it answers. A ``CLIENT_ERROR``
reply is the caller's error, not the zone's: it is neither a zone failure nor missed, and the
caller gets ``CacheClientError``.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Mapping
from typing import Any, Literal

import attrs
from pymemcache.exceptions import MemcacheClientError

from ._catchup import CatchUp
from ._fence import Fence
from ._stats import CacheStats

__all__ = ["WRITE_POLICIES", "Tally", "WritePolicy", "WriteResult", "written_keys"]

WritePolicy = Literal["all_minus_1", "all", "quorum", "local"]
WRITE_POLICIES = ("all_minus_1", "all", "quorum", "local")


@attrs.frozen(kw_only=True)
class WriteResult:
    """What a write did in each zone, as known when the call returned.

    ``ok`` says whether the write policy was met. ``acknowledged`` zones answered (their reply in
    ``replies``: True/False for stored/deleted/touched, the new value for incr/decr);
    ``failed`` maps zones to the error they gave; ``pending`` zones had not answered yet (the
    call returned early under its policy; their outcome is still counted when it arrives).
    ``degraded`` is True when the policy was met although a zone failed.
    """

    op: str
    policy: str
    ok: bool
    acknowledged: tuple[str, ...]
    failed: Mapping[str, str]
    pending: tuple[str, ...]
    replies: Mapping[str, Any]

    @property
    def degraded(self) -> bool:
        return self.ok and bool(self.failed)

    def __bool__(self) -> bool:
        return self.ok


def _problem(op: str, reply: Any) -> str | None:
    """Why a zone's reply is a failure for ``op``, or None when it acknowledges the write."""
    if op == "set" and reply is not True:
        return "not stored"
    if op == "set_many" and reply:
        return f"not stored: {len(reply)} keys"
    return None


_DELETED = ("deleted",)  # what a delete leaves, for the fence's comparisons


def written_values(op: str, args: tuple[Any, ...], keys: list[bytes]) -> list[Any]:
    """What the write leaves in a zone for each key: the stored item for set and set_many, a
    marker for deletes, else a fresh object (equal to nothing: the result depends on the
    zone's state)."""
    if op == "set":
        return [args[1]]
    if op == "set_many":
        return [args[0][k] for k in keys]
    if op in ("delete", "delete_many"):
        return [_DELETED] * len(keys)
    return [object() for _ in keys]


def written_keys(op: str, args: tuple[Any, ...]) -> list[bytes]:
    """The keys a zone operation writes (what a zone that missed it must forget)."""
    if op in ("set_many", "delete_many"):
        return list(args[0])
    if op in ("add_many", "flush_all"):
        return []  # a repair that did not land leaves nothing stale; a flush is not a key write
    return [args[0]]


class Tally:
    """Outcomes of one write across zones, fed by the drivers as each zone answers."""

    def __init__(
        self,
        op: str,
        args: tuple[Any, ...],
        zones: tuple[str, ...],
        policy: str,
        local: str,
        stats: CacheStats,
        catch_up: Mapping[str, CatchUp],
        fence: Fence,
    ) -> None:
        self.op = op
        self.args = args
        self.zones = zones
        self.policy = policy
        self.local = local
        self._stats = stats
        self._catch_up = catch_up
        self._fence = fence
        self.keys = keys = written_keys(op, args)
        self._values = written_values(op, args, keys)
        self._number = fence.start(keys, self._values)
        self._answered = 0
        self._lock = threading.Lock()
        self._acks: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self.client_error: MemcacheClientError | None = None
        n = len(zones)
        need = {"all": n, "quorum": n // 2 + 1, "local": 1}.get(policy, max(1, n - 1))
        self._need = need
        self.result: WriteResult | None = None
        self.on_decided: Callable[[], None] | None = None
        # set when the caller has its answer; zones that had not answered then are held
        self.returned = False

    def record(self, zone: str, ok: bool, reply: Any) -> None:
        """One zone answered (``ok`` False: ``reply`` is the error it raised); once per zone."""
        client = not ok and isinstance(reply, MemcacheClientError)
        if ok:
            problem = _problem(self.op, reply)
        elif client:
            problem = None
        else:
            problem = f"{type(reply).__name__}: {reply}"
        with self._lock:
            if client:
                self.client_error = self.client_error or reply
                self._acks[zone] = None
            elif problem is None:
                self._acks[zone] = reply
            else:
                self._failed[zone] = problem
            decided = self.result is None and self._decided()
            if decided:
                self.result = self.snapshot()
            held = self.returned
            self._answered += 1
            last = self._answered == len(self.zones)
        keys = self.keys
        if client:
            self._stats.count(zone, self.op, "client_error")
        elif problem is None:
            self._stats.count(zone, self.op, "ok")
            # another write of a key, leaving another value, started while this one was in
            # flight: the zone may have taken the two in either order
            overtaken, n = self._fence.overtaken, self._number
            if len(keys) == 1:
                if overtaken(keys[0], n, self._values[0]):
                    self._queue(zone, keys)
            elif keys:
                values = self._values
                self._queue(
                    zone, [k for k, v in zip(keys, values, strict=True) if overtaken(k, n, v)]
                )
        else:
            self._stats.count(zone, self.op, "error")
            self._stats.write_failed(zone)
            self._queue(zone, keys)
        if held and keys and zone in self._catch_up:
            self._catch_up[zone].release(keys)  # after queueing: no moment unguarded
        if last:
            self._fence.finish(keys)
        if decided:
            if self.result is not None and self.result.degraded:
                self._stats.degraded()
            if self.on_decided is not None:
                self.on_decided()

    def interrupted(self, error: BaseException) -> None:
        """The caller was interrupted: zones not answered yet count as failed (what was sent
        may still land, so their keys are caught up)."""
        with self._lock:
            left = [z for z in self.zones if z not in self._acks and z not in self._failed]
        for zone in left:
            self.record(zone, False, error)

    def _queue(self, zone: str, keys: list[bytes]) -> None:
        if keys and zone in self._catch_up:
            self._catch_up[zone].add(keys)

    def _decided(self) -> bool:
        acks, failed, local = self._acks, self._failed, self.local
        if self.policy == "local":
            return local in acks or local in failed
        if len(acks) + len(failed) == len(self.zones):
            return True
        if len(failed) > len(self.zones) - self._need:
            return True
        if len(acks) < self._need:
            return False
        return self.policy != "all_minus_1" or local in acks or local in failed

    def _ok(self) -> bool:
        if self.policy == "local":
            return self.local in self._acks
        return len(self._acks) >= self._need

    def final(self) -> WriteResult:
        """What the caller is told: every zone answered so far (the decision never flips:
        later answers only add acknowledgements or failures beyond what decided it).

        Zones still to answer are held for the written keys: the caller may now write them
        again or read them back, and those zones hold the previous value until they answer.
        """
        with self._lock:
            self.returned = True
            result = self.snapshot()
            if self.keys:
                for zone in result.pending:
                    if zone in self._catch_up:
                        self._catch_up[zone].hold(self.keys)
            return result

    def snapshot(self) -> WriteResult:
        """The result as of now (zones that have not answered are pending)."""
        done = self._acks.keys() | self._failed.keys()
        return WriteResult(
            op=self.op,
            policy=self.policy,
            ok=self._ok(),
            acknowledged=tuple(z for z in self.zones if z in self._acks),
            failed=dict(self._failed),
            pending=tuple(z for z in self.zones if z not in done),
            replies=dict(self._acks),
        )
