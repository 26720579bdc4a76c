"""Seeing what happens: a sandbox's metrics, the event log, and webhooks.

    from hutch.sdk import Sandbox, Webhook, events, follow_events

    sandbox.metrics()                       # the latest sample, or None before the first
    for event in follow_events(types=["sandbox.paused"]):
        print(event.type, event.subject_id)
    hook = Webhook.create("https://example.com/hooks/hutch", events=["*"])
    print(hook.info.secret)                 # shown once: verify X-Hutch-Signature with it

The async functions and :class:`AsyncWebhook` are the implementation; :class:`Webhook`
and the blocking functions below them are their blocking face.
"""

from __future__ import annotations

import builtins
import json
from collections.abc import AsyncIterator, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import httpx

from hutch.sdk._http import Identified, ident, parse_time
from hutch.sdk._resource import AsyncAttachable
from hutch.sdk.client import AsyncClient, resolve_client
from hutch.sdk.sync import Client, _BlockingResource, _client

__all__ = [
    "AsyncWebhook",
    "Delivery",
    "Event",
    "MetricsSample",
    "Webhook",
    "WebhookInfo",
    "async_events",
    "async_follow_events",
    "async_metrics",
    "async_metrics_history",
    "events",
    "follow_events",
]


@dataclass(frozen=True, kw_only=True)
class MetricsSample:
    """One sample of a sandbox's usage (see the server's README, "Metrics")."""

    timestamp: datetime | None
    cpu_used_pct: float
    """Share of the sandbox's vCPUs used since the previous sample (100: all busy)."""
    cpu_count: int
    mem_used_bytes: int
    mem_total_bytes: int | None
    disk_used_bytes: int | None
    disk_total_bytes: int | None
    net_rx_bytes: int | None
    net_tx_bytes: int | None
    processes: int

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> MetricsSample:
        return cls(
            timestamp=parse_time(data.get("timestamp")),
            cpu_used_pct=float(data["cpu_used_pct"]), cpu_count=int(data["cpu_count"]),
            mem_used_bytes=int(data["mem_used_bytes"]), mem_total_bytes=data.get("mem_total_bytes"),
            disk_used_bytes=data.get("disk_used_bytes"),
            disk_total_bytes=data.get("disk_total_bytes"),
            net_rx_bytes=data.get("net_rx_bytes"), net_tx_bytes=data.get("net_tx_bytes"),
            processes=int(data.get("processes", 0)),
        )  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Event:
    """One lifecycle change: ``sandbox.created``, ``sandbox.paused``, ``template.ready``…"""

    id: str
    seq: int
    """The log's order: pass the last one seen as ``since`` to go on from there."""
    type: str
    subject_id: str
    data: dict[str, Any]
    created_at: datetime | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Event:
        return cls(id=str(data["id"]), seq=int(data["seq"]), type=str(data["type"]),
                   subject_id=str(data["subject_id"]), data=dict(data.get("data") or {}),
                   created_at=parse_time(data.get("created_at")))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class WebhookInfo:
    id: str
    url: str
    events: tuple[str, ...]
    description: str
    created_at: datetime | None
    secret: str | None = None
    """Only in what :meth:`AsyncWebhook.create` returns: the server shows it once."""

    @property
    def name(self) -> str:
        return self.id

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> WebhookInfo:
        return cls(id=str(data["id"]), url=str(data["url"]), events=tuple(data["events"]),
                   description=str(data.get("description", "")),
                   created_at=parse_time(data.get("created_at")),
                   secret=data.get("secret"))  # fmt: skip


@dataclass(frozen=True, kw_only=True)
class Delivery:
    """One event sent (or being sent) to a webhook."""

    id: str
    event_id: str
    event_type: str
    state: str
    """``pending``, ``delivered`` or ``failed`` (out of attempts)."""
    attempts: int
    last_status: int | None
    last_error: str | None

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Delivery:
        return cls(id=str(data["id"]), event_id=str(data["event_id"]),
                   event_type=str(data["event_type"]), state=str(data["state"]),
                   attempts=int(data["attempts"]), last_status=data.get("last_status"),
                   last_error=data.get("last_error"))  # fmt: skip


# -- metrics --------------------------------------------------------------------------


async def async_metrics(
    sandbox: str | Identified, *, client: AsyncClient | None = None
) -> MetricsSample | None:
    """The sandbox's latest sample; None before the first one."""
    sandbox_id = ident(sandbox)
    data = await resolve_client(client, None, None).transport.data(
        "GET", f"/v1/sandboxes/{sandbox_id}/metrics", idempotent=True,
        subjects={"sandbox": sandbox_id},
    )  # fmt: skip
    sample = data.get("metrics")
    return MetricsSample.from_json(sample) if sample else None


async def async_metrics_history(
    sandbox: str | Identified, *, since: str | None = None, client: AsyncClient | None = None
) -> list[MetricsSample]:
    """The samples the server keeps, oldest first; ``since`` is an ISO time or seconds ago."""
    sandbox_id = ident(sandbox)
    data = await resolve_client(client, None, None).transport.data(
        "GET", f"/v1/sandboxes/{sandbox_id}/metrics/timeseries", idempotent=True,
        subjects={"sandbox": sandbox_id}, params={"since": since} if since else None,
    )  # fmt: skip
    return [MetricsSample.from_json(item) for item in data.get("samples", [])]


# -- events ---------------------------------------------------------------------------


def _event_params(
    since: int | str | None, types: Sequence[str], subject_id: str | None
) -> dict[str, str | int]:
    params: dict[str, str | int] = {}
    if since is not None:
        params["since"] = str(since)
    if types:
        params["type"] = ",".join(types)
    if subject_id:
        params["subject_id"] = subject_id
    return params


