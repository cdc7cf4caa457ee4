"""A downstream service of the movies demo (ratings, recommendations or catalog).

Run as its own process: ``python -m examples.movies.downstream NAME PORT``. Its failure mode can
be switched at runtime with ``POST /_control {"mode": "ok" | "fail" | "slow", "delay": 2.0}``;
``GET /_control`` returns the mode and how many requests it answered.
"""

from __future__ import annotations

import asyncio
import sys
from typing import Any

from aiohttp import web

CATALOG = {
    "m1": {"title": "The Circuit", "year": 2019},
    "m2": {"title": "Half-Open", "year": 2021},
    "m3": {"title": "Bulkhead", "year": 2023},
    "m4": {"title": "Fallback Road", "year": 2024},
}


def payload(name: str, user: str) -> Any:
    if name == "catalog":
        return {"movies": [{"id": k, **v} for k, v in CATALOG.items()]}
    if name == "ratings":
        return {"user": user, "ratings": {"m1": 5, "m2": 4, "m3": 3}}
    return {"user": user, "recommended": ["m4", "m2"]}


def make_app(name: str) -> web.Application:
    state: dict[str, Any] = {"mode": "ok", "delay": 2.0, "requests": 0}

    async def handle(request: web.Request) -> web.Response:
        state["requests"] += 1
        if state["mode"] == "fail":
            return web.json_response({"error": f"{name} is failing"}, status=503)
        if state["mode"] == "slow":
            await asyncio.sleep(float(state["delay"]))
        return web.json_response(payload(name, request.match_info.get("user", "")))

    async def control(request: web.Request) -> web.Response:
        if request.method == "POST":
            body = await request.json()
            if body.get("mode") not in ("ok", "fail", "slow"):
                return web.json_response({"error": "mode must be ok, fail or slow"}, status=400)
            state["mode"] = body["mode"]
            state["delay"] = float(body.get("delay", state["delay"]))
        return web.json_response({"name": name, **state})

    async def health(request: web.Request) -> web.Response:
        return web.json_response({"ok": True})

    app = web.Application()
    app.router.add_route("*", "/_control", control)
    app.router.add_get("/health", health)
    app.router.add_get(f"/{name}", handle)
    app.router.add_get(f"/{name}/{{user}}", handle)
    return app


def main() -> None:
    name, port = sys.argv[1], int(sys.argv[2])
    web.run_app(make_app(name), host="127.0.0.1", port=port, print=None, access_log=None)


if __name__ == "__main__":
    main()
