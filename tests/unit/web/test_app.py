"""The admin app over loopback HTTP (aiohttp's test server): routes, tokens, streams, limits."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import ClientResponse, web
from aiohttp.test_utils import TestClient, TestServer
from prometheus_client.parser import text_string_to_metric_families

from resilience.circuit import Registry
from resilience.errors import ConfigError
from resilience.flags import Flags, InMemorySource
from resilience.web import admin_app

# These tests fill a dependency's counters with sync calls made on the event loop's thread on
# purpose; the warning that such calls block the loop is tested in tests/unit/circuit.
pytestmark = pytest.mark.filterwarnings("ignore:resilience. the sync function:RuntimeWarning")


async def _client(app: web.Application) -> TestClient[Any, Any]:
    client: TestClient[Any, Any] = TestClient(TestServer(app, host="127.0.0.1"))
    await client.start_server()
    return client


def _flags(registry: Registry) -> Flags:
    return Flags(InMemorySource({"kill-recs": {"on": False}}), registry=registry)


@pytest.fixture
async def flags(fresh_registry: Registry) -> AsyncIterator[Flags]:
    with _flags(fresh_registry) as flags:
        yield flags


@pytest.fixture
async def client(fresh_registry: Registry, flags: Flags) -> AsyncIterator[TestClient[Any, Any]]:
    fresh_registry.dependency("ratings", isolation="semaphore").call(lambda: 1)
    c = await _client(admin_app(flags=flags, token="s3cret", interval=0.05, max_stream_clients=5))
    yield c
    await c.close()


async def test_metrics_parse_with_prometheus_parser(client: TestClient[Any, Any]) -> None:
    resp = await client.get("/metrics")
    assert resp.status == 200 and resp.headers["Content-Type"].startswith("text/plain")
    families = {f.name: f for f in text_string_to_metric_families(await resp.text())}
    calls = {
        s.labels["outcome"]: s.value
        for s in families["resilience_calls"].samples
        if s.labels.get("dependency") == "ratings" and s.name.endswith("_total")
    }
    assert calls["success"] == 1.0
    assert "resilience_stream_clients" in families


async def test_state_circuits_and_dependencies(client: TestClient[Any, Any]) -> None:
    state = await (await client.get("/state")).json()
    assert [c["name"] for c in state["circuits"]] == ["ratings"]
    assert state["flags"]["flags"]["kill-recs"]["spec"] == {"on": False}
    assert (await (await client.get("/dependencies")).json()) == {"dependencies": ["ratings"]}
    one = await (await client.get("/circuits/ratings")).json()
    assert one["counts"]["success"] == 1
    assert (await client.get("/circuits/nope")).status == 404
    page = await client.get("/")
    assert "<title>resilience</title>" in await page.text()
    assert (await client.get("/static/dashboard.js")).status == 200


async def test_flag_writes_need_the_token(client: TestClient[Any, Any], flags: Flags) -> None:
    body = json.dumps({"value": True})
    resp = await client.post("/flags/kill-recs", data=body)
    assert resp.status == 401 and resp.headers["WWW-Authenticate"] == "Bearer"
    resp = await client.post(
        "/flags/kill-recs", data=body, headers={"Authorization": "Bearer wrong"}
    )
    assert resp.status == 401
    # a token in the query string is for reads only (EventSource), never for writes
    assert (await client.post("/flags/kill-recs?access_token=s3cret", data=body)).status == 401
    assert flags.enabled("kill-recs") is False and flags.overrides() == {}
    auth = {"Authorization": "Bearer s3cret"}
    resp = await client.post("/flags/kill-recs", data=body, headers=auth)
    assert resp.status == 200
    assert flags.enabled("kill-recs") is True and set(flags.overrides()) == {"kill-recs"}
    answer = await resp.json()
    assert answer["flags"]["kill-recs"]["value"] is True
    # no writable source: an override in this process, and the answer says so
    assert (answer["target"], answer["revision"], answer["action"]) == ("override", None, "set")
    assert answer["writes_to"] is None and answer["overrides"] == ["kill-recs"]
    assert (await client.post("/flags/kill-recs", data="[1]", headers=auth)).status == 400
    resp = await client.delete("/flags/kill-recs", headers=auth)
    assert resp.status == 200
    answer = await resp.json()
    assert (answer["target"], answer["action"], answer["changed"]) == ("override", "clear", True)
    assert flags.enabled("kill-recs") is False and flags.overrides() == {}
    resp = await client.delete("/flags/kill-recs", headers=auth)  # nothing left to clear
    assert resp.status == 200 and (await resp.json())["changed"] is False


async def test_flag_refusals_are_json_and_change_nothing(
    client: TestClient[Any, Any], flags: Flags
) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    for body, words in (
        ({"value": "yes"}, "kill-recs"),  # a switch takes true/false
        ({"flag": {"on": True, "rollout": 2}}, "rollout"),
        ({"value": True, "flag": {"on": True}}, "value"),
        ({"value": True, "colour": "red"}, "only"),
        ({"value": True, "revision": "x"}, "revision"),
    ):
        resp = await client.post("/flags/kill-recs", json=body, headers=auth)
        assert resp.status == 400, body
        answer = await resp.json()
        assert answer["status"] == 400 and words in answer["error"], answer
    # asking for the fleet-wide store when there is none is refused, not quietly an override
    resp = await client.post("/flags/kill-recs?target=source", json={"value": True}, headers=auth)
    assert resp.status == 400 and "writable" in (await resp.json())["error"]
    resp = await client.post(
        "/flags/kill-recs?target=elsewhere", json={"value": True}, headers=auth
    )
    assert resp.status == 400
    assert flags.enabled("kill-recs") is False and flags.overrides() == {}


async def test_a_whole_flag_and_the_actor_header(
    client: TestClient[Any, Any], flags: Flags, caplog: pytest.LogCaptureFixture
) -> None:
    headers = {"Authorization": "Bearer s3cret", "X-Resilience-Actor": "alice"}
    body = {"flag": {"on": True, "rollout": 0.25}}
    with caplog.at_level("INFO", logger="resilience.flags.admin"):
        resp = await client.post("/flags/kill-recs", json=body, headers=headers)
    assert resp.status == 200
    assert flags.get("kill-recs").rollout == 0.25  # type: ignore[union-attr]
    assert any("alice" in r.getMessage() and "kill-recs" in r.getMessage() for r in caplog.records)


async def test_unknown_flag_is_404_unless_created(
    client: TestClient[Any, Any], flags: Flags
) -> None:
    auth = {"Authorization": "Bearer s3cret"}
    resp = await client.post("/flags/kill-rec", json={"value": True}, headers=auth)  # a typo
    assert resp.status == 404 and "create" in await resp.text()
    assert "kill-rec" not in flags
    assert (await client.delete("/flags/kill-rec", headers=auth)).status == 404
    resp = await client.post(
        "/flags/new-ranking", json={"value": True, "create": True}, headers=auth
    )
    assert resp.status == 200 and flags.enabled("new-ranking") is True
    resp = await client.post("/flags/other?create=1", json={"value": 3}, headers=auth)
    assert resp.status == 200 and flags.value("other", 0) == 3


async def test_force_circuit_needs_the_token(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    assert (await client.post("/circuits/ratings", json={"state": "open"})).status == 401
    auth = {"Authorization": "Bearer s3cret"}
    resp = await client.post("/circuits/ratings", json={"state": "open"}, headers=auth)
    assert (await resp.json())["state"] == "forced_open"
    assert fresh_registry.dependency("ratings").state.value == "forced_open"
    await client.post("/circuits/ratings", json={"state": "reset"}, headers=auth)
    assert fresh_registry.dependency("ratings").state.value == "closed"
    assert (await client.post("/circuits/ratings", json={"state": "x"}, headers=auth)).status == 400


async def test_writes_disabled_without_a_token(fresh_registry: Registry) -> None:
    c = await _client(admin_app(flags=_flags(fresh_registry)))
    try:
        resp = await c.post(
            "/flags/kill-recs", json={"value": True}, headers={"Authorization": "Bearer x"}
        )
        assert resp.status == 403
        assert (await c.get("/state")).status == 200
    finally:
        await c.close()


async def test_protected_reads(fresh_registry: Registry) -> None:
    c = await _client(admin_app(token="t", protect_reads=True))
    try:
        assert (await c.get("/state")).status == 401
        assert (await c.get("/metrics")).status == 401
        assert (await c.get("/state", headers={"Authorization": "Bearer t"})).status == 200
        assert (await c.get("/state?access_token=t")).status == 200
        assert (await c.get("/static/dashboard.css")).status == 200  # page assets hold no data
    finally:
        await c.close()


def test_options_validated() -> None:
    with pytest.raises(ConfigError) as info:
        admin_app(protect_reads=True)
    assert info.value.field == "protect_reads"
    for field, value in (
        ("interval", 0),
        ("max_stream_clients", 0),
        ("stream_backlog", 0),
        ("token", ""),
    ):
        with pytest.raises(ConfigError) as info:
            admin_app(**{field: value})
        assert info.value.field == field


async def _events(resp: ClientResponse, want: set[str], limit: int = 200) -> dict[str, Any]:
    """Read SSE frames until one of each wanted event name arrived; returns the first of each."""
    seen: dict[str, Any] = {}
    event = "message"
    for _ in range(limit):
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode().rstrip("\n")
        if line.startswith("event: "):
            event = line[7:]
        elif line.startswith("data: "):
            seen.setdefault(event, json.loads(line[6:]))
            event = "message"
            if want <= seen.keys():
                return seen
    raise AssertionError(f"saw only {sorted(seen)}")


async def test_stream_sends_state_and_state_changes(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    resp = await client.get("/stream")
    assert resp.status == 200 and resp.headers["Content-Type"] == "text/event-stream"
    first = await _events(resp, {"state"})
    assert first["state"]["circuits"][0]["state"] == "closed"
    fresh_registry.dependency("ratings").force_open()
    seen = await _events(resp, {"state", "state_change"})
    change = seen["state_change"]
    assert (change["dependency"], change["old"], change["new"]) == (
        "ratings",
        "closed",
        "forced_open",
    )
    resp.close()


async def test_state_change_from_another_thread_reaches_the_stream(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    resp = await client.get("/stream")
    await _events(resp, {"state"})
    dep = fresh_registry.dependency("ratings")
    await asyncio.to_thread(dep.force_closed)
    seen = await _events(resp, {"state_change"})
    assert seen["state_change"]["new"] == "forced_closed"
    resp.close()


async def test_sixth_stream_client_gets_503(client: TestClient[Any, Any]) -> None:
    streams = []
    for path in ("/stream", "/stream", "/hystrix.stream", "/stream", "/stream"):
        resp = await client.get(path)
        assert resp.status == 200
        await resp.content.readline()
        streams.append(resp)
    sixth = await client.get("/stream")
    assert sixth.status == 503 and "Retry-After" in sixth.headers
    assert (await client.get("/hystrix.stream")).status == 503
    metrics = await (await client.get("/metrics")).text()
    gauge = {
        (f.name, s.labels.get("stream")): s.value
        for f in text_string_to_metric_families(metrics)
        for s in f.samples
    }
    assert gauge[("resilience_stream_clients", "state")] == 4.0
    assert gauge[("resilience_stream_clients", "hystrix")] == 1.0
    streams.pop().close()
    for _ in range(100):  # the server notices the closed connection on its next write
        again = await client.get("/stream")
        if again.status == 200:
            again.close()
            break
        await asyncio.sleep(0.02)
    else:
        raise AssertionError("a slot never came back after a client left")
    for s in streams:
        s.close()


async def test_hystrix_stream_messages(
    client: TestClient[Any, Any], fresh_registry: Registry
) -> None:
    fresh_registry.dependency("catalog").call(lambda: 1)  # thread isolation: has a pool
    resp = await client.get("/hystrix.stream")
    types: dict[str, dict[str, Any]] = {}
    for _ in range(50):
        line = (await asyncio.wait_for(resp.content.readline(), 5)).decode()
        if line.startswith("data: "):
            msg = json.loads(line[6:])
            types.setdefault(f"{msg['type']}:{msg['name']}", msg)
        if len(types) == 3:
            break
    assert set(types) == {
        "HystrixCommand:ratings",
        "HystrixCommand:catalog",
        "HystrixThreadPool:catalog",
    }
    resp.close()


async def test_mounts_as_a_sub_app(fresh_registry: Registry) -> None:
    fresh_registry.dependency("ratings")
    main = web.Application()
    main.add_subapp("/admin", admin_app(interval=0.05))
    c = await _client(main)
    try:
        assert (await (await c.get("/admin/dependencies")).json())["dependencies"] == ["ratings"]
        resp = await c.get("/admin/stream")
        assert (await _events(resp, {"state"}))["state"]["circuits"][0]["name"] == "ratings"
        resp.close()
        assert (await c.get("/admin/static/dashboard.js")).status == 200
    finally:
        await c.close()  # shutdown ends open streams instead of waiting for them
