"""Failure injection testing: recipes, signed request tags, injection, aiohttp glue, runner.

```python
from resilience import fit

fit.enable(secret=os.environ["FIT_SECRET"])          # off until a process enables it
app = web.Application(middlewares=[fit.middleware()])
app.add_routes(fit.routes())                           # the dependency list, for discovery
session = fit.client_session()                         # forwards the tag to the next service

with fit.active(fit.Recipe.load("ratings-down.yaml")): # tests, without HTTP
    assert render_page(1).status == 200
```
"""

from ._aiohttp import (
    DEPENDENCIES_PATH,
    client_session,
    dependencies_handler,
    middleware,
    outgoing_headers,
    routes,
    trace_config,
)
from ._discover import Discovery, discover
from ._faults import ActiveRecipe, ErrorFault, LatencyFault, TimeoutFault, stats
from ._recipe import TOXIC_TYPES, Expectation, FaultSpec, ProxySpec, Recipe, ToxicSpec
from ._runner import Plan, Progress, RunReport, Sample, check, run
from ._runtime import (
    FitConfig,
    activate,
    active,
    current_tag,
    disable,
    enable,
    enabled,
    tag_counts,
)
from ._tags import HEADER, Verdict, sign_tag, tag_headers, verify_tag
from ._toxiproxy import Injection, ToxiproxyClient

__all__ = [
    "DEPENDENCIES_PATH",
    "HEADER",
    "TOXIC_TYPES",
    "ActiveRecipe",
    "Discovery",
    "ErrorFault",
    "Expectation",
    "FaultSpec",
    "FitConfig",
    "Injection",
    "LatencyFault",
    "Plan",
    "Progress",
    "ProxySpec",
    "Recipe",
    "RunReport",
    "Sample",
    "TimeoutFault",
    "ToxicSpec",
    "ToxiproxyClient",
    "Verdict",
    "activate",
    "active",
    "check",
    "client_session",
    "current_tag",
    "dependencies_handler",
    "disable",
    "discover",
    "enable",
    "enabled",
    "middleware",
    "outgoing_headers",
    "routes",
    "run",
    "sign_tag",
    "stats",
    "tag_counts",
    "tag_headers",
    "trace_config",
    "verify_tag",
]
