"""``hutch events``, ``hutch metrics`` and ``hutch webhook``: what happened, what a sandbox
uses, and where events are sent; through the SDK."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import sys
from typing import Annotated

import typer

from hutch.cli.output import (
    ApiKeyOpt,
    ApiUrlOpt,
    JsonOpt,
    details,
    print_json,
    print_table,
    remove_each,
    run,
    when,
)
from hutch.sdk import AsyncClient, AsyncWebhook, Delivery, Event, MetricsSample, WebhookInfo
from hutch.sdk.observe import (
    async_events,
    async_follow_events,
    async_metrics,
    async_metrics_history,
)

__all__ = ["events", "metrics", "webhooks"]

webhooks = typer.Typer(
    help="Webhooks: your events POSTed to a URL, signed (X-Hutch-Signature).\n\n"
    "Example:  hutch webhook create https://example.com/hook --event sandbox.paused",
    no_args_is_help=True,
)

_MIB = 1 << 20


def _event_row(event: Event) -> tuple[object, ...]:
    extra = event.data.get("reason") or event.data.get("from") or ""
    return (event.seq, when(event.created_at), event.type, event.subject_id,
            event.data.get("name", ""), extra)  # fmt: skip


def events(
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Keep printing new ones.")] = False,
    since: Annotated[
        str | None, typer.Option(help="After this seq, or from this ISO time.")
    ] = None,
    event_type: Annotated[
        list[str] | None,
        typer.Option("--type", help="Only this type (repeat for more), e.g. sandbox.paused."),
    ] = None,
    sandbox: Annotated[str | None, typer.Option(help="Only this sandbox's (its id).")] = None,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Your event log: sandboxes created, paused, resumed, destroyed; templates built.

    Example:  hutch events --follow --type sandbox.paused
    """
    types = tuple(event_type or ())
    headers = ("seq", "time", "type", "subject", "name", "detail")

    async def follow_all(client: AsyncClient) -> None:
        async for event in async_follow_events(
            since=since, types=types, subject_id=sandbox, client=client
        ):
            if as_json:
                sys.stdout.write(_json_line(event) + "\n")
            else:
                sys.stdout.write("  ".join(str(cell) for cell in _event_row(event)) + "\n")
            sys.stdout.flush()

    if follow:
        run(api_url, api_key, follow_all)
        return

    async def action(client: AsyncClient) -> list[Event]:
        return await async_events(since=since, types=types, subject_id=sandbox, client=client)

    found = run(api_url, api_key, action)
    if as_json:
        print_json([dataclasses.asdict(event) for event in found])
    else:
        print_table(headers, (_event_row(event) for event in found))


def _json_line(event: Event) -> str:
    return json.dumps(dataclasses.asdict(event), default=str)


def _sample_row(sample: MetricsSample) -> tuple[object, ...]:
    def mib(value: int | None) -> str:
        return "-" if value is None else f"{value / _MIB:.1f}"

    return (when(sample.timestamp), f"{sample.cpu_used_pct:.1f}", sample.cpu_count,
            mib(sample.mem_used_bytes), mib(sample.mem_total_bytes), mib(sample.disk_used_bytes),
            mib(sample.net_rx_bytes), mib(sample.net_tx_bytes), sample.processes)  # fmt: skip


_SAMPLE_HEADERS = ("time", "cpu %", "vcpus", "mem MiB", "limit MiB", "disk MiB", "rx MiB",
                   "tx MiB", "procs")  # fmt: skip


