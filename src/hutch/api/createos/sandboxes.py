"""``/v1/sandboxes``: lifecycle, exec and files, in the CreateOS dialect."""

from __future__ import annotations

import asyncio
import codecs
import json
from collections.abc import AsyncIterator
from datetime import datetime
from typing import Annotated, Any, Literal

from fastapi import APIRouter, Query, Request, Response
from fastapi.responses import StreamingResponse
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.egress import EgressRules
from hutch.api.createos.responses import AUTH_ERRORS, RATE_LIMITED
from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import WARM_HEADER, JSend, JSendFail, Page
from hutch.core.disks import DiskRef as DiskToMount
from hutch.core.previews import PreviewService
from hutch.core.sandboxes import ExecCommand, ExecResult, SandboxCreate, SandboxPatch, Transition
from hutch.host.guest import ExecExit, ExecOutput
from hutch.store.models import SandboxRecord

__all__ = ["router"]

router = APIRouter(
    prefix="/v1/sandboxes",
    tags=["sandboxes"],
    responses={
        **AUTH_ERRORS,
        404: {"model": JSendFail, "description": "No such sandbox (or not yours)."},
        409: {"model": JSendFail, "description": "The sandbox's status forbids this now."},
    },
)

HEARTBEAT_S = 5.0
POLL_AFTER_S = "1"


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class NetworkRef(_Body):
    id: str = Field(max_length=128)


class DiskRef(_Body):
    disk_id: str = Field(max_length=128)
    mount_path: str = Field(max_length=4096)
    sub_path: str | None = Field(default=None, max_length=4096)


class SandboxCreateBody(_Body):
    shape: str = Field(max_length=64, description="A shape id from GET /v1/shapes.")
    rootfs: str | None = Field(default=None, max_length=64, description="Default: devbox:1.")
    name: str | None = Field(default=None, max_length=63, description="Also the hostname.")
    disk_mib: int | None = Field(default=None, description="Default: the shape's.")
    networks: list[NetworkRef] = Field(default_factory=list, max_length=16)
    disks: list[DiskRef] = Field(default_factory=list, max_length=16)
    envs: dict[str, Annotated[str, Field(max_length=65536)]] = Field(
        default_factory=dict,
        max_length=1024,
        description="At most 64, a value at most 4 KiB, 64 KiB together. Values are never "
        "returned.",
    )
    egress: EgressRules | None = Field(default=None, description="Egress rules (see PUT egress).")
    ingress_enabled: bool = False
    auto_pause_after_seconds: int | None = Field(
        default=None,
        description="60 to 86400: pause after this long with no exec or file activity; "
        "null: never.",
    )
    ssh_pubkeys: list[Annotated[str, Field(max_length=8192)]] = Field(
        default_factory=list,
        max_length=256,
        description="OpenSSH public keys (normalised, duplicates dropped; at most 32).",
    )
    host_id: str | None = Field(default=None, max_length=64, description="Must be this host.")
    node_selector: dict[Annotated[str, Field(max_length=256)], Annotated[str, Field(
        max_length=256)]] = Field(default_factory=dict, max_length=64,
        description="Labels the host must carry (HUTCH_HOST_LABELS).")  # fmt: skip
    region: str | None = Field(default=None, max_length=64, description="Must be this region.")
    bandwidth_quota_bytes: int | None = Field(
        default=None, description="Only 0 or absent: a quota cannot be set at create."
    )
    auto_resume: bool = Field(
        default=False,
        description="Resume the sandbox when an exec, a file or a process request, or a "
        "request to one of its preview or ingress URLs, finds it paused (the request is held "
        "and then answered). With auto_pause_after_seconds, an idle sandbox costs only disk "
        "(gvisor) until it is used again.",
    )
    runtime: Literal["runc", "gvisor"] | None = Field(
        default=None,
        description="What runs it: runc (containers on the host's kernel) or gvisor (gVisor's "
        "user-space kernel; pause hibernates it). Default: HUTCH_DEFAULT_RUNTIME.",
    )


