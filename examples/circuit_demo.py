"""Circuit demo: a flaky dependency served by a real local aiohttp server, protected calls,
the circuit opening, fallbacks served, and recovery.

Run: scripts/demo   (or .venv/bin/python examples/circuit_demo.py)
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import time
from typing import Any

import aiohttp
from aiohttp import web

from resilience import State, StateChange, protect, registry


class Ratings:
    """The downstream service: /ratings/{user} answers, fails (503) or hangs on command."""

    def __init__(self) -> None:
        self.mode = "ok"
        self.hits = 0

    async def handle(self, request: web.Request) -> web.Response:
        self.hits += 1
        if self.mode == "down":
            return web.Response(status=503, text="ratings is down")
        if self.mode == "slow":
            await asyncio.sleep(2.0)
        return web.json_response({"user": request.match_info["user"], "stars": [5, 4, 3]})


async def start(ratings: Ratings) -> tuple[web.AppRunner, str]:
    app = web.Application()
    app.router.add_get("/ratings/{user}", ratings.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
    return runner, f"http://127.0.0.1:{port}"


async def play(phase_seconds: float) -> int:
    ratings = Ratings()
    runner, base = await start(ratings)
    transitions: list[str] = []

    def on_change(change: StateChange) -> None:
        transitions.append(f"{change.old.value}->{change.new.value}")
        print(
            f"    circuit {change.dependency}: {change.old.value} -> {change.new.value}"
            f" ({change.reason})"
        )

    registry().on_state_change(on_change)
    async with aiohttp.ClientSession() as session:

        @protect(
            "ratings",
            timeout=0.3,
            min_calls=5,
            failure_rate=0.5,
            open_duration=1.5,
            window=2.0,
            buckets=4,
            fallback=lambda user: {"user": user, "stars": []},
        )
        async def get_ratings(user: str) -> dict[str, Any]:
            async with session.get(f"{base}/ratings/{user}") as resp:
                resp.raise_for_status()
                return await resp.json()  # type: ignore[no-any-return]

        async def traffic(label: str, seconds: float) -> None:
            served = fallback = 0
            hits_before = ratings.hits
            end = time.monotonic() + seconds
            while time.monotonic() < end:
                result = await get_ratings("u1")
                if result["stars"]:
                    served += 1
                else:
                    fallback += 1
                await asyncio.sleep(0.02)
            state = registry().dependency("ratings").state.value
            print(
                f"  {label:<38} real answers {served:4d}  fallbacks {fallback:4d}  "
                f"requests that reached ratings {ratings.hits - hits_before:4d}  circuit {state}"
            )

        print(f"ratings service on {base}; calls protected by protect('ratings', timeout=0.3)")
        await traffic("1. steady traffic", phase_seconds)
        ratings.mode = "down"
        print("ratings goes down (503)")
        await traffic("2. outage: circuit opens, fallbacks", phase_seconds)
        ratings.mode = "slow"
        print("ratings answers again, but hangs for 2 s")
        await traffic("3. hanging: timeouts, fallbacks", phase_seconds)
        ratings.mode = "ok"
        print("ratings recovers")
        await traffic("4. recovery: half-open trial, closed", phase_seconds + 1.5)
    await runner.cleanup()

    dep = registry().dependency("ratings")
    snap = dep.window.totals()
    ok = (
        dep.state is State.CLOSED
        and "closed->open" in transitions
        and "half_open->closed" in transitions
    )
    print(
        f"summary: {snap.counts[0]} successes, {snap.counts[1]} failures, "
        f"{snap.counts[2]} timeouts, "
        f"{snap.counts[3]} short-circuited, {snap.counts[5]} fallbacks served; "
        f"circuit {dep.state.value}: {'OK' if ok else 'UNEXPECTED'}"
    )
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--phase-seconds", type=float, default=2.0)
    opts = parser.parse_args(argv)
    logging.getLogger("resilience").setLevel(logging.ERROR)  # the listener prints transitions
    return asyncio.run(play(opts.phase_seconds))


if __name__ == "__main__":
    sys.exit(main())
