"""Sandboxes: create, find, pause, resume and destroy, with commands and files inside."""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import datetime
from types import TracebackType
from typing import TYPE_CHECKING, Any, Self, TypedDict, Unpack

from hutch.sdk._http import Identified, ident, parse_time
from hutch.sdk._resource import AsyncResource
from hutch.sdk.client import AsyncClient, resolve_client
from hutch.sdk.commands import AsyncCommands
from hutch.sdk.computer import AsyncComputer
from hutch.sdk.disks import DiskAttachment, DiskMount
from hutch.sdk.egress import AsyncEgress, Bandwidth, fetch_bandwidth, recharge_bandwidth
from hutch.sdk.errors import HutchError
from hutch.sdk.files import AsyncFiles
from hutch.sdk.processes import AsyncProcesses

if TYPE_CHECKING:
    from hutch.sdk.observe import MetricsSample
    from hutch.sdk.templates import AsyncTemplate

__all__ = ["AsyncSandbox", "SandboxInfo", "SandboxOptions"]

_SETTLING = {"pausing": "paused", "resuming": "running", "creating": "running"}
SETTLE_TIMEOUT_S = 120.0


class SandboxOptions(TypedDict, total=False):
    """What ``Sandbox.create`` takes besides the connection; every one is optional."""

    shape: str
    """A shape id (``GET /v1/shapes``); default: the server's first (smallest) shape."""
    rootfs: str
    """An image such as ``devbox:1``; default: the server's."""
    name: str
    """Also the hostname and the name in its networks; default: a generated one."""
    networks: Sequence[str | Identified]
    disks: Sequence[DiskMount]
    envs: Mapping[str, str]
    timeout: float
    """Seconds until the server destroys the sandbox; default: it lives until killed."""
    disk_mib: int
    egress: Sequence[str]
    """Egress rules (see :mod:`hutch.sdk.egress`); default: none, open."""
    ingress_enabled: bool
    auto_pause_after_seconds: int
    """60 to 86400: pause after this long without exec or file activity."""
    ssh_pubkeys: Sequence[str]
    """OpenSSH public keys for root (normalised and deduplicated by the server)."""
    host_id: str
    region: str
    node_selector: Mapping[str, str]
    """Labels the host must carry (the server's ``HUTCH_HOST_LABELS``)."""


@dataclass(frozen=True, kw_only=True)
class SandboxInfo:
    """A sandbox as the server last described it."""

    id: str
    name: str
    status: str
    """creating, running, pausing, paused, resuming, destroyed, failed or error."""
    ip: str | None
    shape: str
    rootfs: str
    vcpu: int | None
    mem_mib: int | None
    disk_mib: int | None
    created_at: datetime | None
    spawn_ms: int | None
    envs: tuple[str, ...]
    """The names of its environment variables (values are never returned)."""
    egress: tuple[str, ...]
    """Its egress rules; ``()`` is open (see :mod:`hutch.sdk.egress`)."""
    ingress_url_template: str | None
    reason: str | None
    """Why it failed, when it did."""
    ssh_pubkeys: tuple[str, ...] = ()
    region: str = ""
    auto_pause_after_seconds: int | None = None
    raw: dict[str, Any] = field(repr=False, compare=False)
    """Everything the server said, including fields this SDK does not know."""

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> SandboxInfo:
        return cls(
            id=data["id"], name=data.get("name", ""), status=data.get("status", ""),
            ip=data.get("ip"), shape=data.get("shape", ""), rootfs=data.get("rootfs", ""),
            vcpu=data.get("vcpu"), mem_mib=data.get("mem_mib"), disk_mib=data.get("disk_mib"),
            created_at=parse_time(data.get("created_at")), spawn_ms=data.get("spawn_ms"),
            envs=tuple(data.get("envs") or ()), egress=tuple(data.get("egress") or ()),
            ingress_url_template=data.get("ingress_url_template"), reason=data.get("reason"),
            ssh_pubkeys=tuple(data.get("ssh_pubkeys") or ()), region=data.get("region") or "",
            auto_pause_after_seconds=data.get("auto_pause_after_seconds"), raw=dict(data),
        )  # fmt: skip


