"""Failure injection testing: recipes, signed request tags, injection, isolation, runner.

```python
from resilience import fit
from resilience.integrations.asgi import ResilienceMiddleware

fit.enable(secret=os.environ["FIT_SECRET"])          # off until a process enables it
app.add_middleware(ResilienceMiddleware)             # or wsgi / aiohttp / grpc: integrations

with fit.active(fit.Recipe.load("ratings-down.yaml")): # tests, without HTTP
    assert render_page(1).status == 200
```

The framework glue lives in ``resilience.integrations``; this package is framework-free. Its
carrier core (``server_request``, ``inject``, ``absorb_ack``, ``dependency_listing``) is what
those integrations adapt, and what glue for another framework would adapt too.
"""

from ._ack import ACK_HEADER, Ack, decode_ack, encode_ack
from ._carrier import (
    DEPENDENCIES_PATH,
    ServerRequest,
    absorb_ack,
    dependency_listing,
    extract,
    inject,
    outgoing_headers,
    propagates_to,
    server_request,
)
from ._discover import Discovery, discover
from ._faults import (
    DEFAULT_BULKHEAD_SHARE,
    ActiveRecipe,
    ErrorFault,
    LatencyFault,
    TimeoutFault,
    stats,
)
from ._hosts import PRIVATE_NETWORKS, HostPolicy
from ._recipe import (
    TOXIC_TYPES,
    Expectation,
    FaultSpec,
    ProxySpec,
    Recipe,
    ToxicSpec,
    resolve_error,
)
from ._report import SCHEMA_VERSION, RunReport, Sample
from ._runner import Plan, Progress, check, run
from ._runtime import (
    DEFAULT_MAX_ACTIVE,
    FitConfig,
    activate,
    active,
    active_requests,
    current_tag,
    disable,
    enable,
    enabled,
    tag_counts,
)
from ._tags import HEADER, Verdict, sign_tag, tag_headers, verify_tag
from ._toxiproxy import Injection, ToxiproxyClient

__all__ = [
    "ACK_HEADER",
    "DEFAULT_BULKHEAD_SHARE",
    "DEFAULT_MAX_ACTIVE",
    "DEPENDENCIES_PATH",
    "HEADER",
    "PRIVATE_NETWORKS",
    "SCHEMA_VERSION",
    "TOXIC_TYPES",
    "Ack",
    "ActiveRecipe",
    "Discovery",
    "ErrorFault",
    "Expectation",
    "FaultSpec",
    "FitConfig",
    "HostPolicy",
    "Injection",
    "LatencyFault",
    "Plan",
    "Progress",
    "ProxySpec",
    "Recipe",
    "RunReport",
    "Sample",
    "ServerRequest",
    "TimeoutFault",
    "ToxicSpec",
    "ToxiproxyClient",
    "Verdict",
    "absorb_ack",
    "activate",
    "active",
    "active_requests",
    "check",
    "current_tag",
    "decode_ack",
    "dependency_listing",
    "disable",
    "discover",
    "enable",
    "enabled",
    "encode_ack",
    "extract",
    "inject",
    "outgoing_headers",
    "propagates_to",
    "resolve_error",
    "run",
    "server_request",
    "sign_tag",
    "stats",
    "tag_counts",
    "tag_headers",
    "verify_tag",
]
