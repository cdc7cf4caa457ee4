"""Issue 16: a read returns the key's last acknowledged value or a miss, never an older value.

Each test replays one interleaving the chaos soak found (or one next to it) deterministically:
a zone write still in flight after its caller was answered, a read repair racing a write, a
repair into a zone that is catching up, an interrupted write. The async client's per-zone
deadlines (one timer for many calls) are checked here too.
"""

from __future__ import annotations

import asyncio
import itertools
import threading
from typing import Any

import pytest

from resilience.cache._async_call import Deadlines
from resilience.cache._catchup import CatchUp
from resilience.cache._core import CALL
from resilience.errors import CircuitOpenError

from . import fakes
from .fakes import ZONES, AsyncFakeCache, FakeCache, fail_zone, zone_has, zone_servers

_names = itertools.count()


def make(**kw: Any) -> FakeCache:
    kw.setdefault("local_zone", "a")
    kw.setdefault("name", f"consistency{next(_names)}")  # caches of one name share queues
    return FakeCache(ZONES, **kw)


def sends_to(zone: str) -> int:
    servers = zone_servers(zone)
    return sum(1 for kind, s in fakes.EVENTS if kind == "send" and s in servers)


# -- a zone still writing when its caller was answered ------------------------------------


def test_a_zone_still_writing_after_the_ack_is_not_read_until_it_answers() -> None:
    """The soak's t1:6: a delete acknowledged by a and b while c still held the old value;
    a read that found a and b unusable read c's old value (and repaired it into a)."""
    c = make(timeout=5.0)
    c.set("k", "old")
    gate = threading.Event()
    for s in zone_servers("c"):
        s.gate = gate  # zone c answers only when the gate opens
    result = c.set("k", "new")
    assert result.ok and result.pending == ("c",)
    assert c.status()["zones"]["c"]["catch_up"]["held"] == 1
    fail_zone("a")
    fail_zone("b")
    before = sends_to("c")
    assert c.get("k") is None  # zone c is not asked: its copy is the previous value
    assert sends_to("c") == before
    gate.set()
    c.close()  # the write worker reads zone c's reply
    status = c.status()["zones"]["c"]["catch_up"]
    assert status["held"] == 0
    assert status["pending"] == 0  # nothing overtook the write: zone c's copy is the last one
    assert zone_has("c", b"k")


def test_a_held_write_overtaken_by_the_next_write_of_its_key_is_caught_up() -> None:
    c = make(timeout=5.0)
    gate = threading.Event()
    for s in zone_servers("c"):
        s.gate = gate
    assert c.set("k", "v1").pending == ("c",)
    assert c.set("k", "v2").pending == ("c",)  # may reach zone c before v1 does
    gate.set()
    c.close()
    status = c.status()["zones"]["c"]["catch_up"]
    assert status["held"] == 0 and status["pending"] == 1  # v1 landed in either order


def test_writers_racing_to_store_the_same_bytes_catch_nothing_up() -> None:
    """A stampede filling a key: every order leaves every zone with the same bytes."""
    c = make(timeout=5.0)
    gate = threading.Event()
    for s in zone_servers("c"):
        s.gate = gate
    assert c.set("k", "same").pending == ("c",)
    assert c.set("k", "same").pending == ("c",)
    assert c.delete("gone").pending == ("c",)
    assert c.delete("gone").pending == ("c",)  # a delete overtaking a delete: the same outcome
    gate.set()
    c.close()
    status = c.status()["zones"]["c"]["catch_up"]
    assert status["held"] == 0 and status["pending"] == 0


def test_a_zone_answering_before_the_caller_returns_is_neither_held_nor_queued() -> None:
    c = make()
    assert c.set("k", "v").acknowledged == ("a", "b", "c")
    assert all(st["held"] == 0 and st["pending"] == 0 for st in c.catch_up_status().values()), (
        c.catch_up_status()
    )
    assert c._fence.mark(b"k") is not None  # no write in flight


