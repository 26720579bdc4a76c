"""The ``hutch`` command."""
