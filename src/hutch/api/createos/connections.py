"""Connections into a sandbox: SSH keys, TCP tunnels and (in ``shells``) the raw shell.

``POST …/ssh-pubkeys {"keys": […]}`` adds OpenSSH public keys to root's authorized_keys.
``POST …/tunnel/{port}`` with ``Connection: Upgrade`` and ``Upgrade: tcp-tunnel`` answers
``101 Switching Protocols`` and from then on the socket carries raw TCP to ``port`` inside
the sandbox, both ways, with half-closes passed on (so ``ssh -o ProxyCommand='hutch
tunnel %h 22'`` works with no port exposed). Every refusal comes before the switch, as
JSend on a connection that stays HTTP: 401, 404 (missing or not yours), 409 (not running,
or nothing listens on the port), 400 (no upgrade asked for).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, ServicesDep
from hutch.api.envelopes import JSend, JSendFail
from hutch.api.upgrade import UpgradeResponse, require_upgrade
from hutch.core.sshkeys import MAX_KEYS

__all__ = ["SWITCHING", "router"]

router = APIRouter(
    prefix="/v1/sandboxes/{sandbox_id}",
    tags=["connections"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox's status forbids this now."},
    },
)

SWITCHING: dict[int | str, dict[str, object]] = {
    101: {
        "description": "Switching Protocols: the socket is raw from here on.",
        "content": {},
    }
}


class SshKeysIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    keys: list[str] = Field(
        max_length=MAX_KEYS,
        description="OpenSSH public keys (`ssh-ed25519 AAAA… comment`), one per item.",
    )


class SshKeyCount(BaseModel):
    count: int = Field(description="How many keys the sandbox has now.")


@router.post("/ssh-pubkeys", summary="Add SSH public keys for root")
async def add_ssh_keys(
    sandbox_id: str, body: SshKeysIn, user: CurrentUser, services: ServicesDep
) -> JSend[SshKeyCount]:
    """The keys are checked (a bad one is a 400 naming its index, `keys.1`), normalised
    and deduplicated, kept with the sandbox, and written into root's
    `/root/.ssh/authorized_keys` at once if it runs, else when it next starts."""
    count = await services.ssh.add_keys(user, sandbox_id, body.keys)
    return JSend(data=SshKeyCount(count=count))


@router.post(
    "/tunnel/{port}",
    summary="A raw TCP tunnel to a port inside the sandbox (HTTP Upgrade: tcp-tunnel)",
    status_code=101,
    response_class=UpgradeResponse,
    responses={**SWITCHING, 400: {"model": JSendFail, "description": "No upgrade asked for."}},
)
async def tunnel(
    sandbox_id: str,
    port: Annotated[int, Path(description="The TCP port inside the sandbox.")],
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
) -> UpgradeResponse:
    """Send `Connection: Upgrade`, `Upgrade: tcp-tunnel` (HTTP/1.1, empty body). After the
    101 the connection is the TCP connection to `port`: loopback first, so servers bound
    to 127.0.0.1 inside are reached too. A tunnel to port 22 starts the sandbox's sshd if
    none runs. One tunnel per connection."""
    require_upgrade(request)
    opened = await services.tunnels.open(user, sandbox_id, port)

    async def handler(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await services.tunnels.run(opened, reader, writer)

    async def abandon() -> None:
        opened.sock.close()

    return UpgradeResponse(handler, abandon=abandon)
