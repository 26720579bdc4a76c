"""The Ethereum libraries hutch uses, imported in one place, without their side effect.

py_ecc (pulled in by web3 and eth_account) raises the interpreter's recursion limit to
100,000 when it is imported. With that limit, a deeply nested JSON document (a request
body, a package.json) makes the C parser overflow the thread's stack and kill the
process instead of raising RecursionError. So everything of web3 and eth_account is
imported from here, and this module puts the limit back. It is heavy (≈0.5 s): import it
inside the functions that need it, not at the top of a module the server or CLI loads.
"""

from __future__ import annotations

import sys

_limit = sys.getrecursionlimit()
try:
    from eth_account import Account
    from eth_account.messages import encode_defunct
    from eth_typing import HexStr
    from eth_utils.address import to_checksum_address
    from web3 import Web3
    from web3.exceptions import TransactionNotFound, Web3Exception
finally:
    sys.setrecursionlimit(_limit)

__all__ = [
    "Account",
    "HexStr",
    "TransactionNotFound",
    "Web3",
    "Web3Exception",
    "encode_defunct",
    "to_checksum_address",
]
