"""gRPC glue: server and client interceptors for ``grpcio``, sync and ``grpc.aio``.

```python
from resilience.integrations import grpc as fit_grpc

server = grpc.server(pool, interceptors=[fit_grpc.server_interceptor()])
server = grpc.aio.server(interceptors=[fit_grpc.aio_server_interceptor()])
channel = grpc.intercept_channel(channel, fit_grpc.client_interceptor(target))
channel = grpc.aio.insecure_channel(target, interceptors=[fit_grpc.aio_client_interceptor(target)])
```

The tag travels as the metadata ``x-resilience-fit``. A server interceptor runs each call in a
request scope and, when its tag verifies, under its recipe, for the whole call (a streamed
response included); the acknowledgement goes back as the trailing metadata
``x-resilience-fit-ack``. A client interceptor cannot see its channel's address, so give it the
channel's ``target``: the tag is then forwarded only when ``fit.enable(propagate_to=...)``
allows that host. Without a target the interceptor trusts the channel it was put on and
forwards the tag to it, as a header added by hand would be.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import inspect
from collections import namedtuple
from collections.abc import AsyncIterator, Callable, Iterator, Sequence
from typing import Any

import grpc
import grpc.aio

from ..context import FIT
from ..fit import (
    ACK_HEADER,
    HEADER,
    ServerRequest,
    absorb_ack,
    current_tag,
    propagates_to,
    server_request,
)

__all__ = [
    "METADATA_KEY",
    "aio_client_interceptor",
    "aio_server_interceptor",
    "client_interceptor",
    "server_interceptor",
]

METADATA_KEY = HEADER.lower()
ACK_KEY = ACK_HEADER.lower()
_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")
_FACTORIES = {
    "unary_unary": grpc.unary_unary_rpc_method_handler,
    "unary_stream": grpc.unary_stream_rpc_method_handler,
    "stream_unary": grpc.stream_unary_rpc_method_handler,
    "stream_stream": grpc.stream_stream_rpc_method_handler,
}


def _get(metadata: Sequence[tuple[str, Any]] | None, key: str) -> str | None:
    for name, value in metadata or ():
        if name == key:
            return value.decode("latin-1") if isinstance(value, bytes) else str(value)
    return None


def _acknowledge(request: ServerRequest, context: Any) -> None:
    ack = request.ack()
    if ack is None:
        return
    try:
        context.set_trailing_metadata((*(context.trailing_metadata() or ()), (ACK_KEY, ack)))
    except Exception:  # an acknowledgement informs; it must never replace the call's outcome
        return


# -- servers ---------------------------------------------------------------------------------


def _sync_unary(behavior: Callable[..., Any], tag: str | None) -> Callable[..., Any]:
    def run(request: Any, context: Any) -> Any:
        ctx = contextvars.copy_context()
        fit_request = server_request(tag)
        ctx.run(fit_request.__enter__)
        try:
            return ctx.run(behavior, request, context)
        finally:
            try:
                ctx.run(_acknowledge, fit_request, context)
            finally:
                ctx.run(fit_request.__exit__)

    return run


def _sync_stream(behavior: Callable[..., Any], tag: str | None) -> Callable[..., Any]:
    def run(request: Any, context: Any) -> Iterator[Any]:
        ctx = contextvars.copy_context()
        fit_request = server_request(tag)
        ctx.run(fit_request.__enter__)
        try:
            responses = ctx.run(iter, ctx.run(behavior, request, context))
            while True:
                try:
                    item = ctx.run(next, responses)
                except StopIteration:
                    break
                yield item
            ctx.run(_acknowledge, fit_request, context)
        finally:  # also when the client cancels and the server drops this generator
            ctx.run(fit_request.__exit__)

    return run


def _async_unary(behavior: Callable[..., Any], tag: str | None) -> Callable[..., Any]:
    async def run(request: Any, context: Any) -> Any:
        async with server_request(tag) as fit_request:
            try:
                return await behavior(request, context)
            finally:
                _acknowledge(fit_request, context)

    return run


def _async_stream(behavior: Callable[..., Any], tag: str | None) -> Callable[..., Any]:
    async def run(request: Any, context: Any) -> AsyncIterator[Any]:
        async with server_request(tag) as fit_request:
            async for item in behavior(request, context):
                yield item
            _acknowledge(fit_request, context)

    return run


def _wrap(behavior: Callable[..., Any], kind: str, tag: str | None) -> Callable[..., Any]:
    if inspect.isasyncgenfunction(behavior):
        return _async_stream(behavior, tag)
    if inspect.iscoroutinefunction(behavior):  # unary, or a stream written with context.write
        return _async_unary(behavior, tag)
    return _sync_stream(behavior, tag) if kind.endswith("_stream") else _sync_unary(behavior, tag)


def _wrap_handler(handler: Any, tag: str | None) -> Any:
    for kind in _KINDS:
        behavior = getattr(handler, kind, None)
        if behavior is not None:
            return _FACTORIES[kind](
                _wrap(behavior, kind, tag),
                request_deserializer=handler.request_deserializer,
                response_serializer=handler.response_serializer,
            )
    return handler


class _ServerInterceptor(grpc.ServerInterceptor):  # type: ignore[misc]
    def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = continuation(details)
        if handler is None:
            return None
        return _wrap_handler(handler, _get(details.invocation_metadata, METADATA_KEY))


class _AioServerInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]
    async def intercept_service(self, continuation: Callable[..., Any], details: Any) -> Any:
        handler = await continuation(details)
        if handler is None:
            return None
        return _wrap_handler(handler, _get(details.invocation_metadata, METADATA_KEY))


def server_interceptor() -> grpc.ServerInterceptor:
    """For ``grpc.server(..., interceptors=[server_interceptor()])``."""
    return _ServerInterceptor()


def aio_server_interceptor() -> grpc.aio.ServerInterceptor:
    """For ``grpc.aio.server(interceptors=[aio_server_interceptor()])``."""
    return _AioServerInterceptor()


# -- clients ---------------------------------------------------------------------------------


class _CallDetails(
    namedtuple(
        "_CallDetails",
        ("method", "timeout", "metadata", "credentials", "wait_for_ready", "compression"),
    ),
    grpc.ClientCallDetails,  # type: ignore[misc]
):
    pass


def _tagged_metadata(details: Any, target: str | None) -> tuple[Any, ...] | None:
    """The call's metadata with the tag added, or None to leave the call as it is."""
    tag = current_tag()
    metadata = tuple(details.metadata or ())
    if tag is None or _get(metadata, METADATA_KEY) is not None:
        return None
    if target is not None and not propagates_to(target):
        return None  # and no acknowledgement is taken from it either
    return (*metadata, (METADATA_KEY, tag))


