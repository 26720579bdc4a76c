"""``/nullspace/v1/sandboxes``: create, exec (shell, argv or background), destroy."""

from __future__ import annotations

import shlex
from datetime import datetime
from typing import Any

from fastapi import APIRouter, Response
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import WARM_HEADER, NullspaceError
from hutch.core.errors import InvalidInput
from hutch.core.sandboxes import ExecCommand, SandboxCreate
from hutch.store.models import SandboxRecord

__all__ = ["TEMPLATES", "router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    status: {"model": NullspaceError, "description": description}
    for status, description in {
        400: "A field of the request is wrong.",
        401: "Missing, invalid or revoked bearer token.",
        403: "A sandbox access token, used beyond its own sandbox's allowed routes.",
        404: "No such sandbox (or not yours).",
        409: "The sandbox's status forbids this now.",
        413: "The request body is over the size limit.",
        429: "Over your cap of running sandboxes.",
        503: "The sandbox or the database cannot be reached.",
    }.items()
}
router = APIRouter(prefix="/v1/sandboxes", tags=["nullspace"], responses=_ERRORS)

TEMPLATES = {"base": "devbox:1", "node": "node"}
"""Nullspace templates and the hutch images they run."""
DEFAULT_TIMEOUT_MS = 300_000


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class CreateBody(_Body):
    template: str = Field(default="base", max_length=64, description="base or node.")
    timeout_ms: int = Field(default=DEFAULT_TIMEOUT_MS, description="Destroyed after this long.")
    name: str | None = Field(default=None, max_length=63)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)


class TimeoutBody(_Body):
    timeout_ms: int = Field(description="From now; extends or shortens the sandbox's life.")


class ExecBody(_Body):
    command: str = Field(min_length=1, max_length=131072)
    shell: bool = Field(default=False, description="Run through /bin/sh -c; else split argv.")
    timeout_secs: float | None = Field(default=None, gt=0)
    background: bool = Field(default=False, description="Answer at once with a handle.")
    cwd: str | None = Field(default=None, max_length=4096)
    env: dict[str, str] = Field(default_factory=dict, max_length=256)


class SandboxOut(BaseModel):
    id: str
    name: str
    template: str
    status: str
    created_at: datetime
    expires_at: datetime | None

    @classmethod
    def of(cls, record: SandboxRecord) -> SandboxOut:
        template = next((t for t, image in TEMPLATES.items() if image == record.rootfs),
                        record.rootfs)  # fmt: skip
        return cls(id=record.id, name=record.name, template=template, status=record.status,
                   created_at=record.created_at, expires_at=record.expires_at)  # fmt: skip


class SandboxList(BaseModel):
    sandboxes: list[SandboxOut]
    total: int


class ExecOut(BaseModel):
    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None = Field(description="Why there is no exit code (a timeout, say).")
    duration_ms: int


class ProcessOut(BaseModel):
    background: bool = True
    process_id: str
    pid: int
    command: str
    log_path: str = Field(description="The file inside the sandbox that gets its output.")


class HostBody(_Body):
    port: int = Field(description="The port the sandbox serves on.")


class HostOut(BaseModel):
    host: str
    url: str
    websocket_url: str
    access_token_expires_at: datetime


class Deleted(BaseModel):
    id: str
    status: str


def _command(body: ExecBody) -> ExecCommand:
    if body.shell:
        return ExecCommand(cmd=body.command, cwd=body.cwd, env=body.env,
                           timeout_s=body.timeout_secs)  # fmt: skip
    try:
        argv = shlex.split(body.command)
    except ValueError as exc:
        raise InvalidInput(f"cannot split the command: {exc}", field="command") from None
    if not argv:
        raise InvalidInput("command must not be empty", field="command")
    return ExecCommand(cmd=argv[0], args=argv[1:], cwd=body.cwd, env=body.env,
                       timeout_s=body.timeout_secs)  # fmt: skip


