"""The ``protect`` decorator, built on wrapt so the wrapped function keeps its identity."""

from __future__ import annotations

import difflib
import functools
import inspect
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import wrapt

from ..errors import ConfigError
from ._fallback import MISSING
from ._guard import Guard
from ._hedge import Hedge
from ._hedging import check_hedge
from ._policy import Policy
from ._registry import Registry
from ._registry import registry as default_registry
from ._retry import Retry

__all__ = ["protect"]

P = ParamSpec("P")
R = TypeVar("R")

# Keywords of protect itself: they belong to one decorated function, not to the shared Policy.
PROTECT_KEYWORDS = ("fallback", "ignore", "retry", "deadline", "hedge", "policy", "registry")
# Names users reach for that mean something else here.
_REDIRECTS = {
    "retries": "to retry, pass retry=Retry(attempts={value!r}) (attempts count the first call)",
    "attempts": "to retry, pass retry=Retry(attempts={value!r})",
    "retry_on": "to choose what is retried, pass retry=Retry(on=...)",
    "exclude": "exceptions that are not failures go in ignore=(...)",
    "fallback_function": "pass the fallback as fallback=...",
    "adaptive_limit": "pass limit=AdaptiveLimit(...)",
    "rate": "pass rate_limit=RateLimit({value!r})",
    "retry_budget": "pass retry=Retry(budget=RetryBudget(...))",
}


def unknown_keyword(name: str, value: Any) -> ConfigError:
    """A ``ConfigError`` for a keyword neither protect nor Policy knows, with a suggestion."""
    redirect = _REDIRECTS.get(name)
    if redirect is not None:
        return ConfigError(name, f"is not a protect keyword; {redirect.format(value=value)}")
    fields = sorted(Policy.field_names())
    close = difflib.get_close_matches(name, [*PROTECT_KEYWORDS, *fields], n=1, cutoff=0.6)
    hint = ""
    if close:
        kind = "a protect keyword" if close[0] in PROTECT_KEYWORDS else "a Policy field"
        hint = f"; did you mean {close[0]!r} ({kind})?"
    return ConfigError(
        name,
        f"is neither a protect keyword ({', '.join(PROTECT_KEYWORDS)}) nor a Policy field{hint}",
    )


class _Protected(wrapt.FunctionWrapper):  # type: ignore[type-arg]
    """A wrapt wrapper carrying its guard: attributes set on a plain wrapper would be set on the
    wrapped object (a bound method refuses them)."""

    @property
    def __resilience_guard__(self) -> Guard:
        return self._self_guard  # type: ignore[no-any-return]


def protect(
    name: str,
    *,
    fallback: Any = MISSING,
    ignore: type[BaseException] | tuple[type[BaseException], ...] = (),
    retry: Retry | None = None,
    deadline: float | None = None,
    hedge: Hedge | None = None,
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
            without fallback or retry (bad requests).
        retry: a ``Retry``; each attempt passes the breaker, rejections are never retried.
        deadline: seconds the whole call may take, every attempt, wait and back-off included
            (``timeout`` bounds each attempt). None: no bound beyond the attempts'.
        hedge: a ``Hedge``: race a slow (or failed) attempt with another; coroutine
            functions and sync functions under thread isolation only (``ConfigError`` for a
            sync function under ``isolation="semaphore"``).
        policy: a full ``Policy``; or give its fields as keywords (``timeout=0.5``,
            ``limit=AdaptiveLimit()``, ``rate_limit=RateLimit(100)``).
        registry: the registry to use instead of the default one (even an empty one).

    The decorated function keeps its signature, docstring, typing and
    ``inspect.iscoroutinefunction``. A fallback receives exactly the arguments the decorated
    function received (``self`` too, on a method defined with ``def``). Generator functions
    are refused (``ConfigError``): their iteration would run outside the protection.
    """
    fields = Policy.field_names()
    for key, value in options.items():
        if key not in fields:
            raise unknown_keyword(key, value)
    if registry is not None and not isinstance(registry, Registry):
        raise ConfigError("registry", f"must be a resilience.Registry, got {registry!r}")
    # ``is None``, never ``or``: a Registry with no dependency yet is empty, so falsy.
    reg = default_registry() if registry is None else registry
    dependency = reg.dependency(name, policy, **options)
    guard = Guard(
        dependency, fallback=fallback, ignore=ignore, retry=retry, deadline=deadline, hedge=hedge
    )

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
        if hedge is not None:
            check_hedge(dependency, is_async)
        if not is_async and inspect.iscoroutinefunction(fallback):
            raise ConfigError("fallback", f"{fn!r} is sync; its fallback cannot be a coroutine")
        if not is_async and dependency.policy.isolation == "thread":
            dependency._thread_pool()  # its workers start on the first call
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
            wrapper = _Protected(fn, guard.acall if is_async else guard.call)
            wrapper._self_guard = guard
            return wrapper  # type: ignore[no-any-return]
        wrapper.__resilience_guard__ = guard
        return wrapper  # type: ignore[no-any-return]

    return decorate
