"""The ``protect`` decorator, built on wrapt so the wrapped function keeps its identity."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from ..errors import ConfigError
from ._dependency import MISSING, Guard
from ._policy import Policy, Retry
from ._registry import Registry
from ._registry import registry as default_registry

__all__ = ["protect"]

P = ParamSpec("P")
R = TypeVar("R")


def protect(
    name: str,
    *,
    fallback: Any = MISSING,
    ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
    retry: Retry | None = None,
    policy: Policy | None = None,
    registry: Registry | None = None,
    **options: Any,
) -> Callable[[Callable[P, R]], Callable[P, R]]:
    """Protect a sync function or a coroutine function as dependency ``name``.

    Args:
        name: the dependency key; every decorator with the same key shares one breaker,
            bulkhead and set of metrics.
        fallback: a static value, or a callable taking the same arguments (for a coroutine
            function it may be a coroutine function). Not given: errors reach the caller.
        ignore: exception types raised to the caller without counting as failures and
            without fallback (bad requests).
        retry: a ``Retry``; each attempt passes the breaker, rejections are never retried.
        policy: a full ``Policy``; or give its fields as keywords (``timeout=0.5``).
        registry: the registry to use instead of the default one.

    The decorated function keeps its signature, docstring, typing and
    ``inspect.iscoroutinefunction``. A fallback receives exactly the arguments the decorated
    function received (``self`` too, on a method defined with ``def``).
    """
    if isinstance(ignore, type):
        ignore = (ignore,)
    dependency = (registry or default_registry()).dependency(name, policy, **options)
    guard = Guard(dependency, fallback=fallback, ignore=ignore, retry=retry)

    def decorate(fn: Callable[P, R]) -> Callable[P, R]:
        target: Any = fn
        descriptor = isinstance(target, (classmethod, staticmethod))
        if not (descriptor or callable(target)):
            raise ConfigError("fn", f"protect({name!r}) needs a function, got {fn!r}")
        inner = target.__func__ if descriptor else target
        if inspect.isgeneratorfunction(inner) or inspect.isasyncgenfunction(inner):
            raise ConfigError(
                "fn",
                f"protect({name!r}) cannot protect the generator function {fn!r}: errors "
                "raised while it is iterated would bypass the breaker, timeout and fallback. "
                "Protect a function that returns the whole result instead (return list(...)), "
                "or protect the call that fetches each page or item.",
            )
        is_async = inspect.iscoroutinefunction(inner)
        if not is_async and inspect.iscoroutinefunction(fallback):
            raise ConfigError("fallback", f"{fn!r} is sync; its fallback cannot be a coroutine")
        wrapper: Any
        if inspect.isfunction(fn):
            # Plain functions (and so methods, which receive ``self`` in args like any
            # argument) get a closure: a wrapt FunctionWrapper around a trivial function costs
            # ~0.9 us a call here (bench/circuit_overhead.py prints it), more than a whole
            # protected call.
            wrapper = guard.fast_async(fn) if is_async else guard.fast_sync(fn)
            functools.update_wrapper(wrapper, fn)
        else:
            # Bound methods, classmethod/staticmethod objects, callable instances, partials:
            # wrapt's FunctionWrapper binds them correctly and keeps their identity.
            wrapper = wrapt.FunctionWrapper(fn, guard.acall if is_async else guard.call)
        wrapper.__resilience_guard__ = guard
        return wrapper  # type: ignore[no-any-return]

    return decorate
