"""The FIT step, first in every call: a fault chosen by the active recipe replaces the function.

The fault wraps the function (raise, delay, or hang past the timeout), so the failure happens
*inside* the protected call and flows through the real breaker, limits, timeout, retry and
fallback. With no recipe active on the request this is one contextvar read. See
``resilience.context.FaultContext`` for what a FIT context answers.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from ..context import FIT

__all__ = ["inject_async", "inject_sync"]


def inject_sync(name: str, fn: Callable[..., Any], timeout: float) -> Callable[..., Any]:
    """``fn``, or the fault the active recipe chose for dependency ``name`` wrapped around it."""
    fit = FIT.get()
    if fit is not None:
        fault = fit.fault_for(name)
        if fault is not None:
            return fault.wrap_sync(fn, timeout)
    return fn


def inject_async(
    name: str, fn: Callable[..., Awaitable[Any]], timeout: float
) -> Callable[..., Awaitable[Any]]:
    """The coroutine-function counterpart of :func:`inject_sync`."""
    fit = FIT.get()
    if fit is not None:
        fault = fit.fault_for(name)
        if fault is not None:
            return fault.wrap_async(fn, timeout)
    return fn
