"""``python -m hutch`` is the ``hutch`` command."""

from hutch.cli.main import main

main()
