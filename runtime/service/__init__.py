"""The HTTP service behind ``agentwatch serve``.

Every route (``app``: runs and the telemetry routes; ``batches``: ``/v1/batches``) and
the OpenAPI document. May import everything below it (agents, batch, http, shared);
never the command line.
"""
