"""Framework glue: FIT tags and the request scope in every common Python stack.

One module per framework, each importing its framework only when it is itself imported
(``pip install resilience[asgi|wsgi|httpx|requests|grpc]``); this package imports none of them.
Every module is a thin adapter over one core in ``resilience.fit`` (the tag codec, verification,
the request scope and the acknowledgement), reading and writing only headers or metadata:

- servers: ``asgi.ResilienceMiddleware`` (Starlette, FastAPI, Django ASGI),
  ``wsgi.ResilienceMiddleware`` (Flask, Django WSGI), ``aiohttp.middleware()``, and
  ``grpc.server_interceptor()`` / ``grpc.aio_server_interceptor()``: a request scope per
  request, a verified tag's recipe activated for it, and the acknowledgement on its response;
- clients: ``aiohttp.client_session()`` / ``aiohttp.trace_config()``, ``httpx.instrument(client)``,
  ``requests.instrument(session)``, ``grpc.client_interceptor()`` /
  ``grpc.aio_client_interceptor()``: the running request's tag goes to the hosts
  ``fit.enable(propagate_to=...)`` allows, and downstream acknowledgements come back.
"""

__all__: list[str] = []