class SandboxPatchBody(_Body):
    name: str | None = Field(default=None, max_length=63)
    auto_pause_after_seconds: int | None = Field(default=None, description="60 to 86400.")
    disable_auto_pause: bool = Field(default=False, description="true: no auto-pause.")
    ingress_enabled: bool | None = None
    auto_resume: bool | None = Field(default=None, description="See create.")


class SandboxOut(BaseModel):
    id: str
    name: str
    status: str
    ip: str | None
    shape: str
    rootfs: str
    vcpu: int
    mem_mib: int
    disk_mib: int
    created_at: datetime
    running_at: datetime | None
    paused_at: datetime | None
    last_resumed_at: datetime | None
    destroyed_at: datetime | None
    spawn_ms: int | None
    envs: list[str] = Field(description="The names of the sandbox's environment variables.")
    egress: list[str]
    ingress_enabled: bool
    ingress_url_template: str | None = Field(
        description="Preview URL with a literal <port>; null until the preview proxy is set up."
    )
    auto_pause_after_seconds: int | None
    ssh_pubkeys: list[str]
    region: str
    forked_from: str | None
    bandwidth_ingress_bytes: int = Field(description="Bytes received; 0 until counted.")
    created_by: str | None
    reason: str | None = Field(description="Why the sandbox failed or is in error.")
    runtime: str = Field(description="runc or gvisor.")
    auto_resume: bool = Field(
        description="Resumed by an exec, file or process request, or a request to its URLs."
    )
    hibernated: bool = Field(
        description="Paused with its memory written to a snapshot (gvisor): it holds no "
        "memory on the host; resume carries on its processes."
    )
    fork_mode: str | None = Field(
        description="For a fork: processes (went on from the source's snapshot) or files (a "
        "fresh start on a copy of the source's disk)."
    )

    @classmethod
    def of(cls, record: SandboxRecord, previews: PreviewService) -> SandboxOut:
        return cls(
            id=record.id,
            name=record.name,
            status=record.status,
            ip=record.ip,
            shape=record.shape,
            rootfs=record.rootfs,
            vcpu=record.vcpu,
            mem_mib=record.mem_mib,
            disk_mib=record.disk_mib,
            created_at=record.created_at,
            running_at=record.running_at,
            paused_at=record.paused_at,
            last_resumed_at=record.last_resumed_at,
            destroyed_at=record.destroyed_at,
            spawn_ms=record.spawn_ms,
            envs=sorted(record.envs),
            egress=list(record.egress),
            ingress_enabled=record.ingress_enabled,
            ingress_url_template=previews.ingress_template(record),
            auto_pause_after_seconds=record.auto_pause_after_seconds,
            ssh_pubkeys=list(record.ssh_pubkeys or []),
            region=record.region,
            forked_from=record.forked_from,
            bandwidth_ingress_bytes=record.bandwidth_ingress_bytes or 0,
            created_by=record.created_by,
            reason=record.reason,
            runtime=record.runtime or "runc",
            auto_resume=bool(record.auto_resume),
            hibernated=bool(record.hibernated),
            fork_mode=record.fork_mode,
        )


class SandboxCreated(SandboxOut):
    bandwidth_quota_bytes: int = Field(description="-1: unmetered.")

    @classmethod
    def of_new(cls, record: SandboxRecord, previews: PreviewService) -> SandboxCreated:
        view = SandboxOut.of(record, previews)
        return cls(**view.model_dump(), bandwidth_quota_bytes=record.bandwidth_quota_bytes)


class SandboxDeleted(BaseModel):
    id: str
    status: str


