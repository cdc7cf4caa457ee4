"""A real Toxiproxy server between the service and its downstream: toxics applied, then removed."""

from __future__ import annotations

import asyncio
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import web

from resilience import fit, protect, registry
from resilience.circuit import State, StateChange
from resilience.errors import ToxiproxyError
from resilience.fit import Recipe, ToxiproxyClient
from resilience.integrations import aiohttp as fit_aiohttp
from tests.support import free_port

from .conftest import SECRET
from .service import downstream


def slow_service(proxy_port: int) -> web.Application:
    key = web.AppKey("session", aiohttp.ClientSession)

    @protect(
        "slow-dep",
        timeout=0.2,
        min_calls=4,
        failure_rate=0.5,
        open_duration=30.0,
        fallback={"slow": "fallback"},
    )
    async def slow_dep(session: aiohttp.ClientSession) -> Any:
        async with session.get(f"http://127.0.0.1:{proxy_port}/") as response:
            return await response.json()

    async def handle(request: web.Request) -> web.Response:
        return web.json_response(await slow_dep(request.app[key]))

    async def session_ctx(app: web.Application) -> Any:
        app[key] = aiohttp.ClientSession()
        yield
        await app[key].close()

    app = web.Application(middlewares=[fit_aiohttp.middleware()])
    app.cleanup_ctx.append(session_ctx)
    app.router.add_get("/", handle)
    return app


async def test_latency_toxic_opens_the_circuit_and_is_removed(
    serve: Any, toxiproxy: ToxiproxyClient
) -> None:
    fit.enable(secret=SECRET)
    backend = await serve(downstream({"slow": "real"}))
    proxy_port = free_port()
    target = await serve(slow_service(proxy_port))
    recipe = Recipe.from_dict(
        {
            "name": "slow-network",
            "proxies": [
                {
                    "name": "slow",
                    "listen": f"127.0.0.1:{proxy_port}",
                    "upstream": backend.removeprefix("http://"),
                }
            ],
            "toxics": [{"proxy": "slow", "type": "latency", "attributes": {"latency": 600}}],
            "expect": {"status": [200]},
        }
    )
    changes: list[StateChange] = []
    registry().on_state_change(changes.append)
    seen: list[list[str]] = []

    def progress(p: fit.Progress) -> None:
        if not seen:
            seen.append([t["name"] for t in toxiproxy.toxics("slow")])

    report = await fit.run(
        recipe,
        target,
        secret=SECRET,
        requests=8,
        concurrency=2,
        tagged_share=1.0,
        toxiproxy=toxiproxy,
        allow_global_faults=True,
        check_dependency_list=False,  # this service serves no dependency route
        progress=progress,
    )
    assert report.passed, report.to_text()
    assert report.global_faults and "control (and any real) traffic was affected" in (
        report.to_text()
    )
    assert seen == [["fit_latency_downstream"]]  # the toxic was there during the run
    assert report.toxics == ["slow/fit_latency_downstream"]
    dep = registry().dependency("slow-dep")
    assert any(c.new is State.OPEN for c in changes)  # timeouts tripped the real circuit
    assert dep.state is State.OPEN
    assert "slow" not in toxiproxy.proxies()  # the proxy the recipe created is gone


async def test_interrupted_run_removes_its_toxics(
    serve: Any, toxiproxy: ToxiproxyClient, tmp_path: Path
) -> None:
    fit.enable(secret=SECRET)
    backend = await serve(downstream({"slow": "real"}))
    proxy_port = free_port()
    toxiproxy.create_proxy("slow", f"127.0.0.1:{proxy_port}", backend.removeprefix("http://"))
    toxiproxy.create_proxy("spare", f"127.0.0.1:{free_port()}", backend.removeprefix("http://"))
    target = await serve(slow_service(proxy_port))
    path = tmp_path / "recipe.yaml"
    path.write_text(
        yaml.safe_dump(
            {
                "name": "interrupted",
                "toxics": [
                    {"proxy": "slow", "type": "latency", "attributes": {"latency": 300}},
                    {"proxy": "spare", "type": "down"},
                ],
            }
        )
    )
    args = [
        sys.executable, "-m", "resilience.cli", "fit", "run", str(path), "--target", target,
        "--secret", SECRET, "--toxiproxy", toxiproxy.url, "--requests", "100000",
        "--no-dependency-check",
    ]  # fmt: skip
    refused = await asyncio.create_subprocess_exec(
        *args, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    out, _ = await asyncio.wait_for(refused.communicate(), 30)
    assert refused.returncode == 2 and "--allow-global-faults" in out.decode(), out.decode()
    assert toxiproxy.toxics("slow") == []  # refused before anything was applied
    proc = await asyncio.create_subprocess_exec(
        *args,
        "--allow-global-faults",
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    try:
        for _ in range(200):
            if await asyncio.to_thread(toxiproxy.toxics, "slow"):
                break
            await asyncio.sleep(0.05)
        else:
            pytest.fail("the runner never applied its toxic")
        assert toxiproxy.proxies()["spare"]["enabled"] is False
        await asyncio.sleep(0.3)  # let requests run under the toxic
        proc.send_signal(signal.SIGINT)
        out, _ = await asyncio.wait_for(proc.communicate(), 30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 130, out.decode()
    assert "interrupted" in out.decode()
    assert toxiproxy.toxics("slow") == []
    assert toxiproxy.proxies()["spare"]["enabled"] is True


def test_client_never_hangs_on_a_silent_server() -> None:
    import socket
    import time

    with socket.socket() as silent:  # accepts connections, never answers
        silent.bind(("127.0.0.1", 0))
        silent.listen(8)
        client = ToxiproxyClient(f"http://127.0.0.1:{silent.getsockname()[1]}", timeout=0.3)
        start = time.monotonic()
        with pytest.raises(ToxiproxyError):
            client.proxies()
        assert time.monotonic() - start < 2.0


def test_client_reports_api_errors(toxiproxy: ToxiproxyClient) -> None:
    with pytest.raises(ToxiproxyError) as info:
        toxiproxy.toxics("no-such-proxy")
    assert info.value.status == 404
    version = toxiproxy.version()
    assert version and "{" not in version