async def async_events(
    *,
    since: int | str | None = None,
    types: Sequence[str] = (),
    subject_id: str | None = None,
    client: AsyncClient | None = None,
) -> list[Event]:
    """Your events, oldest first (every page); ``since`` is a ``seq`` or an ISO time."""
    items = await resolve_client(client, None, None).transport.pages(
        "/v1/events", params=_event_params(since, types, subject_id)
    )
    return [Event.from_json(item) for item in items]


async def async_follow_events(
    *,
    since: int | str | None = None,
    types: Sequence[str] = (),
    subject_id: str | None = None,
    client: AsyncClient | None = None,
) -> AsyncIterator[Event]:
    """Your events after ``since`` (left out: all the server keeps), then each new one as it
    happens, forever; a stream that breaks off is taken up after the last event seen."""
    client = resolve_client(client, None, None)
    last = since
    while True:
        params = {**_event_params(last, types, subject_id), "follow": "true"}
        async with client.transport.stream(
            "GET", "/v1/events", idempotent=True, params=params,
            http_timeout=httpx.Timeout(30, read=None),
        ) as response:  # fmt: skip
            async for line in response.aiter_lines():
                if not line.strip():
                    continue
                frame = json.loads(line)
                if frame.get("type") == "heartbeat" and "seq" not in frame:
                    continue
                event = Event.from_json(frame)
                last = event.seq
                yield event


# -- webhooks -------------------------------------------------------------------------


class AsyncWebhook(AsyncAttachable[WebhookInfo]):
    """A webhook: where your events are POSTed, signed with its secret."""

    _route = "webhooks"
    _subject = "webhook"

    def __repr__(self) -> str:
        return f"AsyncWebhook(id={self.id!r}, url={self.info.url!r})"

    @staticmethod
    def _parse(data: dict[str, Any]) -> WebhookInfo:
        return WebhookInfo.from_json(data)

    @classmethod
    async def create(
        cls,
        url: str,
        *,
        events: Sequence[str] = ("*",),
        secret: str | None = None,
        description: str = "",
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncWebhook:
        """``info.secret`` holds the secret this once (the one given, or one made)."""
        body: dict[str, Any] = {"url": url, "events": list(events), "description": description}
        if secret is not None:
            body["secret"] = secret
        return await cls._create(body, client, api_url, api_key)

    @classmethod
    async def get(
        cls,
        webhook: str,
        *,
        client: AsyncClient | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> AsyncWebhook:
        return await cls._get(webhook, client, api_url, api_key)

    async def update(
        self,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> WebhookInfo:
        body: dict[str, Any] = {}
        if url is not None:
            body["url"] = url
        if events is not None:
            body["events"] = list(events)
        if description is not None:
            body["description"] = description
        data = await self.client.transport.data(
            "PATCH", f"/v1/webhooks/{self.id}", idempotent=True, json=body,
            subjects=self._subjects(),
        )  # fmt: skip
        self.info = WebhookInfo.from_json(data)
        return self.info

    async def deliveries(self) -> builtins.list[Delivery]:
        """Newest first."""
        items = await self.client.transport.pages(
            f"/v1/webhooks/{self.id}/deliveries", subjects=self._subjects()
        )
        return [Delivery.from_json(item) for item in items]


class Webhook(_BlockingResource[AsyncWebhook]):
    """A webhook, blocking; see :class:`AsyncWebhook`."""

    @property
    def info(self) -> WebhookInfo:
        return self.aio.info

    def __repr__(self) -> str:
        return f"Webhook(id={self.id!r}, url={self.info.url!r})"

    @classmethod
    def create(
        cls,
        url: str,
        *,
        events: Sequence[str] = ("*",),
        secret: str | None = None,
        description: str = "",
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Webhook:
        return cls._open(
            lambda aio: AsyncWebhook.create(
                url, events=events, secret=secret, description=description, client=aio
            ),
            client, api_url, api_key,
        )  # fmt: skip

    @classmethod
    def get(
        cls,
        webhook: str,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> Webhook:
        return cls._open(lambda aio: AsyncWebhook.get(webhook, client=aio), client, api_url,
                         api_key)  # fmt: skip

    @classmethod
    def list(
        cls,
        *,
        client: Client | None = None,
        api_url: str | None = None,
        api_key: str | None = None,
    ) -> builtins.list[Webhook]:
        return cls._open_all(lambda aio: AsyncWebhook.list(client=aio), client, api_url, api_key)

    def update(
        self,
        *,
        url: str | None = None,
        events: Sequence[str] | None = None,
        description: str | None = None,
    ) -> WebhookInfo:
        return self._run(self.aio.update(url=url, events=events, description=description))

    def delete(self) -> None:
        self._run(self.aio.delete())

    def deliveries(self) -> builtins.list[Delivery]:
        return self._run(self.aio.deliveries())


def events(
    *,
    since: int | str | None = None,
    types: Sequence[str] = (),
    subject_id: str | None = None,
    client: Client | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> list[Event]:
    """Blocking :func:`async_events`."""
    chosen = _client(client, api_url, api_key)
    return chosen._loop.run(
        async_events(since=since, types=types, subject_id=subject_id, client=chosen.aio)
    )


def follow_events(
    *,
    since: int | str | None = None,
    types: Sequence[str] = (),
    subject_id: str | None = None,
    client: Client | None = None,
    api_url: str | None = None,
    api_key: str | None = None,
) -> Iterator[Event]:
    """Blocking :func:`async_follow_events`: an endless iterator; break out of it to stop."""
    chosen = _client(client, api_url, api_key)
    return chosen._loop.iterate(
        async_follow_events(since=since, types=types, subject_id=subject_id, client=chosen.aio)
    )
