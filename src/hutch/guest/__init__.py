"""The in-sandbox agent (standard library only). See :mod:`hutch.guest.agent`.

Inside a sandbox this package is ``guest`` (the directory is bind-mounted read-only at
``/.hutch/guest``), so its modules import one another relatively and never as ``hutch.…``.
"""

__all__ = ["bootstrap"]


def bootstrap(parent: str) -> str:
    """The ``python3 -S -E -s -c`` program that starts the agent from ``parent``, the
    directory holding this package; the agent's own options follow it on the command line.

    ``parent`` goes at the end of the path, and the working directory (``-c`` puts it
    first) comes off it, so no file a sandbox writes can shadow the standard library or
    the package. Imported, not run as a script, so precompiled ``.pyc`` files are
    used (inside a sandbox the package is read-only: a script would be compiled again at
    every start).
    """
    return (
        f"import sys; sys.path[:] = [*filter(None, sys.path), {parent!r}]; "
        "from guest import agent; agent.main()"
    )
