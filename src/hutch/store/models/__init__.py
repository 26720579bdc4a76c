"""The tables of hutch. Schema changes go through an Alembic migration in ``migrations/``.

One module per part of the schema; everything is importable from here.
"""

from __future__ import annotations

from hutch.store.models.accounts import ApiKey, User
from hutch.store.models.base import Base, UtcDateTime, utcnow
from hutch.store.models.deploys import AgentNonce, CreditEntry, Deployment, Payment, Project
from hutch.store.models.disks import DiskAttachment, DiskRecord
from hutch.store.models.events import EventRecord, WebhookDelivery, WebhookRecord
from hutch.store.models.hosts import Host, JoinToken, PlacementHold
from hutch.store.models.networks import NetworkMember, NetworkRecord
from hutch.store.models.sandboxes import PreviewRoute, SandboxAccessToken, SandboxRecord
from hutch.store.models.templates import TemplateLogLine, TemplateRecord

__all__ = [
    "AgentNonce",
    "ApiKey",
    "Base",
    "CreditEntry",
    "Deployment",
    "DiskAttachment",
    "DiskRecord",
    "EventRecord",
    "Host",
    "JoinToken",
    "NetworkMember",
    "NetworkRecord",
    "Payment",
    "PlacementHold",
    "PreviewRoute",
    "Project",
    "SandboxAccessToken",
    "SandboxRecord",
    "TemplateLogLine",
    "TemplateRecord",
    "User",
    "UtcDateTime",
    "WebhookDelivery",
    "WebhookRecord",
    "utcnow",
]
