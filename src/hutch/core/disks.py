"""Disks: S3-compatible buckets registered once, by name, to mount into sandboxes (seed 002).

Registration probes the bucket (a HEAD, 3 s) before anything is stored, so a typo in the
endpoint, a missing bucket or refused credentials is a 400 that says which. Credentials
are sealed with AES-256-GCM under the master key (:mod:`hutch.core.sealing`) and are
never returned, logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import re
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError

from hutch.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.host.agent import HostAgent
from hutch.host.disks import ERROR_BYTES, BucketMount, DiskMountError
from hutch.store import disks as store
from hutch.store import sandboxes as sandbox_store
from hutch.store.db import Database
from hutch.store.models import DiskAttachment, DiskRecord, SandboxRecord, utcnow

__all__ = [
    "MOUNTED",
    "MOUNT_ERROR",
    "PENDING",
    "UNMOUNTING",
    "AttachmentView",
    "DiskCredentials",
    "DiskRef",
    "DiskRegistration",
    "DiskService",
    "probe_bucket",
]

log = logging.getLogger(__name__)

PROBE_TIMEOUT_S = 3.0
_SYSTEM_DIRS = ("proc", "sys", "dev", ".hutch")
DISK_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")  # the seed's pattern


@dataclass(frozen=True, kw_only=True)
class DiskCredentials:
    access_key: str
    secret_key: str

    def __repr__(self) -> str:  # never in a log line or a traceback
        return "DiskCredentials(<write-only>)"


@dataclass(frozen=True, kw_only=True)
class DiskRegistration:
    name: str
    kind: str
    bucket: str
    endpoint: str
    region: str | None
    use_path_style: bool
    credentials: DiskCredentials


class ProbeFailed(Exception):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field
        self.message = message


def probe_bucket(registration: DiskRegistration) -> None:
    """HEAD the bucket with the given credentials, 3 s at most. Blocking (run it in a
    thread). Raises :class:`ProbeFailed` naming the field at fault."""
    import boto3
    from botocore.config import Config
    from botocore.exceptions import BotoCoreError, ClientError

    client = boto3.client(
        "s3",
        endpoint_url=registration.endpoint,
        region_name=_region(registration.region),
        aws_access_key_id=registration.credentials.access_key,
        aws_secret_access_key=registration.credentials.secret_key,
        config=Config(
            connect_timeout=PROBE_TIMEOUT_S,
            read_timeout=PROBE_TIMEOUT_S,
            retries={"max_attempts": 1, "mode": "standard"},
            s3={"addressing_style": "path" if registration.use_path_style else "auto"},
        ),
    )
    try:
        client.head_bucket(Bucket=registration.bucket)
    except ClientError as exc:
        status = str(exc.response.get("Error", {}).get("Code", ""))
        if status in ("404", "NoSuchBucket", "NotFound"):
            raise ProbeFailed("config.bucket", f"bucket {registration.bucket!r} not found at "
                              f"{registration.endpoint}") from None  # fmt: skip
        if status in ("403", "401", "AccessDenied", "Forbidden"):
            raise ProbeFailed("credentials", "the endpoint refused these credentials for "
                              f"bucket {registration.bucket!r}") from None  # fmt: skip
        raise ProbeFailed("config.endpoint", f"the endpoint answered the probe with {status}"
                          ) from None  # fmt: skip
    except (BotoCoreError, ValueError) as exc:
        raise ProbeFailed(
            "config.endpoint",
            f"cannot reach {registration.endpoint} within {PROBE_TIMEOUT_S:g} s "
            f"({type(exc).__name__})",
        ) from None
    finally:
        client.close()


def _region(region: str | None) -> str:
    # "auto" is what R2 and MinIO take; botocore wants a real-looking one to sign with.
    return region if region and region != "auto" else "us-east-1"


@dataclass(frozen=True, kw_only=True)
class DiskRef:
    """A disk to attach: its id or name, where inside, and which prefix of the bucket."""

    disk_id: str
    mount_path: str
    sub_path: str = ""


@dataclass(frozen=True)
class AttachmentView:
    attachment: DiskAttachment
    disk: DiskRecord


# mount_status values, as CreateOS's clients know them (their enum has exactly these).
PENDING = "pending"
MOUNTED = "mounted"
MOUNT_ERROR = "error"
UNMOUNTING = "unmounting"


class DiskService:
    def __init__(
        self,
        db: Database,
        host: HostAgent,
        box: SealedBox | None,
        unavailable: str = "",
        *,
        check_interval_s: float = 30.0,
    ) -> None:
        self._db = db
        self._host = host
        self._box = box
        self._unavailable = unavailable
        self._check_interval_s = check_interval_s
        self._sandbox_locks: defaultdict[str, asyncio.Lock] = defaultdict(asyncio.Lock)

    def _sealer(self) -> SealedBox:
        if self._box is None:
            raise Unavailable(f"disks are not configured on this host: {self._unavailable}")
        return self._box

    async def register(self, user: Principal, registration: DiskRegistration) -> DiskRecord:
        box = self._sealer()
        _check_registration(registration)
        async with self._db.sessions() as session:
            if await store.find_for_user(session, user.user_id, registration.name):
                raise Conflict(f"you already have a disk named {registration.name!r}",
                               field="name")  # fmt: skip
        try:
            await asyncio.to_thread(probe_bucket, registration)
        except ProbeFailed as exc:
            raise InvalidInput(exc.message, field=exc.field) from None
        disk_id = new_id("disk_")
        credentials = json.dumps({"access_key": registration.credentials.access_key,
                                  "secret_key": registration.credentials.secret_key})  # fmt: skip
        record = DiskRecord(
            id=disk_id, user_id=user.user_id, name=registration.name, kind=registration.kind,
            bucket=registration.bucket, endpoint=registration.endpoint,
            region=registration.region or "auto", use_path_style=registration.use_path_style,
            credentials=box.seal(credentials.encode(), context=disk_id), created_at=utcnow(),
        )  # fmt: skip
        try:
            async with self._db.sessions.begin() as session:
                session.add(record)
        except IntegrityError:
            raise Conflict(f"you already have a disk named {registration.name!r}",
                           field="name") from None  # fmt: skip
        return record

    async def list_disks(
        self, user: Principal, *, limit: int, offset: int
    ) -> tuple[Sequence[DiskRecord], int]:
        self._sealer()
        async with self._db.sessions() as session:
            records = await store.list_for_user(session, user.user_id, limit=limit, offset=offset)
            total = await store.count_for_user(session, user.user_id)
        return records, total

    async def get(self, user: Principal, ident: str) -> DiskRecord:
        self._sealer()
        async with self._db.sessions() as session:
            record = await store.find_for_user(session, user.user_id, ident)
        if record is None:
            raise NotFound(f"no disk {ident!r}", field="disk")
        return record

    async def delete(self, user: Principal, ident: str) -> None:
        """Soft delete: the row stays, marked, and its name is free again."""
        self._sealer()
        async with self._db.sessions.begin() as session:
            record = await store.find_for_user(session, user.user_id, ident)
            if record is None:
                raise NotFound(f"no disk {ident!r}", field="disk")
            if await store.attachment_count(session, record.id):
                raise Conflict(f"disk {record.name} is attached to a sandbox; detach it first",
                               field="disk")  # fmt: skip
            record.deleted_at = utcnow()

    async def rotate_credentials(
        self, user: Principal, ident: str, credentials: DiskCredentials
    ) -> DiskRecord:
        """Replace the disk's credentials: the bucket is probed with the new ones first (a
        refusal is a 400 and nothing changes), then they are sealed in place of the old,
        and every live mount of the disk on this host is mounted again with them."""
        box = self._sealer()
        if not credentials.access_key or not credentials.secret_key:
            raise InvalidInput("access_key and secret_key are required", field="credentials")
        disk = await self.get(user, ident)
        probe = DiskRegistration(
            name=disk.name, kind=disk.kind, bucket=disk.bucket, endpoint=disk.endpoint,
            region=disk.region, use_path_style=disk.use_path_style, credentials=credentials,
        )  # fmt: skip
        try:
            await asyncio.to_thread(probe_bucket, probe)
        except ProbeFailed as exc:
            raise InvalidInput(exc.message, field=exc.field) from None
        sealed = box.seal(json.dumps({"access_key": credentials.access_key,
                                      "secret_key": credentials.secret_key}).encode(),
                          context=disk.id)  # fmt: skip
        async with self._db.sessions.begin() as session:
            record = await session.get(DiskRecord, disk.id)
            if record is None or record.deleted_at is not None:
                raise NotFound(f"no disk {ident!r}", field="disk")
            record.credentials = sealed
        async with self._db.sessions() as session:
            rows = await store.live_attachments_on_host(session, self._host.host_id)
        for attachment, attached in rows:
            if attached.id != record.id or attachment.mount_status in (PENDING, UNMOUNTING):
                continue
            async with self._sandbox_locks[attachment.sandbox_id]:
                await self._unmount(attachment)
                error = await self._mount_on_host(attachment, record)
                with contextlib.suppress(NotFound):
                    await self._set_status(attachment.id, error)
        return record

    # -- attachments ----------------------------------------------------------------------

    async def check_refs(self, user: Principal, refs: Sequence[DiskRef]) -> list[DiskRef]:
        """Validate the disks of a create before anything is made (400 naming ``disks``)."""
        if not refs:
            return []
        self._sealer()
        checked, paths = [], set()
        async with self._db.sessions() as session:
            for ref in refs:
                mount_path, sub_path = _mount_path(ref.mount_path), _sub_path(ref.sub_path)
                if await store.find_for_user(session, user.user_id, ref.disk_id) is None:
                    raise InvalidInput(f"no disk {ref.disk_id!r}", field="disks")
                if mount_path in paths:
                    raise InvalidInput(f"two disks at {mount_path}", field="disks")
                paths.add(mount_path)
                checked.append(DiskRef(disk_id=ref.disk_id, mount_path=mount_path,
                                       sub_path=sub_path))  # fmt: skip
        return checked

    async def attach(self, user: Principal, sandbox_ident: str, ref: DiskRef) -> str:
        """Mount the disk in a running sandbox and return the sandbox's id. Same disk, same
        path: nothing changes."""
        self._sealer()
        mount_path, sub_path = _mount_path(ref.mount_path), _sub_path(ref.sub_path)
        sandbox, disk = await self._sandbox_and_disk(user, sandbox_ident, ref.disk_id)
        if sandbox.status != "running":
            raise Conflict(f"sandbox is {sandbox.status}; disks attach to running sandboxes",
                           field="status")  # fmt: skip
        async with self._sandbox_locks[sandbox.id]:
            async with self._db.sessions() as session:
                taken = await store.attachment_at(session, sandbox.id, mount_path)
            if taken is not None:
                if taken.disk_id == disk.id:
                    return sandbox.id
                raise Conflict(f"{mount_path} is already in use by a different disk",
                               field="mount_path")  # fmt: skip
            await self._mount(sandbox.id, disk, mount_path, sub_path)
        return sandbox.id

    async def mount_all(self, sandbox_id: str, user: Principal, refs: Sequence[DiskRef]) -> None:
        """A new sandbox's disks, all mounted, or :class:`DiskMountError`."""
        for ref in refs:
            async with self._db.sessions() as session:
                disk = await store.find_for_user(session, user.user_id, ref.disk_id)
            if disk is None:
                raise DiskMountError(f"disk {ref.disk_id!r} is gone")
            attachment = await self._mount(sandbox_id, disk, ref.mount_path, ref.sub_path)
            if attachment.mount_status != MOUNTED:
                raise DiskMountError(attachment.mount_error or "the disk did not mount")

    async def _mount(
        self, sandbox_id: str, disk: DiskRecord, mount_path: str, sub_path: str
    ) -> DiskAttachment:
        attachment = DiskAttachment(
            id=new_id("dat_"), sandbox_id=sandbox_id, disk_id=disk.id, mount_path=mount_path,
            sub_path=sub_path, mount_status=PENDING, mount_error=None, created_at=utcnow(),
        )  # fmt: skip
        try:
            async with self._db.sessions.begin() as session:
                session.add(attachment)
        except IntegrityError:
            raise Conflict(f"{mount_path} is already in use by a different disk",
                           field="mount_path") from None  # fmt: skip
        error = await self._mount_on_host(attachment, disk)
        return await self._set_status(attachment.id, error)

    async def _mount_on_host(self, attachment: DiskAttachment, disk: DiskRecord) -> str | None:
        info = await self._host.driver.get(attachment.sandbox_id)
        if info is None or info.pid is None:
            return "the sandbox is not running"
        credentials = self.credentials(disk)
        spec = BucketMount(
            attachment_id=attachment.id, sandbox_id=attachment.sandbox_id, bucket=disk.bucket,
            sub_path=attachment.sub_path, endpoint=disk.endpoint, region=_region(disk.region),
            path_style=disk.use_path_style, access_key=credentials.access_key,
            secret_key=credentials.secret_key, mount_path=attachment.mount_path,
        )  # fmt: skip
        try:
            await self._host.disks.mount(spec, pid=info.pid)
        except DiskMountError as exc:
            return str(exc)
        return None

    async def _set_status(self, attachment_id: str, error: str | None) -> DiskAttachment:
        async with self._db.sessions.begin() as session:
            attachment = await session.get(DiskAttachment, attachment_id)
            if attachment is None:
                raise NotFound("the attachment is gone", field="disk")
            attachment.mount_status = MOUNT_ERROR if error else MOUNTED
            attachment.mount_error = error[:ERROR_BYTES] if error else None
        return attachment

    async def detach(
        self, user: Principal, sandbox_ident: str, disk_ident: str, mount_path: str
    ) -> None:
        self._sealer()
        path = _mount_path(mount_path)
        async with self._db.sessions() as session:
            sandbox = await sandbox_store.find_for_user(session, user.user_id, sandbox_ident)
            attachment = await store.attachment_at(session, sandbox.id, path) if sandbox else None
            disk = await session.get(DiskRecord, attachment.disk_id) if attachment else None
        if (sandbox is None or attachment is None or disk is None
                or disk_ident not in (disk.id, disk.name)):  # fmt: skip
            raise NotFound(f"no disk {disk_ident!r} attached at {path}", field="disk")
        async with self._sandbox_locks[sandbox.id]:
            # First DELETE wins: the row says "unmounting" while the mount goes, then goes.
            async with self._db.sessions.begin() as session:
                row = await session.get(DiskAttachment, attachment.id)
                if row is None or row.mount_status == UNMOUNTING:
                    raise NotFound(f"no disk {disk_ident!r} attached at {path}", field="disk")
                row.mount_status = UNMOUNTING
            try:
                await self._unmount(attachment)
            finally:
                async with self._db.sessions.begin() as session:
                    row = await session.get(DiskAttachment, attachment.id)
                    if row is not None:
                        await session.delete(row)

    async def _unmount(self, attachment: DiskAttachment) -> None:
        info = await self._host.driver.get(attachment.sandbox_id)
        await self._host.disks.unmount(
            attachment.sandbox_id, attachment.id, mount_path=attachment.mount_path,
            pid=info.pid if info is not None else None,
        )  # fmt: skip

    async def remount_all(self, sandbox_id: str) -> None:
        """A sandbox started again from its disk: mount its disks into it again."""
        async with self._db.sessions() as session:
            rows = await store.attachments_of(session, sandbox_id)
        for attachment, disk in rows:
            if attachment.mount_status == UNMOUNTING:
                continue
            await self._unmount(attachment)
            error = await self._mount_on_host(attachment, disk)
            with contextlib.suppress(NotFound):
                await self._set_status(attachment.id, error)

    async def unmount_all(self, sandbox_id: str) -> None:
        """A sandbox is going: take its disks off the host and forget them."""
        async with self._db.sessions.begin() as session:
            attachments = await store.attachments_of(session, sandbox_id)
            for attachment, _ in attachments:
                await session.delete(attachment)
        for attachment, _ in attachments:
            await self._unmount(attachment)

    async def attachments(self, user: Principal, sandbox_ident: str) -> list[AttachmentView]:
        async with self._db.sessions() as session:
            sandbox = await sandbox_store.find_for_user(session, user.user_id, sandbox_ident)
            if sandbox is None:
                raise NotFound(f"no sandbox {sandbox_ident!r}", field="sandbox")
            rows = await store.attachments_of(session, sandbox.id)
        return [AttachmentView(attachment, disk) for attachment, disk in rows]

    async def _sandbox_and_disk(
        self, user: Principal, sandbox_ident: str, disk_ident: str
    ) -> tuple[SandboxRecord, DiskRecord]:
        if not disk_ident:
            raise InvalidInput("disk_id must not be empty", field="disk_id")
        async with self._db.sessions() as session:
            sandbox = await sandbox_store.find_for_user(session, user.user_id, sandbox_ident)
            if sandbox is None:
                raise NotFound(f"no sandbox {sandbox_ident!r}", field="sandbox")
            disk = await store.find_for_user(session, user.user_id, disk_ident)
            if disk is None:
                raise NotFound(f"no disk {disk_ident!r}", field="disk")
        return sandbox, disk

    # -- recovery and checks --------------------------------------------------------------

    async def recover(self) -> None:
        """After a start: mount again what should be mounted and is not."""
        if self._box is None:
            return
        async with self._db.sessions() as session:
            rows = await store.live_attachments_on_host(session, self._host.host_id)
        for attachment, disk in rows:
            if attachment.mount_status == UNMOUNTING:  # a detach the stop interrupted
                await self._unmount(attachment)
                async with self._db.sessions.begin() as session:
                    if (row := await session.get(DiskAttachment, attachment.id)) is not None:
                        await session.delete(row)
                continue
            if await self._host.disks.check(attachment.sandbox_id, attachment.id) is None:
                continue
            await self._unmount(attachment)
            await self._set_status(attachment.id, await self._mount_on_host(attachment, disk))

    async def check_all(self) -> None:
        async with self._db.sessions() as session:
            rows = await store.live_attachments_on_host(session, self._host.host_id)
        for attachment, disk in rows:
            if attachment.mount_status in (PENDING, UNMOUNTING):
                continue
            error = await self._host.disks.check(attachment.sandbox_id, attachment.id)
            if error is None:
                # s3fs keeps answering from its caches after a bucket is gone: ask the bucket.
                error = await self._probe(disk)
            error = error[:ERROR_BYTES] if error else None
            now = (MOUNT_ERROR if error else MOUNTED, error)
            if now != (attachment.mount_status, attachment.mount_error):
                with contextlib.suppress(NotFound):
                    await self._set_status(attachment.id, error)

    async def _probe(self, disk: DiskRecord) -> str | None:
        registration = DiskRegistration(
            name=disk.name, kind=disk.kind, bucket=disk.bucket, endpoint=disk.endpoint,
            region=disk.region, use_path_style=disk.use_path_style,
            credentials=self.credentials(disk),
        )  # fmt: skip
        try:
            await asyncio.to_thread(probe_bucket, registration)
        except ProbeFailed as exc:
            return exc.message
        return None

    async def monitor_forever(self) -> None:
        """The mount check, every ``check_interval_s`` (30 s by default)."""
        while True:
            await asyncio.sleep(self._check_interval_s)
            try:
                await self.check_all()
            except Exception:
                log.warning("checking disk mounts failed; will retry", exc_info=True)

    def credentials(self, record: DiskRecord) -> DiskCredentials:
        """The disk's credentials, for the host that mounts it."""
        values = json.loads(self._sealer().open(record.credentials, context=record.id))
        return DiskCredentials(access_key=values["access_key"], secret_key=values["secret_key"])


