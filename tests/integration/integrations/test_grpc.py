"""grpcio servers, sync and aio, with the interceptors; the tag travels as metadata."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import grpc.aio

from resilience import fit, protect
from resilience.fit import Recipe, decode_ack, sign_tag
from resilience.integrations import grpc as fit_grpc

from .conftest import SECRET
from .servers import Servers

RECIPE = Recipe.from_dict(
    {"name": "db-down", "faults": [{"dependency": "grpc.*db", "error": True}]}
)
SERVICE = "resilience.test.Pages"


def _ack(metadata: Any) -> Any:
    return decode_ack(dict(metadata or ()).get("x-resilience-fit-ack"))


def sync_server(servers: Servers, downstream: str | None = None) -> str:
    @protect("grpc.db", fallback="fallback", isolation="semaphore", min_calls=1000)
    def db() -> str:
        return "real"

    @protect("grpc.next", fallback="next-fallback", isolation="semaphore", min_calls=1000)
    def call_next() -> str:
        assert downstream is not None
        with grpc.insecure_channel(downstream) as channel:
            channel = grpc.intercept_channel(channel, fit_grpc.client_interceptor(downstream))
            return bytes(channel.unary_unary(f"/{SERVICE}/Get")(b"", timeout=5)).decode()

    def get(request: bytes, context: Any) -> bytes:
        return (call_next() if downstream else db()).encode()

    def stream(request: bytes, context: Any) -> Iterator[bytes]:
        for _ in range(3):  # each chunk calls the dependency while the response streams
            yield db().encode()

    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server = grpc.server(ThreadPoolExecutor(4), interceptors=[fit_grpc.server_interceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    servers.add_stop(lambda: server.stop(None).wait(5))
    return f"127.0.0.1:{port}"


def test_sync_server_and_client_interceptors(servers: Servers) -> None:
    fit.enable(secret=SECRET)
    leaf = sync_server(servers)
    front = sync_server(servers, downstream=leaf)
    tag = (("x-resilience-fit", sign_tag(RECIPE, secret=SECRET)),)
    with grpc.insecure_channel(leaf) as channel:
        get = channel.unary_unary(f"/{SERVICE}/Get")
        response, call = get.with_call(b"", metadata=tag, timeout=5)
        assert response == b"fallback"
        assert _ack(call.trailing_metadata()).record == {("grpc.db", "error"): 1}
        response, call = get.with_call(b"", timeout=5)
        assert response == b"real" and _ack(call.trailing_metadata()) is None
        chunks = channel.unary_stream(f"/{SERVICE}/Stream")(b"", metadata=tag, timeout=5)
        assert list(chunks) == [b"fallback"] * 3
        assert _ack(chunks.trailing_metadata()).record == {("grpc.db", "error"): 3}
        forged = (("x-resilience-fit", sign_tag(RECIPE, secret="nope")),)
        assert get(b"", metadata=forged, timeout=5) == b"real"
    # through two servers: the front's client interceptor forwards the tag to the leaf, whose
    # injection comes back in the front's acknowledgement
    with grpc.insecure_channel(front) as channel:
        get = channel.unary_unary(f"/{SERVICE}/Get")
        response, call = get.with_call(b"", metadata=tag, timeout=5)
        assert response == b"fallback"
        record = _ack(call.trailing_metadata()).record
        assert record[("grpc.db", "error")] == 1
        assert get(b"", timeout=5) == b"real"
    assert fit.tag_counts() == {"accepted": 4, "bad_signature": 1}
    assert fit.active_requests() == 0


async def test_aio_server_and_client_interceptors() -> None:
    fit.enable(secret=SECRET)

    @protect("grpc.adb", fallback="fallback", min_calls=1000)
    async def db() -> str:
        return "real"

    async def get(request: bytes, context: Any) -> bytes:
        return (await db()).encode()

    async def stream(request: bytes, context: Any) -> AsyncIterator[bytes]:
        for _ in range(2):
            await asyncio.sleep(0)
            yield (await db()).encode()

    handlers = {
        "Get": grpc.unary_unary_rpc_method_handler(get),
        "Stream": grpc.unary_stream_rpc_method_handler(stream),
    }
    server = grpc.aio.server(interceptors=[fit_grpc.aio_server_interceptor()])
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
    port = server.add_insecure_port("127.0.0.1:0")
    await server.start()
    target = f"127.0.0.1:{port}"
    tag = sign_tag(RECIPE, secret=SECRET)
    try:
        async with grpc.aio.insecure_channel(target) as channel:
            call = channel.unary_unary(f"/{SERVICE}/Get")(
                b"", metadata=(("x-resilience-fit", tag),), timeout=5
            )
            assert await call == b"fallback"
            assert _ack(await call.trailing_metadata()).record == {("grpc.adb", "error"): 1}
            assert await channel.unary_unary(f"/{SERVICE}/Get")(b"", timeout=5) == b"real"
            chunks = channel.unary_stream(f"/{SERVICE}/Stream")(
                b"", metadata=(("x-resilience-fit", tag),), timeout=5
            )
            assert [c async for c in chunks] == [b"fallback"] * 2
        # the aio client interceptor forwards the running request's tag (and only it)
        interceptor = fit_grpc.aio_client_interceptor(target)
        async with grpc.aio.insecure_channel(target, interceptors=[interceptor]) as channel:
            get = channel.unary_unary(f"/{SERVICE}/Get")
            async with fit.server_request(tag) as request:
                assert await get(b"", timeout=5) == b"fallback"
                assert request.context is not None
                assert request.context.record() == {("grpc.adb", "error"): 1}
            assert await get(b"", timeout=5) == b"real"
            outside = fit_grpc.aio_client_interceptor("203.0.113.9:443")  # a third party
        async with (
            grpc.aio.insecure_channel(target, interceptors=[outside]) as channel,
            fit.server_request(tag),
        ):
            assert await channel.unary_unary(f"/{SERVICE}/Get")(b"", timeout=5) == b"real"
    finally:
        await server.stop(None)
    assert fit.active_requests() == 0
