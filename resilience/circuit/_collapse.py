"""Request collapsing (Hystrix's collapser): many one-key calls share one batch call.

```python
@collapse("users", window=0.01, max_batch=100)
async def load_users(ids: list[int]) -> Mapping[int, User]: ...

user = await load_users.one(7)      # joins the batch that is filling, or starts one
users = await load_users([1, 2])    # the batch function itself, protected, not collapsed
```

- Calls to ``one`` arriving within ``window`` seconds of the first one, up to ``max_batch``
  distinct keys, share one batch call; a key asked twice is fetched once. A full batch goes at
  once; ``window=0`` batches only the calls that arrive while the first is being set up.
- Each caller gets the value for its key. A key missing from the batch's mapping raises
  ``KeyError(key)`` for that caller only; an exception from the batch reaches every caller of
  that batch; a batch function that returns something other than a mapping raises
  ``TypeError`` to them.
- The batch call is a protected call under ``key``, through the public registry API
  (``registry().dependency(key).guard(fallback=..., ignore=..., retry=...)`` and its ``call``
  / ``acall``): the breaker, bulkhead, timeout, retry and FIT see one call per batch, and
  count it once. ``fallback`` is per caller: a static value, or a function of one key
  (``async`` allowed for an async batch) called for each key of a failed batch; a fallback
  that raises fails only its own caller, with ``FallbackFailedError`` (the dependency's
  window counts one fallback for the batch).
- Sync batch functions collapse calls from threads: the first caller of a batch waits out the
  window, runs the batch on its own thread (through the dependency's pool for thread
  isolation) and hands every caller its value. Async batch functions collapse coroutines of one
  event loop: a timer closes the batch and a task runs it; a caller cancelled while it waits
  leaves the batch running for the others.
- ``scope="global"`` (default) collapses every caller in the process; ``scope="request"``
  collapses only callers in the same ``resilience.request_scope()``. Outside any request scope
  a request-scoped collapser does not collapse: each call is a batch of one, sent at once
  (one request's keys never ride in another's batch).
"""

from __future__ import annotations

import asyncio
import inspect
import sys
import threading
from collections.abc import Awaitable, Callable, Hashable, Mapping
from typing import Any, Generic, Literal, TypeVar, overload

import attrs

from ..context import current_scope
from ..errors import ConfigError, FallbackFailedError
from ._checks import count, seconds
from ._fallback import MISSING
from ._guard import Guard
from ._registry import Registry
from ._registry import registry as default_registry
from ._retry import Retry

__all__ = [
    "DEFAULT_MAX_BATCH",
    "DEFAULT_WINDOW",
    "AsyncCollapsed",
    "Collapse",
    "Collapsed",
    "collapse",
]

K = TypeVar("K", bound=Hashable)
V = TypeVar("V")

DEFAULT_WINDOW = 0.01  # Hystrix's timerDelayInMilliseconds
DEFAULT_MAX_BATCH = 100
Scope = Literal["global", "request"]


