"""Read-through (``cached``): load on a miss through a protected loader, one load per key.

Loads run through the circuit dependency ``cache.<name>.loader.<pool>`` (a bulkhead and a
timeout), so a cache outage cannot stampede the database behind it. The sync cache takes plain
functions and the async cache coroutine functions; the other kind is a ``ConfigError`` at
decoration time (a coroutine's result cannot be cached by a sync cache, nor can a blocking
loader run on an event loop).
"""

from __future__ import annotations

import functools
import inspect
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..circuit import MISSING, Guard, Policy, Registry
from ..errors import CacheError, ConfigError
from ._flight import RETRY, Failed, finish, join
from ._steps import LOAD, MISS, WAIT, Flow

__all__ = [
    "DEFAULT_LOADER_CONCURRENCY",
    "DEFAULT_LOADER_TIMEOUT",
    "AsyncReadThrough",
    "FromFallback",
    "ReadThrough",
    "SyncReadThrough",
]

log = logging.getLogger("resilience.cache")

P = ParamSpec("P")
T = TypeVar("T")

DEFAULT_LOADER_CONCURRENCY = 10
DEFAULT_LOADER_TIMEOUT = 1.0


class FromFallback:
    """A loader's fallback value: returned to callers, never written to the cache."""

    __slots__ = ("value",)

    def __init__(self, value: Any) -> None:
        self.value = value


def is_async(fn: Any) -> bool:
    """Whether calling ``fn`` gives an awaitable (coroutine functions, callables, partials)."""
    while isinstance(fn, functools.partial):
        fn = fn.func
    return inspect.iscoroutinefunction(fn) or inspect.iscoroutinefunction(
        getattr(fn, "__call__", None)  # noqa: B004
    )


def _unwrap(value: Any) -> Any:
    if isinstance(value, Failed):
        raise value.error
    if isinstance(value, FromFallback):
        return value.value
    return value


def _wrap_fallback(fallback: Callable[..., Any]) -> Callable[..., Any]:
    if inspect.iscoroutinefunction(fallback):

        async def afb(*args: Any, **kwargs: Any) -> FromFallback:
            return FromFallback(await fallback(*args, **kwargs))

        return afb

    def fb(*args: Any, **kwargs: Any) -> FromFallback:
        return FromFallback(fallback(*args, **kwargs))

    return fb


KeyFn = Callable[..., str | bytes]
LoadFlow = Callable[[str | bytes, Any, Any], Flow[Any]]

# why a loader does not fit the cache, by the kind of loader
_WRONG = {
    "coroutine": "is async: a blocking cache cannot cache its coroutine; decorate it with "
    "AsyncReplicatedCache.cached",
    "async generator": "is an async generator: neither cache can cache what it yields",
    "plain": "is not a coroutine function: the async cache awaits its loader; use "
    "ReplicatedCache.cached for blocking code",
}


