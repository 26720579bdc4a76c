"""Templates: your own images, built by the server from a Dockerfile.

    from hutch import Template, Sandbox

    template = Template.build("web", dockerfile=open("Dockerfile").read(), context_dir=".",
                              on_log=lambda event: print(event.line))
    sandbox = Sandbox.create(rootfs="web")

``build`` sends the Dockerfile (and the directory for COPY/ADD, packed as a tar.gz),
follows the build's log and returns the template once it is ready; a failed or cancelled
build raises :class:`TemplateBuildError` with the server's reason. :class:`AsyncTemplate`
is the implementation, :class:`Template` its blocking face.
"""

from __future__ import annotations

import asyncio
import base64
import builtins
import io
import json
import tarfile
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

from hutch.sdk._http import parse_time
from hutch.sdk._resource import AsyncResource
from hutch.sdk.client import AsyncClient, resolve_client
from hutch.sdk.errors import HutchError
from hutch.sdk.sync import Client, _BlockingResource

__all__ = [
    "AsyncTemplate",
    "Template",
    "TemplateBuildError",
    "TemplateInfo",
    "TemplateLogEvent",
    "pack_context",
]

FINAL = ("ready", "failed", "cancelled")
LogCallback = Callable[["TemplateLogEvent"], Awaitable[None] | None]


class TemplateBuildError(HutchError):
    """The build ended ``failed`` or ``cancelled``; ``template`` says why (``reason``)."""

    def __init__(self, message: str, *, template: TemplateInfo) -> None:
        super().__init__(message, reason=template.reason)
        self.template = template


@dataclass(frozen=True, kw_only=True)
class TemplateLogEvent:
    """One line of a build's log."""

    ts: datetime | None
    level: str
    line: str
    attempt: int


@dataclass(frozen=True, kw_only=True)
class TemplateInfo:
    id: str
    name: str
    version: int
    status: str
    """``pending``, ``building``, ``ready``, ``failed`` or ``cancelled``."""
    reason: str | None
    base: str
    size_bytes: int
    steps_total: int
    steps_cached: int
    start_cmd: tuple[str, ...] | None
    env: dict[str, str]
    workdir: str
    user: str
    created_at: datetime | None
    built_at: datetime | None
    dockerfile: str | None
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> TemplateInfo:
        start = data.get("start_cmd")
        return cls(
            id=data["id"],
            name=data.get("name", ""),
            version=int(data.get("version") or 1),
            status=data.get("status", ""),
            reason=data.get("reason"),
            base=data.get("base", ""),
            size_bytes=int(data.get("ext4_size_bytes") or 0),
            steps_total=int(data.get("steps_total") or 0),
            steps_cached=int(data.get("steps_cached") or 0),
            start_cmd=tuple(start) if start else None,
            env=dict(data.get("env") or {}),
            workdir=data.get("workdir") or "/",
            user=data.get("user") or "",
            created_at=parse_time(data.get("created_at")),
            built_at=parse_time(data.get("built_at")),
            dockerfile=data.get("dockerfile"),
            raw=dict(data),
        )


def pack_context(directory: str | Path) -> bytes:
    """``directory`` as a tar.gz build context (paths relative to it; symlinks kept)."""
    root = Path(directory)
    if not root.is_dir():
        raise ValueError(f"the build context {root} is not a directory")
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for path in sorted(root.rglob("*")):
            archive.add(path, arcname=str(path.relative_to(root)), recursive=False)
    return buffer.getvalue()