class ExecBody(_Body):
    cmd: str = Field(min_length=1, max_length=131072,
                     description="Program to run; without args, a shell command line.")  # fmt: skip
    args: list[Annotated[str, Field(max_length=131072)]] | None = Field(
        default=None, max_length=4096, description="Arguments; given, cmd runs without a shell."
    )
    stdin: str | None = Field(default=None, max_length=10 * 1024 * 1024)
    env: dict[str, Annotated[str, Field(max_length=32768)]] = Field(
        default_factory=dict, max_length=256
    )
    cwd: str | None = Field(default=None, max_length=4096)
    timeout_secs: float | None = Field(default=None, gt=0)
    stream: bool = Field(default=False, description="The same as ?stream=true.")


class ExecResultOut(BaseModel):
    stdout: str
    stderr: str
    exit_code: int | None
    error: str | None


class ExecOut(BaseModel):
    result: ExecResultOut
    exec_ms: int

    @classmethod
    def of(cls, result: ExecResult) -> ExecOut:
        return cls(
            result=ExecResultOut(stdout=result.stdout, stderr=result.stderr,
                                 exit_code=result.exit_code, error=result.error),
            exec_ms=result.exec_ms,
        )  # fmt: skip


class FileWritten(BaseModel):
    bytes: int = Field(description="How many bytes the file now has.")
    path: str


def _command(body: ExecBody) -> ExecCommand:
    return ExecCommand(
        cmd=body.cmd,
        args=body.args,
        stdin=body.stdin.encode() if body.stdin is not None else None,
        env=body.env,
        cwd=body.cwd,
        timeout_s=body.timeout_secs,
    )


@router.post("", status_code=201, summary="Create a sandbox", responses=RATE_LIMITED)
async def create_sandbox(
    body: SandboxCreateBody, user: CurrentUser, services: ServicesDep, response: Response
) -> JSend[SandboxCreated]:
    """Start a sandbox and return it running, with ``spawn_ms``. Over the per-user cap: 429.
    The header ``X-Hutch-Warm`` is ``1`` when it came from the host's warm pool
    (``HUTCH_WARM_POOL``: prepared before the request, named and configured in place),
    ``0`` when it was started for this request."""
    created = await services.sandboxes.create_reporting(
        user,
        SandboxCreate(
            shape=body.shape,
            rootfs=body.rootfs,
            name=body.name,
            disk_mib=body.disk_mib,
            envs=body.envs,
            egress=body.egress or [],
            ingress_enabled=body.ingress_enabled,
            auto_pause_after_seconds=body.auto_pause_after_seconds,
            host_id=body.host_id,
            node_selector=body.node_selector,
            region=body.region,
            ssh_pubkeys=body.ssh_pubkeys,
            bandwidth_quota_bytes=body.bandwidth_quota_bytes,
            networks=[n.id for n in body.networks],
            disks=[
                DiskToMount(disk_id=d.disk_id, mount_path=d.mount_path, sub_path=d.sub_path or "")
                for d in body.disks
            ],
            runtime=body.runtime,
            auto_resume=body.auto_resume,
        ),
    )
    response.headers[WARM_HEADER] = "1" if created.warm else "0"
    return JSend(data=SandboxCreated.of_new(created.record, services.previews))


@router.get("", summary="List sandboxes")
async def list_sandboxes(
    user: CurrentUser,
    services: ServicesDep,
    page: PageParams,
    status: Annotated[
        str | None,
        Query(max_length=200, description="Comma-separated statuses; default: all live ones."),
    ] = None,
) -> JSend[Page[SandboxOut]]:
    records, total = await services.sandboxes.list_sandboxes(
        user, status=status, limit=page.limit, offset=page.offset
    )
    return JSend(
        data=Page.of(
            [SandboxOut.of(r, services.previews) for r in records],
            total=total,
            limit=page.limit,
            offset=page.offset,
        )
    )


@router.get("/by-ip/{ip}", summary="Find a sandbox by its address")
async def get_sandbox_by_ip(ip: str, user: CurrentUser, services: ServicesDep) -> JSend[SandboxOut]:
    return JSend(
        data=SandboxOut.of(await services.sandboxes.get_by_ip(user, ip), services.previews)
    )