def metrics(
    sandbox: Annotated[str, typer.Argument(help="A sandbox id or name.")],
    history: Annotated[
        bool, typer.Option("--history", help="Every sample the server keeps.")
    ] = False,
    since: Annotated[
        str | None, typer.Option(help="With --history: from this ISO time or seconds ago.")
    ] = None,
    watch: Annotated[
        bool, typer.Option("--watch", "-w", help="Print a line each sampling round.")
    ] = False,
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """A sandbox's CPU, memory, disk and traffic.

    Example:  hutch metrics dev --watch
    """

    async def latest(client: AsyncClient) -> list[MetricsSample]:
        if history:
            return await async_metrics_history(sandbox, since=since, client=client)
        sample = await async_metrics(sandbox, client=client)
        return [sample] if sample is not None else []

    async def watching(client: AsyncClient) -> None:
        seen = None
        while True:
            sample = await async_metrics(sandbox, client=client)
            if sample is not None and sample.timestamp != seen:
                seen = sample.timestamp
                sys.stdout.write("  ".join(str(cell) for cell in _sample_row(sample)) + "\n")
                sys.stdout.flush()
            await asyncio.sleep(1)

    if watch:
        sys.stdout.write("  ".join(h.upper() for h in _SAMPLE_HEADERS) + "\n")
        run(api_url, api_key, watching)
        return
    samples = run(api_url, api_key, latest)
    if as_json:
        print_json([dataclasses.asdict(sample) for sample in samples])
    elif not samples:
        sys.stdout.write("no sample yet (the sandbox is sampled while it runs)\n")
    else:
        print_table(_SAMPLE_HEADERS, (_sample_row(sample) for sample in samples))


# --- webhooks -------------------------------------------------------------------------------


def _hook_rows(infos: list[WebhookInfo]) -> list[tuple[object, ...]]:
    return [(i.id, i.url, ",".join(i.events), when(i.created_at)) for i in infos]


@webhooks.command("create")
def webhook_create(
    url: Annotated[str, typer.Argument(help="http(s) URL on a public address.")],
    event: Annotated[
        list[str] | None, typer.Option("--event", help="A type to send (repeat); default all.")
    ] = None,
    secret: Annotated[
        str | None, typer.Option(help="16-256 characters; left out, one is made.")
    ] = None,
    description: Annotated[str, typer.Option(help="A note for you.")] = "",
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Create a webhook; prints its secret once.

    Example:  hutch webhook create https://example.com/hook --event sandbox.error
    """

    async def action(client: AsyncClient) -> WebhookInfo:
        made = await AsyncWebhook.create(url, events=event or ["*"], secret=secret,
                                         description=description, client=client)  # fmt: skip
        return made.info

    info = run(api_url, api_key, action)
    if as_json:
        print_json(dataclasses.asdict(info))
        return
    details({"id": info.id, "url": info.url, "events": ",".join(info.events),
             "secret": info.secret})  # fmt: skip
    sys.stderr.write("keep the secret: it is not shown again\n")


@webhooks.command("ls")
def webhook_list(
    as_json: JsonOpt = False, api_url: ApiUrlOpt = None, api_key: ApiKeyOpt = None
) -> None:
    """List your webhooks."""

    async def action(client: AsyncClient) -> list[WebhookInfo]:
        return [hook.info for hook in await AsyncWebhook.list(client=client)]

    infos = run(api_url, api_key, action)
    if as_json:
        print_json([dataclasses.asdict(info) for info in infos])
    else:
        print_table(("id", "url", "events", "created"), _hook_rows(infos))


@webhooks.command("deliveries")
def webhook_deliveries(
    webhook: Annotated[str, typer.Argument(help="A webhook id.")],
    as_json: JsonOpt = False,
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """A webhook's deliveries, newest first: delivered, pending (retrying) or failed."""

    async def action(client: AsyncClient) -> list[Delivery]:
        return await (await AsyncWebhook.get(webhook, client=client)).deliveries()

    found = run(api_url, api_key, action)
    if as_json:
        print_json([dataclasses.asdict(item) for item in found])
        return
    print_table(
        ("delivery", "event", "type", "state", "tries", "status", "error"),
        ((d.id, d.event_id, d.event_type, d.state, d.attempts, d.last_status, d.last_error)
         for d in found),
    )  # fmt: skip


@webhooks.command("rm")
def webhook_remove(
    webhook: Annotated[list[str], typer.Argument(help="Webhook ids.")],
    api_url: ApiUrlOpt = None,
    api_key: ApiKeyOpt = None,
) -> None:
    """Delete webhooks (their pending deliveries go with them)."""

    async def delete(client: AsyncClient, ident: str) -> str:
        found = await AsyncWebhook.get(ident, client=client)
        await found.delete()
        return found.id

    remove_each(api_url, api_key, webhook, delete)
