"""Importing the Ethereum libraries without their side effect on the whole process.

py_ecc (pulled in by web3 and eth_account) raises the interpreter's recursion limit to
100,000 when it is imported. With that limit, a deeply nested JSON document (a request
body, a package.json) makes the C parser overflow the thread's stack and kill the
process instead of raising RecursionError. Every import of those libraries in hutch goes
through :func:`keeping_recursion_limit`, which puts the limit back.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager

__all__ = ["keeping_recursion_limit"]


@contextmanager
def keeping_recursion_limit() -> Iterator[None]:
    limit = sys.getrecursionlimit()
    try:
        yield
    finally:
        sys.setrecursionlimit(limit)
