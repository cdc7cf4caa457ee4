"""requests glue: a ``requests.Session`` that forwards the FIT tag.

```python
from resilience.integrations import requests as fit_requests

session = fit_requests.instrument(requests.Session())
```

The session's transport adapters are wrapped, so every request the session sends, redirects
included, passes the check against ``fit.enable(propagate_to=...)`` on its own URL. Adapters
mounted after ``instrument`` are not wrapped: mount yours first. Downstream acknowledgements
are merged into the running request's.
"""

from __future__ import annotations

from typing import Any

import requests
from requests.adapters import BaseAdapter

from ..fit import ACK_HEADER, HEADER, absorb_ack, inject, propagates_to

__all__ = ["instrument"]


def _set(request: requests.PreparedRequest, name: str, value: str) -> None:
    request.headers[name] = value


class _TaggingAdapter(BaseAdapter):
    """Delegates to the adapter it wraps, adding the tag on the way out."""

    def __init__(self, inner: BaseAdapter) -> None:
        super().__init__()
        self.inner = inner

    def send(self, request: requests.PreparedRequest, *args: Any, **kwargs: Any) -> Any:
        if HEADER not in request.headers:
            inject(request, _set, request.url)
        elif not propagates_to(request.url):  # a redirect keeps the headers: never to a third party
            del request.headers[HEADER]
        response = self.inner.send(request, *args, **kwargs)
        if propagates_to(request.url):  # a third party's word is not taken
            absorb_ack(response.headers.get(ACK_HEADER))
        return response

    def close(self) -> None:
        self.inner.close()


def instrument(session: requests.Session) -> requests.Session:
    """Wrap ``session``'s adapters so its requests forward the tag; returns it; idempotent."""
    if not isinstance(session, requests.Session):
        raise TypeError(f"instrument() wants a requests.Session, got {session!r}")
    for prefix, adapter in list(session.adapters.items()):
        if not isinstance(adapter, _TaggingAdapter):
            session.mount(prefix, _TaggingAdapter(adapter))
    return session
