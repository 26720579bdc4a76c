"""Many machines (issue 19): hosts join a control plane over PostgreSQL, creates are
placed on them, and each sandbox's requests go to the agent of the host it lives on.

- :mod:`hutch.cluster.membership`: join tokens, joining, heartbeats, draining, removing,
  and marking silent hosts ``dead``;
- :mod:`hutch.cluster.placement`: which host a create goes to;
- :mod:`hutch.cluster.joiner`: an agent's side (join, then heartbeat);
- :mod:`hutch.cluster.routing`: the control plane's side (which agent a request goes to);
- ``docs/cluster.md`` says how the pieces fit and what is not done.
"""
