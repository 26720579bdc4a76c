"""Secrets at rest: AES-256-GCM under the instance's master key.

The master key comes from configuration (``HUTCH_DISK_MASTER_KEY``, 32 bytes in base64)
or from a key file, ``$HUTCH_HOME/master.key``, made with mode 0600 at first start. A
sealed value is ``v1:`` and base64 of a fresh 12-byte nonce followed by the ciphertext and
its tag; the caller's ``context`` (say, the row's id) is authenticated with it, so a
sealed value copied to another row does not open.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import os
import secrets
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

__all__ = ["MasterKeyUnavailable", "SealedBox", "load_master_key"]

_VERSION = "v1:"
KEY_BYTES = 32


class MasterKeyUnavailable(Exception):
    """No master key can be had; the message says why."""


class SealedBox:
    def __init__(self, key: bytes) -> None:
        if len(key) != KEY_BYTES:
            raise ValueError("the master key must be 32 bytes")
        self._aead = AESGCM(key)

    def seal(self, plaintext: bytes, *, context: str) -> str:
        nonce = secrets.token_bytes(12)
        sealed = nonce + self._aead.encrypt(nonce, plaintext, context.encode())
        return _VERSION + base64.b64encode(sealed).decode()

    def open(self, sealed: str, *, context: str) -> bytes:
        """Raises ``ValueError`` when the value is not ours or was tampered with."""
        if not sealed.startswith(_VERSION):
            raise ValueError("not a sealed value")
        try:
            raw = base64.b64decode(sealed[len(_VERSION) :], validate=True)
            return self._aead.decrypt(raw[:12], raw[12:], context.encode())
        except (binascii.Error, InvalidTag) as exc:
            raise ValueError("the sealed value does not open under this key") from exc


def load_master_key(configured: str | None, key_file: Path) -> bytes:
    """The configured key, else the key file's, else a new key file (mode 0600).

    Raises :class:`MasterKeyUnavailable` with the reason."""
    if configured:
        try:
            key = base64.b64decode(configured, validate=True)
        except binascii.Error:
            raise MasterKeyUnavailable("the configured master key is not base64") from None
        if len(key) != KEY_BYTES:
            raise MasterKeyUnavailable("the configured master key is not 32 bytes")
        return key
    try:
        return _read_key_file(key_file)
    except FileNotFoundError:
        pass
    key = secrets.token_bytes(KEY_BYTES)
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(key_file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return _read_key_file(key_file)  # another process made it first
    except OSError as exc:
        raise MasterKeyUnavailable(f"cannot create {key_file}: {exc.strerror}") from None
    try:
        with os.fdopen(fd, "w") as handle:
            handle.write(base64.b64encode(key).decode() + "\n")
    except OSError as exc:
        with contextlib.suppress(OSError):
            key_file.unlink()
        raise MasterKeyUnavailable(f"cannot write {key_file}: {exc.strerror}") from None
    return key


def _read_key_file(key_file: Path) -> bytes:
    try:
        text = key_file.read_text().strip()
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise MasterKeyUnavailable(f"cannot read {key_file}: {exc.strerror}") from None
    if key_file.stat().st_mode & 0o077:
        raise MasterKeyUnavailable(f"{key_file} must be readable by its owner only (chmod 600)")
    try:
        key = base64.b64decode(text, validate=True)
    except binascii.Error:
        raise MasterKeyUnavailable(f"{key_file} does not hold a base64 key") from None
    if len(key) != KEY_BYTES:
        raise MasterKeyUnavailable(f"{key_file} does not hold a 32-byte key")
    return key
