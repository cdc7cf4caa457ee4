"""The movies home page as a FastAPI service: the ASGI path, next to the aiohttp one in movies/.

``GET /home/{user}`` reads ``catalog`` (critical: 503 without it) and ``ratings`` (fallback: no
stars) from the demo's downstream services (``examples/movies/downstream.py``) through an
instrumented ``httpx.AsyncClient``, every call protected. ``ResilienceMiddleware`` gives each
request its scope and activates a verified FIT tag's recipe for it; the client forwards the tag
to the downstream services and merges their acknowledgements; the middleware also serves the
dependency list that ``resilience fit discover`` and ``resilience fit run`` read.

Run it against two downstream services::

    python -m examples.movies.downstream catalog 8101 &
    python -m examples.movies.downstream ratings 8102 &
    RESILIENCE_FIT_SECRET=s3cret python -m examples.fastapi_service \\
        --catalog http://127.0.0.1:8101 --ratings http://127.0.0.1:8102 --port 8100
    resilience fit run examples/recipes/ratings-down.yaml --secret s3cret \\
        --target http://127.0.0.1:8100/home/u1
"""

from __future__ import annotations

import argparse
import os
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from typing import Any

import httpx
from fastapi import FastAPI
from fastapi.responses import JSONResponse

from resilience import fit, protect
from resilience.integrations import httpx as fit_httpx
from resilience.integrations.asgi import ResilienceMiddleware


def create_app(urls: Mapping[str, str], *, fit_secret: str | None = None) -> FastAPI:
    """The service; ``fit_secret`` enables FIT in this process (off without it)."""
    if fit_secret:
        fit.enable(secret=fit_secret)
    client = fit_httpx.instrument(httpx.AsyncClient(timeout=5.0))

    async def fetch(name: str, path: str) -> Any:
        response = await client.get(urls[name] + path)
        response.raise_for_status()
        return response.json()

    @protect("catalog", timeout=0.5)
    async def catalog() -> Any:
        return await fetch("catalog", "/catalog")

    @protect("ratings", timeout=0.5, fallback=lambda user: {"user": user, "ratings": {}})
    async def ratings(user: str) -> Any:
        return await fetch("ratings", f"/ratings/{user}")

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        yield
        await client.aclose()

    app = FastAPI(title="movies (FastAPI)", lifespan=lifespan)
    app.add_middleware(ResilienceMiddleware)

    @app.get("/home/{user}")
    async def home(user: str) -> Any:
        try:
            movies = await catalog()
        except Exception as exc:  # the critical dependency failed: no page without it
            return JSONResponse({"error": repr(exc)}, status_code=503)
        stars = (await ratings(user)).get("ratings", {})
        return {
            "user": user,
            "movies": [{**m, "stars": stars.get(m["id"])} for m in movies["movies"]],
            "degraded": {"ratings": not stars},
        }

    @app.get("/health")
    async def health() -> dict[str, bool]:
        return {"ok": True}

    return app


def main(argv: list[str] | None = None) -> None:
    import uvicorn

    parser = argparse.ArgumentParser(description="The movies home page on FastAPI.")
    parser.add_argument("--catalog", required=True, help="catalog service base URL")
    parser.add_argument("--ratings", required=True, help="ratings service base URL")
    parser.add_argument("--port", type=int, default=8100)
    opts = parser.parse_args(argv)
    app = create_app(
        {"catalog": opts.catalog, "ratings": opts.ratings},
        fit_secret=os.environ.get("RESILIENCE_FIT_SECRET"),
    )
    uvicorn.run(app, host="127.0.0.1", port=opts.port, log_level="warning")


if __name__ == "__main__":
    main()