def test_an_interrupted_write_queues_the_zones_it_never_heard_from() -> None:
    c = make()
    interrupt = [True]

    def interrupting(real: Any) -> Any:
        def handle(payload: bytes) -> bytes:
            if interrupt[0]:
                interrupt[0] = False
                raise KeyboardInterrupt
            return real(payload)  # type: ignore[no-any-return]

        return handle

    for s in zone_servers("b"):
        s.handle = interrupting(s.handle)  # type: ignore[method-assign]
    with pytest.raises(KeyboardInterrupt):
        c.set("k", "v")
    pending = {z: st["pending"] for z, st in c.catch_up_status().items()}
    assert pending == {"a": 0, "b": 1, "c": 1}  # what was sent to b and c may still land
    assert c._fence.mark(b"k") is not None  # the write is over: repairs may resume
    assert c.in_flight() == dict.fromkeys("abc", 0)


# -- read repair never copies a value a write has replaced ---------------------------------


def _item(c: FakeCache, value: Any) -> tuple[bytes, int]:
    return c._core.encode("k", value)


def _finish(flow: Any, outcome: Any) -> Any:
    with pytest.raises(StopIteration) as stop:
        flow.send(outcome)
    return stop.value.value


def test_repair_is_skipped_when_a_write_starts_after_the_local_miss() -> None:
    """A delete that lands everywhere between the remote read and the repair's add would be
    undone by the add: the value read before the delete would come back."""
    c = make()
    core = c._core
    flow = core.get_flow(b"k")
    assert next(flow)[:3] == (CALL, "a", "get")
    assert flow.send((True, None))[:3] == (CALL, "b", "get")  # local miss
    core.tally("delete", (b"k",))  # another thread starts deleting the key
    assert _finish(flow, (True, _item(c, "old"))) == ("old", True)  # no add_many step


def test_repair_is_skipped_while_a_write_of_the_key_is_in_flight() -> None:
    c = make()
    core = c._core
    core.tally("set", (b"k", _item(c, "new"), 0))  # started before the read, not finished
    flow = core.get_flow(b"k")
    next(flow)
    flow.send((True, None))
    assert _finish(flow, (True, _item(c, "old"))) == ("old", True)


def test_a_repair_that_raced_a_write_is_caught_up_in_the_local_zone() -> None:
    c = make()
    core = c._core
    flow = core.get_flow(b"k")
    next(flow)
    flow.send((True, None))
    step = flow.send((True, _item(c, "old")))
    assert step[:3] == (CALL, "a", "add_many")  # the repair is sent...
    tally = core.tally("delete", (b"k",))  # ...and a delete starts before its reply
    for zone in "abc":
        tally.record(zone, True, True)
    assert _finish(flow, (True, [])) == ("old", True)  # the add stored the old value
    assert b"k" in core.catch_up["a"]  # so zone a is not read for k, and k is deleted there


def test_no_repair_into_a_local_zone_catching_up_on_the_key() -> None:
    """The soak's a8:1: the local zone was skipped (catching up); the copy raced the replayed
    delete and a newer set, and left the old value there."""
    c = make()
    core = c._core
    core.catch_up["a"].add([b"k"])
    flow = core.get_flow(b"k")
    assert next(flow)[:3] == (CALL, "b", "get")
    assert _finish(flow, (True, _item(c, "v"))) == ("v", True)


def test_a_repair_that_failed_after_sending_is_caught_up_one_refused_is_not() -> None:
    for error, queued in (
        (TimeoutError("late"), True),
        (CircuitOpenError("a", "open", 1.0), False),
    ):
        c = make()
        core = c._core
        flow = core.get_flow(b"k")
        next(flow)
        flow.send((True, None))
        assert flow.send((True, _item(c, "v")))[2] == "add_many"
        assert _finish(flow, (False, error)) == ("v", True)
        assert (b"k" in core.catch_up["a"]) is queued
        c.close()


def test_get_many_repairs_only_the_keys_no_write_touched() -> None:
    c = make()
    core = c._core
    flow = core.get_many_flow([b"k1", b"k2"])
    assert next(flow)[:3] == (CALL, "a", "get_many")
    step = flow.send((True, {}))
    assert step[:3] == (CALL, "b", "get_many")
    core.tally("set", (b"k1", _item(c, "new"), 0))
    step = flow.send((True, {b"k1": _item(c, "old"), b"k2": _item(c, "v2")}))
    assert step[:3] == (CALL, "a", "add_many")
    assert list(step[3][0]) == [b"k2"]
    found, certain = _finish(flow, (True, []))
    assert found == {b"k1": "old", b"k2": "v2"} and certain


