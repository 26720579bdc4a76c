"""The control plane's cluster parts: the routes agents join and heartbeat on, the
reaper that marks silent hosts ``dead``, and what a worker's lifespan starts for them."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator
from typing import Annotated, Any

from fastapi import APIRouter, Depends, FastAPI, Header, Request
from pydantic import BaseModel, ConfigDict, Field

from hutch.api.services import Services
from hutch.cluster.membership import HostReport, Membership
from hutch.cluster.tls import tls_enabled
from hutch.core.errors import InvalidInput, Unauthenticated
from hutch.core.sealing import MasterKeyUnavailable, SealedBox, load_master_key
from hutch.settings import Settings
from hutch.store.db import Database

__all__ = ["cluster_lifespan", "make_membership", "router"]

log = logging.getLogger(__name__)

router = APIRouter(prefix="/internal/v1/hosts", include_in_schema=False)


def make_membership(settings: Settings, db: Database) -> Membership:
    """Membership with the master key that seals host tokens (HUTCH_DISK_MASTER_KEY or
    ``$HUTCH_HOME/master.key``: every control plane of a cluster needs the same one)."""
    configured = settings.disk_master_key
    try:
        key = load_master_key(
            configured.get_secret_value() if configured is not None else None,
            settings.home / "master.key",
        )
        box: SealedBox | None = SealedBox(key)
    except MasterKeyUnavailable as exc:
        log.error("hosts cannot join: %s", exc)
        box = None
    return Membership(db, box, dead_after_s=settings.host_dead_after_s)


class HostReportIn(BaseModel):
    model_config = ConfigDict(extra="forbid")

    id: str = Field(min_length=1, max_length=64)
    address: str = Field(min_length=1, max_length=255)
    labels: dict[str, str] = Field(default_factory=dict, max_length=64)
    runtimes: list[str] = Field(default_factory=list, max_length=8)
    rootfses: list[str] = Field(default_factory=list, max_length=256)
    templates: list[str] = Field(default_factory=list, max_length=100_000)
    free_mib: int = Field(default=0, ge=0)
    total_mib: int = Field(default=0, ge=0)
    capacity_mib: int = Field(default=0, ge=0)
    cpus: int = Field(default=0, ge=0)
    proxy: str = Field(default="", max_length=255)

    def report(self) -> HostReport:
        return HostReport(**self.model_dump())


def _bearer(authorization: Annotated[str | None, Header()] = None) -> str:
    if not authorization or not authorization.lower().startswith("bearer "):
        raise Unauthenticated("send the join token (or host token) as Authorization: Bearer")
    return authorization[7:].strip()


def _membership(request: Request) -> Membership:
    membership = getattr(request.app.state, "membership", None)
    if membership is None:
        raise Unauthenticated("this control plane is not a cluster's (set HUTCH_CLUSTER=true)")
    assert isinstance(membership, Membership)
    return membership


TokenDep = Annotated[str, Depends(_bearer)]
MembershipDep = Annotated[Membership, Depends(_membership)]


def _check_scheme(request: Request, address: str) -> None:
    """A cluster with TLS reaches its agents only over https, and one without has nothing
    to check an agent's certificate with: an agent that does not fit is refused at once."""
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        return
    secure = tls_enabled(services.settings)
    if secure and not address.startswith("https://"):
        raise InvalidInput(f"this cluster uses TLS (HUTCH_TLS_*): the agent must serve https "
                           f"with its own HUTCH_TLS_*, not {address}", field="address")  # fmt: skip
    if not secure and address.startswith("https://"):
        raise InvalidInput(f"this control plane has no HUTCH_TLS_* to reach {address} with: "
                           "set the same CA on both, or run the agent without TLS",
                           field="address")  # fmt: skip


@router.post("/join")
async def join(
    body: HostReportIn, token: TokenDep, membership: MembershipDep, request: Request
) -> dict[str, Any]:
    """An agent joins with a join token; it gets its host token back."""
    _check_scheme(request, body.address)
    host_token = await membership.join(token, body.report())
    log.info("host %s joined from %s", body.id, body.address)
    return {"status": "success", "data": {"host_token": host_token, "status": "active"}}


@router.post("/{host_id}/heartbeat")
async def heartbeat(
    host_id: str, body: HostReportIn, token: TokenDep, membership: MembershipDep,
    request: Request,
) -> dict[str, Any]:  # fmt: skip
    # Every heartbeat writes the agent's address: checked as at the join, or a TLS
    # cluster would reach an agent that later named an http:// address in clear text.
    _check_scheme(request, body.address)
    status = await membership.heartbeat(host_id, token, body.report())
    return {"status": "success", "data": {"status": status}}


async def _reap_forever(membership: Membership, every_s: float) -> None:
    while True:
        await asyncio.sleep(every_s)
        try:
            marked = await membership.reap()
        except Exception:
            log.warning("marking silent hosts dead failed; will retry", exc_info=True)
            continue
        for host_id in marked:
            log.warning("host %s stopped heartbeating: marked dead, its sandboxes error", host_id)


@contextlib.asynccontextmanager
async def cluster_lifespan(
    app: FastAPI, settings: Settings, services: Services
) -> AsyncIterator[None]:
    """In a cluster's control worker: membership for the routes, and the reaper."""
    if not settings.cluster:
        yield
        return
    membership = make_membership(settings, services.db)
    app.state.membership = membership
    reaper = asyncio.create_task(
        _reap_forever(membership, settings.heartbeat_interval_s), name="hutch-host-reaper"
    )
    try:
        yield
    finally:
        reaper.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await reaper