class AsyncTemplate(AsyncResource[TemplateInfo]):
    """One version of one of your templates."""

    _route = "templates"
    _subject = "template"
    _parse = staticmethod(TemplateInfo.from_json)

    def __repr__(self) -> str:
        return f"AsyncTemplate(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @property
    def status(self) -> str:
        return self.info.status

    @classmethod
    async def build(
        cls,
        name: str,
        dockerfile: str,
        *,
        context_dir: str | Path | None = None,
        context: bytes | None = None,
        base: str | None = None,
        on_log: LogCallback | None = None,
        wait: bool = True,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncTemplate:
        """Submit a build (a name used again is a new version). With ``wait`` (the
        default), follow its log (each line to ``on_log``) and return it ready, or raise
        :class:`TemplateBuildError`. ``context`` is a tar or zip archive;
        ``context_dir`` a directory packed as one. A bad Dockerfile is an
        InvalidRequestError naming the line."""
        if context is not None and context_dir is not None:
            raise TypeError("pass either context= or context_dir=, not both")
        if context_dir is not None:
            context = await asyncio.to_thread(pack_context, context_dir)
        body: dict[str, Any] = {"name": name, "dockerfile": dockerfile}
        if base is not None:
            body["base"] = base
        if context is not None:
            body["context"] = base64.b64encode(context).decode()
        client = resolve_client(client, api_url, api_key)
        data = await client.transport.data("POST", "/v1/templates", idempotent=False, json=body)
        template = cls(cls._parse(data), client)
        if wait:
            await template.wait(on_log=on_log)
        return template

    @classmethod
    async def get(
        cls,
        template: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncTemplate:
        """One template by id, or the newest version of a name."""
        client = resolve_client(client, api_url, api_key)
        return cls(await cls._fetch(client, template), client)

    @classmethod
    async def list(
        cls,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[AsyncTemplate]:
        """Every version of every template of yours (deleted ones are gone)."""
        client = resolve_client(client, api_url, api_key)
        return [
            cls(cls._parse(item), client) for item in await client.transport.pages("/v1/templates")
        ]

    async def delete(self) -> None:
        """Delete this version (sandboxes made from it keep working)."""
        await self.client.transport.data(
            "DELETE", f"/v1/templates/{self.id}", idempotent=True, subjects=self._subjects()
        )

    async def cancel(self) -> TemplateInfo:
        """Stop its build; a ConflictError once the build has ended."""
        data = await self.client.transport.data(
            "POST", f"/v1/templates/{self.id}/cancel", idempotent=True, subjects=self._subjects()
        )
        self.info = self._parse(data)
        return self.info

    async def logs(self, *, attempt: int | None = None) -> str:
        """The build's log so far, as text."""
        params = {"attempt": attempt} if attempt is not None else None
        async with self.client.transport.stream(
            "GET",
            f"/v1/templates/{self.id}/logs",
            idempotent=True,
            params=params,
            subjects=self._subjects(),
        ) as response:
            return (await response.aread()).decode()

    async def follow(self, *, attempt: int | None = None) -> AsyncIterator[TemplateLogEvent]:
        """The build's log lines, as they come, until the build ends (then ``info`` is
        its final state). A stream that breaks off is resumed by asking again."""
        params: dict[str, str | int] = {"follow": "true"}
        if attempt is not None:
            params["attempt"] = attempt
        seen = 0
        while True:
            count = 0
            try:
                async with self.client.transport.stream(
                    "GET",
                    f"/v1/templates/{self.id}/logs",
                    idempotent=True,
                    params=params,
                    subjects=self._subjects(),
                    http_timeout=httpx.Timeout(30, read=None),
                ) as response:
                    async for text in response.aiter_lines():
                        if not text.strip():
                            continue
                        frame = json.loads(text)
                        if frame.get("final"):
                            await self.refresh()
                            return
                        count += 1
                        if count > seen:  # lines already given before a reconnect
                            seen = count
                            yield TemplateLogEvent(
                                ts=parse_time(frame.get("ts")),
                                level=str(frame.get("level", "")),
                                line=str(frame.get("line", "")),
                                attempt=int(frame.get("attempt") or 1),
                            )
            except HutchError:
                if (await self.refresh()).status in FINAL:
                    return
                raise
            if (await self.refresh()).status in FINAL:
                return

    async def wait(self, *, on_log: LogCallback | None = None) -> TemplateInfo:
        """Follow the build to its end; raise :class:`TemplateBuildError` unless ready."""
        async for event in self.follow():
            if on_log is not None:
                returned = on_log(event)
                if returned is not None:
                    await returned
        if self.info.status != "ready":
            raise TemplateBuildError(
                f"template {self.name} version {self.info.version} is {self.info.status}: "
                f"{self.info.reason or 'no reason given'}",
                template=self.info,
            )
        return self.info


class Template(_BlockingResource[AsyncTemplate]):
    """A template, blocking; see :class:`AsyncTemplate`. ``on_log`` callbacks run on the
    client's I/O thread."""

    @property
    def info(self) -> TemplateInfo:
        return self.aio.info

    @property
    def status(self) -> str:
        return self.aio.status

    def __repr__(self) -> str:
        return f"Template(id={self.id!r}, name={self.name!r}, status={self.status!r})"

    @classmethod
    def build(
        cls,
        name: str,
        dockerfile: str,
        *,
        context_dir: str | Path | None = None,
        context: bytes | None = None,
        base: str | None = None,
        on_log: LogCallback | None = None,
        wait: bool = True,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Template:
        return cls._open(
            lambda aio: AsyncTemplate.build(
                name,
                dockerfile,
                context_dir=context_dir,
                context=context,
                base=base,
                on_log=on_log,
                wait=wait,
                client=aio,
            ),
            client,
            api_url,
            api_key,
        )

    @classmethod
    def get(
        cls,
        template: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Template:
        return cls._open(
            lambda aio: AsyncTemplate.get(template, client=aio), client, api_url, api_key
        )

    @classmethod
    def list(
        cls,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Template]:
        return cls._open_all(lambda aio: AsyncTemplate.list(client=aio), client, api_url, api_key)

    def refresh(self) -> TemplateInfo:
        return self._run(self.aio.refresh())

    def delete(self) -> None:
        self._run(self.aio.delete())

    def cancel(self) -> TemplateInfo:
        return self._run(self.aio.cancel())

    def logs(self, *, attempt: int | None = None) -> str:
        return self._run(self.aio.logs(attempt=attempt))

    def follow(self, *, attempt: int | None = None) -> Iterator[TemplateLogEvent]:
        return self._loop.iterate(self.aio.follow(attempt=attempt))

    def wait(self, *, on_log: LogCallback | None = None) -> TemplateInfo:
        return self._run(self.aio.wait(on_log=on_log))