@router.get("/{sandbox_id}", summary="Get a sandbox by id or name")
async def get_sandbox(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxOut]:
    return JSend(
        data=SandboxOut.of(await services.sandboxes.get(user, sandbox_id), services.previews)
    )


@router.patch("/{sandbox_id}", summary="Change a sandbox")
async def patch_sandbox(
    sandbox_id: str, body: SandboxPatchBody, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxOut]:
    """Rename it, change ``auto_pause_after_seconds`` (``disable_auto_pause: true`` turns it
    off) or ``ingress_enabled``. Fields left out stay as they are."""
    record = await services.sandboxes.patch(
        user,
        sandbox_id,
        SandboxPatch(
            name=body.name,
            auto_pause_after_seconds=body.auto_pause_after_seconds,
            disable_auto_pause=body.disable_auto_pause,
            ingress_enabled=body.ingress_enabled,
            auto_resume=body.auto_resume,
        ),
    )
    return JSend(data=SandboxOut.of(record, services.previews))


@router.delete("/{sandbox_id}", summary="Destroy a sandbox")
async def delete_sandbox(
    sandbox_id: str, user: CurrentUser, services: ServicesDep
) -> JSend[SandboxDeleted]:
    """Destroy it and everything of it on the host. Repeating it is harmless."""
    record = await services.sandboxes.destroy(user, sandbox_id)
    return JSend(data=SandboxDeleted(id=record.id, status="destroyed"))


_TRANSITIONS: dict[int | str, dict[str, Any]] = {
    200: {"description": "Nothing to do: it already was in that state (the same view)."},
    202: {"description": "Done; poll GET /v1/sandboxes/{id} after X-Poll-After seconds."},
}


def _transition(
    transition: Transition, response: Response, services: ServicesDep
) -> JSend[SandboxOut]:
    response.status_code = 202 if transition.happened else 200
    response.headers["X-Poll-After"] = POLL_AFTER_S
    return JSend(data=SandboxOut.of(transition.record, services.previews))


@router.post(
    "/{sandbox_id}/pause", status_code=202, summary="Pause a sandbox", responses=_TRANSITIONS
)
async def pause_sandbox(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, response: Response
) -> JSend[SandboxOut]:
    """Pause it. gvisor: hibernate (its memory and processes go to a snapshot, the host's
    memory is freed; with open TCP connections it is frozen in memory instead, and
    ``reason`` says why). runc: freeze every process (its memory stays). 202 when it paused
    it, 200 when it was already paused; 409 from any other status."""
    transition = await services.sandboxes.pause_transition(user, sandbox_id)
    return _transition(transition, response, services)


@router.post(
    "/{sandbox_id}/resume",
    status_code=202,
    summary="Resume a sandbox",
    responses={**RATE_LIMITED, **_TRANSITIONS},
)
async def resume_sandbox(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, response: Response
) -> JSend[SandboxOut]:
    """Thaw a paused sandbox. 202 when it resumed it, 200 when it was already running.
    Counts toward the running cap (429 past it)."""
    transition = await services.sandboxes.resume_transition(user, sandbox_id)
    return _transition(transition, response, services)


@router.post(
    "/{sandbox_id}/exec",
    summary="Run a command",
    responses={
        200: {
            "content": {
                "application/x-ndjson": {
                    "schema": {"type": "string",
                               "description": "With stream=true: one JSON frame per line."}
                }
            }
        }
    },
)  # fmt: skip
async def exec_in_sandbox(
    sandbox_id: str,
    body: ExecBody,
    user: CurrentUser,
    services: ServicesDep,
    stream: Annotated[
        bool, Query(description="NDJSON frames as output happens, with heartbeats.")
    ] = False,
) -> Any:
    """Run ``cmd`` and return its output, exit code and any ``error`` (a timeout, say).

    Each buffered stream keeps at most 10 MiB (a marker says what was cut). ``stream=true``
    (in the query or the body) delivers everything as NDJSON frames ``{"stdout": …}``,
    ``{"stderr": …}``, ``{"error": …}``, a final ``{"exit_code": N}``, and ``{"hb": true}``
    every 5 s of silence.
    """
    command = _command(body)
    if not (stream or body.stream):
        result = await services.sandboxes.exec(user, sandbox_id, command)
        return JSend(data=ExecOut.of(result))
    events = await services.sandboxes.exec_stream(user, sandbox_id, command)
    return StreamingResponse(_ndjson(events), media_type="application/x-ndjson")


