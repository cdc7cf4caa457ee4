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

__all__ = ["WRITE_POLICIES", "Tally", "WritePolicy", "WriteResult", "needed", "written_keys"]

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


def needed(policy: str, n: int) -> int:
    """How many of ``n`` zones must acknowledge a write under ``policy``."""
    if policy == "all":
        return n
    if policy == "quorum":
        return n // 2 + 1
    if policy == "local":
        return 1
    return max(1, n - 1)


class Tally:
    """Outcomes of one write across zones, fed by the drivers as each zone answers."""

    __slots__ = (
        "_acked",
        "_acks",
        "_answered",
        "_catch_up",
        "_check",
        "_failed",
        "_fence",
        "_local_done",
        "_lock",
        "_n",
        "_need",
        "_number",
        "_stats",
        "_values",
        "args",
        "client_error",
        "decided",
        "keys",
        "local",
        "ok",
        "on_decided",
        "op",
        "policy",
        "returned",
        "zones",
    )

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
        if op == "set":  # the common write, without the dispatch below
            self.keys = keys = [args[0]]
            self._values = values = [args[1]]
        else:
            self.keys = keys = written_keys(op, args)
            self._values = values = written_values(op, args, keys)
        self._number = fence.start(keys, values)
        self._check = op == "set" or op == "set_many"  # replies that can say "not stored"
        self._lock = threading.Lock()
        self._acks: dict[str, Any] = {}
        self._failed: dict[str, str] = {}
        self._n = n = len(zones)
        self._need = needed(policy, n)
        self._answered = 0
        self._acked = 0
        self._local_done = False
        self.client_error: MemcacheClientError | None = None
        self.decided = False  # the policy is met or cannot be met any more: the caller may go
        self.ok = False  # what was decided (it never flips; see ``final``)
        self.on_decided: Callable[[], None] | None = None
        # set when the caller has its answer; zones that had not answered then are held
        self.returned = False

    def record(self, zone: str, ok: bool, reply: Any) -> None:
        """One zone answered (``ok`` False: ``reply`` is the error it raised); once per zone."""
        client = False
        if ok:
            problem = None if reply is True or not self._check else _problem(self.op, reply)
        elif isinstance(reply, MemcacheClientError):
            client, problem = True, None
        else:
            problem = f"{type(reply).__name__}: {reply}"
        with self._lock:
            if problem is None:
                self._acked += 1
                if client:
                    self.client_error = self.client_error or reply
                    self._acks[zone] = None
                else:
                    self._acks[zone] = reply
            else:
                self._failed[zone] = problem
            if zone == self.local:
                self._local_done = True
            self._answered += 1
            last = self._answered == self._n
            decided = not self.decided and self._decide(last)
            if decided:
                self.decided = True
                self.ok = self._ok()
                degraded = self.ok and bool(self._failed)
            held = self.returned
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
            if degraded:
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

    def _decide(self, last: bool) -> bool:
        """Whether the write policy is now met, or can no longer be met (under the lock)."""
        if self.policy == "local":
            return self._local_done
        if last or len(self._failed) > self._n - self._need:
            return True
        if self._acked < self._need:
            return False
        return self.policy != "all_minus_1" or self._local_done

    def _ok(self) -> bool:
        if self.policy == "local":
            return self.local in self._acks
        return self._acked >= self._need

    def final(self) -> WriteResult:
        """What the caller is told: every zone answered so far (the decision never flips:
        later answers only add acknowledgements or failures beyond what decided it).

        Zones still to answer are held for the written keys: the caller may now write them
        again or read them back, and those zones hold the previous value until they answer.
        """
        with self._lock:
            self.returned = True
            zones, acks, failed = self.zones, self._acks, self._failed
            if self._answered == self._n:  # every zone answered: nothing changes any more
                acked = zones if self._acked == self._n else tuple([z for z in zones if z in acks])
                return WriteResult(
                    op=self.op,
                    policy=self.policy,
                    ok=self._ok(),
                    acknowledged=acked,
                    failed=failed,
                    pending=(),
                    replies=acks,
                )
            pending = tuple([z for z in zones if z not in acks and z not in failed])
            if self.keys:
                for zone in pending:
                    if zone in self._catch_up:
                        self._catch_up[zone].hold(self.keys)
            return WriteResult(
                op=self.op,
                policy=self.policy,
                ok=self._ok(),
                acknowledged=tuple([z for z in zones if z in acks]),
                failed=dict(failed),
                pending=pending,
                replies=dict(acks),
            )
