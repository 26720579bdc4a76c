"""``/v1/disks``: S3 buckets registered as named disks, in the CreateOS dialect (seed 002)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.createos.responses import AUTH_ERRORS
from hutch.api.deps import CurrentUser, PageParams, ServicesDep
from hutch.api.envelopes import JSend, JSendError, JSendFail, Page
from hutch.core.disks import (
    MOUNT_ERROR,
    AttachmentView,
    DiskCredentials,
    DiskRef,
    DiskRegistration,
)
from hutch.store.models import DiskRecord

__all__ = ["attachments", "router"]

_ERRORS: dict[int | str, dict[str, Any]] = {
    **AUTH_ERRORS,
    404: {"model": JSendFail, "description": "No such disk (or not yours: the same answer)."},
    503: {"model": JSendError, "description": "Disks are not configured on this host."},
}
router = APIRouter(prefix="/v1/disks", tags=["disks"], responses=_ERRORS)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid")


class DiskConfigIn(_Body):
    bucket: str = Field(max_length=255)
    endpoint: str = Field(max_length=2048, description="Full http(s) base URL of the S3 API.")
    region: str | None = Field(default=None, max_length=64, description='Default: "auto".')
    use_path_style: bool = False


class DiskCredentialsIn(_Body):
    access_key: str = Field(max_length=1024, description="Write-only; never returned.")
    secret_key: str = Field(max_length=1024, description="Write-only; never returned.")


class DiskCreateBody(_Body):
    name: str = Field(max_length=63, description="Per user; ^[a-z0-9][a-z0-9-]{0,62}$.")
    kind: str = Field(max_length=16, description='Must be "s3".')
    config: DiskConfigIn
    credentials: DiskCredentialsIn

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "name": "my-data",
                    "kind": "s3",
                    "config": {"bucket": "my-data-bucket", "endpoint": "https://s3.example.com"},
                    "credentials": {"access_key": "<access key>", "secret_key": "<secret>"},
                }
            ]
        },
    )


class DiskConfigOut(BaseModel):
    bucket: str
    endpoint: str
    region: str
    use_path_style: bool


class DiskOut(BaseModel):
    id: str
    name: str
    kind: str
    config: DiskConfigOut
    created_at: datetime

    @classmethod
    def of(cls, record: DiskRecord) -> DiskOut:
        return cls(
            id=record.id, name=record.name, kind=record.kind, created_at=record.created_at,
            config=DiskConfigOut(bucket=record.bucket, endpoint=record.endpoint,
                                 region=record.region, use_path_style=record.use_path_style),
        )  # fmt: skip


class Deleted(BaseModel):
    deleted: bool = True


@router.get("", summary="List disks")
async def list_disks(
    user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[DiskOut]]:
    records, total = await services.disks.list_disks(user, limit=page.limit, offset=page.offset)
    return JSend(
        data=Page.of(
            [DiskOut.of(r) for r in records], total=total, limit=page.limit, offset=page.offset
        )
    )


@router.post(
    "",
    summary="Register a disk",
    responses={409: {"model": JSendFail, "description": "You have a disk by that name."}},
)
async def register_disk(
    body: DiskCreateBody, user: CurrentUser, services: ServicesDep
) -> JSend[DiskOut]:
    """Probes the bucket (HEAD, 3 s) first: an unreachable endpoint, a missing bucket or
    refused credentials is a 400 naming the field. Credentials are sealed and never shown."""
    record = await services.disks.register(
        user,
        DiskRegistration(
            name=body.name, kind=body.kind, bucket=body.config.bucket,
            endpoint=body.config.endpoint, region=body.config.region,
            use_path_style=body.config.use_path_style,
            credentials=DiskCredentials(access_key=body.credentials.access_key,
                                        secret_key=body.credentials.secret_key),
        ),
    )  # fmt: skip
    return JSend(data=DiskOut.of(record))


@router.get("/{disk}", summary="Get a disk by id or name")
async def get_disk(disk: str, user: CurrentUser, services: ServicesDep) -> JSend[DiskOut]:
    return JSend(data=DiskOut.of(await services.disks.get(user, disk)))


class DiskPatchBody(_Body):
    credentials: DiskCredentialsIn


@router.patch("/{disk}", summary="Rotate a disk's credentials")
async def patch_disk(
    disk: str, body: DiskPatchBody, user: CurrentUser, services: ServicesDep
) -> JSend[DiskOut]:
    """The bucket is probed with the new credentials first (refused: a 400 naming the
    field, and the old ones stay); then they replace the old, and every sandbox that has
    the disk mounted has it mounted again with them."""
    record = await services.disks.rotate_credentials(
        user,
        disk,
        DiskCredentials(
            access_key=body.credentials.access_key, secret_key=body.credentials.secret_key
        ),
    )
    return JSend(data=DiskOut.of(record))


@router.delete("/{disk}", summary="Delete a disk",
               responses={409: {"model": JSendFail, "description": "Still attached."}})  # fmt: skip
async def delete_disk(disk: str, user: CurrentUser, services: ServicesDep) -> JSend[Deleted]:
    await services.disks.delete(user, disk)
    return JSend(data=Deleted())


attachments = APIRouter(prefix="/v1/sandboxes", tags=["sandboxes"], responses=_ERRORS)


class DiskAttachBody(_Body):
    disk_id: str = Field(max_length=128, description="disk_<ulid> id or the disk's name.")
    mount_path: str = Field(max_length=4096, description="Absolute path inside the sandbox.")
    sub_path: str | None = Field(
        default=None, max_length=4096, description="A prefix inside the bucket; default: root."
    )


class AttachedConfigOut(BaseModel):
    bucket: str
    endpoint: str


class AttachmentOut(BaseModel):
    disk_id: str
    name: str
    kind: str
    config: AttachedConfigOut
    mount_path: str
    sub_path: str
    mount_status: str = Field(description="pending, mounted, error or unmounting.")
    mount_error: str | None = Field(description="Why it failed (about 1 KiB at most).")

    @classmethod
    def of(cls, view: AttachmentView) -> AttachmentOut:
        attachment, disk = view.attachment, view.disk
        return cls(
            disk_id=disk.id, name=disk.name, kind=disk.kind,
            config=AttachedConfigOut(bucket=disk.bucket, endpoint=disk.endpoint),
            mount_path=attachment.mount_path, sub_path=attachment.sub_path,
            mount_status=_LEGACY.get(attachment.mount_status, attachment.mount_status),
            mount_error=attachment.mount_error,
        )  # fmt: skip


# Rows written before the CreateOS names: "failed" is now "error".
_LEGACY = {"failed": MOUNT_ERROR}


class Attached(BaseModel):
    id: str = Field(description="The sandbox's id.")
    ok: bool = True


class Detached(BaseModel):
    detached: bool = True


@attachments.get("/{sandbox_id}/disks", summary="List a sandbox's disks")
async def list_attachments(
    sandbox_id: str, user: CurrentUser, services: ServicesDep, page: PageParams
) -> JSend[Page[AttachmentOut]]:
    views = await services.disks.attachments(user, sandbox_id)
    items = [AttachmentOut.of(v) for v in views[page.offset : page.offset + page.limit]]
    return JSend(data=Page.of(items, total=len(views), limit=page.limit, offset=page.offset))


@attachments.post(
    "/{sandbox_id}/disks",
    summary="Attach a disk to a running sandbox",
    responses={409: {"model": JSendFail, "description": "Not running, or the path is taken."}},
)
async def attach_disk(
    sandbox_id: str, body: DiskAttachBody, user: CurrentUser, services: ServicesDep
) -> JSend[Attached]:
    """Mounts the bucket at ``mount_path`` before it answers ``{id: <sandbox id>, ok:
    true}``; ``GET …/disks`` shows whether it mounted. The same disk at the same path again
    changes nothing."""
    attached_to = await services.disks.attach(
        user,
        sandbox_id,
        DiskRef(disk_id=body.disk_id, mount_path=body.mount_path, sub_path=body.sub_path or ""),
    )
    return JSend(data=Attached(id=attached_to))


@attachments.delete("/{sandbox_id}/disks/{disk_id}", summary="Detach a disk")
async def detach_disk(
    sandbox_id: str,
    disk_id: str,
    user: CurrentUser,
    services: ServicesDep,
    mount_path: Annotated[str, Query(max_length=4096, description="The attachment's path.")],
) -> JSend[Detached]:
    """Only the mount goes; the bucket's contents are never touched. Again: 404."""
    await services.disks.detach(user, sandbox_id, disk_id, mount_path)
    return JSend(data=Detached())
