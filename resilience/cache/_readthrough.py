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
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar

from ..circuit import MISSING, Guard, Policy, Registry
from ..errors import CacheError, ConfigError
from ._flight import RETRY, Failed, finish, join, wait_async, wait_sync

__all__ = [
    "DEFAULT_LOADER_CONCURRENCY",
    "DEFAULT_LOADER_TIMEOUT",
    "AsyncReadThrough",
    "FromFallback",
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


class _ReadThrough:
    _registry: Registry
    _loads: dict[Any, Any]
    _loads_lock: Any
    _core: Any
    if TYPE_CHECKING:

        @property
        def name(self) -> str: ...

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


class SyncReadThrough(_ReadThrough):
    """``cached`` for the blocking cache."""

    if TYPE_CHECKING:

        def get(self, key: str | bytes, default: Any = None) -> Any: ...

        def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> Any: ...

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

        Loads run through the circuit dependency ``cache.<name>.loader.<pool>``: a thread
        pool of ``loader_concurrency`` workers (and as many queue slots) cut off at
        ``loader_timeout`` seconds; one load per key runs at a time in this process and
        concurrent callers of that key share its result. When the loader fails, is rejected or
        its circuit is open, callers get ``fallback`` (a value, or a function called with the
        same arguments) or the error; a fallback value is never written to the cache. An
        ``async def`` loader is a ``ConfigError``: use ``AsyncReplicatedCache.cached``.

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
        from ._core import MISS

        def decorate(fn: Callable[P, T]) -> Callable[P, T]:
            if is_async(fn) or inspect.isasyncgenfunction(fn):
                raise ConfigError(
                    "cached",
                    f"{getattr(fn, '__qualname__', fn)!r} is async: a blocking cache cannot "
                    "cache its coroutine; decorate it with AsyncReplicatedCache.cached",
                )

            @functools.wraps(fn)
            def read_through(*args: P.args, **kwargs: P.kwargs) -> T:
                user_key = key(*args, **kwargs)
                value = self.get(user_key, MISS)
                if value is not MISS:
                    return value  # type: ignore[no-any-return]
                return self._load(user_key, ttl, guard, fn, args, kwargs, wait)  # type: ignore[no-any-return]

            return read_through

        return decorate

    def _load(
        self,
        user_key: str | bytes,
        ttl: int | None,
        guard: Guard,
        fn: Callable[..., Any],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: float,
    ) -> Any:
        k = self._core.key(user_key)
        flight, leader = join(self._loads, self._loads_lock, k)
        if not leader:
            shared = wait_sync(self._loads_lock, flight, wait)
            if shared is not RETRY:
                return _unwrap(shared)
        value: Any = RETRY
        try:
            value = guard.call(fn, None, args, kwargs)
        except Exception as exc:
            value = Failed(exc)
            raise
        finally:
            if leader:
                finish(self._loads, self._loads_lock, k, flight, value, keep=False)
        if not isinstance(value, FromFallback):
            try:
                self.set(user_key, value, ttl)
            except CacheError as exc:
                log.warning("cache %s: could not store loaded %r: %s", self.name, user_key, exc)
        return _unwrap(value)


class AsyncReadThrough(_ReadThrough):
    """``cached`` for the asyncio cache."""

    if TYPE_CHECKING:

        async def get(self, key: str | bytes, default: Any = None) -> Any: ...

        async def set(self, key: str | bytes, value: Any, ttl: int | None = None) -> Any: ...

    def cached(
        self,
        key: Callable[..., str | bytes],
        ttl: int | None = None,
        *,
        loader_concurrency: int = DEFAULT_LOADER_CONCURRENCY,
        loader_timeout: float = DEFAULT_LOADER_TIMEOUT,
        pool: str = "realtime",
        fallback: Any = MISSING,
    ) -> Callable[[Callable[P, Awaitable[T]]], Callable[P, Awaitable[T]]]:
        """Decorate a coroutine loader; see :meth:`ReplicatedCache.cached` (loads run under
        the pool's semaphore of ``loader_concurrency`` and are cancelled at ``loader_timeout``).
        A plain (blocking) loader is a ``ConfigError``: it would block the event loop."""
        guard = self._loader(pool, loader_concurrency, loader_timeout, fallback)
        wait = loader_timeout * 2 + 1.0
        from ._core import MISS

        def decorate(fn: Callable[P, Awaitable[T]]) -> Callable[P, Awaitable[T]]:
            if not is_async(fn):
                raise ConfigError(
                    "cached",
                    f"{getattr(fn, '__qualname__', fn)!r} is not a coroutine function: the "
                    "async cache awaits its loader; use ReplicatedCache.cached for blocking code",
                )

            @functools.wraps(fn)
            async def read_through(*args: P.args, **kwargs: P.kwargs) -> T:
                user_key = key(*args, **kwargs)
                value = await self.get(user_key, MISS)
                if value is not MISS:
                    return value  # type: ignore[no-any-return]
                return await self._load(user_key, ttl, guard, fn, args, kwargs, wait)  # type: ignore[no-any-return]

            return read_through

        return decorate

    async def _load(
        self,
        user_key: str | bytes,
        ttl: int | None,
        guard: Guard,
        fn: Callable[..., Awaitable[Any]],
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        wait: float,
    ) -> Any:
        k = self._core.key(user_key)
        flight, leader = join(self._loads, self._loads_lock, k)
        if not leader:
            shared = await wait_async(self._loads_lock, flight, wait)
            if shared is not RETRY:
                return _unwrap(shared)
        value: Any = RETRY
        try:
            value = await guard.acall(fn, None, args, kwargs)
        except Exception as exc:
            value = Failed(exc)
            raise
        finally:
            # also on cancellation: waiters must not wait for a load that will never end
            if leader:
                finish(self._loads, self._loads_lock, k, flight, value, keep=False)
        if not isinstance(value, FromFallback):
            try:
                await self.set(user_key, value, ttl)
            except CacheError as exc:
                log.warning("cache %s: could not store loaded %r: %s", self.name, user_key, exc)
        return _unwrap(value)