class ReadThrough:
    """``cached``, shared by both caches: the decorator, and the load as a flow the drivers run
    (join the key's load or lead it, run the loader through its guard, store what it gave)."""

    _takes = "plain"  # the kind of loader the cache takes (``_WRONG`` says why not another)

    _registry: Registry
    _loads: dict[Any, Any]
    _loads_lock: Any
    _core: Any
    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...

    def cached(
        self,
        key: Callable[..., str | bytes],
        ttl: int | None = None,
        *,
        loader_concurrency: int = DEFAULT_LOADER_CONCURRENCY,
        loader_timeout: float = DEFAULT_LOADER_TIMEOUT,
        pool: str = "realtime",
        fallback: Any = MISSING,
    ) -> Callable[[Callable[P, T]], Callable[P, T]]:
        """Decorate a loader: read ``key(*args, **kwargs)`` from the cache, load and store on miss.

        Loads run through the circuit dependency ``cache.<name>.loader.<pool>``, cut off at
        ``loader_timeout`` seconds, at most ``loader_concurrency`` at once (the blocking cache
        runs them on a thread pool of that many workers and queue slots, the asyncio cache
        under a semaphore); one load per key runs at a time in this process and concurrent
        callers of that key share its result. When the loader fails, is rejected or its circuit
        is open, callers get ``fallback`` (a value, or a function called with the same
        arguments) or the error; a fallback value is never written to the cache. The blocking
        cache takes plain functions and the asyncio cache coroutine functions: the other kind is
        a ``ConfigError`` here, at decoration time.

        Args:
            key: builds the cache key from the decorated function's arguments.
            ttl: ttl of loaded values (default: the cache's ``default_ttl``).
            loader_concurrency: loads running at once (default 10).
            loader_timeout: seconds a load may take (default 1.0).
            pool: loader pool name (default ``"realtime"``); give batch callers their own
                (``pool="batch"``) so they cannot starve real-time ones.
            fallback: what callers get when the load fails (default: the error).
        """
        guard = self._loader(pool, loader_concurrency, loader_timeout, fallback)
        wait = loader_timeout * 2 + 1.0

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            kind = (
                "coroutine"
                if is_async(fn)
                else "async generator"
                if inspect.isasyncgenfunction(fn)
                else "plain"
            )
            if kind != self._takes:
                raise ConfigError("cached", f"{getattr(fn, '__qualname__', fn)!r}: {_WRONG[kind]}")

            def load(user_key: str | bytes, args: Any, kwargs: Any) -> Flow[Any]:
                return self._load_flow(user_key, ttl, guard, fn, args, kwargs, wait)

            return self._wrap(fn, key, load)

        return decorate

    def _wrap(self, fn: Callable[P, T], key: KeyFn, load: LoadFlow) -> Callable[P, T]:
        """The decorated function: a cache read, then ``load``'s flow on a miss."""
        raise NotImplementedError

    def _loader(self, pool: str, concurrency: int, timeout: float, fallback: Any) -> Guard:
        if not isinstance(pool, str) or not pool or "." in pool:
            raise ConfigError("pool", f"must be a name without '.', got {pool!r}")
        dep = self._registry.dependency(
            f"cache.{self.name}.loader.{pool}",
            Policy(
                timeout=timeout,
                pool_size=concurrency,
                queue_size=concurrency,
                max_concurrent=concurrency,
            ),
        )
        if fallback is MISSING:
            return dep.guard()
        if callable(fallback):
            return dep.guard(fallback=_wrap_fallback(fallback))
        return dep.guard(fallback=FromFallback(fallback))

    def _load_flow(
        self,
        user_key: str | bytes,
        ttl: int | None,
        guard: Guard,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: float,
    ) -> Flow[Any]:
        """A miss: share the key's load in flight, or lead one and store what it gave."""
        k = self._core.key(user_key)
        flight, leader = join(self._loads, self._loads_lock, k)
        if not leader:
            shared = yield (WAIT, flight, self._loads_lock, wait)
            if shared is not RETRY:
                return _unwrap(shared)
        value: Any = RETRY
        try:
            ok, value = yield (LOAD, guard, fn, args, kwargs)
            if not ok:
                error, value = value, Failed(value)
                raise error
        finally:
            # also when the caller is interrupted or cancelled (the flow is closed): waiters
            # must not wait for a load that will never end
            if leader:
                finish(self._loads, self._loads_lock, k, flight, value, keep=False)
        if not isinstance(value, FromFallback):
            try:
                yield from self._core.set_flow(user_key, value, ttl)
            except CacheError as exc:
                log.warning("cache %s: could not store loaded %r: %s", self.name, user_key, exc)
        return _unwrap(value)


def _load_sync(
    guard: Guard, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    """The blocking cache's LOAD step: ``(True, value)`` or ``(False, the exception)``."""
    try:
        return True, guard.call(fn, None, args, kwargs)
    except Exception as exc:
        return False, exc


class SyncReadThrough(ReadThrough):
    """``cached`` for the blocking cache: plain functions."""

    _run_loader = staticmethod(_load_sync)
    if TYPE_CHECKING:

        def get(self, key: str | bytes, default: Any = None) -> Any: ...

        def _run(self, flow: Flow[T]) -> T: ...

    def _wrap(self, fn: Callable[P, T], key: KeyFn, load: LoadFlow) -> Callable[P, T]:
        @functools.wraps(fn)
        def read_through(*args: P.args, **kwargs: P.kwargs) -> T:
            user_key = key(*args, **kwargs)
            value: T = self.get(user_key, MISS)
            return self._run(load(user_key, args, kwargs)) if value is MISS else value

        return read_through


async def _load_async(
    guard: Guard, fn: Callable[..., Any], args: tuple[Any, ...], kwargs: dict[str, Any]
) -> tuple[bool, Any]:
    """The asyncio cache's LOAD step: the loader awaited through its guard."""
    try:
        return True, await guard.acall(fn, None, args, kwargs)
    except Exception as exc:
        return False, exc


class AsyncReadThrough(ReadThrough):
    """``cached`` for the asyncio cache: coroutine functions."""

    _run_loader = staticmethod(_load_async)
    _takes = "coroutine"
    if TYPE_CHECKING:

        async def get(self, key: str | bytes, default: Any = None) -> Any: ...

        async def _run(self, flow: Flow[T]) -> T: ...

    def _wrap(self, fn: Callable[P, T], key: KeyFn, load: LoadFlow) -> Callable[P, T]:
        @functools.wraps(fn)
        async def read_through(*args: P.args, **kwargs: P.kwargs) -> Any:
            user_key = key(*args, **kwargs)
            value = await self.get(user_key, MISS)
            return (await self._run(load(user_key, args, kwargs))) if value is MISS else value

        return read_through  # type: ignore[return-value]
