"""Protected calls: circuit breakers, bulkheads, timeouts, retries and fallbacks (Hystrix-style)."""

from ._breaker import State, StateChange
from ._bulkhead import ThreadBulkhead
from ._dependency import MISSING, Dependency, Guard, Ticket
from ._policy import DEFAULT_POLICY, Policy, Retry
from ._protect import protect
from ._registry import Registry, registry, set_registry
from ._window import LATENCY_BOUNDS, OUTCOMES, WindowSnapshot

__all__ = [
    "DEFAULT_POLICY",
    "LATENCY_BOUNDS",
    "MISSING",
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
