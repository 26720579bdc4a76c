"""The deploy API (``/agent``, seed 003): wallet-signed deploys paid on chain."""

from fastapi import APIRouter, Depends

from hutch.api.deploy import chains, projects
from hutch.api.deploy.auth import rate_limit

__all__ = ["router"]

router = APIRouter(prefix="/agent", dependencies=[Depends(rate_limit)])
router.include_router(chains.router)
router.include_router(projects.router)
