"""The client side of hutch's raw upgrades: ``POST …/tunnel/{port}`` and ``POST …/shell``.

:func:`open_upgraded` sends the request with ``Connection: Upgrade`` and ``Upgrade:
tcp-tunnel`` over a socket of its own (HTTP/1.1, TLS for ``https`` URLs with ALPN pinned
to ``http/1.1``) and returns that socket once the server answers ``101``, with any bytes
that came right behind the answer. Any other answer is raised as the SDK's usual error
(404 :class:`~hutch.sdk.errors.NotFoundError`, 409 :class:`~hutch.sdk.errors.ConflictError`…).
"""

from __future__ import annotations

import socket
import ssl
from collections.abc import Mapping
from urllib.parse import quote

import httpx

from hutch.sdk import errors
from hutch.sdk._config import ClientConfig

__all__ = ["open_upgraded", "shell_path", "tunnel_path"]

MAX_HEAD = 64 * 1024


def tunnel_path(sandbox: str, port: int) -> str:
    return f"/v1/sandboxes/{quote(sandbox, safe='')}/tunnel/{port}"


def shell_path(sandbox: str) -> str:
    return f"/v1/sandboxes/{quote(sandbox, safe='')}/shell"


def open_upgraded(
    config: ClientConfig,
    path: str,
    *,
    subjects: Mapping[str, str],
    protocol: str = "tcp-tunnel",
) -> tuple[socket.socket, bytes]:
    """The raw socket after a ``101`` to ``POST path``, and the bytes already read past it.

    Blocking. The socket has no timeout once switched.
    """
    url = httpx.URL(config.api_url)
    if url.scheme not in ("http", "https") or not url.host:
        raise errors.ConfigurationError(f"cannot use the API URL {config.api_url!r}")
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        sock = socket.create_connection((url.host, port), timeout=config.timeout_s)
    except OSError as exc:
        raise errors.ServerUnavailableError(
            f"cannot reach hutch at {config.api_url}: {exc.strerror or exc}"
        ) from exc
    try:
        if url.scheme == "https":
            context = ssl.create_default_context()
            context.set_alpn_protocols(["http/1.1"])
            sock = context.wrap_socket(sock, server_hostname=url.host)
        target = url.raw_path.decode().split("?")[0].rstrip("/") + path
        host = url.netloc.decode()
        sock.sendall(
            (
                f"POST {target} HTTP/1.1\r\nHost: {host}\r\nX-Api-Key: {config.api_key}\r\n"
                f"Connection: Upgrade\r\nUpgrade: {protocol}\r\nContent-Length: 0\r\n"
                "User-Agent: hutch-cli\r\n\r\n"
            ).encode()
        )
        status, headers, rest = _read_head(sock)
        if status == 101:
            sock.settimeout(None)
            return sock, rest
        length = int(headers.get("content-length", "0") or 0)
        while len(rest) < min(length, MAX_HEAD):
            chunk = sock.recv(MAX_HEAD)
            if not chunk:
                break
            rest += chunk
    except OSError as exc:
        sock.close()
        raise errors.StreamError(f"the connection to {config.api_url} broke off: {exc}") from exc
    except BaseException:
        sock.close()
        raise
    sock.close()
    response = httpx.Response(
        status, headers=headers, content=rest[:length], request=httpx.Request("POST", url)
    )
    raise errors.from_response(response, subjects=subjects)


def _read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    buffer = b""
    while b"\r\n\r\n" not in buffer:
        if len(buffer) > MAX_HEAD:
            raise errors.StreamError("the server's answer has an oversized header")
        chunk = sock.recv(MAX_HEAD)
        if not chunk:
            raise errors.StreamError("the server closed the connection without an answer")
        buffer += chunk
    head, _, rest = buffer.partition(b"\r\n\r\n")
    status_line, *lines = head.decode("latin-1").split("\r\n")
    parts = status_line.split()
    if len(parts) < 2 or not parts[1].isdigit():
        raise errors.StreamError(f"not an HTTP answer: {status_line[:80]!r}")
    headers: dict[str, str] = {}
    for line in lines:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(parts[1]), headers, rest
