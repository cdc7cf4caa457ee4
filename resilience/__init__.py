"""resilience: protected calls, a zone-replicated cache, runtime flags and failure injection."""

from . import errors, metrics
from .circuit import Dependency, Policy, Registry, Retry, State, StateChange, protect, registry
from .context import current_scope, request_scope
from .errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    FallbackFailedError,
    FaultInjectedError,
    RejectedError,
    ResilienceError,
)

__all__ = [
    "BulkheadFullError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "Dependency",
    "FallbackFailedError",
    "FaultInjectedError",
    "Policy",
    "Registry",
    "RejectedError",
    "ResilienceError",
    "Retry",
    "State",
    "StateChange",
    "current_scope",
    "errors",
    "metrics",
    "protect",
    "registry",
    "request_scope",
]
__version__ = "0.1.0"

metrics.install()
