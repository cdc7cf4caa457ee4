"""The call's flow: what follows each attempt, decided without IO (tenacity's ``iter()``).

One caller call is a loop of attempts (``_sync.run`` / ``_async.run``). After each one,
:func:`after` turns its outcome into the next step and the drivers only carry it out:

- ``RETURN`` the value: a success, or a result the retries gave up on;
- ``RAISE`` it: an ignored exception (counted as thrown to the caller);
- ``FALLBACK``: hand the error to the fallback step (``_fallback``), recorded by
  :func:`recorder`;
- ``RETRY`` after sleeping the value's seconds (the attempt is counted as retried).

An attempt refused before it ran (open circuit, full bulkhead, no token: ``RejectedError``) is
handed in as ``REFUSED`` and goes to the fallback, never retried. The decisions read the call
site (``Guard``: retry, fallback, ignored errors), the call's deadline and, under a FIT recipe,
the tagged call (``TaggedCall``) whose routes recorded the attempts. A plain function over the
call's state rather than an object: the drivers keep that state in locals, so the loop costs a
call nothing it did not cost when each driver spelled the decisions out.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from ._fallback import thrown
from ._window import IGNORED, SUCCESS

if TYPE_CHECKING:
    from ._dependency import Dependency
    from ._experiment import TaggedCall
    from ._guard import Guard
    from ._record import Recorder
    from ._retry import Retrier

__all__ = ["FALLBACK", "RAISE", "REFUSED", "RETRY", "RETURN", "Attempt", "after", "recorder"]

RETURN, RAISE, FALLBACK, RETRY = range(4)
REFUSED = -1  # not a window outcome: the attempt was refused before it ran

# An attempt: (dependency, fn, args, kwargs, ignore, seconds it may take, call deadline) ->
# (outcome, value or error); a refusal raises ``RejectedError``.
Attempt = Callable[..., tuple[int, Any]]


def after(
    guard: Guard,
    tc: TaggedCall | None,
    retrier: Retrier | None,
    outcome: int,
    value: Any,
    deadline_at: float | None,
) -> tuple[int, Any, Retrier | None]:
    """The step after an attempt of a call through ``guard`` that ended in ``outcome``.

    ``value`` is the attempt's result or error; ``tc`` the tagged call, under a FIT recipe;
    ``retrier`` the call's retry decisions so far (None before the first one that may retry);
    ``deadline_at`` the clock time the whole call must end by. Returns ``(RETURN, result)``,
    ``(RAISE, error)``, ``(FALLBACK, error)`` or ``(RETRY, seconds to wait)``, and the retrier
    to hand in after the next attempt. The attempt was recorded by :func:`recorder`, and so is
    what follows it (retries, the fallback, an exception thrown).
    """
    if outcome == REFUSED:
        return FALLBACK, value, retrier
    if outcome == SUCCESS and guard.on_result is None:
        return RETURN, value, retrier  # no result is retried: no retrier needed
    rec = guard.dependency if tc is None else tc.rec
    if outcome == IGNORED:
        return RAISE, thrown(rec, value), retrier
    if retrier is None:
        retrier = guard.retrier() if tc is None else tc.retrier(guard)
    clock = guard.dependency._clock
    if outcome == SUCCESS:
        if retrier is None or not retrier.wants(value):
            return RETURN, value, retrier
        wait = retrier.after_result(value, clock(), deadline_at)
        if wait is None:
            rec._retries_stopped(retrier)
            return RETURN, value, retrier
    else:
        wait = None if retrier is None else retrier.after_error(value, clock(), deadline_at)
        if wait is None:
            rec._retries_stopped(retrier)
            return FALLBACK, value, retrier
    rec._retrying(outcome)
    return RETRY, wait, retrier


def recorder(dep: Dependency, tc: TaggedCall | None) -> Recorder:
    """Who recorded a call's latest attempt: the dependency, or where a tagged call's route
    went (the dependency or the experiment's shadow)."""
    return dep if tc is None else tc.rec
