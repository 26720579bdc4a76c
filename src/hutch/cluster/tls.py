"""TLS between a cluster's control planes and agents (``HUTCH_TLS_CERT``, ``HUTCH_TLS_KEY``,
``HUTCH_TLS_CA``: all three or none).

With them set, every hop of the cluster's own traffic is TLS, both ends checked against
the one CA:

- an agent serves its TCP port (``--listen``) with its certificate and **requires** a
  client certificate signed by the CA (the control plane's): anyone else is refused at
  the handshake, before a byte of HTTP; its home's unix socket stays as it is;
- a control plane serves its port with its certificate; a client certificate is asked
  for but not required (users' clients have none), and one that is presented must be
  signed by the CA;
- the control plane reaches agents (every request it passes on: exec and its streams,
  files, WebSockets, tunnels) over TLS with its certificate, checking the agent's
  certificate and its name (the host of the agent's URL) against the CA;
- an agent joins and heartbeats over ``https://`` with its certificate, checking the
  control plane's the same way.

The tokens stay: an agent still answers only requests with its host token, the control
plane accepts only joins with a join token and heartbeats with the host's token.
"""

from __future__ import annotations

import asyncio
import ssl
from collections.abc import Sequence
from socket import socket
from typing import Any

import uvicorn

from hutch.settings import Settings

__all__ = [
    "TlsOnTcpServer",
    "TlsUnusable",
    "client_context",
    "explain",
    "server_context",
    "tls_enabled",
    "unused_outside_cluster",
    "url_scheme",
    "uvicorn_tls",
]


def tls_enabled(settings: Settings) -> bool:
    return None not in (settings.tls_cert, settings.tls_key, settings.tls_ca)


def unused_outside_cluster(settings: Settings) -> str | None:
    """Why ``HUTCH_TLS_*`` cannot be honoured by a server that is not a cluster's part, or
    None: such a server speaks plain HTTP, and starting it anyway would let an operator
    believe the API is encrypted."""
    if not tls_enabled(settings) or settings.cluster:
        return None
    return (
        "HUTCH_TLS_CERT/KEY/CA secure a cluster's control plane and agents "
        "(HUTCH_CLUSTER=true, hutch control and hutch agent); this server would speak "
        "plain HTTP"
    )


class TlsUnusable(ValueError):
    """The HUTCH_TLS_* files cannot be read or do not fit together; the message says why."""


def url_scheme(settings: Settings) -> str:
    """``https`` for preview and ingress URLs served by a cluster's public entry with TLS
    (the control planes' port), else ``http``."""
    entry = settings.public_proxy_port and (settings.cluster or settings.control_url)
    return "https" if entry and tls_enabled(settings) else "http"


def _load(context: ssl.SSLContext, settings: Settings) -> ssl.SSLContext:
    assert settings.tls_cert is not None and settings.tls_ca is not None
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(settings.tls_cert), str(settings.tls_key))
        context.load_verify_locations(cafile=str(settings.tls_ca))
    except (OSError, ValueError) as exc:  # ssl.SSLError is an OSError
        raise TlsUnusable(
            f"cannot use HUTCH_TLS_CERT={settings.tls_cert}, HUTCH_TLS_KEY={settings.tls_key}, "
            f"HUTCH_TLS_CA={settings.tls_ca}: {exc}"
        ) from None
    return context


def client_context(settings: Settings) -> ssl.SSLContext:
    """For calling a peer: its certificate and name checked against the CA; ours shown."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # check_hostname, CERT_REQUIRED
    return _load(context, settings)


def server_context(settings: Settings, *, require_client: bool) -> ssl.SSLContext:
    """For serving: our certificate; the client's checked against the CA (required or not)."""
    context = _load(ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER), settings)
    context.verify_mode = ssl.CERT_REQUIRED if require_client else ssl.CERT_OPTIONAL
    return context


def uvicorn_tls(settings: Settings) -> dict[str, Any]:
    """uvicorn's settings for a cluster control plane's port (none without TLS)."""
    if not (settings.cluster and tls_enabled(settings)):
        return {}
    return {
        "ssl_certfile": str(settings.tls_cert),
        "ssl_keyfile": str(settings.tls_key),
        "ssl_ca_certs": str(settings.tls_ca),
        "ssl_cert_reqs": ssl.CERT_OPTIONAL,
    }


def explain(exc: BaseException) -> str:
    """A TLS failure said plainly (the CA, the name, or a peer that speaks no TLS)."""
    text = str(exc)
    if isinstance(exc, ssl.SSLCertVerificationError) or "CERTIFICATE_VERIFY_FAILED" in text:
        return (f"TLS: the peer's certificate is not trusted ({text}); HUTCH_TLS_CA must be "
                "the CA that signed it, and it must name the address used")  # fmt: skip
    if isinstance(exc, ssl.SSLError) or "SSL" in text:
        return f"TLS handshake failed ({text}); does the peer serve TLS with HUTCH_TLS_*?"
    return text


class TlsOnTcpServer(uvicorn.Server):
    """uvicorn serving ``tls_sockets`` with ``context`` and its other sockets as they are
    (an agent: TLS on its TCP port for the control plane, none on its home's unix socket;
    uvicorn's own ``ssl_*`` settings would apply to every socket)."""

    def __init__(
        self, config: uvicorn.Config, *, context: ssl.SSLContext, tls_sockets: Sequence[socket]
    ) -> None:
        super().__init__(config)
        self._context = context
        self._tls_sockets = list(tls_sockets)

    async def startup(self, sockets: list[socket] | None = None) -> None:
        plain = [s for s in sockets or () if s not in self._tls_sockets]
        await super().startup(sockets=plain)
        if not self.started:
            return
        config = self.config

        def create_protocol(_loop: asyncio.AbstractEventLoop | None = None) -> asyncio.Protocol:
            protocol: asyncio.Protocol = config.http_protocol_class(  # type: ignore[call-arg]
                config=config, server_state=self.server_state,
                app_state=self.lifespan.state, _loop=_loop,
            )  # fmt: skip
            return protocol

        loop = asyncio.get_running_loop()
        for sock in self._tls_sockets:
            server = await loop.create_server(
                create_protocol, sock=sock, ssl=self._context, backlog=config.backlog,
                ssl_handshake_timeout=10,
            )  # fmt: skip
            self.servers.append(server)
