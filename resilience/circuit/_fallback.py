"""The fallback step, last in every call: what the caller gets when the call did not succeed.

A fallback is a static value or a callable taking the call's own arguments (for a coroutine
function it may be a coroutine function). No fallback: the caller gets the error itself, the
function's own exception unchanged or the library's typed one (``CircuitOpenError``,
``BulkheadFullError``, ``CallTimeoutError``...). A failing fallback raises
``FallbackFailedError`` chaining both errors.

Recorded per dependency: ``fallback_success`` / ``fallback_failure``, ``fallback_missing``
(a failure with no fallback configured, Hystrix's FALLBACK_MISSING) and ``exception_thrown``
(every exception the caller receives, Hystrix's EXCEPTION_THROWN).

A callable fallback runs while the call's error is being handled, as it would inside an
``except`` block: ``sys.exc_info()`` and ``logging.exception`` in it see that error, and an
exception it raises chains it (``__context__``).
"""

from __future__ import annotations

import inspect
from typing import TYPE_CHECKING, Any

from ..errors import FallbackFailedError
from ._window import EXCEPTION_THROWN, FALLBACK_FAILURE, FALLBACK_MISSING, FALLBACK_SUCCESS

if TYPE_CHECKING:
    from ._record import Recorder as Dependency  # the dependency, or an experiment's shadow

__all__ = ["MISSING", "fallback_async", "fallback_sync", "thrown"]


class _Missing:
    def __repr__(self) -> str:
        return "MISSING"


MISSING: Any = _Missing()


def thrown(dep: Dependency, exc: BaseException) -> BaseException:
    """Count an exception handed to the caller; returns it to raise."""
    dep.window.record(EXCEPTION_THROWN, dep._clock())
    return exc


def _missing(dep: Dependency, exc: Exception) -> Exception:
    now = dep._clock()
    dep.window.record(FALLBACK_MISSING, now)
    dep.window.record(EXCEPTION_THROWN, now)
    return exc


def _failed(dep: Dependency, exc: Exception, fb_exc: Exception) -> FallbackFailedError:
    # The fallback ran outside the handler of ``exc``: chain them as if it had run inside.
    if fb_exc is not exc and fb_exc.__context__ is None:
        fb_exc.__context__ = exc
    now = dep._clock()
    dep.window.record(FALLBACK_FAILURE, now)
    dep.window.record(EXCEPTION_THROWN, now)
    return FallbackFailedError(dep.name, exc, fb_exc)


def _served(dep: Dependency, value: Any) -> Any:
    dep.window.record(FALLBACK_SUCCESS, dep._clock())
    return value


def _static(dep: Dependency, fallback: Any, exc: Exception) -> Any:
    """No fallback (raise ``exc``) or a static value: the step's answer without a call."""
    if fallback is MISSING:
        raise _missing(dep, exc)
    return _served(dep, fallback)


def fallback_sync(
    dep: Dependency, fallback: Any, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The fallback's value for a call that ended in ``exc``, or raise."""
    if fallback is MISSING or not callable(fallback):
        return _static(dep, fallback, exc)
    try:
        raise exc
    except Exception:  # the fallback runs as if in the handler of ``exc`` (module docstring)
        try:
            value = fallback(*args, **kwargs)
        except Exception as fb_exc:
            raise _failed(dep, exc, fb_exc) from fb_exc
    return _served(dep, value)


async def fallback_async(
    dep: Dependency, fallback: Any, exc: Exception, args: tuple[Any, ...], kwargs: dict[str, Any]
) -> Any:
    """The coroutine counterpart of :func:`fallback_sync`; an awaitable result is awaited.
    (The call itself is mirrored, not shared: it must run, and be awaited, inside the
    handler of ``exc``.)"""
    if fallback is MISSING or not callable(fallback):
        return _static(dep, fallback, exc)
    try:
        raise exc
    except Exception:
        try:
            value = fallback(*args, **kwargs)
            if inspect.isawaitable(value):
                value = await value
        except Exception as fb_exc:
            raise _failed(dep, exc, fb_exc) from fb_exc
    return _served(dep, value)
