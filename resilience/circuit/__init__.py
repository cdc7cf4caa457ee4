"""Protected calls: circuit breakers, bulkheads, timeouts, retries and fallbacks (Hystrix-style),
and load control beyond Hystrix: adaptive concurrency limits, rate limits, retry budgets, hedged
calls and request collapsing.

One call is a short pipeline, each step its own module, with one sync and one async driver over
the same decisions: FIT (``_experiment``, ``_shadow``) -> breaker (``_breaker``) -> rate limit
(``_throttle``, ``_ratelimit``) -> concurrency limit (``_bulkhead``, ``_adaptive``) -> timeout
(``_timeout``) -> run -> record (``_record``) -> retry within its budget (``_retry``,
``_budget``) / hedge (``_hedging``, ``_hedge``) -> fallback (``_fallback``); ``_flow`` decides
what follows each attempt, ``_sync`` and ``_async`` drive it, ``_fast`` is the decorator's
closed-circuit fast path.
"""

from ._adaptive import ALGORITHMS, AdaptiveLimit, AdaptiveLimiter
from ._breaker import State, StateChange
from ._budget import RetryBudget
from ._bulkhead import ThreadBulkhead
from ._collapse import collapse
from ._dependency import HEDGE_OUTCOMES, Dependency, Ticket
from ._fallback import MISSING
from ._guard import Guard
from ._hedge import Hedge
from ._policy import DEFAULT_POLICY, Policy
from ._protect import protect
from ._ratelimit import RateLimit
from ._registry import Registry, registry, set_registry
from ._retry import NETWORK_ERRORS, Retry
from ._shadow import MAX_SHADOWS, SHADOW_IDLE
from ._window import CALL_OUTCOMES, LATENCY_BOUNDS, OUTCOMES, WindowSnapshot

__all__ = [
    "ALGORITHMS",
    "CALL_OUTCOMES",
    "DEFAULT_POLICY",
    "HEDGE_OUTCOMES",
    "LATENCY_BOUNDS",
    "MAX_SHADOWS",
    "MISSING",
    "NETWORK_ERRORS",
    "OUTCOMES",
    "SHADOW_IDLE",
    "AdaptiveLimit",
    "AdaptiveLimiter",
    "Dependency",
    "Guard",
    "Hedge",
    "Policy",
    "RateLimit",
    "Registry",
    "Retry",
    "RetryBudget",
    "State",
    "StateChange",
    "ThreadBulkhead",
    "Ticket",
    "WindowSnapshot",
    "collapse",
    "protect",
    "registry",
    "set_registry",
]