async def _ndjson(events: AsyncIterator[ExecOutput | ExecExit]) -> AsyncIterator[bytes]:
    """The exec stream as CreateOS frames: ``{"stdout": …}``, ``{"stderr": …}``, ``{"error":
    …}``, a final ``{"exit_code": N}`` (null when the command never exited by itself), and
    ``{"hb": true}`` after every 5 s without a frame. Output is decoded as UTF-8 across chunk
    boundaries; bytes that are not UTF-8 become U+FFFD."""
    decoders = {
        "stdout": codecs.getincrementaldecoder("utf-8")(errors="replace"),
        "stderr": codecs.getincrementaldecoder("utf-8")(errors="replace"),
    }

    def line(frame: dict[str, Any]) -> bytes:
        return json.dumps(frame).encode() + b"\n"

    iterator = aiter(events)
    pending: asyncio.Task[ExecOutput | ExecExit] | None = None
    try:
        while True:
            if pending is None:
                pending = asyncio.ensure_future(anext(iterator))
            done, _ = await asyncio.wait({pending}, timeout=HEARTBEAT_S)
            if not done:
                yield line({"hb": True})
                continue
            task, pending = pending, None
            try:
                event = task.result()
            except StopAsyncIteration:
                return
            except Exception as exc:  # the stream has started: report in-band
                message = getattr(exc, "message", None) or "the command's output was cut off"
                yield line({"error": message})
                return
            if isinstance(event, ExecOutput):
                text = decoders[event.stream].decode(event.data)
                if text:
                    yield line({event.stream: text})
            else:
                for name, decoder in decoders.items():
                    if tail := decoder.decode(b"", final=True):
                        yield line({name: tail})
                if event.error:
                    yield line({"error": event.error})
                yield line({"exit_code": event.exit_code})
                return
    finally:
        if pending is not None:
            pending.cancel()
        await events.aclose()  # type: ignore[attr-defined]


@router.put(
    "/{sandbox_id}/files",
    summary="Write a file",
    responses={413: {"model": JSendFail, "description": "Over the per-file cap (500 MiB)."}},
)
async def write_file(
    sandbox_id: str,
    request: Request,
    user: CurrentUser,
    services: ServicesDep,
    path: Annotated[str, Query(max_length=4096, description="Absolute path in the sandbox.")],
) -> JSend[FileWritten]:
    """The raw request body becomes the file, streamed; missing parent directories are
    made. Over 500 MiB (``HUTCH_FILES_MAX_BYTES``) is a 413 and the old file (or none)
    stays."""
    length = request.headers.get("content-length")
    size = await services.sandboxes.write_file(
        user,
        sandbox_id,
        path,
        request.stream(),
        size=int(length) if length and length.isdigit() else None,
    )
    return JSend(data=FileWritten(bytes=size, path=path))


@router.get(
    "/{sandbox_id}/files",
    summary="Read a file",
    response_class=StreamingResponse,
    responses={200: {"content": {"application/octet-stream": {}}}},
)
async def read_file(
    sandbox_id: str,
    user: CurrentUser,
    services: ServicesDep,
    path: Annotated[str, Query(max_length=4096, description="Absolute path in the sandbox.")],
) -> StreamingResponse:
    """The file's exact bytes, streamed."""
    download = await services.sandboxes.read_file(user, sandbox_id, path)
    return StreamingResponse(
        download.chunks,
        media_type="application/octet-stream",
        headers={"Content-Length": str(download.size)},
    )
