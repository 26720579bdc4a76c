"""Disks: S3-compatible buckets registered once, by name, to mount into sandboxes (seed 002).

Registration probes the bucket (a HEAD, 3 s) before anything is stored, so a typo in the
endpoint, a missing bucket or refused credentials is a 400 that says which. Credentials
are sealed with AES-256-GCM under the master key (:mod:`hutch.core.sealing`) and are
never returned, logged or put in an error message.
"""

from __future__ import annotations

import asyncio
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass
from urllib.parse import urlsplit

from sqlalchemy.exc import IntegrityError

from hutch.core.errors import Conflict, InvalidInput, NotFound, Unavailable
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.core.sealing import SealedBox
from hutch.store import disks as store
from hutch.store.db import Database
from hutch.store.models import DiskRecord, utcnow

__all__ = ["DiskCredentials", "DiskRegistration", "DiskService", "probe_bucket"]

PROBE_TIMEOUT_S = 3.0
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


class DiskService:
    def __init__(self, db: Database, box: SealedBox | None, unavailable: str = "") -> None:
        self._db = db
        self._box = box
        self._unavailable = unavailable

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
            record.deleted_at = utcnow()

    def credentials(self, record: DiskRecord) -> DiskCredentials:
        """The disk's credentials, for the host that mounts it."""
        values = json.loads(self._sealer().open(record.credentials, context=record.id))
        return DiskCredentials(access_key=values["access_key"], secret_key=values["secret_key"])


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
