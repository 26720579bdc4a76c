"""The static catalog: shapes, root filesystems and hosts. No authentication."""

from __future__ import annotations

from fastapi import APIRouter
from pydantic import BaseModel, Field

from hutch.api.createos.responses import COMMON_ERRORS
from hutch.api.deps import PageParams, ServicesDep, SettingsDep
from hutch.api.envelopes import JSend, Page
from hutch.core.catalog import ROOTFS_CATALOG, Shape

__all__ = ["router"]

router = APIRouter(prefix="/v1", tags=["catalog"], responses=COMMON_ERRORS)


@router.get("/shapes", summary="List sandbox shapes")
async def list_shapes(settings: SettingsDep, page: PageParams) -> JSend[Page[Shape]]:
    """The shapes a sandbox can be created with; pass ``id`` as ``shape``."""
    shapes = list(settings.shapes)
    return JSend(
        data=Page.of(
            shapes[page.offset : page.offset + page.limit],
            total=len(shapes),
            limit=page.limit,
            offset=page.offset,
        )
    )


class RootfsEntry(BaseModel):
    name: str
    description: str
    available: bool = Field(description="Built on at least one live host.")


class RootfsList(BaseModel):
    rootfs: list[str] = Field(description="All available (non-disabled) rootfs names.")
    default: str = Field(description="Used when rootfs is omitted on sandbox create.")
    entries: list[RootfsEntry]


@router.get("/rootfs", summary="List root filesystem images")
async def list_rootfs(services: ServicesDep) -> JSend[RootfsList]:
    """Every image hutch offers, the default, and whether a live host has it built."""
    built = await services.hosts.built_rootfses()
    return JSend(
        data=RootfsList(
            rootfs=[image.name for image in ROOTFS_CATALOG],
            default=services.settings.default_rootfs,
            entries=[
                RootfsEntry(
                    name=image.name, description=image.description, available=image.name in built
                )
                for image in ROOTFS_CATALOG
            ],
        )
    )


class HostOut(BaseModel):
    id: str = Field(description="Host identifier (IP address).")
    status: str = Field(description="active, draining, or dead.")
    free_mib: int = Field(description="Available memory in MiB.")
    vm_count: int = Field(description="Sandboxes on this host.")
    rootfses: list[str] = Field(description="Rootfs images built on this host.")
    runtimes: list[str] = Field(
        default_factory=list,
        description="Runtimes that can start sandboxes here: runc, gvisor (when its runsc works).",
    )
    labels: dict[str, str] = Field(
        default_factory=dict,
        description="Placement labels (HUTCH_HOST_LABELS) a create's node_selector matches.",
    )


@router.get("/hosts", summary="List hosts")
async def list_hosts(services: ServicesDep, page: PageParams) -> JSend[Page[HostOut]]:
    """The hosts of the cluster, with their capacity and the images they have."""
    hosts, total = await services.hosts.list(limit=page.limit, offset=page.offset)
    here = services.host_agent.host_id
    items = [
        HostOut(
            id=h.id, status=h.status, free_mib=h.free_mib, vm_count=h.vm_count,
            rootfses=h.rootfses, runtimes=h.runtimes,
            labels=h.labels or (dict(services.settings.host_labels) if h.id == here else {}),
        )
        for h in hosts
    ]  # fmt: skip
    return JSend(data=Page.of(items, total=total, limit=page.limit, offset=page.offset))
