"""Per-request cost of each server integration, with no tag, against the same app without it.

Run: .venv/bin/python bench/integrations.py [--quick] [--only asgi,wsgi,aiohttp]

Target (issue 11 section 5): requests/s through the server with the integration (FIT enabled,
requests untagged) at least 1/1.05 of the same app without the integration, i.e. a time ratio
<= 1.05x. Each app answers ``GET /page`` with a small JSON body after one protected call.

Both variants of a stack run at once as separate server processes (uvicorn for ASGI, werkzeug's
threaded server for WSGI, aiohttp), so the load generator (this process, raw sockets, kept alive
where the server allows: werkzeug closes after each response) never shares a GIL with them.
Rounds alternate the order of the variants, so drift falls on all alike; the figure is the median
over rounds of each round's time ratio (the best rounds' ratio is shown beside it). For aiohttp
an app with an empty pass-through middleware runs too: it shows what aiohttp itself charges for
having any middleware, apart from what the integration does.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import free_port

ROOT = Path(__file__).resolve().parents[1]
REQUEST = b"GET /page HTTP/1.1\r\nHost: bench\r\n\r\n"
STACKS = ("asgi", "wsgi", "aiohttp")


# -- the servers (run in child processes) ----------------------------------------------------


def _db() -> Any:
    from resilience import protect

    @protect("bench.db", isolation="semaphore")
    def db() -> str:
        return "rows"

    return db


def asgi_app(instrumented: bool) -> Any:
    """A Starlette page, with or without the ASGI integration."""
    from starlette.applications import Starlette
    from starlette.responses import JSONResponse
    from starlette.routing import Route

    from resilience.integrations.asgi import ResilienceMiddleware

    db = _db()

    async def page(request: Any) -> JSONResponse:
        return JSONResponse({"db": db()})

    app: Any = Starlette(routes=[Route("/page", page)])
    if instrumented:
        app.add_middleware(ResilienceMiddleware)
    return app


def wsgi_app(instrumented: bool) -> Any:
    """A plain WSGI page, with or without the WSGI integration."""
    from resilience.integrations.wsgi import ResilienceMiddleware

    db = _db()

    def app(environ: dict[str, Any], start_response: Any) -> list[bytes]:
        body = json.dumps({"db": db()}).encode()
        headers = [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        start_response("200 OK", headers)
        return [body]

    return ResilienceMiddleware(app) if instrumented else app


def serve(stack: str, instrumented: bool, port: int, empty: bool = False) -> None:
    from resilience import fit

    fit.enable(secret="bench-secret")
    db = _db()
    if stack == "asgi":
        import uvicorn

        app = asgi_app(instrumented)
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="error", access_log=False)
    elif stack == "wsgi":
        from werkzeug.serving import WSGIRequestHandler, make_server

        class KeepAlive(WSGIRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_request(self, *args: Any) -> None:
                return None

        make_server(
            "127.0.0.1", port, wsgi_app(instrumented), threaded=True, request_handler=KeepAlive
        ).serve_forever()
    else:
        from aiohttp import web

        from resilience.integrations import aiohttp as fit_aiohttp

        async def handle(request: web.Request) -> web.Response:
            return web.json_response({"db": db()})

        @web.middleware
        async def pass_through(request: web.Request, handler: Any) -> web.StreamResponse:
            return await handler(request)

        middlewares: list[Any] = [fit_aiohttp.middleware()] if instrumented else []
        if empty:  # aiohttp's own cost of having a middleware at all
            middlewares = [pass_through]
        aio = web.Application(middlewares=middlewares)
        aio.router.add_get("/page", handle)
        web.run_app(aio, host="127.0.0.1", port=port, print=None, access_log=None)


# -- the load generator ----------------------------------------------------------------------


def _read_response(sock: socket.socket, buffer: bytearray) -> bool:
    """Read one response; returns whether the server keeps the connection open."""
    while b"\r\n\r\n" not in buffer:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        buffer += chunk
    head, _, rest = bytes(buffer).partition(b"\r\n\r\n")
    length = 0
    keep = True
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
        elif name.strip().lower() == b"connection" and value.strip().lower() == b"close":
            keep = False
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed")
        rest += chunk
    buffer[:] = rest[length:]
    return keep


def load(port: int, requests: int, connections: int) -> float:
    """Seconds to complete ``requests`` GETs over ``connections`` keep-alive connections."""
    per = requests // connections
    errors: list[BaseException] = []

    def client() -> None:
        try:
            sock: socket.socket | None = None
            buffer = bytearray()
            for _ in range(per):
                if sock is None:  # werkzeug's server closes after every response
                    sock = socket.create_connection(("127.0.0.1", port))
                    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                    buffer.clear()
                sock.sendall(REQUEST)
                if not _read_response(sock, buffer):
                    sock.close()
                    sock = None
            if sock is not None:
                sock.close()
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=client) for _ in range(connections)]
    start = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        raise errors[0]
    return time.perf_counter() - start


def in_process(stack: str, n: int, rounds: int) -> tuple[float, float]:
    """Microseconds per request calling the app directly: (without, with the integration).

    No server and no socket, so other processes' noise barely reaches it: this is the cost the
    integration adds to each request, whatever the server.
    """
    from resilience import fit

    fit.enable(secret="bench-secret")
    apps = {v: (asgi_app if stack == "asgi" else wsgi_app)(v) for v in (False, True)}
    scope = {
        "type": "http", "method": "GET", "path": "/page", "raw_path": b"/page",
        "query_string": b"", "headers": [(b"host", b"bench")], "http_version": "1.1",
        "scheme": "http", "server": ("127.0.0.1", 80), "client": ("127.0.0.1", 1),
        "root_path": "",
    }  # fmt: skip
    environ = {"REQUEST_METHOD": "GET", "PATH_INFO": "/page", "SERVER_NAME": "bench",
               "SERVER_PORT": "80", "wsgi.url_scheme": "http"}  # fmt: skip

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: Any) -> None:
        return None

    def start_response(*args: Any) -> None:
        return None

    def measure(app: Any) -> float:
        if stack == "asgi":

            async def go() -> float:
                t0 = time.perf_counter()
                for _ in range(n):
                    await app(dict(scope), receive, send)
                return time.perf_counter() - t0

            return asyncio.run(go()) / n * 1e6
        t0 = time.perf_counter()
        for _ in range(n):
            body = app(dict(environ), start_response)
            for _chunk in body:
                pass
            close = getattr(body, "close", None)
            if close is not None:
                close()
        return (time.perf_counter() - t0) / n * 1e6

    results: dict[bool, list[float]] = {False: [], True: []}
    for i in range(rounds):
        for variant in (False, True) if i % 2 == 0 else (True, False):
            results[variant].append(measure(apps[variant]))
    fit.disable()
    return statistics.median(results[False]), statistics.median(results[True])


def start(stack: str, variant: str) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    args = [sys.executable, __file__, "--serve", stack, "--port", str(port)]
    if variant == "fit":
        args.append("--instrumented")
    elif variant == "empty":
        args.append("--empty-middleware")
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.2).close()
            load(port, 20, 1)  # warm: first requests import and compile
            return proc, port
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"{stack} server did not start")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--only", default=",".join(STACKS))
    parser.add_argument("--serve", choices=STACKS)
    parser.add_argument("--instrumented", action="store_true")
    parser.add_argument("--empty-middleware", action="store_true")
    parser.add_argument("--port", type=int)
    opts = parser.parse_args()
    if opts.serve:
        serve(opts.serve, opts.instrumented, opts.port, opts.empty_middleware)
        return 0
    requests = 1_000 if opts.quick else 2_000
    rounds = 5 if opts.quick else 15
    connections = 4
    ok = True
    print(f"{requests} requests per round over {connections} keep-alive connections, "
          f"{rounds} rounds, FIT enabled in both, no tag")  # fmt: skip
    for stack in opts.only.split(","):
        variants = ["plain", "fit"] + (["empty"] if stack == "aiohttp" else [])
        procs = []
        try:
            ports = {}
            for variant in variants:
                proc, ports[variant] = start(stack, variant)
                procs.append(proc)
            rps: dict[str, list[float]] = {v: [] for v in variants}
            ratios: dict[str, list[float]] = {v: [] for v in variants}
            for i in range(rounds):
                times = {}
                for variant in variants if i % 2 == 0 else variants[::-1]:
                    times[variant] = load(ports[variant], requests, connections)
                    rps[variant].append(requests / times[variant])
                for variant in variants:
                    ratios[variant].append(times[variant] / times["plain"])
            ratio = statistics.median(ratios["fit"])
            passed = ratio <= 1.05
            ok &= passed or stack == "aiohttp"  # the target names uvicorn and WSGI
            print(
                f"{stack:<8} without {statistics.median(rps['plain']):7.0f} req/s   "
                f"with the integration {statistics.median(rps['fit']):7.0f} req/s   "
                f"time ratio {ratio:5.3f}x (target <= 1.05x) {'ok' if passed else 'MISSED'}   "
                f"(best rounds {max(rps['plain']) / max(rps['fit']):5.3f}x)"
            )
            if stack in ("asgi", "wsgi"):
                plain_us, fit_us = in_process(stack, requests * 5, rounds)
                served_us = 1e6 / statistics.median(rps["plain"])
                print(
                    f"{'':<8} called in-process: {plain_us:6.1f} us without, {fit_us:6.1f} us "
                    f"with: +{fit_us - plain_us:4.1f} us a request, "
                    f"{(served_us + fit_us - plain_us) / served_us:5.3f}x of the "
                    f"{served_us:5.0f} us a served request takes"
                )
            if "empty" in variants:
                empty = statistics.median(ratios["empty"])
                print(
                    f"{'':<8} an empty pass-through aiohttp middleware alone: {empty:5.3f}x; "
                    f"the integration against it: {ratio / empty:5.3f}x"
                )
        finally:
            for proc in procs:
                proc.terminate()
                proc.wait(10)
    return 0 if ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
