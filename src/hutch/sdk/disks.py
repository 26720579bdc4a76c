"""Disks: S3 buckets registered once, then mounted into sandboxes at a path."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from hutch.sdk._http import Identified, ident, parse_time
from hutch.sdk._resource import AsyncAttachable
from hutch.sdk.client import AsyncClient

__all__ = ["AsyncDisk", "DiskAttachment", "DiskInfo", "DiskMount"]


@dataclass(frozen=True, kw_only=True)
class DiskMount:
    """Where a disk goes in a new sandbox: ``DiskMount(disk="my-data", mount_path="/data")``."""

    disk: str | Identified
    """A disk object, or a disk's id or name."""
    mount_path: str
    """Absolute path inside the sandbox."""
    sub_path: str | None = None
    """A prefix inside the bucket; default its root."""

    def to_json(self) -> dict[str, Any]:
        body: dict[str, Any] = {"disk_id": ident(self.disk), "mount_path": self.mount_path}
        if self.sub_path is not None:
            body["sub_path"] = self.sub_path
        return body


@dataclass(frozen=True, kw_only=True)
class DiskInfo:
    id: str
    name: str
    kind: str
    bucket: str
    endpoint: str
    region: str | None
    use_path_style: bool
    created_at: datetime | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiskInfo:
        config = data.get("config") or {}
        return cls(
            id=data["id"], name=data.get("name", ""), kind=data.get("kind", "s3"),
            bucket=config.get("bucket", ""), endpoint=config.get("endpoint", ""),
            region=config.get("region"), use_path_style=bool(config.get("use_path_style")),
            created_at=parse_time(data.get("created_at")), raw=dict(data),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class DiskAttachment:
    """A disk mounted in a sandbox; ``mount_status`` is pending, mounted, error or
    unmounting."""

    disk_id: str
    name: str
    mount_path: str
    sub_path: str
    mount_status: str
    mount_error: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> DiskAttachment:
        return cls(
            disk_id=data["disk_id"], name=data.get("name", ""),
            mount_path=data.get("mount_path", ""), sub_path=data.get("sub_path", ""),
            mount_status=data.get("mount_status", ""), mount_error=data.get("mount_error"),
            raw=dict(data),
        )  # fmt: skip


class AsyncDisk(AsyncAttachable[DiskInfo]):
    """A registered S3 bucket. Its credentials are sent once, at ``create``, and never
    come back. Deleting it forgets the registration, never the bucket's contents."""

    _route = "disks"
    _subject = "disk"
    _parse = staticmethod(DiskInfo.from_json)

    def __repr__(self) -> str:
        return f"AsyncDisk(id={self.id!r}, name={self.name!r}, bucket={self.info.bucket!r})"

    @classmethod
    async def create(
        cls,
        name: str,
        *,
        bucket: str,
        endpoint: str,
        access_key: str,
        secret_key: str,
        region: str | None = None,
        use_path_style: bool = False,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncDisk:
        """Register a bucket. The server probes it first: an unreachable ``endpoint``, a
        missing ``bucket`` or refused keys is an InvalidRequestError naming the field; a
        name you already use is a ConflictError."""
        config: dict[str, Any] = {"bucket": bucket, "endpoint": endpoint,
                                  "use_path_style": use_path_style}  # fmt: skip
        if region is not None:
            config["region"] = region
        body = {"name": name, "kind": "s3", "config": config,
                "credentials": {"access_key": access_key, "secret_key": secret_key}}  # fmt: skip
        return await cls._create(body, client, api_url, api_key)

    @classmethod
    async def get(
        cls,
        disk: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncDisk:
        """One disk by id or name."""
        return await cls._get(disk, client, api_url, api_key)

    async def rotate_credentials(self, *, access_key: str, secret_key: str) -> DiskInfo:
        """Replace the disk's credentials. The server probes the bucket with them first (a
        refusal is an InvalidRequestError and the old ones stay), then mounts the disk
        again with them wherever it is attached."""
        data = await self.client.transport.data(
            "PATCH", f"/v1/disks/{self.id}", idempotent=True, subjects=self._subjects(),
            json={"credentials": {"access_key": access_key, "secret_key": secret_key}},
        )  # fmt: skip
        self.info = DiskInfo.from_json(data)
        return self.info

    async def delete(self) -> None:
        """Forget the disk; a ConflictError while it is attached anywhere."""
        await super().delete()

    async def attach(
        self, sandbox: str | Identified, mount_path: str, *, sub_path: str | None = None
    ) -> None:
        """Mount this disk in a running sandbox at ``mount_path``; done when it returns (see
        ``sandbox.list_disks()`` for ``mount_status``). The same path again does nothing."""
        await self._attach(
            sandbox, DiskMount(disk=self.id, mount_path=mount_path, sub_path=sub_path).to_json()
        )

    async def detach(self, sandbox: str | Identified, mount_path: str) -> None:
        """Unmount it from ``mount_path``; the bucket's contents stay."""
        await self._detach(sandbox, {"mount_path": mount_path})
