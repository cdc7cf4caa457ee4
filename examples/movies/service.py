"""The movies home page: one aiohttp service using all four parts of resilience.

``GET /home/{user}`` builds a user's home page from:
- ``catalog`` (critical: no fallback, the page is 503 without it),
- the user's ``profile`` from a ``AsyncReplicatedCache`` over three memcached zones (critical;
  a miss loads it from the profile "database" through a protected read-through loader),
- ``ratings`` (fallback: no ratings) and ``recommendations`` (fallback: a popular list), which
  also has a kill switch, the flag ``kill-recommendations``.

Every downstream call goes through ``protect``; the FIT middleware honours signed recipes and
forwards them on outgoing requests; flags come from a watched file and also drive the ratings
circuit (``circuits.ratings.*``); the admin app with the dashboard is mounted at ``/admin/``.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from resilience import fit, protect
from resilience.cache import AsyncReplicatedCache
from resilience.flags import FileSource, Flags, Source
from resilience.integrations import aiohttp as fit_aiohttp
from resilience.web import admin_app

POPULAR = ["m1", "m3"]
CRITICAL = ("catalog", "cache.profile.a", "cache.profile.b", "cache.profile.c")


class ProfileDatabase:
    """The slow source of truth behind the profile cache; counts every load (a cache miss)."""

    def __init__(self) -> None:
        self.loads = 0

    async def load(self, user: str) -> dict[str, Any]:
        self.loads += 1
        await asyncio.sleep(0.005)
        return {"user": user, "name": f"User {user}", "country": "KR"}


class Movies:
    """The service and everything it holds, so the demo and the tests can inspect it."""

    def __init__(
        self,
        urls: Mapping[str, str],
        zones: Mapping[str, Sequence[str]],
        flags_path: Path,
        *,
        fit_secret: str,
        admin_token: str,
        timeout: float = 0.5,
        flag_source: Source | None = None,
    ) -> None:
        self.urls = dict(urls)
        self.database = ProfileDatabase()
        self.cache = AsyncReplicatedCache(zones, local_zone="a", name="profile", timeout=0.1)
        self.flags = Flags(flag_source or FileSource(flags_path, watch=True, interval=0.2))
        self.flags.bind_circuit("ratings")
        self.fit_secret = fit_secret
        self.admin_token = admin_token
        self.session: aiohttp.ClientSession | None = None
        self.recommendation_calls = 0
        self._timeout = timeout
        self._build()

    def _build(self) -> None:
        # A short window so the demo's phases show in the rates within seconds.
        policy = {"timeout": self._timeout, "min_calls": 5, "window": 2.0, "buckets": 4,
                  "open_duration": 2.0}  # fmt: skip

        @protect("catalog", **policy)
        async def catalog() -> Any:
            return await self._fetch("catalog", "/catalog")

        @protect("ratings", fallback=lambda user: {"user": user, "ratings": {}}, **policy)
        async def ratings(user: str) -> Any:
            return await self._fetch("ratings", f"/ratings/{user}")

        @protect("recommendations", fallback=lambda user: {"recommended": POPULAR}, **policy)
        async def recommendations(user: str) -> Any:
            self.recommendation_calls += 1
            return await self._fetch("recommendations", f"/recommendations/{user}")

        @self.cache.cached(key=lambda user: f"profile:{user}", ttl=600)
        async def profile(user: str) -> dict[str, Any]:
            return await self.database.load(user)

        self.catalog = catalog
        self.ratings = ratings
        self.recommendations = recommendations
        self.profile = profile

    async def _fetch(self, name: str, path: str) -> Any:
        assert self.session is not None
        async with self.session.get(self.urls[name] + path) as response:
            response.raise_for_status()
            return await response.json()

    async def home(self, request: web.Request) -> web.Response:
        user = request.match_info["user"]
        try:
            movies, profile = await asyncio.gather(self.catalog(), self.profile(user))
        except Exception as exc:  # a critical dependency failed: no page without it
            return web.json_response({"error": repr(exc)}, status=503)
        if self.flags.enabled("kill-recommendations"):
            recommended: Any = {"recommended": POPULAR, "switched_off": True}
            rated = await self.ratings(user)
        else:
            rated, recommended = await asyncio.gather(
                self.ratings(user), self.recommendations(user)
            )
        stars = rated.get("ratings", {})
        return web.json_response(
            {
                "user": profile,
                "movies": [{**m, "stars": stars.get(m["id"])} for m in movies["movies"]],
                "recommended": recommended.get("recommended", []),
                "degraded": {
                    "ratings": not stars,
                    "recommendations": recommended.get("recommended") == POPULAR,
                    "recommendations_switched_off": bool(recommended.get("switched_off")),
                },
            }
        )

    async def _lifecycle(self, app: web.Application) -> AsyncIterator[None]:
        self.session = fit_aiohttp.client_session(timeout=aiohttp.ClientTimeout(total=5))
        yield
        await self.session.close()
        await self.cache.aclose()
        self.flags.close()

    def app(self) -> web.Application:
        fit.enable(secret=self.fit_secret)
        app = web.Application(middlewares=[fit_aiohttp.middleware()])
        app.cleanup_ctx.append(self._lifecycle)
        app.router.add_get("/home/{user}", self.home)
        app.router.add_get("/health", lambda r: web.json_response({"ok": True}))
        app.add_routes(fit_aiohttp.routes())
        app.add_subapp(
            "/admin",
            admin_app(caches={"profile": self.cache}, flags=self.flags, token=self.admin_token),
        )
        return app
