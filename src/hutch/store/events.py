"""The event log is written by the store itself: every flush that creates a sandbox or moves
a sandbox's or a template's status appends the matching :class:`EventRecord` in the same
transaction, and a pending :class:`WebhookDelivery` for each of the owner's webhooks that
asked for that type. So no code path that changes a status can forget its event, and an
event exists exactly when its change was committed.

Which change is which event (a build's sandboxes are the platform's and make none):

=====================  =====================================================
``sandbox.created``    a sandbox row is inserted (a fork's child too)
``sandbox.forked``     the inserted sandbox has ``forked_from``
``sandbox.running``    creating/forking → running
``sandbox.paused``     → paused
``sandbox.resumed``    pausing/paused/resuming → running
``sandbox.error``      → error or failed (``data.reason``)
``sandbox.destroyed``  → destroyed
``template.ready``     a template → ready
``template.failed``    a template → failed (``data.reason``)
``deployment.ready``   written by the deploy pipeline (:func:`deployment_event`)
``deployment.failed``  the same
=====================  =====================================================
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime
from typing import Any

from sqlalchemy import event, inspect, select
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import Session, UOWTransaction

from hutch.core.ids import new_id
from hutch.store.models import (
    EventRecord,
    SandboxRecord,
    TemplateRecord,
    User,
    WebhookDelivery,
    WebhookRecord,
    utcnow,
)

__all__ = [
    "EVENT_TYPES",
    "RecordingSession",
    "append_deployment_event",
    "created_events",
    "event_payload",
    "new_event",
]

EVENT_TYPES = (
    "sandbox.created",
    "sandbox.forked",
    "sandbox.running",
    "sandbox.paused",
    "sandbox.resumed",
    "sandbox.error",
    "sandbox.destroyed",
    "template.ready",
    "template.failed",
    "deployment.ready",
    "deployment.failed",
)

_WAKING = frozenset({"pausing", "paused", "resuming"})


class RecordingSession(Session):
    """The store's session class: flushes append events (see the module's docstring)."""


def new_event(
    user_id: str, kind: str, subject_id: str, data: dict[str, Any], at: datetime | None = None
) -> EventRecord:
    return EventRecord(
        id=new_id("evt_"),
        user_id=user_id,
        type=kind,
        subject_id=subject_id,
        data=data,
        created_at=at or utcnow(),
    )


def event_payload(record: EventRecord) -> dict[str, Any]:
    """What a webhook receives (``GET /v1/events`` adds ``seq``, its cursor)."""
    return {
        "id": record.id,
        "type": record.type,
        "subject_id": record.subject_id,
        "data": record.data,
        "created_at": record.created_at.isoformat().replace("+00:00", "Z"),
    }


def _sandbox_events(record: SandboxRecord, old: str | None) -> list[EventRecord]:
    if record.build_of is not None:
        return []
    base = {"name": record.name, "status": record.status}
    if old is None:
        made = [new_event(record.user_id, "sandbox.created", record.id, base)]
        if record.forked_from:
            forked = {**base, "forked_from": record.forked_from}
            made.append(new_event(record.user_id, "sandbox.forked", record.id, forked))
        return made
    new = record.status
    kind = None
    if new == "running":
        kind = "sandbox.resumed" if old in _WAKING else "sandbox.running"
    elif new == "paused":
        kind = "sandbox.paused"
    elif new in ("error", "failed"):
        kind = "sandbox.error"
        base["reason"] = record.reason or ""
    elif new == "destroyed":
        kind = "sandbox.destroyed"
    if kind is None:
        return []
    return [new_event(record.user_id, kind, record.id, {**base, "from": old})]


def _template_events(record: TemplateRecord) -> list[EventRecord]:
    data: dict[str, Any] = {"name": record.name, "version": record.version}
    if record.status == "ready":
        return [new_event(record.user_id, "template.ready", record.id, data)]
    if record.status == "failed":
        data["reason"] = record.reason or ""
        return [new_event(record.user_id, "template.failed", record.id, data)]
    return []


def _old_status(target: object) -> tuple[bool, str | None]:
    history = inspect(target).attrs.status.history
    if not history.has_changes():
        return False, None
    return True, str(history.deleted[0]) if history.deleted else None


def _changes(session: Session) -> list[EventRecord]:
    made: list[EventRecord] = []
    for target in session.new:
        if isinstance(target, SandboxRecord):
            made += _sandbox_events(target, None)
    for target in session.dirty:
        if isinstance(target, SandboxRecord | TemplateRecord):
            changed, old = _old_status(target)
            if not changed or old == target.status:
                continue
            if isinstance(target, SandboxRecord):
                made += _sandbox_events(target, old)
            else:
                made += _template_events(target)
    return made


def deliveries_for(session: Session, events: Iterable[EventRecord]) -> list[WebhookDelivery]:
    """A pending delivery of each event to each of its owner's webhooks that wants it."""
    events = list(events)
    users = {record.user_id for record in events}
    if not users:
        return []
    with session.no_autoflush:
        hooks = session.scalars(select(WebhookRecord).where(WebhookRecord.user_id.in_(users)))
        by_user: dict[str, list[WebhookRecord]] = {}
        for hook in hooks:
            by_user.setdefault(hook.user_id, []).append(hook)
    out: list[WebhookDelivery] = []
    for record in events:
        for hook in by_user.get(record.user_id, []):
            if "*" not in hook.events and record.type not in hook.events:
                continue
            body = event_payload(record)
            out.append(
                WebhookDelivery(
                    id=new_id("whd_"),
                    webhook_id=hook.id,
                    event_id=record.id,
                    event_type=record.type,
                    payload=json.dumps(body, separators=(",", ":"), sort_keys=True),
                    state="pending",
                    attempts=0,
                    next_attempt_at=record.created_at,
                    created_at=record.created_at,
                )
            )
    return out


def created_events(session: Session, record: SandboxRecord) -> None:
    """Add the events of ``record``'s creation (and their deliveries) to ``session``: for
    a sandbox inserted by a statement rather than by a flush
    (:func:`hutch.store.sandboxes.insert_within_cap`)."""
    made = _sandbox_events(record, None)
    if made:
        session.add_all(made)
        session.add_all(deliveries_for(session, made))


@event.listens_for(RecordingSession, "before_flush")
def _append_events(session: Session, flush_context: UOWTransaction, instances: object) -> None:
    made = _changes(session)
    if not made:
        return
    session.add_all(made)
    session.add_all(deliveries_for(session, made))


async def append_deployment_event(
    session: AsyncSession, wallet: str, kind: str, deployment_id: str, data: dict[str, Any]
) -> None:
    """A deployment's event, in the caller's transaction; it belongs to the wallet's user
    (deployed sandboxes' owner, seen by admins with ``GET /v1/events?all=true``)."""
    user_id = await session.scalar(select(User.id).where(User.name == f"wallet-{wallet.lower()}"))
    if user_id is None:  # nothing was ever deployed by this wallet: no one to tell
        return
    made = new_event(user_id, kind, deployment_id, data)

    def add(sync: Session) -> None:
        sync.add(made)
        sync.add_all(deliveries_for(sync, [made]))

    await session.run_sync(add)
