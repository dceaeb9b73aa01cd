"""The HTTP service behind ``agentwatch serve``.

Every route, one module per route family: ``app`` (``create_app``: the middlewares, the
runs, the telemetry routes), ``batches`` (``/v1/batches``), ``openapi`` (the document,
``/openapi.json``); ``state`` (what they read from the app). May import everything below
it (agents, batch, http, shared); never the command line.
"""