def _mount_path(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidInput("mount_path must be an absolute path", field="mount_path")
    parts = [part for part in path.split("/") if part]
    if ".." in parts or "." in parts:
        raise InvalidInput("mount_path must not contain '..' or '.'", field="mount_path")
    if not parts or parts[0] in _SYSTEM_DIRS:
        raise InvalidInput(f"mount_path cannot be / or under /{', /'.join(_SYSTEM_DIRS)}",
                           field="mount_path")  # fmt: skip
    return "/" + "/".join(parts)


def _sub_path(path: str) -> str:
    parts = [part for part in path.split("/") if part]
    if ".." in parts or "." in parts:
        raise InvalidInput("sub_path must not contain '..' or '.'", field="sub_path")
    return "/".join(parts)


def _check_registration(registration: DiskRegistration) -> None:
    if not DISK_NAME.fullmatch(registration.name):
        raise InvalidInput("disk names are 1-63 lowercase letters, digits and '-', starting "
                           "with a letter or digit", field="name")  # fmt: skip
    if registration.kind != "s3":
        raise InvalidInput(f"unsupported kind {registration.kind!r}; only 's3'", field="kind")
    if not registration.bucket:
        raise InvalidInput("bucket is required", field="config.bucket")
    endpoint = urlsplit(registration.endpoint)
    if endpoint.scheme not in ("http", "https") or not endpoint.hostname:
        raise InvalidInput("endpoint must be a full http(s) URL, like https://s3.amazonaws.com",
                           field="config.endpoint")  # fmt: skip
    credentials = registration.credentials
    if not credentials.access_key or not credentials.secret_key:
        raise InvalidInput("access_key and secret_key are required", field="credentials")