def _key(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ConfigError(attribute.name, f"must be a non-empty string, got {value!r}")


def _scope(inst: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    if value not in ("global", "request"):
        raise ConfigError(attribute.name, f"must be 'global' or 'request', got {value!r}")


@attrs.frozen(kw_only=True)
class Collapse:
    """How calls to one batch function are collapsed (see the module docstring)."""

    key: str = attrs.field(validator=_key)
    window: float = attrs.field(default=DEFAULT_WINDOW, validator=seconds(positive=False))
    max_batch: int = attrs.field(default=DEFAULT_MAX_BATCH, validator=count(low=1))
    scope: Scope = attrs.field(default="global", validator=_scope)


class _FallbackFailed:
    __slots__ = ("error", "fallback_error")

    def __init__(self, error: BaseException, fallback_error: Exception) -> None:
        self.error = error
        self.fallback_error = fallback_error


class _Batch(Generic[K, V]):
    """Keys collected for one batch call and, once it ran, its outcome: the shared core."""

    __slots__ = ("done", "error", "full", "keys", "results", "signal", "task", "timer")

    def __init__(self) -> None:
        self.keys: dict[K, None] = {}  # insertion-ordered set
        self.results: Mapping[K, Any] | None = None
        self.error: BaseException | None = None
        self.full: Any = None  # sync: an Event set when the batch fills
        self.done: Any = None  # sync: an Event; async: a Future
        self.signal: Any = None
        self.task: Any = None
        self.timer: Any = None

    def add(self, key: K, max_batch: int) -> bool:
        """Add a caller's key; True when the batch is now full."""
        self.keys[key] = None
        return len(self.keys) >= max_batch

    def settle(self, dependency: str, outcome: Any) -> None:
        if not isinstance(outcome, Mapping):
            self.error = TypeError(
                f"collapse({dependency!r}): the batch function must return a mapping of key "
                f"to value, got {type(outcome).__name__}"
            )
        else:
            self.results = outcome

    def value(self, dependency: str, key: K) -> V:
        if self.error is not None:
            raise self.error
        assert self.results is not None
        try:
            value = self.results[key]
        except KeyError:
            raise KeyError(key) from None
        if isinstance(value, _FallbackFailed):
            raise FallbackFailedError(
                dependency, value.error, value.fallback_error
            ) from value.fallback_error
        result: V = value
        return result


class _Slot:
    """Where the batch being filled is kept: one per collapser, or per request scope."""

    __slots__ = ("pending",)

    def __init__(self) -> None:
        self.pending: Any = None  # sync: a _Batch; async: {loop: _Batch}


def _interrupted(dependency: str, exc: BaseException) -> RuntimeError:
    """What the other callers of a batch get when its thread was interrupted (KeyboardInterrupt,
    SystemExit): an error they can handle; the interrupt itself stays with its own thread."""
    error = RuntimeError(f"collapse({dependency!r}): the batch call was interrupted ({exc!r})")
    error.__cause__ = exc
    return error


def _handled() -> BaseException | None:
    # The guard calls the fallback while it handles the batch's failure: that is the error.
    return sys.exc_info()[1]


def _per_key_fallback(fallback: Any, is_async: bool) -> Any:
    """The guard's fallback for a whole batch, built from a per-key one."""
    if fallback is MISSING:
        return MISSING
    if not callable(fallback):
        return lambda keys: dict.fromkeys(keys, fallback)

    def each(keys: list[Any]) -> dict[Any, Any]:
        error = _handled()
        out: dict[Any, Any] = {}
        for k in keys:
            try:
                out[k] = fallback(k)
            except Exception as exc:
                out[k] = _FallbackFailed(error or exc, exc)
        return out

    async def each_async(keys: list[Any]) -> dict[Any, Any]:
        error = _handled()
        out: dict[Any, Any] = {}
        for k in keys:
            try:
                value = fallback(k)
                out[k] = await value if inspect.isawaitable(value) else value
            except Exception as exc:
                out[k] = _FallbackFailed(error or exc, exc)
        return out

    return each_async if is_async else each


class _Collapser(Generic[K, V]):
    """What the sync and async collapsers share: config, guard, and where batches wait."""

    def __init__(self, config: Collapse, fn: Callable[..., Any], guard: Guard) -> None:
        self.config = config
        self.fn = fn
        self.guard = guard
        self.dependency = guard.dependency
        self._lock = threading.Lock()
        self._global = _Slot()
        self.__wrapped__ = fn
        self.__name__ = getattr(fn, "__name__", "collapsed")
        self.__doc__ = getattr(fn, "__doc__", None)

    def _slot(self) -> _Slot | None:
        """The slot for the running code (under the lock); None: do not collapse."""
        if self.config.scope == "global":
            return self._global
        scope = current_scope()
        if scope is None:
            return None
        slot = scope.memo.get((_Slot, self))
        if slot is None:
            slot = scope.memo[(_Slot, self)] = _Slot()
        return slot

    def __repr__(self) -> str:
        c = self.config
        return f"<collapse {c.key!r} {self.__name__} window={c.window} max_batch={c.max_batch}>"


class Collapsed(_Collapser[K, V]):
    """A sync batch function, collapsed: ``one(key)`` from any thread."""

    def __call__(self, keys: list[K]) -> Mapping[K, V]:
        """The batch function itself, as a protected call (no collapsing)."""
        return self.guard.call(self.fn, None, (list(keys),), {})  # type: ignore[no-any-return]

    def one(self, key: K) -> V:
        """The value for ``key``, fetched in a batch with the keys of concurrent callers."""
        config = self.config
        with self._lock:
            slot = self._slot()
            batch: _Batch[K, V] | None = None if slot is None else slot.pending
            leader = batch is None
            if batch is None:
                batch = _Batch()
                batch.full = threading.Event()
                batch.done = threading.Event()
                if slot is not None:
                    slot.pending = batch
            full = batch.add(key, config.max_batch)
            if full and slot is not None and slot.pending is batch:
                slot.pending = None  # closed: later callers start the next batch
        if not leader:
            if full:
                batch.full.set()
            batch.done.wait()
            return batch.value(config.key, key)
        try:
            if slot is not None and not full and config.window > 0:
                batch.full.wait(config.window)
            with self._lock:
                if slot is not None and slot.pending is batch:
                    slot.pending = None
            try:
                batch.settle(config.key, self.guard.call(self.fn, None, (list(batch.keys),), {}))
            except Exception as exc:
                batch.error = exc
        except BaseException as exc:  # interrupted: the others must not wait forever
            batch.error = _interrupted(config.key, exc)
            raise
        finally:
            batch.done.set()
        return batch.value(config.key, key)


class AsyncCollapsed(_Collapser[K, V]):
    """An async batch function, collapsed: ``await one(key)`` from coroutines."""

    def __init__(self, config: Collapse, fn: Callable[..., Any], guard: Guard) -> None:
        super().__init__(config, fn, guard)
        self._tasks: set[asyncio.Task[None]] = set()

    async def __call__(self, keys: list[K]) -> Mapping[K, V]:
        """The batch function itself, as a protected call (no collapsing)."""
        return await self.guard.acall(self.fn, None, (list(keys),), {})  # type: ignore[no-any-return]

    async def one(self, key: K) -> V:
        """The value for ``key``, fetched in a batch with the keys of concurrent callers."""
        config = self.config
        loop = asyncio.get_running_loop()
        with self._lock:
            slot = self._slot()
            pending: dict[asyncio.AbstractEventLoop, _Batch[K, V]] | None = None
            batch: _Batch[K, V] | None = None
            if slot is not None:
                if slot.pending is None:
                    slot.pending = {}
                pending = slot.pending
                batch = pending.get(loop)
            if batch is None:
                batch = _Batch()
                batch.done = loop.create_future()
                if pending is not None:
                    pending[loop] = batch
                    if config.window > 0:
                        batch.timer = loop.call_later(
                            config.window, self._flush, pending, loop, batch
                        )
                    else:
                        batch.timer = loop.call_soon(self._flush, pending, loop, batch)
            full = batch.add(key, config.max_batch)
        if pending is None or full:
            self._flush(pending, loop, batch)
        await asyncio.shield(batch.done)
        return batch.value(config.key, key)

    def _flush(
        self,
        pending: dict[asyncio.AbstractEventLoop, _Batch[K, V]] | None,
        loop: asyncio.AbstractEventLoop,
        batch: _Batch[K, V],
    ) -> None:
        """Close ``batch`` (once) and start its call."""
        with self._lock:
            if batch.task is not None:
                return
            if pending is not None and pending.get(loop) is batch:
                del pending[loop]
            batch.task = task = loop.create_task(self._run(batch))
            self._tasks.add(task)  # the loop keeps only a weak reference to a task
        task.add_done_callback(self._tasks.discard)
        if batch.timer is not None:
            batch.timer.cancel()

    async def _run(self, batch: _Batch[K, V]) -> None:
        try:
            outcome = await self.guard.acall(self.fn, None, (list(batch.keys),), {})
            batch.settle(self.config.key, outcome)
        except BaseException as exc:  # cancelled at shutdown too: every caller learns it
            batch.error = exc
            if not isinstance(exc, Exception):
                raise
        finally:
            if not batch.done.done():
                batch.done.set_result(None)


class _Decorator:
    def __init__(self, config: Collapse, options: dict[str, Any], registry: Registry | None):
        self.config = config
        self.options = options
        self.registry = registry

    @overload
    def __call__(
        self, fn: Callable[[list[K]], Awaitable[Mapping[K, V]]]
    ) -> AsyncCollapsed[K, V]: ...

    @overload
    def __call__(self, fn: Callable[[list[K]], Mapping[K, V]]) -> Collapsed[K, V]: ...

    def __call__(self, fn: Callable[..., Any]) -> Any:
        if not callable(fn):
            raise ConfigError("fn", f"collapse({self.config.key!r}) needs a function, got {fn!r}")
        is_async = inspect.iscoroutinefunction(fn)
        fallback = self.options["fallback"]
        if not is_async and inspect.iscoroutinefunction(fallback):
            raise ConfigError("fallback", f"{fn!r} is sync; its fallback cannot be a coroutine")
        # not ``registry or ...``: an empty Registry is falsy (it has a __len__)
        registry = self.registry if self.registry is not None else default_registry()
        dependency = registry.dependency(self.config.key)
        guard = dependency.guard(
            fallback=_per_key_fallback(fallback, is_async),
            ignore=self.options["ignore"],
            retry=self.options["retry"],
        )
        cls = AsyncCollapsed if is_async else Collapsed
        return cls(self.config, fn, guard)


def collapse(
    key: str,
    *,
    window: float = DEFAULT_WINDOW,
    max_batch: int = DEFAULT_MAX_BATCH,
    scope: Scope = "global",
    fallback: Any = MISSING,
    ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
    retry: Retry | None = None,
    registry: Registry | None = None,
) -> _Decorator:
    """Collapse one-key calls into batch calls of the decorated batch function.

    Args:
        key: the dependency key the batch call is protected under.
        window: seconds a batch stays open after its first caller (default 10 ms).
        max_batch: distinct keys in one batch; a full batch goes at once.
        scope: ``"global"`` or ``"request"`` (per ``request_scope()``).
        fallback: per caller: a static value, or a function of one key.
        ignore / retry: as for ``protect``, applied to the batch call.
        registry: the registry to use instead of the default one.
    """
    config = Collapse(key=key, window=window, max_batch=max_batch, scope=scope)
    if isinstance(ignore, type):
        ignore = (ignore,)
    options = {"fallback": fallback, "ignore": ignore, "retry": retry}
    return _Decorator(config, options, registry)
