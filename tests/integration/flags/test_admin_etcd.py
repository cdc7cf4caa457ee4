"""Admin routes over a Flags with an EtcdSource: writes go fleet-wide, say so, and never
silently overwrite each other."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import AsyncIterator, Iterator

import aiohttp
import pytest
from aiohttp import web

from resilience.flags import EtcdSource, Flags, flags_admin_app
from tests.support import free_port

from .etcd_support import EtcdCluster, cluster

TOKEN = "s3cret-token"
pytestmark = pytest.mark.integration


def auth(actor: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "X-Resilience-Actor": actor}


@pytest.fixture(scope="module")
def etcd() -> Iterator[EtcdCluster]:
    with cluster(1) as c:
        yield c


@pytest.fixture
async def admin(etcd: EtcdCluster) -> AsyncIterator[tuple[str, Flags, EtcdSource]]:
    src = EtcdSource(etcd.endpoints, f"/admin/{free_port()}/flags/", check_interval=0.2)
    flags = Flags(src)
    assert await asyncio.to_thread(flags.ready, 10)
    app = web.Application()
    app.add_subapp("/flags", flags_admin_app(flags, token=TOKEN))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/flags", flags, src
    await runner.cleanup()
    await asyncio.to_thread(flags.close)


async def test_writes_go_to_etcd_and_the_answer_says_so(
    admin: tuple[str, Flags, EtcdSource],
) -> None:
    base, flags, src = admin
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{base}/kill", json={"value": True}, headers=auth("a")) as r:
            assert r.status == 404  # not there yet: creating needs asking
        body = {"flag": {"on": False}, "create": True}
        async with http.put(f"{base}/kill", json=body, headers=auth("alice")) as r:
            assert r.status == 200
            answer = await r.json()
        assert answer["target"] == src.name and answer["source"] == src.name
        assert answer["spec"] == {"on": False} and answer["version"] == answer["revision"]
        async with http.put(f"{base}/kill", json={"value": True}, headers=auth("bob")) as r:
            assert r.status == 200 and (await r.json())["value"] is True
        assert flags.enabled("kill") and src.get("kill")[0] == {"on": True}
        async with http.put(
            f"{base}/kill?target=override", json={"value": False}, headers=auth("carol")
        ) as r:
            assert (await r.json())["target"] == "override"
        assert not flags.enabled("kill") and src.get("kill")[0] == {"on": True}
        async with http.delete(f"{base}/kill?target=override", headers=auth("carol")) as r:
            assert (await r.json())["cleared"] is True
        async with http.get(f"{base}/_history/kill") as r:
            history = (await r.json())["entries"]
        assert [(h["who"], h["action"]) for h in history] == [("alice", "write"), ("bob", "write")]
        async with http.delete(f"{base}/kill", headers=auth("dave")) as r:
            assert r.status == 200 and (await r.json())["target"] == src.name
        assert "kill" not in flags and src.get("kill") == (None, 0)
        async with http.get(f"{base}/") as r:
            assert (await r.json())["writes_to"] == src.name


async def test_two_concurrent_writes_never_silently_overwrite_each_other(
    admin: tuple[str, Flags, EtcdSource],
) -> None:
    base, flags, src = admin
    first = await asyncio.to_thread(flags.write, "rate", {"value": 1}, actor="setup")
    # flags.write returns once etcd has it; the routes answer 404 for a name this process does
    # not know yet, so wait until the watch brought it here
    assert await asyncio.to_thread(src.wait_revision, first.revision, 10)
    async with aiohttp.ClientSession() as http:

        async def put(actor: str, value: int, revision: int | None) -> int:
            body: dict[str, object] = {"value": value}
            if revision is not None:
                body["revision"] = revision
            async with http.put(f"{base}/rate", json=body, headers=auth(actor)) as r:
                return r.status

        # both saw the same revision: exactly one wins, the other is told
        statuses = await asyncio.gather(put("a", 2, first.revision), put("b", 3, first.revision))
        assert sorted(statuses) == [200, 409]
        # without a revision, many racing writers: each is applied in turn or refused
        results = await asyncio.gather(*(put(f"w{i}", 10 + i, None) for i in range(8)))
        assert set(results) <= {200, 409} and 200 in results
    history = await asyncio.to_thread(src.history, "rate")
    assert len(history) == 2 + results.count(200)
    for before, after in itertools.pairwise(history):
        assert after.old == before.new  # every write saw the one before it: none lost