def _absorb_when_done(call: Any, context: object) -> None:
    def done(finished: Any) -> None:
        try:
            absorb_ack(_get(finished.trailing_metadata(), ACK_KEY), context)
        except Exception:  # an acknowledgement is informative: never fail a call over it
            return

    try:
        call.add_done_callback(done)
    except Exception:
        return


class _ClientInterceptor(
    grpc.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, target: str | None) -> None:
        self.target = target

    def _call(self, continuation: Callable[..., Any], details: Any, request: Any) -> Any:
        metadata = _tagged_metadata(details, self.target)
        if metadata is None:
            return continuation(details, request)
        details = _CallDetails(
            details.method,
            details.timeout,
            metadata,
            details.credentials,
            getattr(details, "wait_for_ready", None),
            getattr(details, "compression", None),
        )
        call = continuation(details, request)
        _absorb_when_done(call, FIT.get())
        return call

    intercept_unary_unary = _call
    intercept_unary_stream = _call
    intercept_stream_unary = _call
    intercept_stream_stream = _call


class _AioClientInterceptor(
    grpc.aio.UnaryUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.UnaryStreamClientInterceptor,  # type: ignore[misc]
    grpc.aio.StreamUnaryClientInterceptor,  # type: ignore[misc]
    grpc.aio.StreamStreamClientInterceptor,  # type: ignore[misc]
):
    def __init__(self, target: str | None) -> None:
        self.target = target

    def _details(self, details: Any) -> Any:
        metadata = _tagged_metadata(details, self.target)
        if metadata is None:
            return None
        return grpc.aio.ClientCallDetails(
            details.method,
            details.timeout,
            grpc.aio.Metadata(*metadata),
            details.credentials,
            details.wait_for_ready,
        )

    async def _unary_response(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        tagged = self._details(details)
        call = await continuation(tagged or details, request)
        if tagged is not None:
            # The caller awaits this response anyway; waiting for it here lets the
            # acknowledgement be merged before the caller's own response goes out.
            with contextlib.suppress(grpc.aio.AioRpcError):  # the caller sees it when it awaits
                await call
            absorb_ack(_get(await call.trailing_metadata(), ACK_KEY))
        return call

    async def _stream_response(
        self, continuation: Callable[..., Any], details: Any, request: Any
    ) -> Any:
        tagged = self._details(details)
        call = await continuation(tagged or details, request)
        if tagged is not None:
            context = FIT.get()

            async def absorb_later() -> None:
                try:
                    absorb_ack(_get(await call.trailing_metadata(), ACK_KEY), context)
                except Exception:  # cancelled or failed call: nothing to merge
                    return

            _PENDING.add(task := asyncio.ensure_future(absorb_later()))
            task.add_done_callback(_PENDING.discard)
        return call

    intercept_unary_unary = _unary_response
    intercept_stream_unary = _unary_response
    intercept_unary_stream = _stream_response
    intercept_stream_stream = _stream_response


# Tasks that merge a streamed call's acknowledgement, kept referenced until they finish.
_PENDING: set[asyncio.Future[None]] = set()


def client_interceptor(target: str | None = None) -> Any:
    """For ``grpc.intercept_channel(channel, client_interceptor(target))`` (all four kinds).

    Args:
        target: the channel's address (``"host:port"``), checked against ``propagate_to``;
            None trusts the channel and always forwards the tag.
    """
    return _ClientInterceptor(target)


def aio_client_interceptor(target: str | None = None) -> Any:
    """For ``grpc.aio.insecure_channel(target, interceptors=[aio_client_interceptor(target)])``."""
    return _AioClientInterceptor(target)
