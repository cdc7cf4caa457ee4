"""Issue 16: a forked child never reads its parent's replies (gunicorn-style prefork)."""

from __future__ import annotations

import asyncio
import json
import os
from collections.abc import Callable

import pytest

from resilience.cache import AsyncReplicatedCache, ReplicatedCache

from .conftest import Cluster

pytestmark = pytest.mark.integration

ROUNDS = 400
# what is checked is whose replies a process reads, not latency: a loaded machine's slow reply
# must not fail a write under policy "all"
TIMEOUT = 1.0


def counting(incr: Callable[[str], int | None], get: Callable[[str], object], who: str) -> int:
    """Increment our own counter and read our own key; the number of answers not ours."""
    wrong = 0
    for i in range(1, ROUNDS + 1):
        if incr(f"n:{who}") != i:
            wrong += 1
        if get(f"id:{who}") != who:
            wrong += 1
    return wrong


def run_forked(child: Callable[[], int], parent: Callable[[], int]) -> tuple[int, int]:
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report and leave without running pytest's teardown
        code = 0
        try:
            os.write(write, json.dumps(child()).encode())
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(write)
    mine = parent()
    with os.fdopen(read) as f:
        theirs = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, theirs
    return mine, int(theirs)


def test_sync_child_and_parent_never_read_each_others_replies(cluster: Cluster) -> None:
    c = ReplicatedCache(
        cluster.spec, name="fork", local_zone="a", write_policy="all", timeout=TIMEOUT
    )
    for who in ("parent", "child"):
        c.set(f"n:{who}", 0)
        c.set(f"id:{who}", who)
    assert c.get("id:parent") == "parent"  # the pools now hold idle sockets

    def child() -> int:
        # the inherited sockets are gone before the child can touch one
        assert sum(n.idle for z in c._zones.values() for n in z.nodes.values()) == 0
        wrong = counting(c.incr, c.get, "child")
        assert all(n == 0 for n in c.in_flight().values())
        return wrong

    mine, theirs = run_forked(child, lambda: counting(c.incr, c.get, "parent"))
    assert (mine, theirs) == (0, 0)
    assert c.get("n:child") == ROUNDS and c.get("n:parent") == ROUNDS
    c.close()


async def test_async_cache_in_a_forked_child_uses_its_own_connections(cluster: Cluster) -> None:
    c = AsyncReplicatedCache(
        cluster.spec, name="afork", local_zone="a", write_policy="all", timeout=TIMEOUT
    )
    for who in ("parent", "child"):
        await c.set(f"n:{who}", 0)
        await c.set(f"id:{who}", who)

    def child() -> int:
        async def main() -> int:
            wrong = 0
            for i in range(1, ROUNDS + 1):
                wrong += await c.incr("n:child") != i
                wrong += await c.get("id:child") != "child"
            return wrong

        return asyncio.run(main())

    def parent() -> int:
        sync = ReplicatedCache(cluster.spec, name="fork-parent", local_zone="a", timeout=TIMEOUT)
        try:
            return counting(sync.incr, sync.get, "parent")
        finally:
            sync.close()

    assert run_forked(child, parent) == (0, 0)
    assert await c.get("n:child") == ROUNDS
    await c.aclose()