def test_end_to_end_repair_still_copies_a_remote_hit_when_nothing_races() -> None:
    c = make()
    c.set("k", "v")
    for s in zone_servers("a"):
        s.data.clear()
    assert c.get("k") == "v"
    assert zone_has("a", b"k") and c.stats.read_repairs["a"] == 1


# -- fork -----------------------------------------------------------------------------------


def test_held_keys_are_queued_in_a_forked_child() -> None:
    queue = CatchUp(10)
    queue.hold([b"k"])
    assert b"k" in queue and len(queue) == 0
    queue.after_fork()  # the write that held k lives on in the parent only
    assert b"k" in queue and len(queue) == 1 and queue.status()["held"] == 0


# -- async deadlines: one timer per zone, each call still expires on time --------------------


class _Call:
    def __init__(self) -> None:
        self.finished = False
        self.expired_at: float | None = None

    def _expire(self) -> None:
        self.expired_at = asyncio.get_running_loop().time()
        self.finished = True


async def test_deadlines_expire_each_call_on_time_with_one_timer() -> None:
    loop = asyncio.get_running_loop()
    deadlines = Deadlines()
    now = loop.time()
    calls = [_Call() for _ in range(4)]
    for i, call in enumerate(calls):
        assert deadlines.add(loop, now + 0.02 * (i + 1), call) is None  # type: ignore[arg-type]
    calls[1].finished = True  # answered in time: never expired
    early = _Call()
    own = deadlines.add(loop, now + 0.01, early)  # type: ignore[arg-type]
    assert own is not None  # out of order (a lowered timeout): a timer of its own
    await asyncio.sleep(0.12)
    assert early.expired_at is not None and early.expired_at >= now + 0.01
    assert calls[1].expired_at is None
    for i in (0, 2, 3):
        expired = calls[i].expired_at
        assert expired is not None and now + 0.02 * (i + 1) <= expired < now + 0.02 * (i + 1) + 0.05


def test_deadlines_start_over_on_a_new_event_loop() -> None:
    deadlines = Deadlines()
    stale = _Call()

    async def first() -> None:
        loop = asyncio.get_running_loop()
        deadlines.add(loop, loop.time() + 60, stale)  # type: ignore[arg-type]

    asyncio.run(first())  # the loop closes with the timer pending: it will never fire
    fresh = _Call()

    async def second() -> None:
        loop = asyncio.get_running_loop()
        deadlines.add(loop, loop.time() + 0.01, fresh)  # type: ignore[arg-type]
        await asyncio.sleep(0.05)

    asyncio.run(second())
    assert fresh.expired_at is not None and stale.expired_at is None


# -- the async get's fast path answers exactly like the flow --------------------------------


async def test_async_get_fast_path_hands_misses_failures_and_bad_values_to_the_flow() -> None:
    c = AsyncFakeCache(ZONES, name=f"fast{next(_names)}", local_zone="a")
    await c.set("k", "v")
    assert await c.get("k") == "v"  # local hit
    for s in zone_servers("a"):
        s.data[b"k"] = (b"{nope", 32, 1)  # JSON's flag, not JSON
    assert await c.get("k") == "v"  # undecodable locally: zone b answers, counted once
    assert c.status()["zones"]["a"]["undecodable"] == 1
    for s in zone_servers("a"):
        s.data.clear()
    assert await c.get("k") == "v"  # a local miss: remote hit, repaired
    assert zone_has("a", b"k") and c.stats.read_repairs["a"] == 1
    fail_zone("a")
    assert await c.get("k") == "v"  # the local zone fails: the next one answers
    assert await c.get("absent", "dflt") == "dflt"
    zones = c.status()["zones"]
    assert zones["a"]["hits"] == 1 and zones["a"]["misses"] == 1 and zones["a"]["read_errors"] == 2
    assert zones["b"]["hits"] == 3
    await c.aclose()
