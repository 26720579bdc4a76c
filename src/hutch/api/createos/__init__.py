"""The CreateOS dialect: ``/v1`` and the health probes, JSend bodies, ``X-Api-Key`` auth."""

from fastapi import APIRouter

from hutch.api.createos import (
    access_tokens,
    api_keys,
    catalog,
    computer,
    computer_windows,
    connections,
    disks,
    egress,
    events,
    forks,
    health,
    identity,
    metrics,
    networks,
    processes,
    resize,
    sandboxes,
    shells,
    snapshots,
    templates,
)

__all__ = ["router"]

router = APIRouter()
router.include_router(health.router)
router.include_router(catalog.router)
router.include_router(identity.router)
router.include_router(sandboxes.router)
router.include_router(forks.router)
router.include_router(processes.router)
router.include_router(egress.router)
router.include_router(connections.router)
router.include_router(shells.router)
router.include_router(networks.router)
router.include_router(disks.router)
router.include_router(disks.attachments)
router.include_router(access_tokens.router)
router.include_router(api_keys.router)
router.include_router(resize.router)
router.include_router(templates.router)
router.include_router(events.router)
router.include_router(metrics.router)
router.include_router(snapshots.router)
router.include_router(computer.router)
router.include_router(computer_windows.router)
