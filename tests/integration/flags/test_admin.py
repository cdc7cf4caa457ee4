"""Admin routes mounted in a real aiohttp app, driven by a real HTTP client."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from resilience.flags import AUDIT_KEY, Flags, InMemorySource, flags_admin_app
from tests.support import free_port

TOKEN = "s3cret-token"
AUTH = {"Authorization": f"Bearer {TOKEN}", "X-Resilience-Actor": "alice"}


@pytest.fixture
async def admin(tmp_path: Path) -> AsyncIterator[tuple[str, Flags, Path]]:
    flags = Flags(
        InMemorySource(
            {
                "kill": {"on": False},
                "ratings.timeout": {"value": 0.5},
                "new-ranking": {"on": True, "rollout": 0.3},
            }
        )
    )
    audit_path = tmp_path / "audit.jsonl"
    app = web.Application()
    app.add_subapp("/flags", flags_admin_app(flags, token=TOKEN, audit_path=audit_path))
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    yield f"http://127.0.0.1:{port}/flags", flags, audit_path
    await runner.cleanup()


async def test_list_read_set_clear_with_audit(admin: tuple[str, Flags, Path]) -> None:
    base, flags, audit_path = admin
    async with aiohttp.ClientSession() as http:
        async with http.get(f"{base}/") as r:
            assert r.status == 200
            assert set((await r.json())["flags"]) == {"kill", "ratings.timeout", "new-ranking"}
        async with http.get(f"{base}/ratings.timeout") as r:
            body = await r.json()
            assert (body["value"], body["source"], body["override"]) == (0.5, "memory", None)
        async with http.get(f"{base}/nope") as r:
            assert r.status == 404

        async with http.put(f"{base}/ratings.timeout", json={"value": 0.2}, headers=AUTH) as r:
            assert r.status == 200
            assert (await r.json())["override"] == {"value": 0.2, "type": "float"}
        assert flags.value("ratings.timeout", 1.0) == 0.2
        flag = {"on": True, "rollout": 0.4}
        async with http.put(f"{base}/new-ranking", json={"flag": flag}, headers=AUTH) as r:
            assert r.status == 200
        assert flags.get("new-ranking").rollout == 0.4  # type: ignore[union-attr]
        async with http.delete(f"{base}/ratings.timeout", headers=AUTH) as r:
            assert (await r.json())["cleared"] is True
        assert flags.value("ratings.timeout", 1.0) == 0.5
        async with http.get(f"{base}/_audit") as r:
            entries = (await r.json())["entries"]

    assert [(e["who"], e["action"], e["flag"]) for e in entries] == [
        ("alice", "set", "ratings.timeout"),
        ("alice", "set", "new-ranking"),
        ("alice", "clear", "ratings.timeout"),
    ]
    assert entries[0]["old"] == {"value": 0.5, "type": "float"}
    assert entries[0]["new"] == {"value": 0.2, "type": "float"}
    assert entries[0]["remote"] == "127.0.0.1" and entries[0]["time"] > 0
    lines = [json.loads(line) for line in audit_path.read_text().splitlines()]
    assert lines == entries


async def test_changes_need_the_token(admin: tuple[str, Flags, Path]) -> None:
    base, flags, audit_path = admin
    async with aiohttp.ClientSession() as http:
        for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": TOKEN}):
            async with http.put(f"{base}/kill", json={"value": True}, headers=headers) as r:
                assert r.status == 401
                assert r.headers["WWW-Authenticate"] == "Bearer"
            async with http.delete(f"{base}/kill", headers=headers) as r:
                assert r.status == 401
    assert flags.enabled("kill") is False and flags.overrides() == {}
    assert not audit_path.exists()


@pytest.mark.parametrize(
    "body",
    [
        b"not json",
        b'{"value": "yes"}',  # a switch takes true/false
        b'{"flag": {"on": true, "rollout": 2}}',
        b'{"value": true, "flag": {"on": true}}',
        b"[1]",
    ],
)
async def test_a_bad_value_is_400_and_changes_nothing(
    admin: tuple[str, Flags, Path], body: bytes
) -> None:
    base, flags, audit_path = admin
    async with (
        aiohttp.ClientSession() as http,
        http.put(f"{base}/kill", data=body, headers=AUTH) as r,
    ):
        assert r.status == 400
        assert "error" in await r.json()
    assert flags.enabled("kill") is False and flags.overrides() == {}
    assert not audit_path.exists()


async def test_reads_can_be_protected_too() -> None:
    flags = Flags(InMemorySource({"kill": {"on": False}}))
    app = web.Application()
    admin_app = flags_admin_app(flags, token=TOKEN, protect_reads=True)
    app.add_subapp("/flags", admin_app)
    runner = web.AppRunner(app)
    await runner.setup()
    port = free_port()
    await web.TCPSite(runner, "127.0.0.1", port).start()
    try:
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/flags/kill") as r:
                assert r.status == 401
            async with http.get(f"http://127.0.0.1:{port}/flags/kill", headers=AUTH) as r:
                assert r.status == 200
    finally:
        await runner.cleanup()
    assert admin_app[AUDIT_KEY].recent() == []


async def test_an_unknown_name_is_404_unless_asked_to_create_it(
    admin: tuple[str, Flags, Path],
) -> None:
    base, flags, _ = admin
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{base}/kil", json={"value": True}, headers=AUTH) as r:
            assert r.status == 404 and "create" in (await r.json())["error"]
        assert "kil" not in flags
        async with http.put(f"{base}/kil?create=1", json={"value": True}, headers=AUTH) as r:
            assert r.status == 200 and (await r.json())["target"] == "override"
        body = {"flag": {"on": True, "rollout": 0.1}, "create": True}
        async with http.put(f"{base}/other", json=body, headers=AUTH) as r:
            assert r.status == 200
    assert flags.enabled("kil") is True and flags.get("other") is not None


async def test_a_deeply_nested_body_and_a_non_utf8_token_are_client_errors(
    admin: tuple[str, Flags, Path],
) -> None:
    base, flags, _ = admin
    deep = b'{"value": ' + b"[" * 30_000 + b"]" * 30_000 + b"}"  # under the size cap
    async with aiohttp.ClientSession() as http:
        async with http.put(f"{base}/kill", data=deep, headers=AUTH) as r:
            assert r.status == 400
        raw = {
            "Authorization": "Bearer \udcff\udcfe".encode("utf-8", "surrogateescape").decode(
                "latin-1"
            )
        }
        async with http.put(f"{base}/kill", json={"value": True}, headers=raw) as r:
            assert r.status == 401
    assert flags.overrides() == {}
