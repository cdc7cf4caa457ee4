"""The ``switch`` decorator: run a function while a switch is on, else its ``off``."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable, Mapping
from typing import Any, ParamSpec, TypeVar

__all__ = ["switch_decorator"]

P = ParamSpec("P")
T = TypeVar("T")


def switch_decorator(
    enabled: Callable[..., bool],
    name: str,
    *,
    off: Any,
    default: bool,
    key: Callable[..., Any] | None,
    attrs: Callable[..., Mapping[str, Any]] | None,
) -> Callable[[Callable[P, T]], Callable[P, T]]:
    """See ``Flags.switch``; ``enabled`` is the flags' own ``enabled``."""

    def decide(args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
        k = None if key is None else key(*args, **kwargs)
        a = None if attrs is None else attrs(*args, **kwargs)
        return enabled(name, k, a, default=default)

    def decorate(fn: Callable[P, T]) -> Callable[P, T]:
        if inspect.iscoroutinefunction(fn):

            @functools.wraps(fn)
            async def async_wrapper(*args: Any, **kwargs: Any) -> Any:
                if decide(args, kwargs):
                    return await fn(*args, **kwargs)
                result = off(*args, **kwargs) if callable(off) else off
                if inspect.isawaitable(result):
                    result = await result
                return result

            return async_wrapper  # type: ignore[return-value]

        @functools.wraps(fn)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
            if decide(args, kwargs):
                return fn(*args, **kwargs)
            return off(*args, **kwargs) if callable(off) else off  # type: ignore[no-any-return]

        return wrapper

    return decorate
