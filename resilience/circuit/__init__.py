"""Protected calls: circuit breakers, bulkheads, timeouts, retries and fallbacks (Hystrix-style).

One call is a short pipeline, each step its own module, with one sync and one async driver over
the same decisions: FIT (``_fit``) -> breaker (``_breaker``) -> rate limit (``_throttle``) ->
concurrency limit (``_bulkhead``) -> timeout (``_timeout``) -> run -> record (``_dependency``)
-> retry (``_retry``) -> fallback (``_fallback``); ``_sync`` and ``_async`` drive it.
"""

from ._breaker import State, StateChange
from ._bulkhead import ThreadBulkhead
from ._dependency import Dependency, Ticket
from ._fallback import MISSING
from ._guard import Guard
from ._policy import DEFAULT_POLICY, Policy
from ._protect import protect
from ._registry import Registry, registry, set_registry
from ._retry import NETWORK_ERRORS, Retry
from ._window import CALL_OUTCOMES, LATENCY_BOUNDS, OUTCOMES, WindowSnapshot

__all__ = [
    "CALL_OUTCOMES",
    "DEFAULT_POLICY",
    "LATENCY_BOUNDS",
    "MISSING",
    "NETWORK_ERRORS",
    "OUTCOMES",
    "Dependency",
    "Guard",
    "Policy",
    "Registry",
    "Retry",
    "State",
    "StateChange",
    "ThreadBulkhead",
    "Ticket",
    "WindowSnapshot",
    "protect",
    "registry",
    "set_registry",
]