@router.post("", summary="Create a sandbox", status_code=201)
async def create_sandbox(
    body: CreateBody, user: CurrentUser, services: ServicesDep, response: Response
) -> SandboxOut:
    """Destroyed when ``timeout_ms`` runs out (``POST …/timeout`` changes that).
    ``X-Hutch-Warm: 1`` when it came from the host's warm pool."""
    rootfs = TEMPLATES.get(body.template)
    if rootfs is None:
        known = ", ".join(TEMPLATES)
        raise InvalidInput(f"unknown template {body.template!r}; one of {known}",
                           field="template")  # fmt: skip
    created = await services.sandboxes.create_reporting(
        user,
        SandboxCreate(
            shape=services.settings.shapes[0].id,
            rootfs=rootfs,
            name=body.name,
            envs=body.env,
            timeout_s=body.timeout_ms / 1000,
        ),
    )
    response.headers[WARM_HEADER] = "1" if created.warm else "0"
    return SandboxOut.of(created.record)


@router.get("", summary="List sandboxes")
async def list_sandboxes(user: CurrentUser, services: ServicesDep, page: PageParams) -> SandboxList:
    records, total = await services.sandboxes.list_sandboxes(
        user, status=None, limit=page.limit, offset=page.offset
    )
    return SandboxList(sandboxes=[SandboxOut.of(r) for r in records], total=total)


@router.get("/{sandbox_id}", summary="Get a sandbox")
async def get_sandbox(sandbox_id: str, user: CurrentUser, services: ServicesDep) -> SandboxOut:
    return SandboxOut.of(await services.sandboxes.get(user, sandbox_id))


@router.post("/{sandbox_id}/timeout", summary="Set how long the sandbox has left")
async def set_timeout(
    sandbox_id: str, body: TimeoutBody, user: CurrentUser, services: ServicesDep
) -> SandboxOut:
    record = await services.sandboxes.set_timeout(user, sandbox_id, body.timeout_ms / 1000)
    return SandboxOut.of(record)


@router.post("/{sandbox_id}/exec", summary="Run a command")
async def exec_command(
    sandbox_id: str, body: ExecBody, user: CurrentUser, services: ServicesDep
) -> ExecOut | ProcessOut:
    """``shell: true`` runs ``command`` with /bin/sh; otherwise it is split like a shell
    would (quotes kept together) and run directly. ``background: true`` answers at once
    with a handle; the process keeps running after the request."""
    command = _command(body)
    if body.background:
        spawned = await services.sandboxes.spawn(user, sandbox_id, command)
        return ProcessOut(process_id=spawned.id, pid=spawned.pid, command=body.command,
                          log_path=spawned.log_path)  # fmt: skip
    result = await services.sandboxes.exec(user, sandbox_id, command)
    return ExecOut(stdout=result.stdout, stderr=result.stderr, exit_code=result.exit_code,
                   error=result.error, duration_ms=result.exec_ms)  # fmt: skip


@router.post("/{sandbox_id}/host", summary="Expose a port as a preview URL")
async def expose_port(
    sandbox_id: str, body: HostBody, user: CurrentUser, services: ServicesDep
) -> HostOut:
    """A URL that needs no header: the token is in the host name. It stops working when it
    expires or the sandbox is paused or destroyed."""
    record = await services.sandboxes.get(user, sandbox_id)
    preview = await services.previews.expose(record, body.port)
    return HostOut(host=preview.host, url=preview.url, websocket_url=preview.websocket_url,
                   access_token_expires_at=preview.expires_at)  # fmt: skip


@router.delete("/{sandbox_id}", summary="Destroy a sandbox")
async def delete_sandbox(sandbox_id: str, user: CurrentUser, services: ServicesDep) -> Deleted:
    record = await services.sandboxes.destroy(user, sandbox_id)
    return Deleted(id=record.id, status=record.status)
