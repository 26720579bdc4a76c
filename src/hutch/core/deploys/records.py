"""What a deploy is in the store: projects, deployments, their statuses, and the small
reads and writes the charging side and the build pipeline share."""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from hutch.build.plan import BuildPlan
from hutch.core.errors import Conflict, InvalidInput
from hutch.core.identity import Principal
from hutch.core.ids import new_id
from hutch.store.db import Database
from hutch.store.models import Deployment, Project, User

__all__ = [
    "ACTIVE",
    "BUILDING",
    "DELETED",
    "DELETING",
    "DEPLOYING",
    "FAILED",
    "BuildFailed",
    "DeployRecords",
    "DeployRequest",
    "DeploymentView",
    "PaymentProof",
    "Started",
    "busy",
    "deployment_body",
    "live_project",
    "tail",
]

MONTH = timedelta(days=30)
LOG_LINES = 30
# Project statuses (the seed's), and which of them count as "active projects".
BUILDING, DEPLOYING, ACTIVE, FAILED, DELETING, DELETED = (
    "building",
    "deploying",
    "active",
    "failed",
    "deleting",
    "deleted",
)
IN_PROGRESS = ("queued", BUILDING, DEPLOYING, "promoting")
LIVE_PROJECT = (*IN_PROGRESS, ACTIVE)
BUSY = (*IN_PROGRESS, DELETING)  # a project in one of these takes no new deployment


@dataclass(frozen=True, kw_only=True)
class DeployRequest:
    unique_name: str
    display_name: str
    description: str | None
    months: int
    port: int
    plan: BuildPlan
    files: Mapping[str, bytes]
    dockerfile: str | None = None
    """The project's Dockerfile when it is built from it (:mod:`hutch.build.dockerfile`)."""


@dataclass(frozen=True, kw_only=True)
class PaymentProof:
    tx_hash: str
    chain: str
    token: str


@dataclass(frozen=True, kw_only=True)
class Started:
    project_id: str
    deployment_id: str


@dataclass(frozen=True, kw_only=True)
class DeploymentView:
    deployment: Deployment
    project: Project


class BuildFailed(Exception):
    """A deployment failed for a reason its owner should read."""


class DeployRecords:
    """Writes to projects and deployments, and the wallet's own user."""

    def __init__(self, db: Database) -> None:
        self._db = db

    async def principal(self, wallet: str) -> Principal:
        """Deployed sandboxes belong to a user of the wallet's own (no API key reaches it)."""
        name = f"wallet-{wallet.lower()}"
        async with self._db.sessions() as session:
            user = await session.scalar(select(User).where(User.name == name))
        if user is None:
            with contextlib.suppress(IntegrityError):
                async with self._db.sessions.begin() as session:
                    session.add(User(id=new_id("usr_"), name=name, is_admin=False))
            async with self._db.sessions() as session:
                user = await session.scalar(select(User).where(User.name == name))
        assert user is not None
        return Principal(user_id=user.id, user_name=user.name, is_admin=False, key_id="")

    async def stage(self, project_id: str, deployment_id: str, status: str, **changes: Any) -> None:
        """The deployment moves to ``status``, and its project with it unless it is going."""
        await self.set_deployment(deployment_id, status=status, **changes)
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Project)
                .where(Project.id == project_id, Project.status.not_in((DELETING, DELETED)))
                .values(status=status)
            )

    async def set_deployment(self, deployment_id: str, **changes: Any) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(
                update(Deployment).where(Deployment.id == deployment_id).values(**changes)
            )

    async def set_project(self, project_id: str, **changes: Any) -> None:
        async with self._db.sessions.begin() as session:
            await session.execute(update(Project).where(Project.id == project_id).values(**changes))


async def live_project(session: AsyncSession, unique_name: str, wallet: str) -> Project | None:
    """The live project of that name, if it is ``wallet``'s; another wallet's is a 400."""
    project = await session.scalar(
        select(Project).where(Project.unique_name == unique_name, Project.deleted_at.is_(None))
    )
    if project is not None and project.wallet != wallet:
        raise InvalidInput(f"uniqueName {unique_name!r} is taken", field="uniqueName")
    return project


def busy() -> Conflict:
    return Conflict(
        "a deployment of this project is in progress; wait for it (GET …/status) before "
        "deploying again",
        field="uniqueName",
    )


def tail(text: str, lines: int = LOG_LINES) -> str:
    return "\n".join(text.strip().splitlines()[-lines:])[-3000:]


def deployment_body(view: DeploymentView) -> dict[str, Any]:
    """The seed's three shapes of a status answer."""
    d = view.deployment
    if d.status == "ready" or d.status == "superseded":
        return {"status": "ready", "deployment_id": d.id, "endpoint": view.project.url}
    if d.status == FAILED:
        return {"status": "failed", "deployment_id": d.id, "reason": d.reason or "failed"}
    return {"status": "deploying", "deployment_id": d.id, "deployment_status": d.status}
