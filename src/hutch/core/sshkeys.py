"""OpenSSH public keys, as users give them: checked, normalised and deduplicated.

A key is kept as one ``authorized_keys`` line, ``"<type> <base64> [comment]"``, and nothing
else: no ``authorized_keys`` options (``command=…``, ``from=…``), no second line, no control
characters. That makes every stored key safe to write into a sandbox's ``authorized_keys``
as it is. The key material itself is parsed (the algorithm in the blob must match the type
written before it, RSA keys must have at least 2048 bits), so a truncated or mistyped key is
refused when it is given, not when someone tries to log in with it.
"""

from __future__ import annotations

import base64
import binascii
import re
from collections.abc import Iterable

from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.hazmat.primitives.serialization import load_ssh_public_key

from hutch.core.errors import InvalidInput

__all__ = [
    "KEY_TYPES",
    "MAX_KEYS",
    "MAX_KEY_CHARS",
    "merge_keys",
    "normalise_key",
    "normalise_keys",
]

MAX_KEYS = 32
"""The most keys one sandbox holds."""
MAX_KEY_CHARS = 8192
MIN_RSA_BITS = 2048

# Types ``cryptography`` parses fully; the security-key types it does not know are parsed
# here (their blob is: type, then the curve or key, then the application string).
_PARSED = ("ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
           "ecdsa-sha2-nistp521")  # fmt: skip
_SECURITY_KEY = {
    "sk-ssh-ed25519@openssh.com": 3,  # type, key, application
    "sk-ecdsa-sha2-nistp256@openssh.com": 4,  # type, curve, point, application
}
KEY_TYPES = (*_PARSED, *_SECURITY_KEY)
_COMMENT_BAD = re.compile(r"[\x00-\x1f\x7f]")


def normalise_key(text: str, *, field: str = "ssh_pubkeys") -> str:
    """``text`` as ``"<type> <base64> [comment]"``, or :class:`InvalidInput` saying why not.

    Surrounding whitespace and runs of blanks are dropped; the base64 is re-encoded in its
    canonical form; a comment is kept (blanks inside it become single spaces)."""
    if not isinstance(text, str) or not text.strip():
        raise InvalidInput("an SSH public key must not be empty", field=field)
    if len(text) > MAX_KEY_CHARS:
        raise InvalidInput(f"an SSH public key is at most {MAX_KEY_CHARS} characters",
                           field=field)  # fmt: skip
    if "\n" in text.strip() or "\r" in text.strip():
        raise InvalidInput("give one SSH public key per list item, on one line", field=field)
    parts = text.split()
    shown = _shown(text)
    if parts[0] not in KEY_TYPES:
        if any(part in KEY_TYPES for part in parts[1:]) or "=" in parts[0]:
            raise InvalidInput(
                f"{shown}: authorized_keys options (such as command= or from=) are not "
                "accepted; give the key alone",
                field=field,
            )
        raise InvalidInput(
            f"{shown}: not an OpenSSH public key; it should start with one of "
            f"{', '.join(KEY_TYPES)}",
            field=field,
        )
    if len(parts) < 2:
        raise InvalidInput(f"{shown}: the key data after {parts[0]!r} is missing", field=field)
    key_type, encoded, comment = parts[0], parts[1], " ".join(parts[2:])
    try:
        blob = base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidInput(f"{shown}: the key data is not valid base64", field=field) from None
    _check_blob(key_type, blob, shown=shown, field=field)
    if _COMMENT_BAD.search(comment):
        raise InvalidInput(f"{shown}: the comment has control characters", field=field)
    canonical = f"{key_type} {base64.b64encode(blob).decode()}"
    return f"{canonical} {comment}" if comment else canonical


def normalise_keys(texts: Iterable[str], *, field: str = "ssh_pubkeys") -> list[str]:
    """Every key normalised, duplicates (the same type and key, whatever the comment)
    dropped, first one kept, order kept; more than :data:`MAX_KEYS` is refused."""
    return merge_keys([], texts, field=field)


def merge_keys(
    existing: Iterable[str], added: Iterable[str], *, field: str = "ssh_pubkeys"
) -> list[str]:
    """``existing`` (already normalised) followed by the new keys of ``added``."""
    keys = list(existing)
    seen = {_identity(key) for key in keys}
    for text in added:
        key = normalise_key(text, field=field)
        identity = _identity(key)
        if identity in seen:
            continue
        seen.add(identity)
        keys.append(key)
    if len(keys) > MAX_KEYS:
        raise InvalidInput(f"a sandbox holds at most {MAX_KEYS} SSH keys", field=field)
    return keys


def _identity(key: str) -> tuple[str, str]:
    key_type, encoded, *_ = key.split(" ", 2)
    return key_type, encoded


def _check_blob(key_type: str, blob: bytes, *, shown: str, field: str) -> None:
    fields = _fields(blob)
    if not fields or fields[0] != key_type.encode():
        found = fields[0].decode("ascii", "replace") if fields else "nothing readable"
        raise InvalidInput(
            f"{shown}: the key data is not a {key_type} key (it holds {found!r}); "
            "was it cut or pasted wrong?",
            field=field,
        )
    if key_type in _SECURITY_KEY:
        if len(fields) != _SECURITY_KEY[key_type]:
            raise InvalidInput(f"{shown}: the key data is incomplete", field=field)
        return
    try:
        key = load_ssh_public_key(f"{key_type} {base64.b64encode(blob).decode()}".encode())
    except (ValueError, TypeError) as exc:
        raise InvalidInput(f"{shown}: the key data is not a valid key ({exc})",
                           field=field) from None  # fmt: skip
    if isinstance(key, rsa.RSAPublicKey) and key.key_size < MIN_RSA_BITS:
        raise InvalidInput(
            f"{shown}: an RSA key must have at least {MIN_RSA_BITS} bits (this one has "
            f"{key.key_size})",
            field=field,
        )


def _fields(blob: bytes) -> list[bytes] | None:
    """The length-prefixed strings of an SSH wire blob, or None if it does not parse."""
    fields = []
    at = 0
    while at < len(blob):
        if at + 4 > len(blob):
            return None
        size = int.from_bytes(blob[at : at + 4], "big")
        at += 4
        if at + size > len(blob):
            return None
        fields.append(blob[at : at + size])
        at += size
    return fields


def _shown(text: str) -> str:
    """Enough of a key to recognise it in an error message."""
    flat = " ".join(text.split())
    return repr(flat if len(flat) <= 40 else flat[:37] + "...")
