"""resilience: protected calls, a zone-replicated cache, runtime flags and failure injection."""

from . import errors, metrics
from .circuit import (
    AdaptiveLimit,
    Dependency,
    Hedge,
    Policy,
    RateLimit,
    Registry,
    Retry,
    RetryBudget,
    State,
    StateChange,
    collapse,
    protect,
    registry,
)
from .context import current_scope, request_scope
from .errors import (
    BulkheadFullError,
    CallTimeoutError,
    CircuitOpenError,
    ConfigError,
    FallbackFailedError,
    FaultInjectedError,
    LimitExceededError,
    RateLimitedError,
    RejectedError,
    ResilienceError,
)

__all__ = [
    "AdaptiveLimit",
    "BulkheadFullError",
    "CallTimeoutError",
    "CircuitOpenError",
    "ConfigError",
    "Dependency",
    "FallbackFailedError",
    "FaultInjectedError",
    "Hedge",
    "LimitExceededError",
    "Policy",
    "RateLimit",
    "RateLimitedError",
    "Registry",
    "RejectedError",
    "ResilienceError",
    "Retry",
    "RetryBudget",
    "State",
    "StateChange",
    "collapse",
    "current_scope",
    "errors",
    "metrics",
    "protect",
    "registry",
    "request_scope",
]
__version__ = "0.1.0"

metrics.install()
