"""The HTTP API: one app, three dialects (CreateOS ``/v1``, Nullspace, deploy ``/agent``)."""
