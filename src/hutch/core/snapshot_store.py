"""Where hibernated sandboxes' snapshots are kept: this host's disk, or S3.

With ``HUTCH_SNAPSHOT_STORE=s3://bucket/prefix`` (and ``HUTCH_SNAPSHOT_STORE_ENDPOINT``,
``…_ACCESS_KEY``, ``…_SECRET_KEY``, ``…_REGION``), a snapshot is uploaded once the
hibernate is complete and removed from the host's disk, so a paused sandbox holds neither
memory nor snapshot space here (its writable disk stays). Resume and fork fetch it back
first (into a partial directory renamed when whole: a cut download is never used). The
objects go when the sandbox resumes or is destroyed. It is the base for resuming on
another host later; one host is all hutch places on today.
"""

from __future__ import annotations

import asyncio
import secrets
import shutil
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from hutch.settings import Settings

__all__ = ["SnapshotStore", "SnapshotStoreError", "snapshot_store"]


class SnapshotStoreError(Exception):
    """The snapshot store refused or could not be reached; the message says which."""


class SnapshotStore:
    """Snapshots on this host only (the default): every method is a no-op."""

    remote = False

    async def put(self, sandbox_id: str, directory: Path) -> None:
        """Keep the complete snapshot in ``directory`` (then removed from the host)."""

    async def fetch(self, sandbox_id: str, directory: Path) -> bool:
        """Make ``directory`` the sandbox's snapshot if it is not there; whether it is."""
        return await asyncio.to_thread((directory / "checkpoint.img").exists)

    async def has(self, sandbox_id: str) -> bool:
        return False

    async def delete(self, sandbox_id: str) -> None:
        """Forget the sandbox's snapshot. A missing one is fine."""


class S3SnapshotStore(SnapshotStore):
    remote = True

    def __init__(self, url: str, *, endpoint: str, access_key: str, secret_key: str,
                 region: str) -> None:  # fmt: skip
        parsed = urlparse(url)
        if parsed.scheme != "s3" or not parsed.netloc:
            raise ValueError(f"HUTCH_SNAPSHOT_STORE must be s3://bucket/prefix, not {url!r}")
        self.bucket = parsed.netloc
        self.prefix = parsed.path.strip("/")
        self._options = {"endpoint": endpoint, "access_key": access_key,
                         "secret_key": secret_key, "region": region or "us-east-1"}  # fmt: skip
        self._client: Any = None

    def _s3(self) -> Any:
        if self._client is None:
            import boto3
            from botocore.config import Config

            self._client = boto3.client(
                "s3", endpoint_url=self._options["endpoint"] or None,
                region_name=self._options["region"],
                aws_access_key_id=self._options["access_key"] or None,
                aws_secret_access_key=self._options["secret_key"] or None,
                config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
            )  # fmt: skip
        return self._client

    def _key(self, sandbox_id: str, name: str = "") -> str:
        return "/".join(part for part in (self.prefix, sandbox_id, name) if part)

    async def put(self, sandbox_id: str, directory: Path) -> None:
        def upload() -> None:
            files = sorted(p for p in directory.iterdir() if p.is_file())
            # checkpoint.img last: its presence says the snapshot is whole.
            files.sort(key=lambda p: p.name == "checkpoint.img")
            for path in files:
                self._s3().upload_file(str(path), self.bucket, self._key(sandbox_id, path.name))
            shutil.rmtree(directory)

        await self._call(upload, "upload")

    async def fetch(self, sandbox_id: str, directory: Path) -> bool:
        if await super().fetch(sandbox_id, directory):
            return True
        if not await self.has(sandbox_id):
            return False
        partial = directory.with_name(f"{directory.name}.fetching-{secrets.token_hex(4)}")

        def download() -> None:
            shutil.rmtree(partial, ignore_errors=True)
            partial.mkdir(parents=True)
            listed = self._s3().list_objects_v2(
                Bucket=self.bucket, Prefix=self._key(sandbox_id) + "/"
            )
            for item in listed.get("Contents", []):
                name = item["Key"].rsplit("/", 1)[-1]
                self._s3().download_file(self.bucket, item["Key"], str(partial / name))
            if not directory.exists():
                partial.rename(directory)
            else:
                shutil.rmtree(partial, ignore_errors=True)

        await self._call(download, "download")
        return True

    async def has(self, sandbox_id: str) -> bool:
        def head() -> bool:
            from botocore.exceptions import ClientError

            try:
                self._s3().head_object(
                    Bucket=self.bucket, Key=self._key(sandbox_id, "checkpoint.img")
                )
                return True
            except ClientError as exc:
                if str(exc.response.get("Error", {}).get("Code")) in (
                    "404",
                    "NoSuchKey",
                    "NotFound",
                ):
                    return False
                raise

        result: bool = await self._call(head, "look up")
        return result

    async def delete(self, sandbox_id: str) -> None:
        def remove() -> None:
            listed = self._s3().list_objects_v2(
                Bucket=self.bucket, Prefix=self._key(sandbox_id) + "/"
            )
            for item in listed.get("Contents", []):
                self._s3().delete_object(Bucket=self.bucket, Key=item["Key"])

        await self._call(remove, "delete")

    async def _call(self, work: Any, what: str) -> Any:
        from botocore.exceptions import BotoCoreError, ClientError

        try:
            return await asyncio.to_thread(work)
        except (BotoCoreError, ClientError, OSError) as exc:
            raise SnapshotStoreError(
                f"the snapshot store (s3://{self.bucket}/{self.prefix}) could not {what} the "
                f"snapshot: {exc}"
            ) from exc


def snapshot_store(settings: Settings) -> SnapshotStore:
    """The store ``settings`` name (``HUTCH_SNAPSHOT_STORE``), or this host's disk."""
    if not settings.snapshot_store:
        return SnapshotStore()
    secret = settings.snapshot_store_secret_key
    return S3SnapshotStore(
        settings.snapshot_store,
        endpoint=settings.snapshot_store_endpoint,
        access_key=settings.snapshot_store_access_key,
        secret_key=secret.get_secret_value() if secret is not None else "",
        region=settings.snapshot_store_region,
    )