class AsyncSandbox(AsyncResource[SandboxInfo]):
    """One sandbox. ``commands`` runs programs in it, ``files`` reads and writes its files,
    ``processes`` keeps long-lived ones (on a terminal or not), ``computer`` sees and uses
    its desktop (``rootfs="desktop:1"``).

    ``async with await AsyncSandbox.create() as sandbox:`` kills it on the way out. A
    sandbox made without ``client=`` has a connection of its own, released by
    :meth:`close` (and on leaving the ``async with``).
    """

    _route = "sandboxes"
    _subject = "sandbox"
    _parse = staticmethod(SandboxInfo.from_json)

    def __init__(
        self, info: SandboxInfo, client: AsyncClient, *, owns_client: bool = False
    ) -> None:
        super().__init__(info, client)
        self._owns_client = owns_client
        self.commands = AsyncCommands(client.transport, info.id)
        self.files = AsyncFiles(client.transport, info.id)
        self.processes = AsyncProcesses(client.transport, info.id)
        self.egress = AsyncEgress(client.transport, info.id)
        self.computer = AsyncComputer(client.transport, info.id)

    @property
    def status(self) -> str:
        """As last seen; :meth:`refresh` asks again."""
        return self.info.status

    @property
    def ip(self) -> str | None:
        return self.info.ip

    def __repr__(self) -> str:
        return f"AsyncSandbox(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @classmethod
    async def create(
        cls,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
        **options: Unpack[SandboxOptions],
    ) -> AsyncSandbox:
        """Start a sandbox and return it running (and in its networks, with its disks).

        Not retried on 429 (over your cap of running sandboxes) or 503: a create that
        timed out may still have made a sandbox, so look with :meth:`list` first. If
        ``timeout`` cannot be set, the sandbox is killed and the error raised.
        """
        owned = client is None
        client = resolve_client(client, api_url, api_key)
        try:
            body = await _create_body(client, options)
            data = await client.transport.data("POST", "/v1/sandboxes", idempotent=False,
                                               json=body)  # fmt: skip
        except BaseException:
            if owned:
                await client.aclose()
            raise
        sandbox = cls(SandboxInfo.from_json(data), client, owns_client=owned)
        if "timeout" in options:
            try:
                await sandbox.set_timeout(options["timeout"])
            except BaseException:
                with contextlib.suppress(HutchError):
                    await sandbox.kill()
                await sandbox.close()
                raise
        return sandbox

    @classmethod
    async def connect(
        cls,
        sandbox_id: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncSandbox:
        """An existing sandbox, by id or name, in whatever state it is."""
        owned = client is None
        client = resolve_client(client, api_url, api_key)
        return cls(await cls._fetch(client, sandbox_id), client, owns_client=owned)

    @classmethod
    async def list(
        cls,
        *,
        status: str | Sequence[str] | None = None,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[AsyncSandbox]:
        """Your sandboxes, newest first, every page: by default the live ones; pass
        ``status="destroyed"`` (or several) for history."""
        owned = client is None
        client = resolve_client(client, api_url, api_key)
        params: dict[str, str | int] = {}
        if status is not None:
            params["status"] = status if isinstance(status, str) else ",".join(status)
        items = await client.transport.pages("/v1/sandboxes", params=params)
        return [cls(SandboxInfo.from_json(i), client, owns_client=owned) for i in items]

    async def kill(self) -> None:
        """Destroy the sandbox and everything of it on its host. Killing twice is fine."""
        data = await self.client.transport.data(
            "DELETE", f"/v1/sandboxes/{self.id}", idempotent=True, subjects=self._subjects()
        )
        status = data.get("status", "destroyed") if isinstance(data, dict) else "destroyed"
        self.info = replace(self.info, status=status)

    async def metrics(self) -> MetricsSample | None:
        """The latest sample of its CPU, memory, disk and traffic; None before the first."""
        from hutch.sdk.observe import async_metrics

        return await async_metrics(self.id, client=self.client)

    async def metrics_history(self, *, since: str | None = None) -> builtins.list[MetricsSample]:
        """The samples the server keeps, oldest first (``since``: ISO time or seconds ago)."""
        from hutch.sdk.observe import async_metrics_history

        return await async_metrics_history(self.id, since=since, client=self.client)

    async def pause(self) -> None:
        """Freeze every process (memory is kept). Returns once paused; pausing twice is fine."""
        await self._transition("pause")

    async def resume(self) -> None:
        """Thaw a paused sandbox; returns once it runs. Counts toward your running cap."""
        await self._transition("resume")

    async def set_timeout(self, seconds: float) -> None:
        """Have the server destroy the sandbox ``seconds`` from now (shorter or longer).

        CreateOS has no route for this; it is the Nullspace dialect's, on the same server.
        """
        await self.client.transport.data(
            "POST", f"/nullspace/v1/sandboxes/{self.id}/timeout", idempotent=True,
            json={"timeout_ms": round(seconds * 1000)}, headers=self._bearer(),
            subjects=self._subjects(),
        )  # fmt: skip

    async def preview_url(self, port: int) -> str:
        """A URL that reaches ``port`` inside the sandbox, with no credentials needed (the
        token is in the host name). It stops working when it expires (an hour by
        default), or when the sandbox is paused or destroyed."""
        data = await self.client.transport.data(
            "POST", f"/nullspace/v1/sandboxes/{self.id}/host", idempotent=False,
            json={"port": port}, headers=self._bearer(), subjects=self._subjects(),
        )  # fmt: skip
        return str(data["url"])

    async def bandwidth(self) -> Bandwidth:
        """Its outbound internet quota, what it used and whether it is capped."""
        return await fetch_bandwidth(self.client.transport, self.id)

    async def recharge(self, add_bytes: int) -> Bandwidth:
        """Add ``add_bytes`` to its bandwidth quota (a no-op when unmetered); a capped
        sandbox's traffic flows again once the quota is above what it used. Not retried:
        a recharge whose answer was lost may have been applied."""
        return await recharge_bandwidth(self.client.transport, self.id, add_bytes)

    async def resize(self, disk_mib: int) -> None:
        """Grow its writable disk to ``disk_mib`` MiB while it runs (or is paused): no
        restart, the space is there at once. Only larger sizes; not retried."""
        data = await self.client.transport.data(
            "POST", f"/v1/sandboxes/{self.id}/resize", idempotent=False,
            json={"disk_mib": disk_mib}, subjects=self._subjects(),
        )  # fmt: skip
        self.info = replace(self.info, disk_mib=int(data["disk_mib"]))

    async def snapshot(self, name: str) -> AsyncTemplate:
        """A template of its files as they are now (its image and every change made in
        it), ready at once; it keeps running (frozen for tens of milliseconds while its
        writable layer is copied). Create sandboxes from it with ``rootfs=name`` or build
        on it with ``FROM name``; a name used again is a new version. Not retried."""
        from hutch.sdk.templates import AsyncTemplate  # (templates imports the sandbox)

        data = await self.client.transport.data(
            "POST", f"/v1/sandboxes/{self.id}/snapshot", idempotent=False,
            json={"name": name}, subjects=self._subjects(),
        )  # fmt: skip
        return AsyncTemplate(AsyncTemplate._parse(data), self.client)

    async def create_access_token(self) -> str:
        """A token (``skp_sb_…``) that drives this sandbox alone: pass it as ``api_key`` to
        :meth:`connect`. Shown once; a :class:`ConflictError` while one is enabled."""
        return await self._token("POST", "")

    async def rotate_access_token(self) -> str:
        """A new token; the old one is refused from the next request on."""
        return await self._token("POST", "/rotate")

    async def disable_access_token(self) -> None:
        """Refuse the token from the next request on. Disabling twice is fine."""
        await self.client.transport.data(
            "DELETE", f"/v1/sandboxes/{self.id}/access-token", idempotent=True,
            subjects=self._subjects(),
        )  # fmt: skip

    async def _token(self, method: str, suffix: str) -> str:
        data = await self.client.transport.data(
            method, f"/v1/sandboxes/{self.id}/access-token{suffix}", idempotent=False,
            subjects=self._subjects(),
        )  # fmt: skip
        return str(data["token"])

    async def list_disks(self) -> builtins.list[DiskAttachment]:
        """The disks mounted in this sandbox, each with its ``mount_status``."""
        items = await self.client.transport.pages(
            f"/v1/sandboxes/{self.id}/disks", subjects=self._subjects()
        )
        return [DiskAttachment.from_json(item) for item in items]

    async def close(self) -> None:
        """Release this sandbox's own connection (if it has one). The sandbox keeps running."""
        if self._owns_client:
            await self.client.aclose()

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        try:
            await self.kill()
        finally:
            await self.close()

    def _bearer(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.client.config.api_key}"}

    async def _transition(self, action: str) -> None:
        data = await self.client.transport.data(
            "POST", f"/v1/sandboxes/{self.id}/{action}", idempotent=True,
            subjects=self._subjects(),
        )  # fmt: skip
        self.info = SandboxInfo.from_json(data)
        # hutch answers once the change is done; a server that answers 202 earlier is
        # polled until the sandbox settles.
        deadline = time.monotonic() + SETTLE_TIMEOUT_S
        while self.status in _SETTLING and time.monotonic() < deadline:
            await asyncio.sleep(0.2)
            await self.refresh()


async def _create_body(client: AsyncClient, options: SandboxOptions) -> dict[str, Any]:
    shape = options.get("shape")
    if shape is None:
        shapes = await client.transport.data("GET", "/v1/shapes", idempotent=True,
                                             params={"limit": 1})  # fmt: skip
        if not shapes.get("data"):
            raise HutchError("the server offers no shapes; pass shape= explicitly")
        shape = str(shapes["data"][0]["id"])
    body: dict[str, Any] = {"shape": shape}
    for key in ("rootfs", "name", "disk_mib", "ingress_enabled", "auto_pause_after_seconds",
                "host_id", "region"):  # fmt: skip
        if key in options:
            body[key] = options[key]
    if "ssh_pubkeys" in options:
        body["ssh_pubkeys"] = list(options["ssh_pubkeys"])
    if "node_selector" in options:
        body["node_selector"] = dict(options["node_selector"])
    if "envs" in options:
        body["envs"] = dict(options["envs"])
    if "egress" in options:
        if isinstance(options["egress"], str):
            raise TypeError("egress is a list of rules, not one string")
        body["egress"] = list(options["egress"])
    if "networks" in options:
        body["networks"] = [{"id": ident(n)} for n in options["networks"]]
    if "disks" in options:
        body["disks"] = [d.to_json() for d in options["disks"]]
    return body
