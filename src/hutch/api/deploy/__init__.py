"""The deploy API (``/agent``, seed 003): wallet-signed deploys paid on chain."""

from fastapi import APIRouter

from hutch.api.deploy import chains

__all__ = ["router"]

router = APIRouter(prefix="/agent")
router.include_router(chains.router)
